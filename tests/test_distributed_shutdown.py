"""`reasoner.trainers.train` tears the process group down: after a normal end every rank waits
for the others first (a rank leaving gloo while a peer is in its last collective can abort at
exit); after an error it does not wait (a failed peer would never come)."""

import pytest

from reasoner import distributed, trainers


class _Trainer:
    fail = False

    def __init__(self, cfg, **kw):
        pass

    def train(self):
        if self.fail:
            raise RuntimeError("boom")
        return {"steps": 1}


@pytest.fixture
def calls(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "barrier", lambda *a, **k: seen.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group",
                        lambda *a, **k: seen.append("destroy"))
    monkeypatch.setattr(trainers.ALGORITHMS, "get", lambda name: _Trainer)
    return seen


class _Cfg:
    class algo:
        name = "fake"


def test_a_run_that_ends_normally_waits_for_every_rank_before_destroying_the_group(calls):
    assert trainers.train(_Cfg()) == {"steps": 1}
    assert calls == ["barrier", "destroy"]


def test_a_failed_run_destroys_the_group_without_waiting_and_raises(calls, monkeypatch):
    monkeypatch.setattr(_Trainer, "fail", True)
    with pytest.raises(RuntimeError, match="boom"):
        trainers.train(_Cfg())
    assert calls == ["destroy"]
