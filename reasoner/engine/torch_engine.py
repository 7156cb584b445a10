"""The plain-torch engine for one process: AdamW + schedule (`optim`), clipping, bf16 autocast,
fp32 master weights for low-precision weights, checkpoints as a Hugging Face model directory
plus ``engine.pt`` (optimizer, schedule and master weights)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from reasoner.engine.base import Engine, StepResult
from reasoner.engine.optim import EngineSettings, apply_schedule, build_optimizer, build_scheduler

ENGINE_FILE = "engine.pt"
LOW_PRECISION = (torch.bfloat16, torch.float16)


def is_peft_model(model: Any) -> bool:
    return getattr(model, "peft_config", None) is not None and hasattr(model, "get_base_model")


class TorchEngine(Engine):
    """Plain torch, one process.

    Trainable weights in bf16 / fp16 get fp32 master copies: the optimizer (and its state)
    works on the masters, each step's gradient is added to them in fp32 and the result is
    rounded into the model's weights. Without them, an update smaller than half a bf16 ulp of
    its weight (lr 1e-6 on weights ~1e-2 and up) rounds away and the weight never moves."""

    def __init__(self, model: torch.nn.Module, cfg: EngineSettings, num_optimizer_steps: int,
                 device: torch.device) -> None:
        self.model = model
        self.device = device
        self.bf16 = cfg.bf16
        self.max_grad_norm = cfg.max_grad_norm
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        # what the optimizer updates: fp32 masters of low-precision weights, the others as is
        self.master_params = [
            p.detach().float().requires_grad_() if p.dtype in LOW_PRECISION else p
            for p in self.params]
        self.optimizer = build_optimizer(self.master_params, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, num_optimizer_steps)

    @property
    def has_masters(self) -> bool:
        """Whether some trainable weight is low precision and trains through an fp32 master."""
        return any(m is not p for p, m in zip(self.params, self.master_params))

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.bf16:  # CUDA, or CPUs with bf16 matmul units (AMX / AVX512-BF16)
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def grad_norm(self) -> float:
        """Total L2 norm of the accumulated gradients, clipped in place to max_grad_norm."""
        max_norm = self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(self.master_params, max_norm))

    def step(self, *, loss_finite: bool = True) -> StepResult:
        lr = self.scheduler.get_last_lr()[0]
        if all(p.grad is None for p in self.params):  # no backward ran: a zero-gradient step
            for p in self.params:
                p.grad = torch.zeros_like(p)
        for p, m in zip(self.params, self.master_params):  # the gradient, in fp32, to masters
            if m is not p:
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None
        norm = self.grad_norm()
        applied = loss_finite and math.isfinite(norm)
        if applied:
            self.optimizer.step()
            self.scheduler.step()
            self._masters_to_weights()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(grad_norm=norm, applied=applied, lr=lr)

    @torch.no_grad()
    def _masters_to_weights(self) -> None:
        for p, m in zip(self.params, self.master_params):
            if m is not p:
                p.copy_(m)  # rounds to the weight's dtype

    def state_dict(self) -> dict[str, Any]:
        state = {"optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict()}
        if self.has_masters:  # the fp32 weights the next steps continue from
            state["master_weights"] = [m.detach() for p, m in
                                       zip(self.params, self.master_params) if m is not p]
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        apply_schedule(self.scheduler)  # this run's schedule (train.max_steps may have grown)
        masters = iter(state.get("master_weights", []))
        for p, m in zip(self.params, self.master_params):
            if m is not p:  # from the checkpoint, else from the (rounded) weights just loaded
                m.copy_(next(masters, p))

    def save(self, directory: Path) -> None:
        """The model in Hugging Face format (adapters only for a peft model) and engine.pt."""
        self.model.save_pretrained(directory, safe_serialization=True)
        torch.save(self.state_dict(), directory / ENGINE_FILE)

    def load(self, directory: Path) -> None:
        from safetensors.torch import load_file

        files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"checkpoint {directory} has no model weights")
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(f, device=str(self.device)))
        if is_peft_model(self.model):
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, state)
        else:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            tied = {k for k in missing if "lm_head" in k or "embed" in k}
            if unexpected or set(missing) - tied:
                raise ValueError(f"checkpoint {directory} does not match the model: missing "
                                 f"{sorted(set(missing) - tied)[:5]}, unexpected {unexpected[:5]}")
        engine_file = directory / ENGINE_FILE
        if not engine_file.is_file():
            raise FileNotFoundError(f"checkpoint {directory} has no {ENGINE_FILE}")
        self.load_state_dict(torch.load(engine_file, map_location="cpu", weights_only=False))
