"""The one interface every optimisation engine implements (plain torch, DeepSpeed ZeRO).

A trainer talks to its engine only through these methods, never by asking which engine it has:
precision (`autocast`), the rollout phase (`generation`: the full weights present), reading a
weight outside its module's forward (`gathered`), the micro-batch protocol (`begin_micro_batch`,
`backward`, `step`), checkpoints (`save` / `load` of the engine's part of a checkpoint
directory), export (`full_weights`) and the frozen KL reference (`prepare_reference`).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class StepResult:
    """What one optimizer step did."""

    grad_norm: float
    applied: bool  # False when the loss or the grad norm was not finite (the update was skipped)
    lr: float  # the learning rate the step used


class Engine(ABC):
    """A model being trained, its optimizer and its schedule."""

    model: torch.nn.Module  # the module itself (the forward runs it directly)
    params: list[torch.nn.Parameter]  # the trainable parameters
    # weights sharded across ranks outside `generation` / `gathered` (ZeRO-3)
    partitioned: bool = False
    # every rank writes its own part of a checkpoint (and its own RNG file)
    per_rank_checkpoint: bool = False
    # backward passes every rank must run in each step, even with nothing to learn
    min_micro_batches: int = 0

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The precision context of forward passes (training and scoring)."""
        yield

    @contextlib.contextmanager
    def generation(self) -> Iterator[None]:
        """Inside: the model's full weights are present (for the decode loop)."""
        yield

    @contextlib.contextmanager
    def gathered(self, params: list[torch.nn.Parameter]) -> Iterator[None]:
        """Inside: `params` whole, for code that reads a weight outside its module's forward
        (the fused-linear loss reads lm_head.weight), forward and backward."""
        yield

    def begin_micro_batch(self) -> None:  # noqa: B027 - a no-op unless the engine needs it
        """Called before each training forward."""

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradient of `loss` (the loss of this rank's share of the step)."""

    @abstractmethod
    def step(self, *, loss_finite: bool = True) -> StepResult:
        """Clip, apply the accumulated gradient and advance the schedule, unless the loss or the
        gradient norm is not finite on some rank: then every rank drops the gradient and nothing
        changes. A step in which no backward ran is a zero-gradient step."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the engine's part of a checkpoint (weights, optimizer, schedule) into
        `directory`; every rank calls it."""

    @abstractmethod
    def load(self, directory: Path) -> None:
        """Restore what `save` wrote."""

    @contextlib.contextmanager
    def full_weights(self) -> Iterator[torch.nn.Module]:
        """The module with its full weights, for export; every rank must enter."""
        yield self.model

    def prepare_reference(self, ref: torch.nn.Module) -> torch.nn.Module:
        """The frozen KL reference built from an (unsharded) copy of the initial policy."""
        return freeze(ref)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in eval mode with no trainable parameter."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
