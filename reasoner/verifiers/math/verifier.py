"""MathVerifier: extraction and the size pre-screen in the calling process, the check in a pool of
worker processes with hard time and memory limits; one Verdict per record, in input order.

What runs in the calling process is bounded: a completion or gold over `MAX_COMPLETION_CHARS`
is not read; below that every scan (`extract`, `too_large_text`) is linear in the text's length."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from reasoner.verifiers.base import MAX_COMPLETION_CHARS, Reason, Verdict
from reasoner.verifiers.math.equivalence import DEFAULT_REL_TOL
from reasoner.verifiers.math.extract import find_answer, gold_answer
from reasoner.verifiers.math.values import DEFAULT_MAX_DIGITS, too_large_text
from reasoner.verifiers.math.worker import _worker_check
from reasoner.verifiers.pool import TaskResult, WorkerPool

DEFAULT_TIMEOUT = 5.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_MAX_ANSWER_CHARS = 1000
# The fork server imports these once, so a fresh worker starts with the parser loaded.
_PRELOAD = ("sympy", "latex2sympy2_extended", "reasoner.verifiers.math.worker")


def _verdict(correct: bool | None, reason: str, detail: dict[str, Any] | None = None) -> Verdict:
    return Verdict(1.0 if correct else 0.0, correct, reason, detail or {})


class MathVerifier:
    """Scores ``{"completion": str, "answer": str}`` records (see the module docstring).

    workers:   worker processes (default os.cpu_count()); started on the first `score`.
    timeout:   seconds per record, enforced by killing the worker (None: 5 s).
    all_or_nothing: accepted for the options every verifier takes (`reasoner verify
               --all-or-nothing`); a math verdict is all or nothing already (one answer).
    memory_mb: address space (RLIMIT_AS) a worker may add to what it maps at start, MiB.
    rel_tol:   relative tolerance for a decimal approximation of a non-terminating value.
    """

    name = "math"

    def __init__(
        self,
        workers: int | None = None,
        timeout: float | None = None,
        all_or_nothing: bool = True,
        memory_mb: int | None = DEFAULT_MEMORY_MB,
        rel_tol: float = DEFAULT_REL_TOL,
        max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS,
        max_digits: int = DEFAULT_MAX_DIGITS,
        start_method: str | None = None,
    ) -> None:
        self.workers = workers
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        self.memory_mb = memory_mb
        self.rel_tol = rel_tol
        self.max_answer_chars = max_answer_chars
        self.max_digits = max_digits
        self.start_method = start_method
        self._pool: WorkerPool | None = None
        self._lock = threading.Lock()

    @property
    def pool(self) -> WorkerPool:
        with self._lock:
            if self._pool is None:
                self._pool = WorkerPool(
                    self.workers, self.timeout, self.memory_mb,
                    start_method=self.start_method, preload=_PRELOAD,
                )
            return self._pool

    def _prepare(self, rec: dict[str, Any]) -> Verdict | tuple[Any, ...]:
        if not isinstance(rec, dict):
            return _verdict(None, Reason.UNPARSEABLE_GOLD, {"error": "record is not a dict"})
        gold = rec.get("answer")
        if gold is None or (isinstance(gold, str) and not gold.strip()):
            return _verdict(None, Reason.UNPARSEABLE_GOLD, {"error": "missing field 'answer'"})
        gold = str(gold)
        if len(gold) > MAX_COMPLETION_CHARS:
            return _verdict(None, Reason.UNPARSEABLE_GOLD, {
                "error": f"gold too large: over {MAX_COMPLETION_CHARS} characters"})
        gold, why = gold_answer(gold)  # a worked solution stands for its final answer
        if gold is None:
            return _verdict(None, Reason.UNPARSEABLE_GOLD, {"error": why})
        if too_large_text(gold, self.max_answer_chars * 10):
            return _verdict(None, Reason.UNPARSEABLE_GOLD, {"error": "gold answer too large"})
        completion = rec.get("completion") or ""
        if not isinstance(completion, str):
            completion = str(completion)
        if len(completion) > MAX_COMPLETION_CHARS:
            return _verdict(False, Reason.TOO_LARGE, {
                "error": f"completion over {MAX_COMPLETION_CHARS} characters"})
        ex = find_answer(completion)
        if ex.answer is None:
            return _verdict(False, Reason.NO_ANSWER, {"source": ex.source})
        detail = {"answer": ex.answer[:200], "source": ex.source}
        if ex.ambiguous:
            detail["candidates"] = [c[:200] for c in ex.candidates[:10]]
            return _verdict(False, Reason.AMBIGUOUS, detail)
        why = too_large_text(ex.answer, self.max_answer_chars)
        if why:
            return _verdict(False, Reason.TOO_LARGE, {**detail, "error": why})
        return (gold, ex.answer, self.rel_tol, self.max_digits)

    def _finish(self, res: TaskResult, task: tuple[Any, ...]) -> Verdict:
        base = {"answer": str(task[1])[:200]}
        if res.status == "ok":
            correct, reason, detail = res.value
            return _verdict(correct, reason, detail)
        if res.status == "timeout":
            return _verdict(False, Reason.TIMEOUT, {**base, "error": res.error})
        if res.status == "error" and res.error == "MemoryError":
            return _verdict(False, Reason.TOO_LARGE, {**base, "error": "memory limit"})
        if res.status == "error":
            return _verdict(False, Reason.WRONG, {**base, "error": res.error})
        return _verdict(False, Reason.WORKER_CRASHED, {**base, "error": res.error})

    def score(self, records: Iterable[dict[str, Any]]) -> Iterator[Verdict]:
        """One Verdict per record, in input order, streamed."""
        preps: deque[Verdict | tuple[Any, ...]] = deque()

        def tasks() -> Iterator[tuple[Any, ...]]:
            for rec in records:
                p = self._prepare(rec)
                preps.append(p)
                if not isinstance(p, Verdict):
                    yield p

        gen = tasks()
        first = next(gen, None)  # don't start workers for a batch with nothing to check
        if first is None:
            yield from preps  # type: ignore[misc]
            return

        def all_tasks() -> Iterator[tuple[Any, ...]]:
            yield first
            yield from gen

        results = self.pool.imap(_worker_check, all_tasks())
        while True:
            while preps and isinstance(preps[0], Verdict):
                yield preps.popleft()
            res = next(results, None)
            if res is None:
                break
            # Results come in input order, so `res` is for the oldest task in `preps`; records
            # prepared while the pool read ahead (during `next`) may put verdicts before it.
            while isinstance(preps[0], Verdict):
                yield preps.popleft()
            task = preps.popleft()
            yield self._finish(res, task)
        while preps:
            p = preps.popleft()
            assert isinstance(p, Verdict)
            yield p

    def score_one(self, completion: str, answer: str) -> Verdict:
        return next(self.score([{"completion": completion, "answer": answer}]))

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def verify_math(completion: str, answer: str, **opts: Any) -> Verdict:
    """Score one completion (starts a one-worker pool; use MathVerifier for batches)."""
    opts.setdefault("workers", 1)
    with MathVerifier(**opts) as v:
        return v.score_one(completion, answer)
