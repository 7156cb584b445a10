"""Assert lines: parsed in the trusted parent into the parts the sandbox evaluates (leaves) and
the judgement the parent makes from their serialized values. Nothing here runs untrusted code.

A test line ``assert EXPR[, msg]`` is split into:

- **leaves**: the maximal sub-expressions the parent can't evaluate itself (calls of the program's
  functions, names and attributes of the program, ...). The sandbox evaluates them, in order, in
  the program's namespace and reports each *value* (``channel``); a repeated leaf is evaluated
  once.
- **the check**: everything else, evaluated here on the decoded values with Python's semantics
  (``values``): ``and`` / ``or`` / ``not``, conditional expressions, every comparison (chained ones
  one pair at a time), arithmetic (``f(2) - 4 == 0``), subscripts, literals and displays, and the
  builtins ``abs all any bool enumerate float frozenset int isinstance len list max min range
  reversed round set sorted sum tuple zip``, ``math.isclose`` / ``isclose`` and the constants
  ``math.pi e tau inf nan``. These names always mean the real ones: a program that defines its own
  ``all``, ``len`` or ``math`` does not change how the line is judged.

``all(...)`` / ``any(...)`` and other comprehensions are unrolled: over a literal iterable
(``range(5)``, ``[1, 2]``, ``'abc'``) each iteration becomes its own leaves, with the loop variable
replaced by its value (``f(i) == i*i for i in range(3)`` -> leaves ``f(0)``, ``f(1)``, ``f(2)``);
over a value the sandbox reports (``all(x > 0 for x in f(3))``) the parent iterates the decoded
value. What can't be judged that way raises ``UnsupportedTest`` (the record is "unsupported test",
reward 0, correct None), never a verdict of the sandbox: a comparison or boolean operator inside a
leaf whose result would decide the test (``all(map(lambda x: x > 0, f(3)))``), a leaf that needs
a loop variable of a comprehension over a sandbox value, ``is`` against anything but
None/True/False, more than ``MAX_LEAVES`` leaves or ``MAX_UNROLL`` iterations, nesting deeper
than ``MAX_NESTING``.

A leaf may still contain comparisons when it is a call of the program's own function
(``f([x for x in range(9) if x % 2])``): what the program does with its arguments is its business;
the parent judges what it returns.
"""

from __future__ import annotations

import ast
import builtins
import copy
import math
import symtable
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from reasoner.verifiers.code.channel import BadValue, decode_value
from reasoner.verifiers.code.values import (
    BUILTINS,
    JUDGEMENTS,
    TYPE_NAMES,
    DictValue,
    IterValue,
    SetValue,
    binop,
    canonical,
    compare,
    isinstance_of,
    iterate,
    subscript,
    truthy,
    unop,
    values_equal,
)

MAX_LEAVES = 1000  # sandbox expressions per test line
MAX_UNROLL = 1000  # comprehension iterations unrolled per test line
MAX_NESTING = 100  # depth of the expression tree
MAX_LINE_CHARS = 100_000


class UnsupportedTest(ValueError):
    """An assert line the parent can't judge from serialized values."""


# A check is a tree of tuples, evaluated by `_eval`:
#   ("lit", value) | ("leaf", i) | ("var", name) | ("cmp", [op...], [node...])
#   ("and"|"or", [node...]) | ("un", op, node) | ("bin", op, a, b) | ("if", test, body, orelse)
#   ("sub", value, index) | ("slice", lo, hi, step) | ("call", name, [args], {kw: node})
#   ("isinstance", node, (type names)) | ("list"|"tuple"|"set", [node...]) | ("dict", [(k, v)...])
#   ("comp", kind, target, iter, ifs, elt)  runtime comprehension over a decoded value
#   ("unrolled", kind, [([conds], elt)...]) comprehension unrolled at parse time
Node = tuple


@dataclass
class AssertTest:
    """One assert line: the sandbox evaluates `leaves`; the parent evaluates `check` over their
    values (``judge``)."""

    line: str
    leaves: list[str] = field(default_factory=list)
    check: Node = ("lit", True)
    # per leaf: None when the program's names take part in it (evaluated after the program
    # loaded); for a *reference* leaf (it names only builtins and `module.attr` of standard
    # library modules: `str(5)`, `math.sqrt(2)`, `'ab'.upper()`), the modules it uses. Reference
    # leaves are evaluated before the program runs, so the program can't choose their value.
    reference: list[tuple[str, ...] | None] = field(default_factory=list)


