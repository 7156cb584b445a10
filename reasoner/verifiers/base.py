"""The one record every verifier returns, and the interface every verifier implements."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

# The longest completion (or worked-solution gold) a verifier reads at all: everything read in the
# calling process is scanned in linear time, and this bounds that time (the worst text known,
# 1M characters of "\boxed 5 ", takes the math extraction about half a second) and the copies
# made of it. Longer text is not read: reason `too large` (an unreadable gold: reason
# `unparseable gold`). Far above any real completion (32k tokens are about 130k characters).
MAX_COMPLETION_CHARS = 1_000_000


class Reason(str, Enum):
    """The reason words of both rule-based verifiers (``Verdict.reason``), one vocabulary.

    A member is a ``str`` equal to its value, and formats as its value, so output files carry
    the plain words. Reasons with a detail are written ``f"{Reason.BAD_RECORD}: ..."``.
    """

    OK = "ok"
    WRONG = "wrong"
    TIMEOUT = "timeout"
    TOO_LARGE = "too large"  # math: an answer or number over the size caps; code: the completion
    # math
    NO_ANSWER = "no answer"
    AMBIGUOUS = "ambiguous"
    UNPARSEABLE_ANSWER = "unparseable answer"
    UNPARSEABLE_GOLD = "unparseable gold"
    WORKER_CRASHED = "worker crashed"
    # code
    NO_CODE = "no code"
    NO_TESTS = "no tests"
    SYNTAX_ERROR = "syntax error"
    LOAD_ERROR = "load error"
    OUTPUT_LIMIT = "output limit"
    NO_RESULT = "no result"
    TAMPERED = "tampered"
    BAD_RECORD = "bad record"
    UNSUPPORTED_TEST = "unsupported test"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass
class Verdict:
    """The judgement of one completion.

    reward:  the scalar reward (0.0 when it can't be judged).
    correct: True / False, or None when the record cannot be judged (bad gold answer, no tests...).
    reason:  a short machine-readable word or phrase, a `Reason` value ("ok", "wrong",
             "no answer", "timeout", "unparseable gold", ...), optionally followed by ": detail".
    detail:  free-form extras (per-test results, parsed answers), JSON-serialisable.
    """

    reward: float
    correct: bool | None
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


class Verifier(Protocol):
    """A batch verifier. `score` yields one Verdict per record, in input order, as they finish
    in order (so a caller can write results out as it goes). Records are plain dicts, the JSONL
    lines of `reasoner verify`. `close` frees worker processes; verifiers are context managers."""

    name: str

    def score(self, records: Iterable[dict[str, Any]]) -> Iterator[Verdict]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Verifier: ...

    def __exit__(self, *exc: object) -> None: ...
