"""The optimisation engine: plain torch (AdamW + scheduler + clipping + bf16 autocast).

The trainer only talks to `Engine` (backward, step, zero_grad, autocast, state); a DeepSpeed
engine with the same methods is the seam for multi-GPU ZeRO training (a later issue).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from reasoner.config import GRPOConfig


@dataclass
class StepResult:
    grad_norm: float
    applied: bool  # False when the grad norm was not finite (the update was skipped)
    lr: float


def lr_factor(step: int, kind: str, warmup: int, total: int) -> float:
    """Learning-rate multiplier at optimizer step `step` (0-based): linear warmup over `warmup`
    steps (not for "constant"), then linear / cosine decay to 0 at `total`, or constant."""
    if kind == "constant":
        return 1.0
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    raise ValueError(f"unknown lr_scheduler_type {kind!r}")


class Engine:
    """Plain-torch engine for one process."""

    def __init__(self, model: torch.nn.Module, cfg: GRPOConfig, num_optimizer_steps: int,
                 device: torch.device) -> None:
        self.model = model
        self.cfg = cfg
        self.device = device
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        self.params = params
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay,
        )
        warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * num_optimizer_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.lr_scheduler_type, warmup,
                                                num_optimizer_steps))

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.cfg.bf16:  # CUDA, or CPUs with bf16 matmul units (AMX / AVX512-BF16)
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def grad_norm(self) -> float:
        """Total L2 norm of the accumulated gradients, clipped in place to max_grad_norm."""
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))

    def step(self, *, loss_finite: bool = True) -> StepResult:
        """Clip, then apply the update and advance the schedule, unless loss or norm is not finite
        (then the gradients are dropped, nothing changes, and the schedule does not advance)."""
        lr = self.scheduler.get_last_lr()[0]
        norm = self.grad_norm()
        applied = loss_finite and math.isfinite(norm)
        if applied:
            self.optimizer.step()
            self.scheduler.step()
        self.zero_grad()
        return StepResult(grad_norm=norm, applied=applied, lr=lr)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def build_engine(model: torch.nn.Module, cfg: GRPOConfig, num_optimizer_steps: int,
                 device: torch.device, deepspeed_config: str | None = None) -> Engine:
    if deepspeed_config is not None:
        raise NotImplementedError(
            f"--deepspeed {deepspeed_config}: DeepSpeed training is not yet supported "
            "(planned); run without --deepspeed for plain torch training"
        )
    return Engine(model, cfg, num_optimizer_steps, device)