_CMP = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
}  # fmt: skip
# operator module functions that are a comparison: judged in the parent like the operator
_OPERATOR_CMP = {
    "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "is_": "is",
    "is_not": "is not", "contains": "in",
}  # fmt: skip
_BIN = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
    ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<",
    ast.RShift: ">>",
}  # fmt: skip
_CMP_NODE = {v: k for k, v in _CMP.items()}
_UN = {ast.USub: "-", ast.UAdd: "+", ast.Invert: "~", ast.Not: "not"}
_PY_BUILTINS = frozenset(dir(builtins))
_STDLIB_MODULES = frozenset(sys.stdlib_module_names) - _PY_BUILTINS
_MATH_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf, "nan": math.nan}
_SINGLETONS = (type(None), bool)
# builtins whose result is a verdict: a leaf may not contain them
_PREDICATES = JUDGEMENTS | {"callable", "hasattr", "issubclass"}


def _depth(tree: ast.AST) -> int:
    """Nesting depth of an AST, without recursion."""
    best, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        best = max(best, d)
        if d > MAX_NESTING:
            return d
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(node))
    return best


class _Leaf(Exception):
    """Raised while building: this sub-expression must be evaluated in the sandbox."""


class _Builder:
    def __init__(self, builtins_are_program: bool = False) -> None:
        # True for a line that names nothing of the program (see `parse_assert`): builtin calls
        # are leaves evaluated in the program's namespace, and no leaf is a reference
        self.builtins_are_program = builtins_are_program
        self.leaves: list[str] = []
        self.reference: list[tuple[str, ...] | None] = []
        self.index: dict[str, int] = {}  # leaf source -> index (our own strings)
        self.unrolled = 0

    # -- leaves ----------------------------------------------------------------------------------
    def leaf(self, node: ast.expr, env: dict[str, Any]) -> Node:
        """Make `node` a leaf: substitute unrolled loop variables, refuse runtime ones."""
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        runtime = [n for n in names if env.get(n, ("", None))[0] == "var"]
        if runtime:
            raise UnsupportedTest(
                f"{ast.unparse(node)[:80]!s} needs the loop variable {runtime[0]!r} of a "
                "comprehension over a value computed in the sandbox"
            )
        consts = {n: env[n][1] for n in names if n in env}
        if consts:
            if any(isinstance(n, (ast.Lambda, ast.comprehension)) for n in ast.walk(node)):
                raise UnsupportedTest("a loop variable inside a nested lambda or comprehension")
            node = _Substitute(consts).visit(copy.deepcopy(node))
        src = ast.unparse(node)
        modules = None if self.builtins_are_program else _reference_modules(node, src)
        if modules is None and _judges(node):  # a reference leaf may judge: it is not the program
            raise UnsupportedTest(
                f"{ast.unparse(node)[:80]} would be judged in the sandbox (a comparison or "
                "boolean operator inside an expression the parent can't evaluate)"
            )
        if src not in self.index:
            if len(self.leaves) >= MAX_LEAVES:
                raise UnsupportedTest(f"more than {MAX_LEAVES} expressions to evaluate")
            self.index[src] = len(self.leaves)
            self.leaves.append(src)
            self.reference.append(modules)
        return ("leaf", self.index[src])

    # -- building ----------------------------------------------------------------------------------
    def build(self, node: ast.expr, env: dict[str, Any]) -> Node:
        """The check node of `node`; a sub-expression the parent can't evaluate becomes a leaf."""
        try:
            return self._build(node, env)
        except _Leaf:
            return self.leaf(node, env)

    def _build(self, node: ast.expr, env: dict[str, Any]) -> Node:
        if isinstance(node, ast.Constant):
            if node.value is Ellipsis:
                raise UnsupportedTest("Ellipsis in a test line")
            return ("lit", node.value)
        if isinstance(node, ast.Name):
            if node.id in env:
                kind, value = env[node.id]
                return ("var", node.id) if kind == "var" else ("lit", value)
            raise _Leaf()
        if isinstance(node, ast.BoolOp):
            op = "and" if isinstance(node.op, ast.And) else "or"
            return self.fold((op, [self.build(v, env) for v in node.values]))
        if isinstance(node, ast.UnaryOp):
            return self.fold(("un", _UN[type(node.op)], self.build(node.operand, env)))
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BIN:
                raise UnsupportedTest(f"operator {type(node.op).__name__}")
            a, b = self.build(node.left, env), self.build(node.right, env)
            return self.fold(("bin", _BIN[type(node.op)], a, b))
        if isinstance(node, ast.Compare):
            ops = [_CMP[type(o)] for o in node.ops]
            parts = [self.build(x, env) for x in [node.left, *node.comparators]]
            for k, op in enumerate(ops):
                if op in ("is", "is not"):
                    lits = [p for p in parts[k : k + 2] if p[0] == "lit"]
                    if not any(isinstance(p[1], _SINGLETONS) for p in lits):
                        raise UnsupportedTest("`is` only against None, True or False")
            return self.fold(("cmp", ops, parts))
        if isinstance(node, ast.IfExp):
            parts = [self.build(x, env) for x in (node.test, node.body, node.orelse)]
            return self.fold(("if", *parts))
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            if any(isinstance(e, ast.Starred) for e in node.elts):
                raise _Leaf()
            kind = {ast.List: "list", ast.Tuple: "tuple", ast.Set: "set"}[type(node)]
            return self.fold((kind, [self.build(e, env) for e in node.elts]))
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise _Leaf()
            pairs = [
                (self.build(k, env), self.build(v, env)) for k, v in zip(node.keys, node.values)
            ]  # type: ignore[arg-type]
            return self.fold(("dict", pairs))
        if isinstance(node, ast.Subscript):
            value = self.build(node.value, env)
            sl = node.slice
            if isinstance(sl, ast.Slice):
                index: Node = (
                    "slice",
                    *(
                        self.build(x, env) if x is not None else ("lit", None)
                        for x in (sl.lower, sl.upper, sl.step)
                    ),
                )
            else:
                index = self.build(sl, env)
            return self.fold(("sub", value, index))
        if isinstance(node, (ast.GeneratorExp, ast.ListComp, ast.SetComp)):
            kind = {ast.GeneratorExp: "gen", ast.ListComp: "list", ast.SetComp: "set"}[type(node)]
            return self.comprehension(kind, node.generators, node.elt, env)
        if isinstance(node, ast.Call):
            return self.call(node, env)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "math"
            and node.attr in _MATH_CONSTANTS
        ):
            return ("lit", _MATH_CONSTANTS[node.attr])  # not whatever the program calls `math`
        raise _Leaf()

    def call(self, node: ast.Call, env: dict[str, Any]) -> Node:
        f = node.func
        if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                and f.value.id == "operator" and f.attr in _OPERATOR_CMP
                and not self.builtins_are_program):
            # operator.eq(f(1), 5) is f(1) == 5, judged here: in the sandbox the program could
            # have patched operator.eq (contains(a, b) is b in a)
            if len(node.args) != 2 or node.keywords or any(
                    isinstance(a, ast.Starred) for a in node.args):
                raise UnsupportedTest(f"operator.{f.attr} needs two positional arguments")
            a, b = node.args if f.attr != "contains" else node.args[::-1]
            return self._build(ast.Compare(a, [_CMP_NODE[_OPERATOR_CMP[f.attr]]()], [b]), env)
        name = None
        if isinstance(f, ast.Name) and f.id not in env:
            name = f.id
        elif isinstance(f, ast.Attribute) and f.attr == "isclose":
            if isinstance(f.value, ast.Name) and f.value.id == "math":
                name = "isclose"
        if name == "isinstance":
            if len(node.args) != 2 or node.keywords:
                raise UnsupportedTest("isinstance needs two positional arguments")
            return ("isinstance", self.build(node.args[0], env), _type_names(node.args[1]))
        if name not in BUILTINS or (self.builtins_are_program and name != "isinstance"):
            raise _Leaf()
        _, kws = BUILTINS[name]
        plain = all(not isinstance(a, ast.Starred) for a in node.args) and all(
            k.arg in kws for k in node.keywords
        )
        if not plain:
            if name in JUDGEMENTS:
                raise UnsupportedTest(f"{name}() with these arguments can't be judged here")
            raise _Leaf()
        args = [self.build(a, env) for a in node.args]
        kw = {k.arg: self.build(k.value, env) for k in node.keywords if k.arg}
        return self.fold(("call", name, args, kw))

    def comprehension(
        self, kind: str, gens: list[ast.comprehension], elt: ast.expr, env: dict[str, Any]
    ) -> Node:
        if any(g.is_async for g in gens):
            raise UnsupportedTest("async comprehension")
        it = self.build(gens[0].iter, env)
        targets = _target_names(gens[0].target)
        if it[0] == "lit":  # unroll: each iteration's leaves get the loop variables' values
            branches: list[tuple[list[Node], Node]] = []
            for item in iterate(it[1]):
                self.unrolled += 1
                if self.unrolled > MAX_UNROLL:
                    raise UnsupportedTest(f"more than {MAX_UNROLL} iterations to unroll")
                inner = dict(env)
                for n, v in _bind(gens[0].target, item).items():
                    inner[n] = ("const", v)
                conds = [self.build(c, inner) for c in gens[0].ifs]
                if len(gens) > 1:
                    body = self.comprehension("list", gens[1:], elt, inner)
                    branches.append((conds, ("splat", body)))
                else:
                    branches.append((conds, self.build(elt, inner)))
            return ("unrolled", kind, branches)
        inner = dict(env)
        for n in targets:
            inner[n] = ("var", None)
        conds = [self.build(c, inner) for c in gens[0].ifs]
        if len(gens) > 1:
            body: Node = ("splat", self.comprehension("list", gens[1:], elt, inner))
        else:
            body = self.build(elt, inner)
        return ("comp", kind, gens[0].target, it, conds, body)

    def fold(self, node: Node) -> Node:
        """Evaluate a node with no leaves and no variables now (constant folding)."""
        if _constant(node):
            try:
                return ("lit", _eval(node, _Leaves([]), {}))
            except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as e:
                raise UnsupportedTest(f"bad literal: {type(e).__name__}: {e}"[:200]) from None
        return node


