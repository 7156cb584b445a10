"""Values as the parent sees them: what the sandbox serialized, decoded without ever hashing it.

The sandbox reports each value by content (see ``channel``). Decoding it into Python sets or dict
keys would hash untrusted data in the trusted process: ~118k int-subclass values whose hashes differ
in the sandbox all collide once decoded as plain ints, and building that set holds the GIL for
minutes. So sets, frozensets and dicts are decoded into ``SetValue`` / ``DictValue``, which keep
their elements in the sandbox's order plus a sorted list of *canonical keys* (tuples that compare
equal exactly when Python's ``==`` says the plain values are equal, with a total order). Equality,
membership and deduplication compare those keys; nothing is hashed, and the work is
O(n log n) comparisons for n <= ``channel.MAX_ELEMENTS`` elements.

The rules (``values_equal``): Python ``==`` on the plain values (``1 == 1.0 == True``,
``[1] != (1,)``, a ``Counter`` equals the dict with the same items), except that two floats (or
the parts of complex numbers, when both sides are float-valued) are equal when
``|a - b| <= max(1e-9 * max(|a|, |b|), 1e-12)``, and NaN equals NaN. A comparison with an int is
exact: ``1e9 == 1000000001`` is false, as in Python. Set elements and dict keys compare exactly.

The operators a test line may apply to values in the parent (``compare``, ``binop``, ``unop``,
``truthy``, ``builtin_call``, ``subscript``) follow Python's semantics on these plain values, with
bounds on the size of what they build.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from typing import Any

FLOAT_REL_TOL = 1e-9
FLOAT_ABS_TOL = 1e-12
MAX_INT_BITS = 1_000_000  # largest int arithmetic in the parent may build
MAX_LENGTH = 1_000_000  # longest str / list / range the parent may build


class SetValue:
    """A decoded set or frozenset: `items` in the sandbox's order (duplicates removed), `keys` the
    sorted canonical keys used to compare it."""

    __slots__ = ("items", "keys", "frozen")

    def __init__(self, items: Iterable[Any], frozen: bool = False) -> None:
        self.items, self.keys = _dedupe(list(items))
        self.frozen = frozen

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __eq__(self, other: object) -> bool:
        return values_equal(self, other, tolerant=False)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{'frozenset' if self.frozen else 'set'}({self.items!r})"


class DictValue:
    """A decoded dict: (key, value) pairs in insertion order; a repeated key keeps its first
    position and its last value, as ``dict(pairs)`` would. `keys` are the sorted canonical keys and
    `by_key` the values in that order."""

    __slots__ = ("pairs", "keys", "by_key")

    def __init__(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        pairs = list(pairs)
        ks = [canonical_key(k) for k, _ in pairs]
        order = sorted(range(len(pairs)), key=ks.__getitem__)
        first: dict[int, int] = {}  # index of a pair -> index of the pair whose value wins
        keys: list[tuple] = []
        by_key: list[Any] = []
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and ks[order[j + 1]] == ks[order[i]]:
                j += 1
            group = sorted(order[i : j + 1])
            first[group[0]] = group[-1]
            keys.append(ks[order[i]])
            by_key.append(pairs[group[-1]][1])
            i = j + 1
        self.pairs = [(pairs[i][0], pairs[first[i]][1]) for i in range(len(pairs)) if i in first]
        self.keys = keys
        self.by_key = by_key

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[Any]:
        return (k for k, _ in self.pairs)

    def get(self, key: Any) -> Any:
        """The value under `key`, found by binary search on the canonical keys; KeyError."""
        k = canonical_key(key)
        lo, hi = 0, len(self.keys)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.keys[mid] < k:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self.keys) and self.keys[lo] == k:
            return self.by_key[lo]
        raise KeyError(key)

    def __eq__(self, other: object) -> bool:
        return values_equal(self, other, tolerant=False)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"dict({self.pairs!r})"


class IterValue:
    """A drained iterator (generator, map, zip, ...), a dict view or a range: its items in order.
    `kind` is "iter", "keys", "values", "items" or "range"; only views and ranges have a length,
    and only key/item views compare equal to sets (as in Python)."""

    __slots__ = ("items", "kind")

    def __init__(self, items: list[Any], kind: str = "iter") -> None:
        self.items = items
        self.kind = kind

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __eq__(self, other: object) -> bool:
        return values_equal(self, other, tolerant=False)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{self.kind} {self.items!r}>"


# ---------------------------------------------------------------------------------------------
# Canonical keys: equal exactly when the plain values are ==, totally ordered, never hashed


def _num_key(x: Any) -> tuple:
    if isinstance(x, complex):
        if x.imag == 0:
            return _num_key(x.real)
        return (3, _num_key(x.real), _num_key(x.imag))
    if isinstance(x, float):
        if x != x:
            return (2,)
        if math.isinf(x) or x.is_integer():
            return (1, x if math.isinf(x) else int(x))
        return (1, Fraction(x))
    return (1, int(x))


def canonical_key(v: Any) -> tuple:
    """The key of a hashable value (set element, dict key). TypeError for unhashable ones."""
    if v is None:
        return (0,)
    if isinstance(v, (bool, int, float, complex)):
        return _num_key(v)
    if isinstance(v, str):
        return (4, v)
    if isinstance(v, bytes):
        return (5, v)
    if isinstance(v, tuple):
        return (6, tuple(canonical_key(x) for x in v))
    if isinstance(v, SetValue) and v.frozen:
        return (7, tuple(v.keys))
    if isinstance(v, frozenset):
        return (7, tuple(SetValue(v, frozen=True).keys))
    raise TypeError(f"unhashable type: {_type_name(v)!r}")


def _dedupe(items: list[Any]) -> tuple[list[Any], list[tuple]]:
    """(items without repeats, first occurrence kept, in order; their sorted canonical keys)."""
    ks = [canonical_key(x) for x in items]
    order = sorted(range(len(items)), key=ks.__getitem__)
    keep = []
    keys = []
    for n, i in enumerate(order):
        if n == 0 or ks[i] != ks[order[n - 1]]:
            keys.append(ks[i])
            keep.append(i)
        elif i < keep[-1]:  # the same key seen earlier in the sandbox's order
            keep[-1] = i
    keep.sort()
    return [items[i] for i in keep], keys


def canonical(v: Any) -> Any:
    """A trusted plain value (an expected literal) in the parent's representation: set, frozenset
    and dict become SetValue / DictValue, recursively."""
    if isinstance(v, (set, frozenset)):
        return SetValue([canonical(x) for x in v], frozen=isinstance(v, frozenset))
    if isinstance(v, dict):
        return DictValue((canonical(k), canonical(x)) for k, x in v.items())
    if type(v) is list:
        return [canonical(x) for x in v]
    if type(v) is tuple:
        return tuple(canonical(x) for x in v)
    return v


# ---------------------------------------------------------------------------------------------
# Equality


def floats_close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= max(FLOAT_REL_TOL * max(abs(a), abs(b)), FLOAT_ABS_TOL)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float, complex))


def _set_keys(v: Any) -> list[tuple] | None:
    """Sorted canonical keys of a set-like value (set, or a dict's keys / items view)."""
    if isinstance(v, SetValue):
        return v.keys
    if isinstance(v, IterValue) and v.kind in ("keys", "items"):
        try:
            return SetValue(v.items).keys
        except TypeError:
            return None
    return None


def values_equal(got: Any, exp: Any, tolerant: bool = True) -> bool:
    """Python `==` on plain values, with the float tolerance above (`tolerant=False`: exact)."""
    if isinstance(got, (set, frozenset, dict)) or isinstance(exp, (set, frozenset, dict)):
        got, exp = canonical(got), canonical(exp)
    if _is_num(got) and _is_num(exp):
        floats = isinstance(got, (float, complex)) and isinstance(exp, (float, complex))
        if tolerant and floats:
            g, e = complex(got), complex(exp)
            return floats_close(g.real, e.real) and floats_close(g.imag, e.imag)
        return bool(got == exp)  # an int on either side: exact, as Python compares int and float
    if type(got) in (list, tuple) and type(exp) is type(got):
        return len(got) == len(exp) and all(values_equal(g, e, tolerant) for g, e in zip(got, exp))
    if isinstance(got, DictValue) and isinstance(exp, DictValue):
        return got.keys == exp.keys and all(
            values_equal(g, e, tolerant) for g, e in zip(got.by_key, exp.by_key)
        )
    gk, ek = _set_keys(got), _set_keys(exp)
    if gk is not None and ek is not None:
        return gk == ek
    if isinstance(got, IterValue) or isinstance(exp, IterValue):
        if isinstance(got, IterValue) and isinstance(exp, IterValue):
            return got.kind == exp.kind == "range" and got.items == exp.items
        return False
    if isinstance(got, (SetValue, DictValue)) or isinstance(exp, (SetValue, DictValue)):
        return False
    if type(got) in (list, tuple) or type(exp) in (list, tuple):
        return False
    return bool(got == exp)


# ---------------------------------------------------------------------------------------------
# Truthiness, ordering, membership, arithmetic


def truthy(v: Any) -> bool:
    if isinstance(v, IterValue):
        return v.kind == "iter" or bool(v.items)
    if isinstance(v, (SetValue, DictValue)):
        return len(v) > 0
    return bool(v)


def _type_name(v: Any) -> str:
    if isinstance(v, SetValue):
        return "frozenset" if v.frozen else "set"
    if isinstance(v, DictValue):
        return "dict"
    if isinstance(v, IterValue):
        return {"keys": "dict_keys", "values": "dict_values", "items": "dict_items"}.get(
            v.kind, "generator" if v.kind == "iter" else v.kind
        )
    return type(v).__name__


def _less(a: Any, b: Any, strict: bool) -> bool:
    """Python's `a < b` (`a <= b` when not strict) for plain values; TypeError otherwise."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a < b if strict else a <= b
    if (isinstance(a, str) and isinstance(b, str)) or (
        isinstance(a, bytes) and isinstance(b, bytes)
    ):
        return a < b if strict else a <= b
    if type(a) in (list, tuple) and type(a) is type(b):
        for x, y in zip(a, b):
            if not values_equal(x, y, tolerant=False):
                return _less(x, y, True)
        return len(a) < len(b) if strict else len(a) <= len(b)
    ak, bk = _set_keys(a), _set_keys(b)
    if ak is not None and bk is not None:
        sub = _sorted_subset(ak, bk)
        return sub and (len(ak) < len(bk) or not strict)
    op = "<" if strict else "<="
    raise TypeError(
        f"'{op}' not supported between instances of {_type_name(a)!r} and {_type_name(b)!r}"
    )


def _sorted_subset(a: list[tuple], b: list[tuple]) -> bool:
    j = 0
    for k in a:
        while j < len(b) and b[j] < k:
            j += 1
        if j == len(b) or b[j] != k:
            return False
    return True


def contains(container: Any, item: Any) -> bool:
    """`item in container`: substring for str/bytes (same type), else an element equal to it
    (the tolerant rule above), dict keys for dicts."""
    if isinstance(container, (str, bytes)):
        if type(item) is not type(container):
            raise TypeError(f"'in <{type(container).__name__}>' requires a string as left operand")
        return item in container
    if isinstance(container, DictValue):
        try:
            container.get(item)
            return True
        except (KeyError, TypeError):
            return any(values_equal(item, k) for k in container)
    if isinstance(container, (list, tuple, SetValue, IterValue)):
        return any(values_equal(item, e) for e in container)
    raise TypeError(f"argument of type {_type_name(container)!r} is not iterable")


def compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return values_equal(a, b)
    if op == "!=":
        return not values_equal(a, b)
    if op == "<":
        return _less(a, b, True)
    if op == "<=":
        return _less(a, b, False)
    if op == ">":
        return _less(b, a, True)
    if op == ">=":
        return _less(b, a, False)
    if op == "in":
        return contains(b, a)
    if op == "not in":
        return not contains(b, a)
    if op == "is":  # only against None / True / False (checked when the line is parsed)
        return type(a) is type(b) and a == b
    if op == "is not":
        return not (type(a) is type(b) and a == b)
    raise ValueError(f"unknown comparison {op!r}")


def _check_int(x: int) -> int:
    if x.bit_length() > MAX_INT_BITS:
        raise OverflowError("integer result too large")
    return x


def _check_len(x: Any) -> Any:
    if len(x) > MAX_LENGTH:
        raise OverflowError("sequence result too long")
    return x


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow, "&": operator.and_,
    "|": operator.or_, "^": operator.xor, "<<": operator.lshift, ">>": operator.rshift,
}  # fmt: skip


def binop(op: str, a: Any, b: Any) -> Any:
    """Arithmetic in the parent: numbers (with bounds on int growth), and `+` / `*` on str,
    bytes, list and tuple (bounded length). Anything else is a TypeError."""
    fn = _ARITH[op]
    if _is_num(a) and _is_num(b):
        if isinstance(a, int) and isinstance(b, int):
            if op == "**" and b > 0 and abs(a) > 1 and (abs(a).bit_length() - 1) * b > MAX_INT_BITS:
                raise OverflowError("integer result too large")
            if op == "*" and a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
                raise OverflowError("integer result too large")
            if op == "<<" and b > MAX_INT_BITS:
                raise OverflowError("integer result too large")
        if op in ("&", "|", "^", "<<", ">>") and not (isinstance(a, int) and isinstance(b, int)):
            raise TypeError(f"unsupported operand types for {op}")
        r = fn(a, b)
        return _check_int(r) if isinstance(r, int) else r
    seq = (str, bytes, list, tuple)
    if op == "+" and type(a) in seq and type(a) is type(b):
        if len(a) + len(b) > MAX_LENGTH:
            raise OverflowError("sequence result too long")
        return a + b
    if op == "*":
        s, n = (a, b) if type(a) in seq else (b, a)
        if type(s) in seq and isinstance(n, int):
            if len(s) * max(n, 0) > MAX_LENGTH:
                raise OverflowError("sequence result too long")
            return s * n
    raise TypeError(f"unsupported operand types for {op}: {_type_name(a)!r} and {_type_name(b)!r}")


def unop(op: str, a: Any) -> Any:
    if op == "not":
        return not truthy(a)
    if not _is_num(a) or (op == "~" and not isinstance(a, int)):
        raise TypeError(f"bad operand type for unary {op}: {_type_name(a)!r}")
    return {"-": operator.neg, "+": operator.pos, "~": operator.invert}[op](a)


def iterate(v: Any) -> Iterator[Any]:
    """Iterate a value as Python would (a str yields characters, a dict its keys)."""
    if isinstance(v, (str, list, tuple, SetValue, DictValue, IterValue)):
        return iter(v)
    if isinstance(v, bytes):
        return iter(list(v))
    raise TypeError(f"{_type_name(v)!r} object is not iterable")


def subscript(v: Any, index: Any) -> Any:
    """`v[index]`: sequences by int or slice, dicts by key."""
    if isinstance(v, DictValue):
        return v.get(index)
    if isinstance(v, (str, bytes, list, tuple)):
        if isinstance(index, slice) or (isinstance(index, int) and not isinstance(index, bool)):
            return v[index]
        if isinstance(index, bool):
            return v[int(index)]
        raise TypeError(f"indices must be integers or slices, not {_type_name(index)}")
    raise TypeError(f"{_type_name(v)!r} object is not subscriptable")


# ---------------------------------------------------------------------------------------------
# Builtins a test line may apply in the parent


def _length(v: Any) -> int:
    if isinstance(v, IterValue):
        if v.kind == "iter":
            raise TypeError("object of type 'generator' has no len()")
        return len(v.items)
    if isinstance(v, (str, bytes, list, tuple, SetValue, DictValue)):
        return len(v)
    raise TypeError(f"object of type {_type_name(v)!r} has no len()")


def _sorted(v: Any, reverse: bool = False) -> list[Any]:
    items = list(iterate(v))

    def cmp(a: Any, b: Any) -> int:
        return -1 if _less(a, b, True) else (1 if _less(b, a, True) else 0)

    return sorted(items, key=functools.cmp_to_key(cmp), reverse=bool(reverse))


def _extreme(args: tuple[Any, ...], biggest: bool) -> Any:
    items = list(iterate(args[0])) if len(args) == 1 else list(args)
    if not items:
        raise ValueError("arg is an empty sequence")
    best = items[0]
    for x in items[1:]:
        if _less(best, x, True) if biggest else _less(x, best, True):
            best = x
    return best


def _sum(v: Any, start: Any = 0) -> Any:
    total = start
    for x in iterate(v):
        total = binop("+", total, x)
    return total


def _round(x: Any, ndigits: Any = None) -> Any:
    if not isinstance(x, (int, float)) or (ndigits is not None and not isinstance(ndigits, int)):
        raise TypeError("round() needs a number and an int")
    if ndigits is not None and abs(ndigits) > 10_000:
        raise OverflowError("ndigits too large")
    return round(x) if ndigits is None else round(x, ndigits)


def _int(x: Any = 0) -> int:
    if isinstance(x, (int, float, str, bytes)):
        return _check_int(int(x))
    raise TypeError(f"int() argument must be a string or a real number, not {_type_name(x)!r}")


def _float(x: Any = 0.0) -> float:
    if isinstance(x, (int, float, str, bytes)):
        return float(x)
    raise TypeError(f"float() argument must be a string or a real number, not {_type_name(x)!r}")


def _range(*args: Any) -> IterValue:
    if not all(isinstance(a, int) for a in args) or not 1 <= len(args) <= 3:
        raise TypeError("range() takes 1 to 3 int arguments")
    r = range(*args)
    if len(r) > MAX_LENGTH:
        raise OverflowError("range too long")
    return IterValue(list(r), "range")


def _abs(x: Any) -> Any:
    if not _is_num(x):
        raise TypeError(f"bad operand type for abs(): {_type_name(x)!r}")
    return abs(x)


def _isclose(a: Any, b: Any, rel_tol: Any = 1e-9, abs_tol: Any = 0.0) -> bool:
    for v in (a, b, rel_tol, abs_tol):
        if not isinstance(v, (int, float)):
            raise TypeError("isclose() needs real numbers")
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


_TYPES: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int),
    "bool": lambda v: isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "complex": lambda v: isinstance(v, complex),
    "str": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes),
    "list": lambda v: type(v) is list,
    "tuple": lambda v: type(v) is tuple,
    "dict": lambda v: isinstance(v, DictValue),
    "set": lambda v: isinstance(v, SetValue) and not v.frozen,
    "frozenset": lambda v: isinstance(v, SetValue) and v.frozen,
}

TYPE_NAMES = frozenset(_TYPES)


def isinstance_of(v: Any, type_names: tuple[str, ...]) -> bool:
    """`isinstance(v, T)` for builtin types named in TYPE_NAMES (the decoded value's type)."""
    return any(_TYPES[t](v) for t in type_names)


# name -> (function, keyword arguments it accepts)
BUILTINS: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "abs": (_abs, ()),
    "all": (lambda v: all(truthy(x) for x in iterate(v)), ()),
    "any": (lambda v: any(truthy(x) for x in iterate(v)), ()),
    "bool": (lambda v=False: truthy(v), ()),
    "float": (_float, ()),
    "frozenset": (lambda v=(): SetValue(iterate(v), frozen=True), ()),
    "int": (_int, ()),
    "len": (_length, ()),
    "list": (lambda v=(): _check_len(list(iterate(v))), ()),
    "max": (lambda *a: _extreme(a, True), ()),
    "min": (lambda *a: _extreme(a, False), ()),
    "range": (_range, ()),
    "round": (_round, ()),
    "set": (lambda v=(): SetValue(iterate(v)), ()),
    "sorted": (_sorted, ("reverse",)),
    "sum": (_sum, ()),
    "tuple": (lambda v=(): tuple(iterate(v)), ()),
    "zip": (lambda *a: IterValue(list(zip(*(list(iterate(x)) for x in a)))), ()),
    "enumerate": (lambda v, start=0: IterValue(list(enumerate(iterate(v), start))), ()),
    "reversed": (lambda v: IterValue(list(iterate(v))[::-1]), ()),
    "isclose": (_isclose, ("rel_tol", "abs_tol")),
}
# those whose result is a verdict: never evaluated in the sandbox
JUDGEMENTS = frozenset({"all", "any", "bool", "isclose", "isinstance"})
