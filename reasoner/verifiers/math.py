"""Math answer verifier: extract the final answer of a completion, compare it with the gold
answer through sympy (parsed with latex2sympy2_extended), in a pool of worker processes with
hard time and memory limits.

Extraction (in the calling process, plain string scanning, linear time)
    1. the last ``\\boxed{...}`` / ``\\boxed x`` / ``\\fbox{...}`` (nested braces; a box inside
       a box is unwrapped). Several boxes with DIFFERENT contents (after whitespace/``$``
       normalisation) make the completion "ambiguous": it never pays. Repeating the SAME answer
       in several boxes is fine (models often restate their result).
    2. else the last ``<answer>...</answer>`` block;
    3. else the last GSM8K-style ``#### x`` line.
    Nothing found, or an empty answer: reward 0, reason "no answer".

Equivalence (in a worker), after normalisation (``$``, ``\\left``/``\\right``, spacing
commands, ``\\dfrac``, degree signs, ``\\%``, ``\\$``, ``\\text{...}`` units and common unit
words are stripped; ``1,000,000`` and ``1{,}000`` are one number when the WHOLE answer is a
single digit-grouped number, otherwise a comma separates list items, so ``1,2`` is a list):
    - identical normalised strings are equal (also covers text answers like ``\\text{Monday}``);
    - numbers: EXACT comparison. A decimal the model writes is the exact rational it denotes
      (``0.5 == 1/2``, ``1e-7 != 2e-7``, ``1000000 != 1000050``, ``1/2004! != 1/2006!``).
      The one approximate rule: when one side is a bare decimal literal and the other side's
      exact value has no finite decimal expansion (``1/3``, ``\\sqrt 2``, ``\\pi``), the decimal is
      read as an approximation and must agree to a relative tolerance ``rel_tol`` (default
      1e-6, i.e. about 7 significant digits): ``0.3333333 == 1/3`` but ``0.333 != 1/3`` and
      ``3.14 != \\pi``. Far above float64 noise, far below any human rounding. There is no
      percentage (x100, /100) fallback: ``10\\%`` equals ``10``, not ``0.1``.
    - radicals, pi/e, factorials, binomials, logs, complex numbers (``i`` is the imaginary
      unit): exact values compared with a numeric reject at 30 digits, then a symbolic proof
      (``simplify(a - b) == 0``), then, when sympy cannot simplify, agreement to 90 digits;
    - expressions with variables: numeric reject at random points, then symbolic proof, then
      agreement at 4 random points to 40 digits;
    - lists ``1, 2`` (multisets) and sets ``\\{1, 2\\}`` are unordered; ``\\pm 2`` is ``-2, 2``;
    - tuples and intervals ``(a, b)``, ``[a, b)``: order and bracket types must match;
      unions of intervals (``\\cup``) are unordered;
    - inequalities in one variable are sets: ``x > 3`` equals ``(3, \\infty)``; ``1 < x \\le 2``
      equals ``(1, 2]``; ``x \\in [1, 2]`` is ``[1, 2]``;
    - ``x = 5`` equals ``5`` (a bare variable on the left is dropped, on either side);
      two equations are equal when ``lhs - rhs`` agree up to a nonzero constant factor
      (``2x + 4y = 6`` equals ``x + 2y = 3``);
    - matrices (``pmatrix``, ``bmatrix``, ...) element-wise, same shape.

Limits: per record a hard ``timeout`` (default 5 s, the worker is killed and replaced); a
``memory_mb`` address-space cap per worker (default 1024 MiB on top of what it maps at start);
answers longer than ``max_answer_chars`` (1000) or with a number of more than ``max_digits``
(100 000) digits (power towers like ``9^{9^{9^9}}``, ``10000000!``) are rejected before any
evaluation (string pre-screen in the caller, then a size bound on the unevaluated tree).

Reasons: "ok", "wrong", "no answer", "ambiguous", "unparseable answer", "too large",
"timeout", "worker crashed" (correct=False, reward 0), and "unparseable gold" (missing or
unparseable reference: correct=None, the sample can't be judged).

Gold answers are parsed once per worker process (an LRU cache keyed by the gold string), so
the G completions of one prompt parse their common gold at most once per worker; parsed
answers are cached the same way. A gold answer that is a whole solution containing a
``\\boxed{...}`` is reduced to its boxed answer.
"""

from __future__ import annotations

import functools
import math
import random
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from reasoner.verifiers.base import Verdict
from reasoner.verifiers.pool import TaskResult, WorkerPool

__all__ = [
    "DEFAULT_TIMEOUT",
    "Extraction",
    "MathVerifier",
    "check_answer",
    "extract_answer",
    "find_answer",
    "verify_math",
]

DEFAULT_TIMEOUT = 5.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_REL_TOL = 1e-6
DEFAULT_MAX_ANSWER_CHARS = 1000
DEFAULT_MAX_DIGITS = 100_000
_PRELOAD = ("sympy", "latex2sympy2_extended", "reasoner.verifiers.math")


# ============================================================================================
# Extraction (calling process; no sympy)
# ============================================================================================