def _constant(node: Node) -> bool:
    """No leaves, no loop variables, no comprehension: `node` can be evaluated now."""
    k = node[0]
    if k == "lit":
        return True
    if k in ("and", "or", "list", "tuple", "set"):
        return all(_constant(x) for x in node[1])
    if k == "un":
        return _constant(node[2])
    if k == "bin":
        return _constant(node[2]) and _constant(node[3])
    if k == "cmp":
        return all(_constant(x) for x in node[2])
    if k in ("if", "slice"):
        return all(_constant(x) for x in node[1:])
    if k == "dict":
        return all(_constant(a) and _constant(b) for a, b in node[1])
    if k == "sub":
        return _constant(node[1]) and _constant(node[2])
    if k == "isinstance":
        return _constant(node[1])
    if k == "call":
        return all(_constant(a) for a in node[2]) and all(_constant(v) for v in node[3].values())
    return False  # leaf, var, comp, unrolled


class _Substitute(ast.NodeTransformer):
    def __init__(self, consts: dict[str, Any]) -> None:
        self.consts = consts

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if node.id in self.consts:
            return _literal_node(self.consts[node.id])
        return node


def _literal_node(v: Any) -> ast.expr:
    if isinstance(v, (int, str, bytes, bool, type(None))) or (
        isinstance(v, (float, complex)) and v == v and abs(v) != float("inf")
    ):
        return ast.Constant(v)
    if type(v) in (list, tuple):
        elts = [_literal_node(x) for x in v]
        return ast.List(elts, ast.Load()) if type(v) is list else ast.Tuple(elts, ast.Load())
    raise UnsupportedTest(f"a loop value of type {type(v).__name__} can't be passed to the program")


