"""Parsing a normalised answer into a comparable value (numbers, lists, sets, tuples,
intervals, equations, inequalities, matrices, text), with a size bound on the unevaluated tree
and a cheap string pre-screen for the calling process. Runs in the worker (sympy is imported
on first use)."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_DIGITS = 100_000

# Runs in the calling process, so it must be linear: a digit run is only tried from its first
# digit (``(?<!\d)``), and ``\s*(?:\{\s*)?`` reads what ``\s*\{?\s*`` did without the
# quadratic ways to split a run of spaces between two ``\s*``.
_HUGE_LITERAL = re.compile(
    r"(?<!\d)\d{7,}\s*!|\^\s*(?:\{\s*)?\d{7,}|\\binom\s*(?:\{\s*)?\d{7,}|(?<!\d)\d{10000,}"
    r"|(?<![⁰¹²³⁴⁵⁶⁷⁸⁹])[⁰¹²³⁴⁵⁶⁷⁸⁹]{7,}"  # 9⁹⁹⁹⁹⁹⁹⁹: a power written in superscripts
)


def too_large_text(s: str, max_chars: int) -> str | None:
    if len(s) > max_chars:
        return f"{len(s)} characters > {max_chars}"
    if _HUGE_LITERAL.search(s):
        return "a factorial, power or binomial of a 7+ digit number, or a 10000+ digit literal"
    return None



class Unparseable(Exception):
    pass


class TooLarge(Exception):
    pass


class Undefined(Exception):
    """A value with no meaning (division by zero, 0/0, oo - oo): it equals nothing."""


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
    assigned: Any = None  # the value when the left side is a name or a label (x = 5, AB = 4)


@dataclass
class MatrixValue:
    rows: list[list[Any]]


@dataclass
class Time:
    """A clock reading h:mm or h:mm:ss. Equal to the same reading; against anything that is not
    a time, h:mm is read as the ratio h/mm (so 9:16 still equals 9/16)."""

    hours: int
    minutes: int
    seconds: int | None = None

    def ratio(self) -> Scalar | None:
        """h/mm as a number (None for h:mm:ss, or when mm is 0: undefined)."""
        if self.seconds is not None or self.minutes == 0:
            return None
        return Scalar(_sympy().Rational(self.hours, self.minutes))


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
                    # a command (\cup, \le) is not the start of a longer one (\left); a row
                    # break \\ may be followed by a letter (x\\y)
                    if sep[-1].isalpha() and s[i + len(sep) : i + len(sep) + 1].isalpha():
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


_BARE_VAR_RE = r"(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?[A-Za-z0-9]+\}?)?(?:\([A-Za-z0-9, ]*\))?'*"
_BARE_VAR = re.compile(_BARE_VAR_RE)
_NAME_TUPLE = re.compile(rf"\(\s*{_BARE_VAR_RE}(?:\s*,\s*{_BARE_VAR_RE})+\s*\)")
_GREEK = (
    "alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa|lambda|mu|nu|"
    "xi|rho|sigma|tau|upsilon|phi|varphi|chi|psi|omega|Gamma|Delta|Theta|Lambda|Xi|Sigma|Phi|"
    "Psi|Omega"
)
# A label: a left side made only of names (AB, |AB|, V_1:V_2, \frac{NO}{BO}, m\angle ABC,
# S_{MBCN}:S, f(2)): no numbers outside subscripts and arguments, no + - ^ or other operators.
_LABEL = re.compile(
    r"(?:[A-Za-z\s{}|':/]|_\{[^{}]*\}|_[A-Za-z0-9]|\([A-Za-z0-9, ]*\)|\\[lr]?[vV]ert(?![A-Za-z])"
    r"|\\(?:" + _GREEK + r"|angle|measuredangle|triangle|overline|overrightarrow|vec|bar|hat|"
    r"widehat|tilde|frac)(?![A-Za-z]))+"
)
_REL_OPS = ("\\leq", "\\geq", "\\neq", "\\le", "\\ge", "\\ne", "\\lt", "\\gt", "<=", ">=",
            "≤", "≥", "<", ">")
# One matrix environment (its body holds no other \\begin/\\end: "A + B" is arithmetic, which
# the LaTeX parser evaluates).
_MATRIX_RE = re.compile(
    r"\\begin\{([pbBvV]?matrix|array)\}(?:\{[^{}]*\})?((?:(?!\\(?:begin|end)\{).)*)\\end\{\1\}",
    re.DOTALL,
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
        groups = _assignment_groups(s, max_digits)
        if groups is not None:
            return groups
        items = [parse_value(p, max_digits) for p in parts]
        if all(isinstance(v, IntervalUnion) for v in items):  # "x < 1 or x > 2"
            return IntervalUnion([b for v in items for b in v.parts])
        return Many(items, is_set=False)
    # x \in S
    m = re.match(r"^(?:[A-Za-z]|\\[A-Za-z]+)\s*\\in(?![A-Za-z])\s*(.+)$", s)
    if m:
        return parse_value(m.group(1), max_digits)
    # tuples and intervals: (1, 2), [1, 2), (0;-2;6); a bracketed matrix is the matrix
    if s[0] in "([" and s[-1] in ")]" and _closing(s, 0) == len(s) - 1:
        inner = s[1:-1]
        items = _split_top(inner, (",",))
        if len(items) == 1:
            items = _split_top(inner, (";",))
        if len(items) > 1:
            return Bracketed(s[0], s[-1], [parse_value(x, max_digits) for x in items])
        if s[0] == "(" or _MATRIX_RE.fullmatch(inner.strip()):
            return parse_value(inner, max_digits)
    if s.startswith("\\langle") and s.endswith("\\rangle"):
        items = _split_top(s[len("\\langle") : -len("\\rangle")], (",",))
        return Bracketed("(", ")", [parse_value(x, max_digits) for x in items])
    # x \approx 0.3333333: the value of the name, a decimal (an approximation) if written as one
    near = _split_top(s, ("\\approx",))
    if len(near) == 2 and _BARE_VAR.fullmatch(near[0]) and near[1]:
        return parse_value(near[1], max_digits)
    # equations (only "=" and relations outside brackets count: \sum_{k=0} is not one)
    sides = _split_top(s, ("=",))
    relation = any(op in s for op in _REL_OPS) and len(_split_top(s, _REL_OPS)) > 1
    if len(sides) > 1 and not relation:
        if any(not x for x in sides):
            raise Unparseable(f"empty side of an equation in {s!r}")
        assigned = None
        if _BARE_VAR.fullmatch(sides[0]) or _NAME_TUPLE.fullmatch(sides[0]):
            assigned = parse_value(sides[-1], max_digits)  # x = 5, (p, q) = (3, 2), y = 2x + 1
        elif _LABEL.fullmatch(sides[0]) and re.search("[A-Za-z]", sides[0]):
            value = parse_value(sides[-1], max_digits)  # AB = 4, V_1:V_2 = 11:21
            if _constant(value):
                assigned = value
        try:
            lhs = _expr_of(_parse_scalar(sides[0], max_digits, words=False))
            rhs = _expr_of(_parse_scalar(sides[-1], max_digits, words=False))
        except Unparseable:
            if assigned is None:
                raise
            lhs = rhs = None  # x = \pm 2, x = (1, 2): only the assigned value is comparable
        return Equation(lhs, rhs, assigned)
    if relation:
        return _parse_relation(s, max_digits)
    return _parse_scalar(s, max_digits)


def _assignment_groups(s: str, max_digits: int) -> Many | None:
    """"a=3,b=2; a=5,b=2": groups of assignments separated by ";" are the tuples (3, 2), (5, 2)
    (None when s is not made of such groups)."""
    groups = _split_top(s, (";",))
    if len(groups) < 2 or any(len(_split_top(g, (",",))) < 2 for g in groups):
        return None
    tuples = []
    for g in groups:
        items = [parse_value(x, max_digits) for x in _split_top(g, (",",))]
        if not all(isinstance(v, Equation) and v.assigned is not None for v in items):
            return None
        tuples.append(Bracketed("(", ")", [v.assigned for v in items]))
    return Many(tuples, is_set=False)


def _constant(v: Any) -> bool:
    """Whether a parsed value is a value (no variables anywhere), not an expression."""
    if isinstance(v, Scalar):
        return not v.expr.free_symbols
    if isinstance(v, Time):
        return True
    if isinstance(v, (Many, Bracketed)):
        return all(_constant(x) for x in v.items)
    if isinstance(v, IntervalUnion):
        return all(_constant(x) for x in v.parts)
    if isinstance(v, MatrixValue):
        return all(_constant(x) for row in v.rows for x in row)
    return False


def _expr_of(v: Any) -> Any:
    if not isinstance(v, Scalar):
        raise Unparseable(f"not an expression: {v}")
    return v.expr


def _parse_relation(s: str, max_digits: int) -> IntervalUnion:
    sp = _sympy()
    expr = _latex(s)
    _check_size(expr, max_digits)
    from sympy.core.function import AppliedUndef

    funcs = expr.atoms(AppliedUndef)
    if len(funcs) == 1:  # 0 < f(x) < 1: the set of values of f(x)
        expr = expr.xreplace({funcs.pop(): sp.Symbol("_value")})
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


_DECIMAL_LITERAL = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+(?:\.\d*)?[eE][-+]?\d+)")
_TIME = re.compile(r"(\d{1,2})\s*:\s*([0-5]\d)(?:\s*:\s*([0-5]\d))?")
_INT = re.compile(r"[-+]?\d{1,4000}")
_DEC = re.compile(r"[-+]?(?:\d{1,4000}\.\d{0,4000}|\.\d{1,4000})")
_FRAC = re.compile(
    r"([-+]?)(?:\\frac\{\s*(\d{1,4000})\s*\}\{\s*(\d{1,4000})\s*\}|(\d{1,4000})\s*/\s*(\d{1,4000}))"
)


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


def _parse_scalar(s: str, max_digits: int, words: bool = True) -> Scalar:
    """One value. words: a run of letters is a word ("odd"), else a product of names (the
    sides of an equation: PQ = x + 1)."""
    sp = _sympy()
    s = s.strip()
    if not s:
        raise Unparseable("empty")
    decimal = bool(_DECIMAL_LITERAL.fullmatch(s)) and not re.fullmatch(r"[-+]?\d+", s)
    if words and re.fullmatch(r"[A-Za-z]{2,}(?: [A-Za-z]+)*", s) and s not in ("pi", "oo", "inf"):
        return Text(s.lower())  # type: ignore[return-value]
    if re.fullmatch(r"\(?[A-E]\)", s):
        return Text(s.strip("()").lower())  # type: ignore[return-value]
    m = _TIME.fullmatch(s)
    if m and int(m.group(1)) <= 24:
        sec = None if m.group(3) is None else int(m.group(3))
        return Time(int(m.group(1)), int(m.group(2)), sec)  # type: ignore[return-value]
    fast = _fast_number(s, sp)
    if fast is not None:
        return Scalar(fast, decimal)
    expr = _latex(_decimals_to_fractions(s))
    if isinstance(expr, sp.FiniteSet):  # \pm 2
        _check_size(expr, max_digits)
        items = [_fix_symbols(x, sp) for x in expr]
        for x in items:
            _defined(x, s, sp)
        return Many([Scalar(x) for x in items], is_set=False)  # type: ignore[return-value]
    if isinstance(expr, (sp.MatrixBase, sp.MatrixExpr)):  # matrix arithmetic: A + B, A B
        return _matrix_value(expr, s, max_digits, sp)  # type: ignore[return-value]
    if isinstance(expr, (sp.Interval, sp.Union, sp.Rel, sp.And, sp.Or)):
        raise Unparseable(f"not a single value: {s!r}")
    expr = _fix_symbols(expr, sp)
    if expr.has(sp.Sum, sp.Product):
        expr = _index_bound_subscripts(expr, sp)
    _check_size(expr, max_digits)
    try:
        expr = expr.doit()
    except Exception:  # noqa: BLE001 - keep the unevaluated form
        pass
    _defined(expr, s, sp)
    return Scalar(expr, decimal)


_SUBSCRIPTED = re.compile(r"([A-Za-z]+|\\[A-Za-z]+)_(?:\{(.+)\}|(.+))")


def _index_bound_subscripts(expr: Any, sp: Any) -> Any:
    """In a sum or product, a name whose subscript uses the bound variable is a term of a
    sequence: F_{n-k-1} under \\sum_{k} becomes F[n - k - 1] (without this the parser reads it
    as a constant name, and sum_k F_k F_{n-k-1} would equal n F_k F_{n-k-1})."""
    bound = {lim[0].name for node in expr.atoms(sp.Sum, sp.Product) for lim in node.limits}
    repl = {}
    for sym in expr.free_symbols:
        m = _SUBSCRIPTED.fullmatch(sym.name)
        if m is None:
            continue
        sub = m.group(2) or m.group(3)
        if any(re.search(rf"(?<![A-Za-z\\]){re.escape(b)}(?![A-Za-z])", sub) for b in bound):
            repl[sym] = sp.IndexedBase(m.group(1))[_latex(sub)]
    if repl:
        expr = expr.xreplace(repl)

    def rename(node: Any) -> Any:  # bound names don't matter: sum_i a_i = sum_j a_j
        height = sum(1 for x in sp.preorder_traversal(node.function) if isinstance(x, kinds))
        subs = {lim[0]: sp.Symbol(f"_bound{height}_{j}") for j, lim in enumerate(node.limits)}
        return node.xreplace(subs)

    kinds = (sp.Sum, sp.Product)
    return expr.replace(lambda x: isinstance(x, kinds), rename)


def _matrix_value(expr: Any, s: str, max_digits: int, sp: Any) -> MatrixValue:
    _check_size(expr, max_digits)
    m = expr.doit()
    if not isinstance(m, sp.MatrixBase):
        raise Unparseable(f"a matrix expression that is not a matrix: {s[:100]!r}")
    rows = []
    for i in range(m.rows):
        row = []
        for j in range(m.cols):
            x = _fix_symbols(m[i, j], sp)
            _defined(x, s, sp)
            row.append(Scalar(x))
        rows.append(row)
    return MatrixValue(rows)


def _defined(expr: Any, s: str, sp: Any) -> None:
    if expr.has(sp.zoo, sp.nan):
        raise Undefined(f"{s[:100]!r} is undefined (a division by zero or an indeterminate form)")


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