@dataclass
class Extraction:
    """The final answer found in a completion. source: "boxed", "answer_tag", "gsm8k" or None."""

    answer: str | None
    source: str | None = None
    ambiguous: bool = False
    candidates: list[str] = field(default_factory=list)


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_GSM8K_RE = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def _match_brace(s: str, open_at: int) -> int:
    """Index of the '}' closing the '{' at `open_at` (escaped braces \\{ \\} don't count), or -1."""
    depth = 0
    i = open_at
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _boxes(text: str) -> list[str]:
    """Contents of the top-level boxes, in order; unclosed boxes are skipped."""
    out: list[str] = []
    pos = 0
    while True:
        m = _BOX_RE.search(text, pos)
        if m is None:
            return out
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _match_brace(text, i)
            if end < 0:  # unclosed (truncated completion): not an answer
                pos = i + 1
                continue
            out.append(text[i + 1 : end])
            pos = end + 1
        else:  # "\boxed 5": up to the next whitespace or '$'
            m2 = re.match(r"[^\s$]+", text[i:])
            if m2 is None or m.group(0) != "\\boxed":
                pos = i
                continue
            out.append(m2.group(0))
            pos = i + m2.end()


def _unbox(s: str) -> str:
    """\\boxed{\\boxed{5}} -> 5 (boxes that span the whole answer are unwrapped)."""
    while True:
        t = s.strip()
        m = _BOX_RE.match(t)
        if m is None:
            return t
        i = m.end()
        while i < len(t) and t[i] in " \t":
            i += 1
        if i < len(t) and t[i] == "{" and _match_brace(t, i) == len(t) - 1:
            s = t[i + 1 : -1]
        else:
            return t


def _strip_answer(s: str) -> str:
    s = _unbox(s).strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            s = s[len(a) : len(s) - len(b)].strip()
    s = _unbox(s)
    return s.rstrip(" .").strip()


def _same_text(a: str) -> str:
    return re.sub(r"\s+|\$|\\[,;:! ]|\\left|\\right", "", a).replace("dfrac", "frac")