def _judges(node: ast.expr) -> bool:
    """Would the sandbox decide something here? True when the leaf contains a comparison, a
    boolean operator or a judgement builtin, unless the leaf is a call of a non-builtin name
    (the program's function: whatever it does with its arguments, its result is data)."""
    if isinstance(node, ast.Call):
        f = node.func
        if (isinstance(f, ast.Name) and f.id not in _PY_BUILTINS) or isinstance(f, ast.Attribute):
            return False
    for n in ast.walk(node):
        if isinstance(n, (ast.Compare, ast.BoolOp, ast.IfExp)) or (
            isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not)
        ):
            return True
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _PREDICATES:
            return True
    return False


def _free_names(src: str) -> set[str]:
    """The names an expression reads from its globals (not those its own lambdas and
    comprehensions bind), by the compiler's own scope analysis."""
    top = symtable.symtable(src, "<leaf>", "eval")
    names = {s.get_name() for s in top.get_symbols()}
    stack = list(top.get_children())
    while stack:
        t = stack.pop()
        names.update(s.get_name() for s in t.get_symbols() if s.is_global())
        stack.extend(t.get_children())
    return names


def _reference_modules(node: ast.expr, src: str) -> tuple[str, ...] | None:
    """None when `node` may read a name of the program; else (it is a reference leaf) the
    standard library modules it uses. A reference leaf reads only Python builtins (which, as
    everywhere in a test line, mean the real ones) and standard library modules used as
    `module.attr` (a module name used bare or called is taken to be the program's)."""
    try:
        free = _free_names(src)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    modules = free - _PY_BUILTINS
    if not modules <= _STDLIB_MODULES:
        return None
    if modules:
        bases = {
            id(n.value)
            for n in ast.walk(node)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
        }
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and n.id in modules and id(n) not in bases:
                return None
    return tuple(sorted(modules))


