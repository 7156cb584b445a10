"""A canonical string form of an answer: the same answer written two ways becomes the same
string where that is cheap to see (spacing commands, ``\\dfrac``, units, thousands separators,
list words), and every later step reads this form. Runs in the worker, before parsing."""

from __future__ import annotations

import re

_UNIT_WORDS = (
    "cm|mm|km|m|meters?|metres?|centimeters?|millimeters?|kilometers?|inch(?:es)?|in|ft|feet|"
    "foot|yards?|yd|miles?|mi|units?|square|sq|cubic|degrees?|deg|radians?|rad|dollars?|"
    "cents?|euros?|pounds?|lbs?|kg|g|grams?|kilograms?|mg|liters?|litres?|l|ml|hours?|hrs?|"
    "h|minutes?|mins?|seconds?|secs?|s|days?|weeks?|months?|years?|mph|kph|km/h|m/s|"
    "percent|percentages?|pct|points?|people|persons?|students?|apples?|marbles?|ways?|times|"
    "items?|pieces?|pages?|books?|boxes|balls?|cookies?|cups?|tickets?|trees?|eggs?|cars?|pens?|"
    "coins?|boys?|girls?|men|women|children|sheep|cows?|dogs?|cats?|birds?"
)
_TEXT_CMD = r"\\(?:text|textrm|textnormal|mbox|mathrm|textit|mathit|operatorname)"
_TRAILING_UNIT = re.compile(
    r"(?:\s*(?:" + _TEXT_CMD + r"\s*\{[^{}]*\}|(?<=[\d}\s])\s*(?:" + _UNIT_WORDS + r")\b)"
    r"(?:\s*\^\s*\{?\s*[23]\s*\}?)?)+\s*$",
    re.IGNORECASE,
)
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_THOUSANDS_SPACE = re.compile(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?")
_SEPARATOR_WORDS = re.compile(
    r"\s*" + _TEXT_CMD + r"\s*\{\s*(?:or|and|,)\s*\}\s*|\s+(?:or|and)\s+"
    # the logical or: "x \le 3 \lor x \ge 5", "x=1 \vee x=2"
    r"|\s*\\(?:lor|vee)(?![A-Za-z])\s*"
    # "or" without spaces, between a value and the next one: "(11,7)or(7,11)", "1orW(x)=-1"
    # (never inside a word: "(1,2)order" is left alone)
    r"|(?<=[\d)\]}])or(?=[-+(\[\\\dA-Z]|[a-z](?![A-Za-z]))"
)
# MATH's digit-group separators ",\!" and "{,}" are unambiguous: one number wherever they stand.
_GROUP_SEPARATOR = re.compile(r"(?<=\d)(?:,\s*\\!|\{\s*,\s*\})\s*(?=\d{3}(?!\d))")
# "!=" is "not equal" after a name or a space ("x != 3", "x!=3"); after a digit or a bracket it
# stays a factorial followed by "=" ("5!=120").
_NOT_EQUAL = re.compile(r"(?<=[A-Za-z\s])!=")
# Unicode math symbols spelled in LaTeX: "2,500 m²", "x ≠ 5", "(1, ∞)", "√2", "1½".
_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻", "0123456789+-")
_SUPERSCRIPT_RUN = re.compile(r"[⁺⁻]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_UNICODE_SYMBOLS = {
    "∞": r"\infty ", "≠": r" \neq ", "⩾": r" \geq ", "⩽": r" \leq ", "√": r"\sqrt ",
    "½": r"\frac{1}{2}", "⅓": r"\frac{1}{3}", "⅔": r"\frac{2}{3}", "¼": r"\frac{1}{4}",
    "¾": r"\frac{3}{4}",
}
_UNICODE_SYMBOL = re.compile("|".join(_UNICODE_SYMBOLS))
# A doubled backslash before a command name, or before an escaped character: "\\frac{1}{2}",
# "\\left( 3, \\pi \\right)" (LaTeX escaped twice, as in JSON written from a string literal).
_DOUBLED = re.compile(r"\\\\(?=[A-Za-z{}%$,;:!])")
# Other spellings of what the parser reads: x \geqslant 5, x \not= 5, \lbrace 1,2\rbrace,
# \langle 1,2\rangle (a vector: the tuple (1,2)), 9{:}45, the empty set \emptyset (the set \{\}).
_SPELLING = {
    r"\geqslant": r"\geq", r"\leqslant": r"\leq", r"\not=": r" \neq ", r"\lbrace": r"\{",
    r"\rbrace": r"\}", r"\langle": "(", r"\rangle": ")", "{:}": ":", r"\emptyset": r"\{\}",
    r"\varnothing": r"\{\}", "∅": r"\{\}",
}
_SPELLINGS = re.compile(
    r"\\(?:geqslant|leqslant|lbrace|rbrace|langle|rangle|emptyset|varnothing)(?![A-Za-z])"
    r"|\\not\s*=|\{\s*:\s*\}|∅"
)

# gcd / lcm spelled as operator names (\operatorname{lcm}(4,6), \text{gcd}(4,6)): the parser's
# \gcd, \lcm. (\lg stays unread: it is log base 10 in some books and base 2 in others.)
_NAMED_FUNCTION = re.compile(
    r"\\(?:operatorname|mathrm|text|textrm)\s*\{\s*(gcd|lcm|GCD|LCM)\s*\}")


def normalize(s: str) -> str:
    """A canonical string form of an answer (used for string equality and before parsing)."""
    s = s.strip()
    if "\\\\" in s and "\\" not in _DOUBLED.sub("", s):  # every command escaped twice
        s = s.replace("\\\\", "\\")
    s = s.replace("\n", " ").replace("\u2212", "-").replace("\u00b7", "\\cdot ")
    s = _SUPERSCRIPT_RUN.sub(lambda m: "^{" + m.group().translate(_SUPERSCRIPT) + "}", s)
    s = _UNICODE_SYMBOL.sub(lambda m: _UNICODE_SYMBOLS[m.group()], s)
    s = re.sub(r"\\(?:displaystyle|textstyle|scriptstyle|limits)", "", s)
    s = re.sub(r"\\left\s*\.|\\right\s*\.", "", s)
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])", "", s)
    s = _GROUP_SEPARATOR.sub("", s)
    s = _NOT_EQUAL.sub(r" \\neq ", s)
    s = _SPELLINGS.sub(lambda m: _SPELLING[re.sub(r"\s+", "", m.group())], s)
    s = _NAMED_FUNCTION.sub(lambda m: "\\" + m.group(1).lower(), s)
    s = re.sub(r"\\bmod(?![A-Za-z])", r"\\mod", s)
    s = re.sub(r"(?<!\\)\\[,;:! ]|\\q?quad(?![A-Za-z])|~", " ", s)
    s = re.sub(r"\\\$|\\(?:textdollar|euro|pounds)(?![A-Za-z])|£|€", "", s)
    s = s.replace("$", "")
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\[dt]binom(?![A-Za-z])", r"\\binom", s)
    # the real line \mathbb{R} (or ℝ) is the interval (-\infty,\infty), not a name R; not as a
    # base (\mathbb{R}^2) or with an index
    s = re.sub(r"(?:\\mathbb\s*\{\s*R\s*\}|\\mathbb\s+R(?![A-Za-z])|ℝ)(?!\s*[\^_])",
               r"(-\\infty,\\infty)", s)
    s = re.sub(r"\\(?:mathbf|textbf|boldsymbol|bm|mathbb)\s*\{([^{}]*)\}", r"\1", s)
    # degrees, percent, currency
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree(?![A-Za-z])", "", s)
    s = re.sub(r"\\?%", "", s)
    s = re.sub(r"\s+", " ", s).strip()
    # a whole-text answer: \text{Monday}
    m = re.fullmatch(_TEXT_CMD + r"\s*\{([^{}]*)\}", s)
    if m:
        return re.sub(r"\s+", " ", m.group(1)).strip()
    s = _SEPARATOR_WORDS.sub(", ", s)
    s = re.sub(r"(?:,\s*)+,", ",", s)  # "1, 2, and 3"
    prev = None
    while prev != s:  # trailing units: "5 \text{ cm}^2", "12 inches", "3 dollars"
        prev = s
        t = _TRAILING_UNIT.sub("", s).strip()
        if t and t != s:
            s = t
    s = re.sub(_TEXT_CMD + r"\s*\{([^{}]*)\}", r"\1", s)
    # small LaTeX shorthands: \frac12, \sqrt2
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\d)", r"\\frac\1{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\sqrt\s*(\d+|[A-Za-z])", r"\\sqrt{\1}", s)
    s = s.rstrip(" .").strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    elif _THOUSANDS_SPACE.fullmatch(s):
        s = s.replace(" ", "")
    return s

