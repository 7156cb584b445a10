"""The plain-torch engine: a non-finite step is skipped, a step without backward is a zero-gradient
step, a bad DeepSpeed file is named."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

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
        build_engine(TinyModel(), TrainConfig(), 1, torch.device("cpu"), tmp_path / "nope.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="list.json.*JSON object"):
        build_engine(TinyModel(), TrainConfig(), 1, torch.device("cpu"), tmp_path / "list.json")


def test_a_step_without_backward_is_a_zero_gradient_step():
    """A rank with nothing to learn from still steps: Adam's moments decay and the schedule
    advances, as with an all-zero gradient."""
    model = TinyModel()
    eng = _engine(model)
    model.lin(torch.ones(1, 3)).sum().backward()
    eng.step()
    eng.step()  # warmup step 1 of 2 (lr 0.05): only the momentum of step 0 moves the weights
    before = model.lin.weight.detach().clone()
    res = eng.step()  # no backward at all
    assert res.applied and res.grad_norm == 0.0 and res.lr == pytest.approx(0.1)
    assert not torch.equal(model.lin.weight, before)  # momentum keeps moving the weights
    assert eng.scheduler.last_epoch == 3
