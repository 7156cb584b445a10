"""Whether a parsed answer equals a parsed gold answer: exact numbers, one stated tolerance for
decimal approximations of non-terminating values, symbolic proof with numeric rejection for
expressions, structure-aware rules for lists, sets, tuples, intervals, equations and matrices.
Runs in the worker."""

from __future__ import annotations

import random
from typing import Any

from reasoner.verifiers.math.values import (
    Bracketed,
    Equation,
    IntervalUnion,
    Many,
    MatrixValue,
    Scalar,
    Text,
    Time,
    _sympy,
)

DEFAULT_REL_TOL = 1e-6


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
    points = [
        {s: sp.Rational(rng.randint(1, 97), rng.randint(1, 13)) for s in syms} for _ in range(4)
    ]
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
    if isinstance(g, Time) and isinstance(a, Time):
        return (g.hours, g.minutes, g.seconds) == (a.hours, a.minutes, a.seconds)
    if isinstance(g, Time) or isinstance(a, Time):  # 9:16 against 9/16: the ratio
        gr = g.ratio() if isinstance(g, Time) else g
        ar = a.ratio() if isinstance(a, Time) else a
        return gr is not None and ar is not None and equivalent(gr, ar, rel_tol)
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

