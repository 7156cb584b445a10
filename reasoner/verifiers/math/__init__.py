"""The math answer verifier: find the final answer of a completion, compare it with the gold
answer through sympy (parsed with latex2sympy2_extended), in a pool of worker processes with
hard time and memory limits. The rules, what is guaranteed and what is not:
docs/verifiers-math.md.

Modules, in the order a record goes through them:

    extract      the final answer of a completion (or of a worked-solution gold); caller side
    verifier     MathVerifier: the record-level checks and the worker pool; caller side
    normalize    a canonical string form of an answer; worker side
    values       parsing into comparable values, size bounds; worker side
    equivalence  the equality rules; worker side
    worker       the per-record check (normalise, parse with caches, compare); worker side
"""

from __future__ import annotations

from reasoner.verifiers.math.equivalence import DEFAULT_REL_TOL, equivalent
from reasoner.verifiers.math.extract import Extraction, extract_answer, find_answer, gold_answer
from reasoner.verifiers.math.normalize import normalize
from reasoner.verifiers.math.values import DEFAULT_MAX_DIGITS, parse_value
from reasoner.verifiers.math.verifier import (
    DEFAULT_MAX_ANSWER_CHARS,
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT,
    MathVerifier,
    verify_math,
)
from reasoner.verifiers.math.worker import check_answer

__all__ = [
    "DEFAULT_MAX_ANSWER_CHARS",
    "DEFAULT_MAX_DIGITS",
    "DEFAULT_MEMORY_MB",
    "DEFAULT_REL_TOL",
    "DEFAULT_TIMEOUT",
    "Extraction",
    "MathVerifier",
    "check_answer",
    "equivalent",
    "extract_answer",
    "find_answer",
    "gold_answer",
    "normalize",
    "parse_value",
    "verify_math",
]
