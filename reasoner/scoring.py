"""Log-prob passes: the per-token log-probs of completions under a model, without gradients (the
old-policy pass for ``num_iterations > 1`` or the KL in the reward, the reference pass for the
KL term).

Every pass goes through `reasoner_kernels`: the model's forward (`reasoner.models.forward`)
gives the logits, and `reasoner_kernels.logprobs` gathers log_softmax(logits / T) at the
completion tokens (Triton on CUDA, the torch reference on the CPU); with
``train.use_fused_linear`` the forward stops at the last hidden states and
`reasoner_kernels.fused_linear_logprobs` applies the LM head tile by tile, so the N x V logits
are never built.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from reasoner.engine.base import Engine
from reasoner.models.forward import forward_logits


class Sequences(Protocol):
    """Prompts and completions as padded tensors (a `Rollout`, a trainer's `Batch`)."""

    prompt_ids: torch.Tensor  # [N, P] left padded
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor  # [N, C] right padded
    completion_mask: torch.Tensor


@dataclass
class ScoringSettings:
    """How a log-prob pass runs (from the config: rollout.temperature,
    train.per_device_train_batch_size, train.use_fused_linear, train.loss_backend,
    model.lean_forward)."""

    temperature: float
    micro_batch_size: int
    use_fused_linear: bool = False
    backend: str = "auto"
    allow_lean: bool = True
    share_prompts: bool = True  # run a group's shared prompt once (not under ZeRO-3)


@torch.no_grad()
def logprobs_from_forward(model: Any, x: torch.Tensor, ids: torch.Tensor,
                          settings: ScoringSettings, engine: Engine) -> torch.Tensor:
    """log p(ids) [n, c] (fp32) from `forward_logits`' output `x` of `model`: the logits, or
    with ``use_fused_linear`` the final hidden states (through the LM head tile by tile)."""
    import reasoner_kernels as rk

    x = x.detach()
    if not settings.use_fused_linear:
        return rk.logprobs(x, ids, settings.temperature, backend=settings.backend).logp.float()
    head = model.get_output_embeddings()
    # the head's weight is read outside its module's forward: under ZeRO-3 gather it here,
    # after the decoder's forward (whose hooks release a tied embedding)
    with engine.gathered(list(head.parameters())):
        w = head.weight if head.weight.dtype == x.dtype else head.weight.to(x.dtype)
        b = head.bias
        if b is not None and b.dtype != x.dtype:
            b = b.to(x.dtype)
        lp = rk.fused_linear_logprobs(x, w, ids, settings.temperature, bias=b,
                                      backend=settings.backend)
    return lp.logp.float()


@torch.no_grad()
def token_logprobs(model: Any, seqs: Sequences, settings: ScoringSettings, engine: Engine, *,
                   disable_adapter: bool = False) -> torch.Tensor:
    """log p(completion token | prefix) [N, C] (fp32) under `model`, micro-batch by micro-batch,
    in the engine's precision. `disable_adapter`: score with a peft model's adapters off (the
    LoRA reference)."""
    model.eval()
    out = []
    n = seqs.completion_ids.shape[0]
    ctx = model.disable_adapter() if disable_adapter else nullcontext()
    with ctx, engine.autocast():
        for i in range(0, n, settings.micro_batch_size):
            s = slice(i, min(i + settings.micro_batch_size, n))
            ids = seqs.completion_ids[s]
            x = forward_logits(model, seqs.prompt_ids[s], seqs.prompt_mask[s], ids,
                               seqs.completion_mask[s], return_hidden=settings.use_fused_linear,
                               share_prompts=settings.share_prompts,
                               allow_lean=settings.allow_lean)
            out.append(logprobs_from_forward(model, x, ids, settings, engine))
    return torch.cat(out) if out else torch.zeros(seqs.completion_ids.shape)


def completion_logprobs(model: Any, seqs: Sequences, *, temperature: float = 1.0) -> torch.Tensor:
    """Per-token log-probs [N, C] of the completions in one plain torch pass (log_softmax of the
    whole logits; for tests and reference implementations)."""
    logits = forward_logits(model, seqs.prompt_ids, seqs.prompt_mask, seqs.completion_ids,
                            seqs.completion_mask).float()
    if temperature and temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, seqs.completion_ids.unsqueeze(-1)).squeeze(-1)
