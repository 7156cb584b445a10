"""Atomic checkpoints: complete vs partial, keep-last-K, RNG round trip, engine state."""

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from reasoner.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_partial_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from reasoner.config import GRPOConfig
from reasoner.engine import build_engine, lr_factor


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def save_pretrained(self, path, safe_serialization=True):
        save_file({k: v.contiguous() for k, v in self.state_dict().items()},
                  str(path / "model.safetensors"))


def _engine(model):
    cfg = GRPOConfig(learning_rate=0.1, warmup_steps=2, lr_scheduler_type="linear")
    return build_engine(model, cfg, 10, torch.device("cpu"))


def test_save_load_round_trip_and_keep_last_k(tmp_path):
    torch.manual_seed(0)
    model = TinyModel()
    eng = _engine(model)
    for step in range(1, 5):
        model.lin(torch.randn(4, 3)).sum().backward()
        eng.step()
        save_checkpoint(tmp_path, step, model=model, tokenizer=None,
                        engine_state=eng.state_dict(), trainer_state={"data": {"epoch": 0, "index": step}},
                        save_total_limit=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    ck = latest_checkpoint(tmp_path)
    assert ck.name == "checkpoint-4"
    state = load_checkpoint(ck)
    assert state["trainer"] == {"step": 4, "data": {"epoch": 0, "index": 4}}
    w = load_file(ck / "model.safetensors")
    assert torch.equal(w["lin.weight"], model.lin.weight.detach())
    # a fresh engine restored from the checkpoint continues exactly like the original
    model2 = TinyModel()
    model2.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    eng2 = _engine(model2)
    eng2.load_state_dict(state["engine"])
    assert eng2.scheduler.get_last_lr() == eng.scheduler.get_last_lr()
    x = torch.randn(4, 3)
    for m, e in ((model, eng), (model2, eng2)):
        m.lin(x).sum().backward()
        e.step()
    assert torch.equal(model.lin.weight, model2.lin.weight)


def test_partial_checkpoints_are_ignored_and_cleaned(tmp_path):
    model = TinyModel()
    save_checkpoint(tmp_path, 2, model=model, tokenizer=None, engine_state={}, trainer_state={})
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


def test_non_finite_grad_norm_skips_update():
    model = TinyModel()
    eng = _engine(model)
    before = model.lin.weight.detach().clone()
    (model.lin(torch.ones(1, 3)).sum() * float("inf")).backward()
    res = eng.step()
    assert not res.applied and not np.isfinite(res.grad_norm)
    assert torch.equal(model.lin.weight, before)
    assert all(p.grad is None for p in model.parameters())


def test_deepspeed_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        build_engine(TinyModel(), GRPOConfig(), 1, torch.device("cpu"), tmp_path / "nope.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="list.json.*JSON object"):
        build_engine(TinyModel(), GRPOConfig(), 1, torch.device("cpu"), tmp_path / "list.json")


def test_lr_schedules():
    assert [lr_factor(s, "linear", 2, 6) for s in range(7)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25, 0.0])
    assert lr_factor(0, "constant", 5, 10) == 1.0
    assert lr_factor(0, "constant_with_warmup", 1, 10) == 0.5
    assert lr_factor(9, "constant_with_warmup", 1, 10) == 1.0
    assert lr_factor(5, "cosine", 0, 10) == pytest.approx(0.5)
