"""The one record every verifier returns, and the interface every verifier implements."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class Verdict:
    """The judgement of one completion.

    reward:  the scalar reward (0.0 when it can't be judged).
    correct: True / False, or None when the record cannot be judged (bad gold answer, no tests...).
    reason:  a short machine-readable word or phrase: "ok", "wrong", "no answer", "timeout",
             "unparseable gold", "sandbox error", ...
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
