"""What every built-in task shares: the Task record and the train/test split rule.

A task is a procedural generator of rows plus the names of the reward functions that score a
completion for it. Rows are plain dicts: "question", "answer", "solution" (a short worked
solution in the R1 body format, i.e. what follows a prompt ending in ``<think>``:
``<reasoning></think><answer>ANSWER</answer>``) and task-specific columns.

Splits: a problem belongs to the held-out "test" split iff a stable hash (sha256) of its
question falls in the first `test_percent` of 100 buckets; so train and test are disjoint for
every seed and every n, and the test set does not depend on the train seed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from reasoner.data.templates import extract_answer

SPLITS = ("train", "test")
__all__ = ["SPLITS", "Task", "extract_answer", "in_test_split"]


def in_test_split(key: str, test_percent: int) -> bool:
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100
    return bucket < test_percent


@dataclass
class Task:
    """A procedural task. Subclasses implement `sample(rng) -> row`."""

    name: str = "task"
    reward_funcs: list[tuple[str, float]] = field(default_factory=list)
    accuracy_reward: str = ""
    default_template: str = "r1_short"
    test_percent: int = 10

    def sample(self, rng: random.Random) -> dict[str, Any]:
        raise NotImplementedError

    def rows(self, split: str, n: int, seed: int = 0, *, at_most: bool = False
             ) -> list[dict[str, Any]]:
        """`n` distinct rows of `split` ("train" or "test"), the same for the same (split, n, seed).
        A task that can't make `n` raises ValueError, or with `at_most` gives the rows it made
        (every distinct row of the split, in practice)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = random.Random(f"{self.name}:{split}:{seed}")
        want_test = split == "test"
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        tries, max_tries, last_new = 0, 200 * n + 1000, 0
        while len(out) < n:
            tries += 1
            if at_most and tries - last_new > 20 * len(seen) + 1000:
                return out  # a long run without a new question: the split is exhausted
            if tries > max_tries:
                if at_most:
                    return out
                raise ValueError(
                    f"task {self.name!r} could only make {len(out)} distinct {split} rows of the "
                    f"{n} asked for; make the task larger (more digits / numbers) or ask for fewer"
                )
            row = self.sample(rng)
            q = row["question"]
            if q in seen:
                continue
            seen.add(q)
            last_new = tries
            if in_test_split(q, self.test_percent) != want_test:
                continue
            out.append(row)
        return out
