"""Countdown: reach a target number from given numbers with + - * /.

Rules (decided here): each given number may be used at most once (not all must be used); the
operations are binary + - * / and parentheses; no unary minus, no other numbers, no
concatenation of digits; division is exact rational division (intermediate fractions are
allowed, computed with `fractions.Fraction`); division by zero makes the answer wrong. The
answer block holds the expression, optionally followed by ``=target``.

Question ``"Use 3,5,2 to make 16."``, columns ``numbers=[3, 5, 2]``, ``target=16``; answer (a
reference expression) ``"(3+5)*2"``; solution ``"3+5=8,8*2=16</think><answer>(3+5)*2</answer>"``.

The ``countdown`` reward parses the expression with `ast` (never `eval`) and allows only the
nodes above.
"""

from __future__ import annotations

import ast
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from reasoner.tasks.base import Task, extract_answer
from reasoner.verifiers.base import Verdict
from reasoner.verifiers.rewards import completion_text

MAX_EXPRESSION_CHARS = 256
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


class CountdownError(ValueError):
    """The answer expression is not a valid countdown expression (the message says why)."""


def _walk(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Expression):
        return _walk(node.body, used)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _walk(node.left, used), _walk(node.right, used)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if right == 0:
            raise CountdownError("division by zero")
        return left / right
    if isinstance(node, ast.Constant) and type(node.value) is int and node.value >= 0:
        used.append(node.value)
        return Fraction(node.value)
    raise CountdownError(f"not allowed in a countdown expression: {ast.dump(node)[:60]}")


def evaluate_expression(expr: str) -> tuple[Fraction, list[int]]:
    """(value, numbers used) of a countdown expression; CountdownError if it is not one."""
    expr = expr.split("=")[0].strip()
    if not expr:
        raise CountdownError("empty expression")
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise CountdownError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise CountdownError(f"syntax error: {e.msg}") from None
    used: list[int] = []
    return _walk(tree, used), used


def judge(completion: str, numbers: Iterable[int] | None, target: int | None) -> Verdict:
    if numbers is None or target is None:
        return Verdict(0.0, None, "missing numbers or target")
    expr = extract_answer(completion)
    if expr is None:
        return Verdict(0.0, False, "no answer")
    try:
        value, used = evaluate_expression(expr)
    except (CountdownError, RecursionError, MemoryError) as e:
        return Verdict(0.0, False, f"invalid expression: {e}"[:120])
    if Counter(used) - Counter(int(x) for x in numbers):
        return Verdict(0.0, False, "uses numbers not given (or more times than given)")
    if value != Fraction(int(target)):
        return Verdict(0.0, False, "wrong", {"value": str(value)})
    return Verdict(1.0, True, "ok")


def countdown_reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 if the answer expression uses only the given `numbers` (each at most once) and equals
    `target`; 0.0 otherwise; None where a row has no numbers/target."""
    n = len(completions)
    numbers = columns.get("numbers") or [None] * n
    targets = columns.get("target") or [None] * n
    for name, col in (("numbers", numbers), ("target", targets)):
        if len(col) != n:
            raise ValueError(f"column {name!r} has {len(col)} values for {n} completions")
    out: list[float | None] = []
    for c, nums, t in zip(completions, numbers, targets):
        v = judge(completion_text(c), nums, t)
        out.append(None if v.correct is None else v.reward)
    return out



class CountdownVerifier:
    """`reasoner verify --task countdown`: records with `completion`, `numbers`, `target`."""

    name = "countdown"

    def __init__(self, **options: Any) -> None:  # workers/timeout accepted, not needed: it's fast
        self.options = options

    def score(self, records: Iterable[dict[str, Any]]) -> Iterator[Verdict]:
        for r in records:
            yield judge(str(r.get("completion", "")), r.get("numbers"), r.get("target"))

    def close(self) -> None:
        pass

    def __enter__(self) -> CountdownVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _paren(expr: str) -> str:
    return expr if expr.isdigit() else f"({expr})"


@dataclass
class CountdownTask(Task):
    """`count`: how many numbers (int or inclusive (min, max)); numbers in [1, max_number];
    the hidden reference uses at least `min_use` of them; targets are integers in [1, max_target]."""

    name: str = "countdown"
    count: int | tuple[int, int] = 3
    max_number: int = 10
    min_use: int = 2
    max_target: int = 100
    allow_division: bool = True
    format_weight: float = 0.1
    reward_funcs: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        lo, hi = (self.count, self.count) if isinstance(self.count, int) else tuple(self.count)
        if not 2 <= lo <= hi:
            raise ValueError(f"count must be >= 2 (an int or a (min, max) pair), got {self.count!r}")
        if not 2 <= self.min_use <= lo:
            raise ValueError(f"min_use must be in [2, {lo}] (the fewest numbers), got {self.min_use}")
        if self.max_number < 1 or self.max_target < 1:
            raise ValueError("max_number and max_target must be >= 1")
        self._count = (lo, hi)
        self.accuracy_reward = "countdown"
        if not self.reward_funcs:
            self.reward_funcs = [("countdown", 1.0)]
            if self.format_weight:
                self.reward_funcs.append(("format_strict", self.format_weight))

    def sample(self, rng: random.Random) -> dict[str, Any]:
        ops = ["+", "-", "*"] + (["/"] if self.allow_division else [])
        while True:
            numbers = [rng.randint(1, self.max_number) for _ in range(rng.randint(*self._count))]
            k = rng.randint(self.min_use, len(numbers))
            terms = [(str(x), Fraction(x)) for x in rng.sample(numbers, k)]
            steps: list[str] = []
            ok = True
            while len(terms) > 1:
                (ea, va), (eb, vb) = terms.pop(0), terms.pop(0)
                op = rng.choice(ops)
                if op == "/" and (vb == 0 or (va / vb).denominator != 1):
                    ok = False
                    break
                v = {"+": va + vb, "-": va - vb, "*": va * vb, "/": va / vb if vb else 0}[op]
                if v < 0:
                    ok = False
                    break
                steps.append(f"{_fmt(va)}{op}{_fmt(vb)}={_fmt(v)}")
                terms.insert(0, (f"{_paren(ea)}{op}{_paren(eb)}", v))
            if not ok:
                continue
            expr, value = terms[0]
            if value.denominator == 1 and 1 <= value <= self.max_target:
                break
        target = int(value)
        return {
            "question": f"Use {','.join(map(str, numbers))} to make {target}.",
            "answer": expr,
            "solution": f"{','.join(steps)}</think><answer>{expr}</answer>",
            "numbers": numbers,
            "target": target,
        }
