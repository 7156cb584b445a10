"""The per-record check: normalise, parse (cached per worker process), compare. This is what a
pool worker runs; it can also be called in-process (no time limit there)."""

from __future__ import annotations

import functools
from typing import Any

from reasoner.verifiers.base import Reason
from reasoner.verifiers.math.equivalence import DEFAULT_REL_TOL, equivalent
from reasoner.verifiers.math.normalize import normalize
from reasoner.verifiers.math.values import (
    DEFAULT_MAX_DIGITS,
    TooLarge,
    Undefined,
    Unparseable,
    parse_value,
)


def _try_parse(normalized: str, max_digits: int) -> tuple[str, Any]:
    """("ok", value), or ("too large" | "unparseable" | "undefined", why) for a normalized
    answer."""
    try:
        return "ok", parse_value(normalized, max_digits)
    except Undefined as exc:
        return "undefined", str(exc)
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
    status, g = _parse_gold(g_norm, max_digits)  # cached: the G answers of a group share it
    if status == "undefined":  # 1/0 equals nothing, not even the same text
        detail["error"] = f"gold: {g}"
        return None, Reason.UNPARSEABLE_GOLD, detail
    if g_norm and g_norm == a_norm:  # the same text: equal even where sympy can't read it
        return True, Reason.OK, detail
    if status != "ok":
        detail["error"] = f"gold: {g}"
        return None, Reason.UNPARSEABLE_GOLD, detail
    status, a = _parse_answer(a_norm, max_digits)
    if status == "too large":
        detail["error"] = a
        return False, Reason.TOO_LARGE, detail
    if status == "undefined":
        detail["error"] = a
        return False, Reason.WRONG, detail
    if status != "ok":
        detail["error"] = a
        return False, Reason.UNPARSEABLE_ANSWER, detail
    try:
        ok = equivalent(g, a, rel_tol)
    except TooLarge as exc:
        detail["error"] = str(exc)
        return False, Reason.TOO_LARGE, detail
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a sympy failure is a wrong answer, with the cause
        detail["error"] = f"{type(exc).__name__}: {exc}"[:200]
        return False, Reason.WRONG, detail
    detail["parsed"] = _describe(a)
    return (True, "ok", detail) if ok else (False, "wrong", detail)


def _worker_check(gold: str, answer: str, rel_tol: float, max_digits: int) -> tuple[Any, ...]:
    return check_answer(gold, answer, rel_tol, max_digits)

