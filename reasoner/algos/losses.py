"""Policy losses: the per-token loss of a micro-batch, as small registered functions.

A policy loss (`reasoner.algos.POLICY_LOSSES`, ``@register_policy_loss(name)``, the
entry-point group ``reasoner.policy_losses``) maps a micro-batch's inputs and the ``algo``
config to per-token outputs::

    def policy_loss(inp: PolicyLossInput, cfg: AlgoConfig) -> GRPOTokenOutput   # token-shaped

The trainer weights ``out.loss`` by the aggregation weights (`reasoner.algos.aggregation`) and
backpropagates; the other outputs (clip flags, KL, entropy) feed the metrics. The built-in
losses run on `reasoner_kernels` (Triton on CUDA, the pure-torch reference otherwise), from the
logits or, with ``train.use_fused_linear``, from the last hidden states and the LM head.

The trainer also hands the aggregation weights in (``inp.weights``). A loss may then return a
`WeightedTokenOutput`: ``weighted_loss`` = sum(weights * per-token loss) is what backpropagates
and the per-token ``loss`` is detached. The built-in losses do so when Triton runs them from
logits: the kernel's fused forward+backward mode (`reasoner_kernels.weighted_grpo_loss`) writes
dlogits in the forward pass while each row is still in L2 (about 2 N V bytes of memory traffic
instead of 3).
Built in: ``clipped`` (PPO / GRPO's clipped ratio) and ``vanilla`` (no clipping: REINFORCE,
A2C). A critic's value loss is `clipped_value_loss`.
"""

from __future__ import annotations

import math
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
    weights: torch.Tensor | None = None  # [n, c] the aggregation weights of these tokens


@dataclass
class WeightedTokenOutput(GRPOTokenOutput):
    """Per-token outputs (all detached) and their weighted sum, the differentiable loss."""

    weighted_loss: torch.Tensor | None = None  # 0-dim: sum(inp.weights * per-token loss)


def kl_coef_in_loss(cfg: Any) -> float:
    """beta, unless the KL penalty is folded into the reward instead (``algo.kl_in_reward``)."""
    return 0.0 if cfg.kl_in_reward else cfg.beta


def _kernel_loss(inp: PolicyLossInput, **kw: Any) -> GRPOTokenOutput:
    import reasoner_kernels as rk
    from reasoner_kernels.api import use_triton

    kw = dict(kw, temperature=inp.temperature, compute_entropy=True, backend=inp.backend)
    if inp.logits is not None and inp.weights is not None and use_triton(inp.backend, inp.logits):
        out = rk.weighted_grpo_loss(inp.logits, inp.ids, inp.old_logp, inp.ref_logp,
                                    inp.advantages, inp.mask, inp.weights, **kw)
        t = out.tokens
        return WeightedTokenOutput(t.loss, t.logp, t.kl, t.clipped_low, t.clipped_high,
                                   t.clipped_dual, t.clipped_delta, t.entropy,
                                   weighted_loss=out.loss)
    if inp.logits is not None:
        return rk.grpo_loss(inp.logits, inp.ids, inp.old_logp, inp.ref_logp, inp.advantages,
                            inp.mask, **kw)
    if inp.hidden is None or inp.weight is None:
        raise ValueError("a policy loss needs logits, or hidden states and the LM head weight")
    return rk.fused_linear_grpo_loss(inp.hidden, inp.weight, inp.ids, inp.old_logp, inp.ref_logp,
                                     inp.advantages, inp.mask, bias=inp.bias, **kw)


def clipped(inp: PolicyLossInput, cfg: Any) -> GRPOTokenOutput:
    """The clipped importance-ratio surrogate of PPO / GRPO, TRL's GRPO loss:
    -min(min(r, delta) A, clip(r, 1 - epsilon, 1 + epsilon_high) A) (``algo.delta``: TRL's
    two-sided cap), dual-clip PPO's bound -c A for A < 0 (``algo.dual_clip``), plus beta times the
    per-token KL estimate (``algo.kl_estimator``), multiplied by r when
    ``algo.use_bias_correction_kl`` (TRL 1.16)."""
    return _kernel_loss(inp, eps_low=cfg.epsilon, eps_high=cfg.epsilon_high, delta=cfg.delta,
                        dual_clip=cfg.dual_clip, beta=kl_coef_in_loss(cfg),
                        kl_estimator=cfg.kl_estimator,
                        use_bias_correction_kl=cfg.use_bias_correction_kl)


def vanilla(inp: PolicyLossInput, cfg: Any) -> GRPOTokenOutput:
    """The policy-gradient loss without clipping, -r A with r = pi / pi_old (REINFORCE, A2C): on
    policy r = 1 and the gradient is -A grad log pi. Plus beta times the per-token KL estimate as
    in `clipped`."""
    return _kernel_loss(inp, eps_low=math.inf, eps_high=math.inf, beta=kl_coef_in_loss(cfg),
                        kl_estimator=cfg.kl_estimator,
                        use_bias_correction_kl=cfg.use_bias_correction_kl)


@dataclass
class ValueLossOutput:
    """Per-token value loss of a micro-batch."""

    loss: torch.Tensor  # [n, c] 0.5 * squared error (the larger of clipped / unclipped)
    clipped: torch.Tensor  # [n, c] bool: the clipped prediction's error was the larger (TRL's
    # vf_clipfrac counts these)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, cliprange_value: float | None) -> ValueLossOutput:
    """PPO's value loss per token, TRL's formula: 0.5 * max((v - R)^2, (v_clip - R)^2) with
    v_clip = clamp(v, v_old - cliprange_value, v_old + cliprange_value); ``cliprange_value=None``:
    0.5 * (v - R)^2. 0 outside `mask` (whatever the values there)."""
    ret = returns.to(values.dtype)
    err = (values - ret) ** 2
    if cliprange_value is None:
        worst, clipped = err, torch.zeros_like(mask, dtype=torch.bool)
    else:
        old = old_values.to(values.dtype)
        v_clip = torch.clamp(values, old - cliprange_value, old + cliprange_value)
        err_clip = (v_clip - ret) ** 2
        worst, clipped = torch.maximum(err, err_clip), (err_clip > err) & mask.bool()
    loss = torch.where(mask.bool(), 0.5 * worst, torch.zeros_like(worst))
    return ValueLossOutput(loss=loss, clipped=clipped.detach())
