"""Optimisation engines behind one interface (`Engine`): plain torch for one process
(`TorchEngine`), DeepSpeed ZeRO for one or many (`DeepSpeedEngine`); the optimizer and the
learning-rate schedule every trainer shares (`optim`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from reasoner.engine.base import Engine, StepResult, freeze
from reasoner.engine.optim import (
    SCHEDULERS,
    build_optimizer,
    build_scheduler,
    lr_factor,
    num_warmup_steps,
)
from reasoner.engine.torch_engine import TorchEngine


def build_engine(model: torch.nn.Module, cfg: Any, num_optimizer_steps: int,
                 device: torch.device,
                 deepspeed_config: str | Path | dict[str, Any] | None = None) -> Engine:
    """DeepSpeed when a DeepSpeed config (file or dict) is given, else plain torch. `cfg`: the
    ``train`` settings (learning rate, schedule, clipping, precision, batch sizes)."""
    if deepspeed_config is not None:
        from reasoner.engine.deepspeed_engine import DeepSpeedEngine, load_deepspeed_config

        return DeepSpeedEngine(model, cfg, num_optimizer_steps, device,
                               load_deepspeed_config(deepspeed_config))
    return TorchEngine(model, cfg, num_optimizer_steps, device)


__all__ = ["SCHEDULERS", "Engine", "StepResult", "TorchEngine", "build_engine",
           "build_optimizer", "build_scheduler", "freeze", "lr_factor", "num_warmup_steps"]
