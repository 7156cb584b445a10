"""The one optimizer + LR-schedule builder: Hugging Face's schedules (what TRL's names mean),
shared by the engines and SFT."""

import inspect
import math

import pytest
import torch
from safetensors.torch import save_file

from reasoner.config import TrainConfig
from reasoner.engine import build_engine, build_optimizer, build_scheduler, lr_factor


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


def test_lr_schedules():
    # Hugging Face's schedules (what TRL's lr_scheduler_type / warmup_steps mean): warmup
    # step / warmup from 0, then decay over the remaining steps
    assert [lr_factor(s, "linear", 2, 6) for s in range(7)] == pytest.approx(
        [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0])
    assert lr_factor(0, "constant", 5, 10) == 1.0
    assert lr_factor(0, "constant_with_warmup", 2, 10) == 0.0
    assert lr_factor(1, "constant_with_warmup", 2, 10) == 0.5
    assert lr_factor(9, "constant_with_warmup", 2, 10) == 1.0
    assert lr_factor(5, "cosine", 0, 10) == pytest.approx(0.5)
    assert lr_factor(3, "cosine", 2, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 8)))
    with pytest.raises(ValueError, match="unknown lr_scheduler_type 'step'"):
        lr_factor(3, "step", 0, 10)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant", "constant_with_warmup"])
def test_schedules_equal_hugging_faces(kind):
    from transformers import get_scheduler

    cfg = TrainConfig(learning_rate=0.1, warmup_steps=3, lr_scheduler_type=kind)
    ours = build_scheduler(build_optimizer(TinyModel().parameters(), cfg), cfg, 12)
    hf = get_scheduler(kind, torch.optim.SGD(TinyModel().parameters(), lr=0.1),
                       num_warmup_steps=3, num_training_steps=12)
    for _ in range(12):
        assert ours.get_last_lr() == pytest.approx(hf.get_last_lr(), abs=1e-12)
        ours.optimizer.step()
        ours.step()
        hf.optimizer.step()
        hf.step()


def test_one_optimizer_builder_for_grpo_and_sft():
    """The GRPO engine and SFT build their AdamW and schedule through the same functions."""
    import reasoner.engine.deepspeed_engine as ds
    import reasoner.engine.torch_engine as te
    import reasoner.trainers.sft as sft

    for mod in (te, ds, sft):
        src = inspect.getsource(mod)
        assert "torch.optim.AdamW(" not in src and "LambdaLR(" not in src, mod.__name__
    cfg = TrainConfig(learning_rate=0.1, adam_beta1=0.8, adam_beta2=0.9, adam_epsilon=1e-6,
                     weight_decay=0.01)
    opt = build_optimizer(TinyModel().parameters(), cfg)
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["eps"], g["weight_decay"]) == (0.1, (0.8, 0.9), 1e-6, 0.01)