def _type_names(node: ast.expr) -> tuple[str, ...]:
    elts = node.elts if isinstance(node, ast.Tuple) else [node]
    names = []
    for e in elts:
        if not isinstance(e, ast.Name) or e.id not in TYPE_NAMES:
            raise UnsupportedTest(f"isinstance against {ast.unparse(e)[:40]}")
        names.append(e.id)
    return tuple(names)


def _target_names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for e in target.elts for n in _target_names(e)]
    raise UnsupportedTest("comprehension target must be names")


def _bind(target: ast.expr, value: Any) -> dict[str, Any]:
    if isinstance(target, ast.Name):
        return {target.id: value}
    if isinstance(target, (ast.Tuple, ast.List)):
        items = list(iterate(value))
        if len(items) != len(target.elts):
            raise ValueError(f"cannot unpack {len(items)} values into {len(target.elts)}")
        out: dict[str, Any] = {}
        for t, v in zip(target.elts, items):
            out.update(_bind(t, v))
        return out
    raise UnsupportedTest("comprehension target must be names")


def parse_assert(line: str) -> AssertTest:
    """Parse one assert line. Raises UnsupportedTest for lines the parent can't judge."""
    if len(line) > MAX_LINE_CHARS:
        raise UnsupportedTest(f"test line longer than {MAX_LINE_CHARS} characters")
    try:
        tree = ast.parse(line.strip())
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise UnsupportedTest(f"unparseable assert: {e}") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise UnsupportedTest("not a single assert statement")
    test = tree.body[0].test
    if _depth(test) > MAX_NESTING:
        raise UnsupportedTest(f"expression nested deeper than {MAX_NESTING}")
    b = _Builder()
    try:
        check = b.build(test, {})
        if all(r is not None for r in b.reference) and any(
            isinstance(n, ast.Name) for n in ast.walk(test)
        ):
            # Not one leaf names the program: the line can only be testing a function the
            # program defines under a builtin's name (a task "write sum": `assert sum([1, 2]) ==
            # 3`). Read it as Python would after the program ran: its builtin calls are the
            # program's. (Read with real builtins, the line would not involve the program, and a
            # wrong `def sum` would pass.)
            b = _Builder(builtins_are_program=True)
            check = b.build(test, {})
    except RecursionError:
        raise UnsupportedTest(f"expression nested deeper than {MAX_NESTING}") from None
    return AssertTest(line, b.leaves, check, b.reference)


# ---------------------------------------------------------------------------------------------
# Judging


class LeafFailed(Exception):
    """A leaf the check needs did not produce a value; args[0] is the test's status."""


class _Leaves:
    """Leaf values for one test, decoded on first use."""

    def __init__(self, outcomes: list[Any], decoded: bool = False) -> None:
        self.outcomes = outcomes
        self.decoded = decoded
        self.cache: dict[int, Any] = {}

    def get(self, i: int) -> Any:
        if i in self.cache:
            return self.cache[i]
        if i >= len(self.outcomes):
            raise LeafFailed("malformed")
        o = self.outcomes[i]
        if not isinstance(o, list) or not o or not isinstance(o[0], str):
            raise LeafFailed("malformed")
        if o[0] == "v" and len(o) == 2:
            try:
                v = canonical(o[1]) if self.decoded else decode_value(o[1])
            except (BadValue, RecursionError, TypeError):
                raise LeafFailed("malformed") from None
            self.cache[i] = v
            return v
        if o[0] == "e" and len(o) == 2 and isinstance(o[1], str):
            raise LeafFailed(f"error:{o[1][:60]}")
        if o[0] == "u":
            raise LeafFailed("unencodable")
        raise LeafFailed("malformed")


