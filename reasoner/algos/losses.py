"""Policy losses: the per-token loss of a micro-batch, as small registered functions.

A policy loss (`reasoner.algos.POLICY_LOSSES`, ``@register_policy_loss(name)``, the
entry-point group ``reasoner.policy_losses``) maps a micro-batch's inputs and the ``algo``
config to per-token outputs::

    def policy_loss(inp: PolicyLossInput, cfg: AlgoConfig) -> GRPOTokenOutput   # token-shaped

The trainer weights ``out.loss`` by the aggregation weights (`reasoner.algos.aggregation`) and
backpropagates; the other outputs (clip flags, KL, entropy) feed the metrics. The built-in
losses run on `reasoner_kernels` (Triton on CUDA, the pure-torch reference otherwise), from the
logits or, with ``train.use_fused_linear``, from the last hidden states and the LM head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from reasoner_kernels import GRPOTokenOutput


@dataclass
class PolicyLossInput:
    """One micro-batch of n completions of c tokens."""

    ids: torch.Tensor  # [n, c] the completion tokens
    advantages: torch.Tensor  # [n, 1] or [n, c]
    mask: torch.Tensor  # [n, c] loss mask
    old_logp: torch.Tensor | None  # [n, c] behaviour policy; None = on-policy (logp.detach())
    ref_logp: torch.Tensor | None  # [n, c] reference policy (for a KL term)
    temperature: float
    backend: str  # reasoner_kernels backend: auto | triton | torch
    logits: torch.Tensor | None = None  # [n, c, V], or else:
    hidden: torch.Tensor | None = None  # [n, c, H] final hidden states, with the LM head's
    weight: torch.Tensor | None = None  # [V, H] weight
    bias: torch.Tensor | None = None  # [V] bias (or None)


def kl_coef_in_loss(cfg: Any) -> float:
    """beta, unless the KL penalty is folded into the reward instead (``algo.kl_in_reward``)."""
    return 0.0 if cfg.kl_in_reward else cfg.beta


def clipped(inp: PolicyLossInput, cfg: Any) -> GRPOTokenOutput:
    """The clipped importance-ratio surrogate of PPO / GRPO, TRL's GRPO loss:
    -min(min(r, delta) A, clip(r, 1 - epsilon, 1 + epsilon_high) A) (``algo.delta``: TRL's
    two-sided cap), dual-clip PPO's bound -c A for A < 0 (``algo.dual_clip``), plus beta times the
    per-token KL estimate (``algo.kl_estimator``), multiplied by r when
    ``algo.use_bias_correction_kl`` (TRL 1.16)."""
    import reasoner_kernels as rk

    kw = dict(temperature=inp.temperature, eps_low=cfg.epsilon, eps_high=cfg.epsilon_high,
              delta=cfg.delta, dual_clip=cfg.dual_clip, beta=kl_coef_in_loss(cfg),
              kl_estimator=cfg.kl_estimator, use_bias_correction_kl=cfg.use_bias_correction_kl,
              compute_entropy=True, backend=inp.backend)
    if inp.logits is not None:
        return rk.grpo_loss(inp.logits, inp.ids, inp.old_logp, inp.ref_logp, inp.advantages,
                            inp.mask, **kw)
    if inp.hidden is None or inp.weight is None:
        raise ValueError("a policy loss needs logits, or hidden states and the LM head weight")
    return rk.fused_linear_grpo_loss(inp.hidden, inp.weight, inp.ids, inp.old_logp, inp.ref_logp,
                                     inp.advantages, inp.mask, bias=inp.bias, **kw)
