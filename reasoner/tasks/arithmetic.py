"""Arithmetic: multi-digit addition, subtraction and multiplication with integer answers.

Question ``"47+85"``; answer ``"132"``; solution ``"47+85=132</think><answer>132</answer>"``.
Multiplication by a multi-digit number is worked through partial products:
``"47*85=47*80+47*5=3760+235=3995</think><answer>3995</answer>"``.

Correctness: ``integer_exact`` by default (the answer block must be exactly an integer equal to the
reference; no worker pool, microseconds per sample, so the CPU demo loop isn't slowed by verifier
IPC). ``verifier="math"`` uses the general ``math_accuracy`` reward (sympy equivalence in the
math verifier's worker pool) instead; on integer answers both give the same verdicts.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reasoner.tasks.base import Task, extract_answer
from reasoner.verifiers.rewards import completion_text

OPS = ("+", "-", "*")
_INT = re.compile(r"[+-]?\d+")


def _parse_int(text: Any) -> str | None:
    """The integer `text` spells (commas ignored) as canonical ASCII digits ("-12", "0"), or None.

    Two texts spell the same integer iff these are equal, as with int(); but int() is quadratic
    in the digits and refuses more than 4300 of them (a degenerate completion's digit run would
    raise inside the reward), so this reads them linearly instead."""
    if text is None:
        return None
    s = str(text).strip().replace(",", "")
    if not _INT.fullmatch(s):
        return None
    negative = s[0] == "-"
    digits = s.lstrip("+-")
    if not digits.isascii():  # any Unicode decimal digit, as int() reads them
        digits = "".join(str(unicodedata.decimal(c)) for c in digits)
    digits = digits.lstrip("0") or "0"
    return "-" + digits if negative and digits != "0" else digits


def integer_exact_reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 if the last <answer> block is an integer equal to the `answer` column, else 0.0;
    None where the gold answer is missing or not an integer."""
    answers = columns.get("answer") or [None] * len(completions)
    if len(answers) != len(completions):
        raise ValueError(f"column 'answer' has {len(answers)} values for {len(completions)} completions")
    out: list[float | None] = []
    for c, a in zip(completions, answers):
        gold = _parse_int(a)
        if gold is None:
            out.append(None)
            continue
        got = _parse_int(extract_answer(completion_text(c)))
        out.append(1.0 if got == gold else 0.0)
    return out



def integer_exact_reasons(prompts: list[Any], completions: list[Any], **columns: Any) -> list[str]:
    """Why `integer_exact_reward` gives what it gives, per completion (the verifiers' words)."""
    answers = columns.get("answer") or [None] * len(completions)
    out = []
    for c, a in zip(completions, answers):
        gold, got = _parse_int(a), _parse_int(extract_answer(completion_text(c)))
        out.append("unparseable gold" if gold is None else "no answer" if got is None
                   else "ok" if got == gold else "wrong")
    return out


integer_exact_reward.reasons = integer_exact_reasons  # type: ignore[attr-defined]


def _digit_range(digits: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(digits, int):
        lo = hi = digits
    else:
        lo, hi = (int(d) for d in digits)
    if not 1 <= lo <= hi:
        raise ValueError(f"digits must be >= 1 (an int or a (min, max) pair), got {digits!r}")
    return lo, hi


def _operand(rng: random.Random, lo_digits: int, hi_digits: int) -> int:
    d = rng.randint(lo_digits, hi_digits)
    return rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)


def worked_solution(a: int, op: str, b: int) -> str:
    c = {"+": a + b, "-": a - b, "*": a * b}[op]
    steps = f"{a}{op}{b}="
    if op == "*" and b >= 10:
        digits = str(b)
        parts = [(int(ch) * 10 ** (len(digits) - 1 - i)) for i, ch in enumerate(digits) if ch != "0"]
        if len(parts) > 1:
            steps += "+".join(f"{a}*{p}" for p in parts) + "="
            steps += "+".join(str(a * p) for p in parts) + "="
    return f"{steps}{c}</think><answer>{c}</answer>"


@dataclass
class ArithmeticTask(Task):
    """`ops`: any of "+", "-", "*"; `digits`: operand length, an int or an inclusive (min, max)."""

    name: str = "arithmetic"
    ops: tuple[str, ...] = ("+",)
    digits: int | tuple[int, int] = (1, 2)
    verifier: str = "integer"
    format_weight: float = 0.1
    reward_funcs: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ops = tuple(self.ops)
        bad = [o for o in self.ops if o not in OPS]
        if bad or not self.ops:
            raise ValueError(f"ops must be a non-empty subset of {OPS}, got {self.ops!r}")
        self._lo, self._hi = _digit_range(self.digits)
        if self.verifier not in ("integer", "math"):
            raise ValueError(f"verifier must be 'integer' or 'math', got {self.verifier!r}")
        self.accuracy_reward = "integer_exact" if self.verifier == "integer" else "math_accuracy"
        if not self.reward_funcs:
            self.reward_funcs = [(self.accuracy_reward, 1.0)]
            if self.format_weight:
                self.reward_funcs.append(("format_strict", self.format_weight))

    def sample(self, rng: random.Random) -> dict[str, Any]:
        op = rng.choice(self.ops)
        a, b = _operand(rng, self._lo, self._hi), _operand(rng, self._lo, self._hi)
        c = {"+": a + b, "-": a - b, "*": a * b}[op]
        return {
            "question": f"{a}{op}{b}",
            "answer": str(c),
            "solution": worked_solution(a, op, b),
        }