def _eval(node: Node, leaves: _Leaves, env: dict[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "leaf":
        return leaves.get(node[1])
    if kind == "var":
        return env[node[1]]
    if kind == "and":
        v: Any = True
        for x in node[1]:
            v = _eval(x, leaves, env)
            if not truthy(v):
                return v
        return v
    if kind == "or":
        v = False
        for x in node[1]:
            v = _eval(x, leaves, env)
            if truthy(v):
                return v
        return v
    if kind == "un":
        return unop(node[1], _eval(node[2], leaves, env))
    if kind == "bin":
        return binop(node[1], _eval(node[2], leaves, env), _eval(node[3], leaves, env))
    if kind == "cmp":
        ops, parts = node[1], node[2]
        left = _eval(parts[0], leaves, env)
        for op, p in zip(ops, parts[1:]):
            right = _eval(p, leaves, env)
            if not compare(op, left, right):
                return False
            left = right
        return True
    if kind == "if":
        return _eval(node[2] if truthy(_eval(node[1], leaves, env)) else node[3], leaves, env)
    if kind in ("list", "tuple", "set"):
        items = [_eval(x, leaves, env) for x in node[1]]
        return items if kind == "list" else tuple(items) if kind == "tuple" else SetValue(items)
    if kind == "dict":
        return DictValue((_eval(k, leaves, env), _eval(v, leaves, env)) for k, v in node[1])
    if kind == "sub":
        value = _eval(node[1], leaves, env)
        idx = node[2]
        if idx[0] == "slice":
            index: Any = slice(*(_eval(x, leaves, env) for x in idx[1:]))
        else:
            index = _eval(idx, leaves, env)
        return subscript(value, index)
    if kind == "isinstance":
        return isinstance_of(_eval(node[1], leaves, env), node[2])
    if kind == "call":
        fn, _ = BUILTINS[node[1]]
        if node[1] in ("all", "any") and len(node[2]) == 1 and not node[3]:
            items = _items(node[2][0], leaves, env)  # lazily: short-circuit as Python does
            want = node[1] == "any"
            for x in items:
                if truthy(x) == want:
                    return want
            return not want
        args = [_eval(a, leaves, env) for a in node[2]]
        kw = {k: _eval(v, leaves, env) for k, v in node[3].items()}
        return fn(*args, **kw)
    if kind in ("comp", "unrolled"):
        items = list(_items(node, leaves, env))
        if node[1] == "list":
            return items
        if node[1] == "set":
            return SetValue(items)
        return IterValue(items)
    raise ValueError(f"unknown check node {kind!r}")


def _items(node: Node, leaves: _Leaves, env: dict[str, Any]) -> Iterator[Any]:
    """The items a node yields when iterated (lazily for comprehensions)."""
    if node[0] == "unrolled":
        for conds, elt in node[2]:
            if all(truthy(_eval(c, leaves, env)) for c in conds):
                if elt[0] == "splat":
                    yield from _items(elt[1], leaves, env)
                else:
                    yield _eval(elt, leaves, env)
        return
    if node[0] == "comp":
        _, _, target, it, conds, elt = node
        for item in iterate(_eval(it, leaves, env)):
            inner = dict(env)
            inner.update(_bind(target, item))
            if all(truthy(_eval(c, leaves, inner)) for c in conds):
                if elt[0] == "splat":
                    yield from _items(elt[1], leaves, inner)
                else:
                    yield _eval(elt, leaves, inner)
        return
    yield from iterate(_eval(node, leaves, env))


def judge(test: AssertTest, outcomes: list[Any], decoded: bool = False) -> str:
    """The status of one test from its leaves' outcomes (the payload the harness relayed):
    "pass", "fail", "error:<Name>" (a leaf raised, or the check did: TypeError...),
    "unencodable" or "malformed". `decoded`: the values are plain Python values already."""
    try:
        ok = truthy(_eval(test.check, _Leaves(outcomes, decoded), {}))
    except LeafFailed as e:
        return str(e.args[0])
    except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError, MemoryError) as e:
        return f"error:{type(e).__name__}"
    return "pass" if ok else "fail"


def check_assert(test: AssertTest, values: list[Any]) -> bool:
    """Judge `test` on plain leaf values (one per leaf, in order): True when it passes."""
    return judge(test, [["v", v] for v in values], decoded=True) == "pass"


__all__ = ["AssertTest", "UnsupportedTest", "check_assert", "judge", "parse_assert", "values_equal"]