def find_answer(text: str) -> Extraction:
    """Locate the final answer (see the module docstring for the rules)."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    boxes = [_strip_answer(b) for b in _boxes(text)]
    boxes = [b for b in boxes if b]
    if boxes:
        distinct = list(dict.fromkeys(_same_text(b) for b in boxes))
        return Extraction(boxes[-1], "boxed", ambiguous=len(distinct) > 1, candidates=boxes)
    tags = _ANSWER_TAG_RE.findall(text)
    if tags:
        ans = _strip_answer(tags[-1])
        return Extraction(ans or None, "answer_tag", candidates=[t.strip() for t in tags])
    lines = _GSM8K_RE.findall(text)
    if lines:
        ans = _strip_answer(lines[-1])
        return Extraction(ans or None, "gsm8k", candidates=lines)
    return Extraction(None)


def extract_answer(text: str) -> str | None:
    """The final answer string of a completion, or None (ambiguous boxes also give None)."""
    ex = find_answer(text)
    return None if ex.ambiguous else ex.answer


# ============================================================================================
# Cheap string pre-screen (calling process)
# ============================================================================================

_HUGE_LITERAL = re.compile(
    r"\d{7,}\s*!|\^\s*\{?\s*\d{7,}|\\binom\s*\{?\s*\d{7,}|\d{10000,}"
)


def _too_large_text(s: str, max_chars: int) -> str | None:
    if len(s) > max_chars:
        return f"{len(s)} characters > {max_chars}"
    if _HUGE_LITERAL.search(s):
        return "a factorial, power or binomial of a 7+ digit number, or a 10000+ digit literal"
    return None


# ============================================================================================
# Normalisation (strings)
# ============================================================================================

_UNIT_WORDS = (
    "cm|mm|km|m|meters?|metres?|centimeters?|millimeters?|kilometers?|inch(?:es)?|in|ft|feet|"
    "foot|yards?|yd|miles?|mi|units?|square|sq|cubic|degrees?|deg|radians?|rad|dollars?|"
    "cents?|euros?|pounds?|lbs?|kg|g|grams?|kilograms?|mg|liters?|litres?|l|ml|hours?|hrs?|"
    "h|minutes?|mins?|seconds?|secs?|s|days?|weeks?|months?|years?|mph|kph|km/h|m/s|"
    "percent|points?|people|persons?|students?|apples?|marbles?|ways?|times|items?|pieces?|"
    "pages?|books?|boxes|balls?|cookies?|cups?|tickets?|trees?|eggs?|cars?|pens?|coins?|"
    "boys?|girls?|men|women|children|sheep|cows?|dogs?|cats?|birds?"
)
_TEXT_CMD = r"\\(?:text|textrm|textnormal|mbox|mathrm|textit|mathit|operatorname)"
_TRAILING_UNIT = re.compile(
    r"(?:\s*(?:" + _TEXT_CMD + r"\s*\{[^{}]*\}|(?<=[\d}\s])\s*(?:" + _UNIT_WORDS + r")\b)"
    r"(?:\s*\^\s*\{?\s*[23]\s*\}?)?)+\s*$",
    re.IGNORECASE,
)
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_THOUSANDS_SPACE = re.compile(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?")
_DECIMAL_LITERAL = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][-+]?\d+)")
_SEPARATOR_WORDS = re.compile(r"\s*" + _TEXT_CMD + r"\s*\{\s*(?:or|and|,)\s*\}\s*|\s+(?:or|and)\s+")


def normalize(s: str) -> str:
    """A canonical string form of an answer (used for string equality and before parsing)."""
    s = s.strip()
    s = s.replace("\n", " ").replace("\u2212", "-").replace("\u00b7", "\\cdot ")
    s = re.sub(r"\\(?:displaystyle|textstyle|scriptstyle|limits)", "", s)
    s = re.sub(r"\\left\s*\.|\\right\s*\.", "", s)
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])", "", s)
    s = re.sub(r"(?<!\\)\\[,;:! ]|\\q?quad(?![A-Za-z])|~", " ", s)
    s = re.sub(r"\\\$|\\(?:textdollar|euro|pounds)(?![A-Za-z])|£|€", "", s)
    s = s.replace("$", "")
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\[dt]binom(?![A-Za-z])", r"\\binom", s)
    s = re.sub(r"\\(?:mathbf|textbf|boldsymbol|bm|mathbb)\s*\{([^{}]*)\}", r"\1", s)
    # degrees, percent, currency
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°|\\degree(?![A-Za-z])", "", s)
    s = re.sub(r"\\?%", "", s)
    s = s.replace("{,}", ",") if re.fullmatch(r"-?\d{1,3}(?:\{,\}\d{3})+(?:\.\d+)?", s.strip()) else s
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


# ============================================================================================
# Parsed values (worker)
# ============================================================================================


class Unparseable(Exception):
    pass


class TooLarge(Exception):
    pass


@dataclass
class Scalar:
    expr: Any
    decimal: bool = False  # written as a bare decimal literal (may be an approximation)


@dataclass
class Text:
    text: str


@dataclass
class Many:
    items: list[Any]
    is_set: bool  # \{...\}: duplicates don't count; a bare list is a multiset


@dataclass
class Bracketed:
    left: str  # "(" or "["
    right: str
    items: list[Any]


@dataclass
class IntervalUnion:
    parts: list[Bracketed]


@dataclass
class Equation:
    lhs: Any  # sympy expressions
    rhs: Any
    assigned: Any = None  # the value when the left side is a bare variable (x = 5)


@dataclass
class MatrixValue:
    rows: list[list[Any]]


_sp: Any = None


def _sympy() -> Any:
    global _sp
    if _sp is None:
        import sympy

        _sp = sympy
    return _sp


@functools.lru_cache(maxsize=1)
def _parser() -> tuple[Any, Any, Any]:
    from latex2sympy2_extended import latex2sympy
    from latex2sympy2_extended.latex2sympy2 import ConversionConfig
    from latex2sympy2_extended.math_normalization import NormalizationConfig

    norm = NormalizationConfig(
        basic_latex=True, units=False, malformed_operators=False, nits=False, boxed="none",
        equations=False,
    )
    conv = ConversionConfig(
        interpret_as_mixed_fractions=True, interpret_simple_eq_as_assignment=False,
        interpret_contains_as_eq=False, lowercase_symbols=False,
    )
    return latex2sympy, norm, conv


def _split_top(s: str, seps: tuple[str, ...]) -> list[str]:
    """Split at separators outside (), [], {} (and \\{ \\})."""
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            for sep in seps:
                if s.startswith(sep, i):
                    if sep.startswith("\\") and s[i + len(sep) : i + len(sep) + 1].isalpha():
                        continue
                    parts.append(s[start:i])
                    i += len(sep)
                    start = i
                    break
            else:
                i += 1
                continue
            continue
        i += 1
    parts.append(s[start:])
    return [p.strip() for p in parts]


def _closing(s: str, i: int) -> int:
    """Index of the bracket closing the one at s[i] (any of ( [ closed by ) or ])."""
    depth = 0
    for j in range(i, len(s)):
        c = s[j]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return j
    return -1


_BARE_VAR = re.compile(r"(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?[A-Za-z0-9]+\}?)?(?:\([A-Za-z0-9, ]*\))?'*")
_REL_OPS = ("\\leq", "\\geq", "\\neq", "\\le", "\\ge", "\\ne", "\\lt", "\\gt", "<=", ">=",
            "≤", "≥", "<", ">")
_MATRIX_RE = re.compile(
    r"\\begin\{([pbBvV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.DOTALL
)


def parse_value(s: str, max_digits: int = DEFAULT_MAX_DIGITS) -> Any:
    """Parse a normalised answer string into a comparable value (see the classes above)."""
    s = s.strip()
    if not s:
        raise Unparseable("empty")
    # sets \{...\}
    if s.startswith("\\{") and s.endswith("\\}") and _split_top(s, (",",))[0] == s:
        inner = s[2:-2].strip()
        items = [] if not inner else _split_top(inner, (",", ";"))
        return Many([parse_value(x, max_digits) for x in items], is_set=True)
    m = _MATRIX_RE.fullmatch(s)
    if m:
        rows = [r for r in _split_top(m.group(2), ("\\\\",)) if r.strip()]
        return MatrixValue(
            [[_parse_scalar(x, max_digits) for x in _split_top(r, ("&",))] for r in rows]
        )
    # unions of intervals
    parts = _split_top(s, ("\\cup",))
    if len(parts) > 1:
        vals = [parse_value(p, max_digits) for p in parts]
        out: list[Bracketed] = []
        for v in vals:
            if isinstance(v, IntervalUnion):
                out.extend(v.parts)
            elif isinstance(v, Bracketed) and len(v.items) == 2:
                out.append(v)
            else:
                raise Unparseable("\\cup of something that is not an interval")
        return IntervalUnion(out)
    # lists
    parts = _split_top(s, (",", ";"))
    if len(parts) > 1:
        if any(not p for p in parts):
            raise Unparseable(f"empty list item in {s!r}")
        items = [parse_value(p, max_digits) for p in parts]
        if all(isinstance(v, IntervalUnion) for v in items):  # "x < 1 or x > 2"
            return IntervalUnion([b for v in items for b in v.parts])
        return Many(items, is_set=False)
    # x \in S
    m = re.match(r"^(?:[A-Za-z]|\\[A-Za-z]+)\s*\\in(?![A-Za-z])\s*(.+)$", s)
    if m:
        return parse_value(m.group(1), max_digits)
    # tuples and intervals
    if s[0] in "([" and s[-1] in ")]" and _closing(s, 0) == len(s) - 1:
        inner = s[1:-1]
        items = _split_top(inner, (",",))
        if len(items) > 1:
            return Bracketed(s[0], s[-1], [parse_value(x, max_digits) for x in items])
        if s[0] == "(":
            return parse_value(inner, max_digits)
    if s.startswith("\\langle") and s.endswith("\\rangle"):
        items = _split_top(s[len("\\langle") : -len("\\rangle")], (",",))
        return Bracketed("(", ")", [parse_value(x, max_digits) for x in items])
    # equations
    sides = _split_top(s, ("=",))
    if len(sides) > 1 and not any(op in s for op in _REL_OPS):
        if any(not x for x in sides):
            raise Unparseable(f"empty side of an equation in {s!r}")
        assigned = None
        if _BARE_VAR.fullmatch(sides[0]):
            assigned = parse_value(sides[-1], max_digits)
        try:
            lhs = _expr_of(_parse_scalar(sides[0], max_digits))
            rhs = _expr_of(_parse_scalar(sides[-1], max_digits))
        except Unparseable:
            if assigned is None:
                raise
            lhs = rhs = None  # x = \pm 2, x = (1, 2): only the assigned value is comparable
        return Equation(lhs, rhs, assigned)
    if any(op in s for op in _REL_OPS) or "=" in s:
        return _parse_relation(s, max_digits)
    return _parse_scalar(s, max_digits)


def _expr_of(v: Any) -> Any:
    if not isinstance(v, Scalar):
        raise Unparseable(f"not an expression: {v}")
    return v.expr


def _parse_relation(s: str, max_digits: int) -> IntervalUnion:
    sp = _sympy()
    expr = _latex(s)
    _check_size(expr, max_digits)
    syms = expr.free_symbols
    if len(syms) != 1:
        raise Unparseable(f"an inequality in {len(syms)} variables: {s!r}")
    try:
        st = expr.as_set()
    except Exception as exc:  # noqa: BLE001
        raise Unparseable(f"cannot turn {s!r} into a set: {exc}") from None
    return _set_to_union(st, sp)


def _set_to_union(st: Any, sp: Any) -> IntervalUnion:
    pieces = st.args if isinstance(st, sp.Union) else (st,)
    out = []
    for p in pieces:
        if isinstance(p, sp.Interval):
            out.append(
                Bracketed(
                    "(" if p.left_open else "[", ")" if p.right_open else "]",
                    [Scalar(p.start), Scalar(p.end)],
                )
            )
        elif isinstance(p, sp.FiniteSet) and len(p) == 1:
            v = next(iter(p))
            out.append(Bracketed("[", "]", [Scalar(v), Scalar(v)]))
        else:
            raise Unparseable(f"unsupported set {p}")
    return IntervalUnion(out)


def _latex(s: str) -> Any:
    latex2sympy, norm, conv = _parser()
    try:
        return latex2sympy(s, normalization_config=norm, conversion_config=conv)
    except (RecursionError, MemoryError):
        raise TooLarge("parser recursion/memory") from None
    except Exception as exc:  # noqa: BLE001 - the parser raises plain Exception
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Unparseable(msg[:200]) from None


def _frac_literal(lit: str) -> str:
    mant, _, exp = lit.lower().partition("e")
    whole, _, dec = mant.partition(".")
    num = int((whole or "0") + dec)
    e = (int(exp) if exp else 0) - len(dec)
    if abs(e) > DEFAULT_MAX_DIGITS:
        raise TooLarge(f"exponent {e}")
    if e >= 0:
        return "(" + str(num * 10**e) + ")"
    return "(\\frac{" + str(num) + "}{1" + "0" * (-e) + "})"


def _decimals_to_fractions(s: str) -> str:
    """Decimal literals become the exact fractions they denote: 0.125 -> {\\frac{125}{1000}}.
    Scientific notation (2.5e-3) is read only when it is the whole answer ("2e" alone is 2e)."""
    m = re.fullmatch(r"([-+]?)(\d+(?:\.\d*)?[eE][-+]?\d+)", s)
    if m:
        return m.group(1) + _frac_literal(m.group(2))
    return re.sub(
        r"(?<![\w.])(?:\d+\.\d+|\.\d+|\d+\.(?!\d))", lambda m: _frac_literal(m.group(0)), s
    )


_INT = re.compile(r"[-+]?\d{1,4000}")
_DEC = re.compile(r"[-+]?(?:\d{1,4000}\.\d{0,4000}|\.\d{1,4000})")
_FRAC = re.compile(r"([-+]?)(?:\\frac\{\s*(\d{1,4000})\s*\}\{\s*(\d{1,4000})\s*\}|(\d{1,4000})\s*/\s*(\d{1,4000}))")


def _fast_number(s: str, sp: Any) -> Any:
    """Integers, decimals and integer fractions without the LaTeX parser (most answers)."""
    s = s.replace(" ", "")
    if _INT.fullmatch(s):
        return sp.Integer(int(s))
    if _DEC.fullmatch(s):
        return sp.Rational(s)  # exact: Rational("0.1") == 1/10
    m = _FRAC.fullmatch(s)
    if m:
        num, den = (m.group(2), m.group(3)) if m.group(2) else (m.group(4), m.group(5))
        if int(den) == 0:
            return None  # let the parser report it
        v = sp.Rational(int(num), int(den))
        return -v if m.group(1) == "-" else v
    return None


def _parse_scalar(s: str, max_digits: int) -> Scalar:
    sp = _sympy()
    s = s.strip()
    if not s:
        raise Unparseable("empty")
    decimal = bool(_DECIMAL_LITERAL.fullmatch(s)) and not re.fullmatch(r"[-+]?\d+", s)
    if re.fullmatch(r"[A-Za-z]{2,}(?: [A-Za-z]+)*", s) and s not in ("pi", "oo", "inf"):
        return Text(s.lower())  # type: ignore[return-value]
    if re.fullmatch(r"\(?[A-E]\)", s):
        return Text(s.strip("()").lower())  # type: ignore[return-value]
    fast = _fast_number(s, sp)
    if fast is not None:
        return Scalar(fast, decimal)
    expr = _latex(_decimals_to_fractions(s))
    if isinstance(expr, sp.FiniteSet):  # \pm 2
        _check_size(expr, max_digits)
        return Many([Scalar(_fix_symbols(x, sp)) for x in expr], is_set=False)  # type: ignore[return-value]
    if isinstance(expr, (sp.Interval, sp.Union, sp.MatrixBase, sp.Rel, sp.And, sp.Or)):
        raise Unparseable(f"not a single value: {s!r}")
    expr = _fix_symbols(expr, sp)
    _check_size(expr, max_digits)
    try:
        expr = expr.doit()
    except Exception:  # noqa: BLE001 - keep the unevaluated form
        pass
    return Scalar(expr, decimal)


def _fix_symbols(expr: Any, sp: Any) -> Any:
    if not hasattr(expr, "free_symbols"):
        raise Unparseable(f"not an expression: {expr!r}")
    subs = {}
    for sym in expr.free_symbols:
        if sym.name == "i":
            subs[sym] = sp.I
        elif sym.name == "e":
            subs[sym] = sp.E
        elif sym.name in ("infty", "infinity"):
            subs[sym] = sp.oo
    if subs:
        expr = expr.xreplace(subs)
    floats = expr.atoms(sp.Float)
    if floats:
        expr = expr.xreplace({f: sp.Rational(str(f)) for f in floats})
    return expr


# -- size pre-screen on the expression tree (no evaluation) ----------------------------------


def _log10_int(n: int) -> float:
    n = abs(n)
    if n < 2:
        return 0.0
    if n.bit_length() < 1000:
        return math.log10(n)
    return n.bit_length() * 0.30103


def _digits(expr: Any, sp: Any, depth: int = 0) -> float:
    """An upper bound on log10(|value|) (digits), without evaluating; inf when too big."""
    if depth > 200:
        return math.inf
    if expr.is_Integer:
        return _log10_int(int(expr))
    if expr.is_Rational:
        return max(_log10_int(int(expr.p)), _log10_int(int(expr.q)))
    if expr.is_Number or expr.is_Symbol or expr.is_NumberSymbol or expr is sp.I:
        return 1.0
    args = expr.args
    if isinstance(expr, sp.Pow):
        base, ex = args
        if base in (sp.Integer(0), sp.Integer(1), sp.Integer(-1)):
            return 1.0
        e_digits = _digits(ex, sp, depth + 1)
        if e_digits > 9:
            return math.inf
        e_val = abs(float(ex)) if ex.is_Rational else 10**e_digits
        return max(_digits(base, sp, depth + 1), 0.30103) * max(e_val, 1.0)
    if isinstance(expr, (sp.factorial, sp.factorial2, sp.subfactorial)):
        n = _digits(args[0], sp, depth + 1)
        if n > 9:
            return math.inf
        return 10**n * (n + 1)
    if isinstance(expr, sp.binomial):
        n = _digits(args[0], sp, depth + 1)
        return math.inf if n > 9 else 10**n * 0.30103 + 1
    if isinstance(expr, sp.exp):
        a = _digits(args[0], sp, depth + 1)
        return math.inf if a > 9 else 10**a * 0.4343 + 1
    if not args:
        return 1.0
    sub = [_digits(a, sp, depth + 1) for a in args]
    if isinstance(expr, sp.Mul):
        return sum(sub)
    return max(sub) + 1.0


def _check_size(expr: Any, max_digits: int) -> None:
    sp = _sympy()
    try:
        d = _digits(expr, sp)
    except RecursionError:
        raise TooLarge("expression nested too deeply") from None
    if d > max_digits:
        raise TooLarge(f"about 10^{d:.3g} digits > {max_digits}")


# ============================================================================================
# Comparison (worker)
# ============================================================================================


def _is_zero_number(d: Any, sp: Any, scale: Any, digits: int) -> bool | None:
    """True: |d| is 0 to `digits` digits relative to `scale`; False: clearly nonzero; None: unknown.
    Computed with sympy/mpmath floats (arbitrary exponents: no overflow to inf)."""
    try:
        v = sp.N(d, digits)
        s = abs(sp.N(scale, 15))
        if not v.is_number or v.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
            return None
        if v == 0:
            return True
        av = abs(v)
        if not (av.is_Number and s.is_Number and s.is_finite):
            return None
        s = max(s, sp.Float(1e-300))
        return bool(av <= s * sp.Float(10, 30) ** (-(digits - 10)))
    except Exception:  # noqa: BLE001 - evalf failures: unknown
        return None


def _numbers_equal(x: Any, y: Any, sp: Any) -> bool:
    if x.is_Rational and y.is_Rational:
        return bool(x == y)
    if x.has(sp.oo, -sp.oo, sp.zoo) or y.has(sp.oo, -sp.oo, sp.zoo):
        return bool(sp.simplify(x - y) == 0) if x.is_finite is not False else bool(x == y)
    d = x - y
    scale = sp.Max(abs(x), abs(y), 1) if x.is_real and y.is_real else abs(x) + abs(y) + 1
    quick = _is_zero_number(d, sp, scale, 30)
    if quick is False:
        return False
    try:
        if sp.simplify(d) == 0:
            return True
    except Exception:  # noqa: BLE001
        pass
    return _is_zero_number(d, sp, scale, 100) is True


def _terminating(expr: Any, sp: Any) -> bool:
    """Whether the exact value has a finite decimal expansion (a rational p/q with q = 2^a 5^b)."""
    v = expr
    if not v.is_Rational:
        try:
            v = sp.nsimplify(sp.simplify(v), rational=False)
        except Exception:  # noqa: BLE001
            return False
    if not v.is_Rational:
        return False
    q = int(v.q)
    for p in (2, 5):
        while q % p == 0:
            q //= p
    return q == 1


def _close(x: Any, y: Any, rel_tol: float, sp: Any) -> bool:
    try:
        a = complex(sp.N(x, 30))
        b = complex(sp.N(y, 30))
    except (TypeError, ValueError, OverflowError):
        return False
    return abs(a - b) <= rel_tol * max(abs(a), abs(b))


def _expressions_equal(x: Any, y: Any, sp: Any) -> bool:
    syms = sorted(x.free_symbols | y.free_symbols, key=lambda s: s.name)
    d = x - y
    rng = random.Random(12345)
    points = [{s: sp.Rational(rng.randint(1, 97), rng.randint(1, 13)) for s in syms} for _ in range(4)]
    for pt in points:  # quick reject
        z = _is_zero_number(d.xreplace(pt), sp, abs(x.xreplace(pt)) + abs(y.xreplace(pt)) + 1, 30)
        if z is False:
            return False
    try:
        if sp.expand(d) == 0 or sp.simplify(d) == 0:
            return True
    except Exception:  # noqa: BLE001
        pass
    for pt in points:
        z = _is_zero_number(d.xreplace(pt), sp, abs(x.xreplace(pt)) + abs(y.xreplace(pt)) + 1, 50)
        if z is not True:
            return False
    return True


def _scalars_equal(g: Scalar, a: Scalar, rel_tol: float) -> bool:
    sp = _sympy()
    x, y = g.expr, a.expr
    if x == y:
        return True
    if x.free_symbols or y.free_symbols:
        return _expressions_equal(x, y, sp)
    if _numbers_equal(x, y, sp):
        return True
    if g.decimal != a.decimal:  # a decimal approximation of a non-terminating exact value
        exact = a.expr if g.decimal else g.expr
        if not _terminating(exact, sp):
            return _close(x, y, rel_tol, sp)
    return False


def _same_var(g: Equation, a: Equation) -> bool:
    return g.lhs is None or a.lhs is None or bool(g.lhs == a.lhs)


def _equations_equal(g: Equation, a: Equation) -> bool:
    sp = _sympy()
    if g.lhs is None or a.lhs is None:
        return False
    e1 = g.lhs - g.rhs
    e2 = a.lhs - a.rhs
    if e1.free_symbols != e2.free_symbols:
        return False
    if e1 == 0 or e2 == 0:
        return bool(sp.simplify(e1) == 0 and sp.simplify(e2) == 0)
    try:
        ratio = sp.simplify(sp.cancel(e1 / e2))
    except Exception:  # noqa: BLE001
        return False
    return not ratio.free_symbols and ratio != 0 and bool(ratio.is_finite)


def _match_all(gs: list[Any], as_: list[Any], rel_tol: float) -> bool:
    """A one-to-one matching of gs onto as_ (greedy is enough: equality is transitive)."""
    if len(gs) != len(as_):
        return False
    left = list(as_)
    for g in gs:
        for j, a in enumerate(left):
            if equivalent(g, a, rel_tol):
                del left[j]
                break
        else:
            return False
    return True


def _dedupe(items: list[Any], rel_tol: float) -> list[Any]:
    out: list[Any] = []
    for it in items:
        if not any(equivalent(o, it, rel_tol) for o in out):
            out.append(it)
    return out


def equivalent(g: Any, a: Any, rel_tol: float = DEFAULT_REL_TOL) -> bool:
    """Whether parsed answer `a` equals parsed gold `g` (the rules of the module docstring)."""
    if isinstance(g, Equation) and isinstance(a, Equation):
        if g.assigned is not None and a.assigned is not None and _same_var(g, a):
            return equivalent(g.assigned, a.assigned, rel_tol)
        return _equations_equal(g, a)
    if isinstance(a, Equation):
        return a.assigned is not None and equivalent(g, a.assigned, rel_tol)
    if isinstance(g, Equation):
        return g.assigned is not None and equivalent(g.assigned, a, rel_tol)
    if isinstance(g, Text) or isinstance(a, Text):
        return isinstance(g, Text) and isinstance(a, Text) and g.text == a.text
    if isinstance(g, Scalar) and isinstance(a, Scalar):
        return _scalars_equal(g, a, rel_tol)
    if isinstance(g, Many) and isinstance(a, Many):
        gi, ai = g.items, a.items
        if g.is_set or a.is_set:
            gi, ai = _dedupe(gi, rel_tol), _dedupe(ai, rel_tol)
        return _match_all(gi, ai, rel_tol)
    if isinstance(g, Many) and len(g.items) == 1:
        return equivalent(g.items[0], a, rel_tol)
    if isinstance(a, Many) and len(a.items) == 1:
        return equivalent(g, a.items[0], rel_tol)
    if isinstance(g, Bracketed) and isinstance(a, Bracketed):
        return (
            g.left == a.left and g.right == a.right and len(g.items) == len(a.items)
            and all(equivalent(x, y, rel_tol) for x, y in zip(g.items, a.items))
        )
    if isinstance(g, (IntervalUnion, Bracketed)) and isinstance(a, (IntervalUnion, Bracketed)):
        gp = g.parts if isinstance(g, IntervalUnion) else [g]
        ap = a.parts if isinstance(a, IntervalUnion) else [a]
        return _match_all(gp, ap, rel_tol)
    if isinstance(g, MatrixValue) and isinstance(a, MatrixValue):
        return (
            len(g.rows) == len(a.rows)
            and all(len(r) == len(s) for r, s in zip(g.rows, a.rows))
            and all(equivalent(x, y, rel_tol) for r, s in zip(g.rows, a.rows) for x, y in zip(r, s))
        )
    return False


# ============================================================================================
# The per-record check (runs in a worker; also callable in-process)
# ============================================================================================


def _try_parse(normalized: str, max_digits: int) -> tuple[str, Any]:
    """("ok", value), or ("too large" | "unparseable", why) for a normalized answer."""
    try:
        return "ok", parse_value(normalized, max_digits)
    except TooLarge as exc:
        return "too large", str(exc)
    except Unparseable as exc:
        return "unparseable", str(exc)[:200]
    except RecursionError:
        return "too large", "nested too deeply"
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser/sympy failure: can't read it
        return "unparseable", f"{type(exc).__name__}: {exc}"[:200]


# Two caches per worker over the same parser: a gold answer repeats across a GRPO group's G
# records, and so do the group's answers; separate caches keep the golds from being evicted by
# a flood of distinct answers.
_parse_gold = functools.lru_cache(maxsize=4096)(_try_parse)
_parse_answer = functools.lru_cache(maxsize=4096)(_try_parse)


def _describe(v: Any) -> str:
    try:
        return str(v)[:200]
    except ValueError:  # an integer too long for str() (Python's 4300-digit guard)
        return f"<{type(v).__name__} too long to print>"


def check_answer(
    gold: str, answer: str, rel_tol: float = DEFAULT_REL_TOL, max_digits: int = DEFAULT_MAX_DIGITS
) -> tuple[bool | None, str, dict[str, Any]]:
    """Compare an extracted answer with the gold answer, in this process (no time limit).
    Returns (correct, reason, detail)."""
    g_norm, a_norm = normalize(gold), normalize(answer)
    detail: dict[str, Any] = {"answer": answer}
    if g_norm and g_norm == a_norm:
        return True, "ok", detail
    status, g = _parse_gold(g_norm, max_digits)
    if status != "ok":
        detail["error"] = f"gold: {g}"
        return None, "unparseable gold", detail
    status, a = _parse_answer(a_norm, max_digits)
    if status == "too large":
        detail["error"] = a
        return False, "too large", detail
    if status != "ok":
        detail["error"] = a
        return False, "unparseable answer", detail
    try:
        ok = equivalent(g, a, rel_tol)
    except TooLarge as exc:
        detail["error"] = str(exc)
        return False, "too large", detail
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a sympy failure is a wrong answer, with the cause
        detail["error"] = f"{type(exc).__name__}: {exc}"[:200]
        return False, "wrong", detail
    detail["parsed"] = _describe(a)
    return (True, "ok", detail) if ok else (False, "wrong", detail)


def _worker_check(gold: str, answer: str, rel_tol: float, max_digits: int) -> tuple[Any, ...]:
    return check_answer(gold, answer, rel_tol, max_digits)


# ============================================================================================
# The verifier
# ============================================================================================


def _verdict(correct: bool | None, reason: str, detail: dict[str, Any] | None = None) -> Verdict:
    return Verdict(1.0 if correct else 0.0, correct, reason, detail or {})


class MathVerifier:
    """Scores ``{"completion": str, "answer": str}`` records (see the module docstring).

    workers:   worker processes (default os.cpu_count()); started on the first `score`.
    timeout:   seconds per record, enforced by killing the worker (None: 5 s).
    memory_mb: address space (RLIMIT_AS) a worker may add to what it maps at start, MiB.
    rel_tol:   relative tolerance for a decimal approximation of a non-terminating value.
    """

    name = "math"

    def __init__(
        self,
        workers: int | None = None,
        timeout: float | None = None,
        memory_mb: int | None = DEFAULT_MEMORY_MB,
        rel_tol: float = DEFAULT_REL_TOL,
        max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS,
        max_digits: int = DEFAULT_MAX_DIGITS,
        start_method: str | None = None,
    ) -> None:
        self.workers = workers
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        self.memory_mb = memory_mb
        self.rel_tol = rel_tol
        self.max_answer_chars = max_answer_chars
        self.max_digits = max_digits
        self.start_method = start_method
        self._pool: WorkerPool | None = None
        self._lock = threading.Lock()

    @property
    def pool(self) -> WorkerPool:
        with self._lock:
            if self._pool is None:
                self._pool = WorkerPool(
                    self.workers, self.timeout, self.memory_mb,
                    start_method=self.start_method, preload=_PRELOAD,
                )
            return self._pool

    def _prepare(self, rec: dict[str, Any]) -> Verdict | tuple[Any, ...]:
        if not isinstance(rec, dict):
            return _verdict(None, "unparseable gold", {"error": "record is not a dict"})
        gold = rec.get("answer")
        if gold is None or (isinstance(gold, str) and not gold.strip()):
            return _verdict(None, "unparseable gold", {"error": "missing field 'answer'"})
        gold = str(gold)
        if "\\boxed" in gold or "\\fbox" in gold:  # a full reference solution (MATH style)
            boxed = find_answer(gold)
            if boxed.source == "boxed" and boxed.answer and not boxed.ambiguous:
                gold = boxed.answer
        if _too_large_text(gold, self.max_answer_chars * 10):
            return _verdict(None, "unparseable gold", {"error": "gold answer too large"})
        ex = find_answer(rec.get("completion") or "")
        if ex.answer is None:
            return _verdict(False, "no answer", {"source": ex.source})
        detail = {"answer": ex.answer[:200], "source": ex.source}
        if ex.ambiguous:
            detail["candidates"] = [c[:200] for c in ex.candidates[:10]]
            return _verdict(False, "ambiguous", detail)
        why = _too_large_text(ex.answer, self.max_answer_chars)
        if why:
            return _verdict(False, "too large", {**detail, "error": why})
        return (gold, ex.answer, self.rel_tol, self.max_digits)

    def _finish(self, res: TaskResult, task: tuple[Any, ...]) -> Verdict:
        base = {"answer": str(task[1])[:200]}
        if res.status == "ok":
            correct, reason, detail = res.value
            return _verdict(correct, reason, detail)
        if res.status == "timeout":
            return _verdict(False, "timeout", {**base, "error": res.error})
        if res.status == "error" and res.error == "MemoryError":
            return _verdict(False, "too large", {**base, "error": "memory limit"})
        if res.status == "error":
            return _verdict(False, "wrong", {**base, "error": res.error})
        return _verdict(False, "worker crashed", {**base, "error": res.error})

    def score(self, records: Iterable[dict[str, Any]]) -> Iterator[Verdict]:
        """One Verdict per record, in input order, streamed."""
        preps: deque[Verdict | tuple[Any, ...]] = deque()

        def tasks() -> Iterator[tuple[Any, ...]]:
            for rec in records:
                p = self._prepare(rec)
                preps.append(p)
                if not isinstance(p, Verdict):
                    yield p

        gen = tasks()
        first = next(gen, None)  # don't start workers for a batch with nothing to check
        if first is None:
            yield from preps  # type: ignore[misc]
            return

        def all_tasks() -> Iterator[tuple[Any, ...]]:
            yield first
            yield from gen

        results = self.pool.imap(_worker_check, all_tasks())
        while True:
            while preps and isinstance(preps[0], Verdict):
                yield preps.popleft()
            res = next(results, None)
            if res is None:
                break
            task = preps.popleft()
            assert not isinstance(task, Verdict)
            yield self._finish(res, task)
        while preps:
            p = preps.popleft()
            assert isinstance(p, Verdict)
            yield p

    def score_one(self, completion: str, answer: str) -> Verdict:
        return next(self.score([{"completion": completion, "answer": answer}]))

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verify_math(completion: str, answer: str, **opts: Any) -> Verdict:
    """Score one completion (starts a one-worker pool; use MathVerifier for batches)."""
    opts.setdefault("workers", 1)
    with MathVerifier(**opts) as v:
        return v.score_one(completion, answer)
