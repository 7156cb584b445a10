"""The optimizer and the learning-rate schedule, built in ONE place for every trainer (GRPO, SFT,
and what comes next): AdamW from the ``train`` settings, and the schedules of Hugging Face's
``get_scheduler`` (what TRL's ``lr_scheduler_type`` / ``warmup_steps`` / ``warmup_ratio`` mean).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

import torch

SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")


class OptimizerSettings(Protocol):
    """The fields the builders read (the config's ``train`` section has them all)."""

    learning_rate: float
    adam_beta1: float
    adam_beta2: float
    adam_epsilon: float
    weight_decay: float
    lr_scheduler_type: str
    warmup_ratio: float
    warmup_steps: int


def lr_factor(step: int, kind: str, warmup: int, total: int) -> float:
    """Learning-rate multiplier for optimizer step `step` (0-based), as Hugging Face's schedules:
    linear warmup step / warmup (not for "constant"), then linear / cosine decay to 0 at `total`,
    or constant."""
    if kind == "constant":
        return 1.0
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))
    raise ValueError(f"unknown lr_scheduler_type {kind!r}; choose one of {SCHEDULERS}")


def num_warmup_steps(cfg: OptimizerSettings, num_optimizer_steps: int) -> int:
    """warmup_steps when > 0, else ceil(warmup_ratio * steps) (TrainingArguments' rule)."""
    return cfg.warmup_steps or math.ceil(cfg.warmup_ratio * num_optimizer_steps)


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimizerSettings, *,
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over `params`. fused=None: torch's fused kernel (one launch per parameter) when
    every parameter lives on the CPU or a CUDA device."""
    params = list(params)
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
    return torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay, fused=fused)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimizerSettings,
                    num_optimizer_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of `cfg.lr_scheduler_type` over `num_optimizer_steps` steps."""
    kind, warmup = cfg.lr_scheduler_type, num_warmup_steps(cfg, num_optimizer_steps)
    if kind not in SCHEDULERS:
        raise ValueError(f"unknown lr_scheduler_type {kind!r}; choose one of {SCHEDULERS}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, kind, warmup, num_optimizer_steps))


def apply_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set each parameter group's learning rate to this schedule's at its restored position:
    a run resumed with a larger train.max_steps would otherwise take its next step at the
    restored rate (the old schedule's, 0 at the end of a linear one) before the new schedule
    applies. With the same length the rate is the one restored, to the bit."""
    lrs = [base * f(scheduler.last_epoch)
           for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs


class EngineSettings(OptimizerSettings, Protocol):
    """What an engine reads besides the optimizer settings."""

    max_grad_norm: float
    bf16: bool
