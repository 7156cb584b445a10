"""Atomic checkpoints: complete vs partial, keep-last-K, RNG round trip, the engine's part."""

import json
import random

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from reasoner.checkpoint import (
    begin_checkpoint,
    capture_rng_state,
    commit_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_partial_checkpoints,
    restore_rng_state,
    rng_file,
)
from reasoner.config import TrainConfig
from reasoner.engine import build_engine


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def save_pretrained(self, path, safe_serialization=True):
        save_file({k: v.contiguous() for k, v in self.state_dict().items()},
                  str(path / "model.safetensors"))


def _engine(model):
    cfg = TrainConfig(learning_rate=0.1, warmup_steps=2, lr_scheduler_type="linear")
    return build_engine(model, cfg, 10, torch.device("cpu"))


def save_checkpoint(root, step, eng, trainer_state, save_total_limit=None):
    """What the trainer does in one process: the engine's part, the RNG, then the commit."""
    tmp = begin_checkpoint(root, step)
    eng.save(tmp)
    torch.save(capture_rng_state(), tmp / rng_file(None))
    return commit_checkpoint(root, step, tmp, trainer_state, save_total_limit)


def test_save_load_round_trip_and_keep_last_k(tmp_path):
    torch.manual_seed(0)
    model = TinyModel()
    eng = _engine(model)
    for step in range(1, 5):
        model.lin(torch.randn(4, 3)).sum().backward()
        eng.step()
        save_checkpoint(tmp_path, step, eng, {"data": {"epoch": 0, "index": step}},
                        save_total_limit=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    ck = latest_checkpoint(tmp_path)
    assert ck.name == "checkpoint-4"
    state = load_checkpoint(ck)
    assert state["trainer"] == {"step": 4, "data": {"epoch": 0, "index": 4}}
    w = load_file(ck / "model.safetensors")
    assert torch.equal(w["lin.weight"], model.lin.weight.detach())
    # a fresh engine restored from the checkpoint (weights, optimizer, schedule) continues
    # exactly like the original
    model2 = TinyModel()
    eng2 = _engine(model2)
    eng2.load(ck)
    assert torch.equal(model2.lin.weight, model.lin.weight)
    assert eng2.scheduler.get_last_lr() == eng.scheduler.get_last_lr()
    x = torch.randn(4, 3)
    for m, e in ((model, eng), (model2, eng2)):
        m.lin(x).sum().backward()
        e.step()
    assert torch.equal(model.lin.weight, model2.lin.weight)


def test_partial_checkpoints_are_ignored_and_cleaned(tmp_path):
    save_checkpoint(tmp_path, 2, _engine(TinyModel()), {})
    (tmp_path / ".tmp-checkpoint-4").mkdir()  # a run killed while writing
    bad = tmp_path / "checkpoint-6"  # a directory without trainer_state.json is not complete
    bad.mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"
    removed = remove_partial_checkpoints(tmp_path)
    assert [p.name for p in removed] == [".tmp-checkpoint-4"]
    assert json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())["step"] == 2
    assert latest_checkpoint(tmp_path / "nope") is None


def test_rng_state_round_trip():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    state = capture_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
