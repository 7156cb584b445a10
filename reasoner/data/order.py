"""The order in which a trainer visits its rows."""

from __future__ import annotations

import numpy as np


class DataOrder:
    """Endless shuffled passes over n rows; the position is two ints (epoch, index), so a
    checkpoint holds it exactly."""

    def __init__(self, n: int, seed: int, epoch: int = 0, index: int = 0) -> None:
        self.n, self.seed, self.epoch, self.index = n, seed, epoch, index
        self._perm = self._make_perm()

    def _make_perm(self) -> list[int]:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            if self.index >= self.n:
                self.epoch, self.index = self.epoch + 1, 0
                self._perm = self._make_perm()
            out.append(self._perm[self.index])
            self.index += 1
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}
