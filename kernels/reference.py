"""Pure-torch references for the fused GRPO kernels.

These functions are the semantic definition the Triton kernels are tested against (in float64),
and they are also the trainer's CPU path. They know nothing of GRPO's config: plain tensors in,
plain tensors out. Loss aggregation over tokens (grpo / bnpo / dr_grpo / dapo) is the caller's.

Per token t with log-prob  logp = log_softmax(logits / temperature)[id]  (TRL 1.16's GRPOTrainer
loss for loss_type grpo / bnpo / dr_grpo / dapo at importance_sampling_level="token"):

    log_ratio = clamp(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio     = exp(log_ratio)
    capped    = min(ratio, delta) if delta else ratio  (TRL's `delta`: INTELLECT-2 two-sided clip)
    pg        = -min(capped * A, clamp(ratio, 1 - eps_low, 1 + eps_high) * A)
    if dual_clip (> 1) and A < 0:  pg = min(pg, -dual_clip * A)          (dual-clip PPO)
    kl        = k1 | k2 | k3 of (policy || reference), with d = clamp(ref_logp - logp, ±clamp):
                  k1 = -d,  k2 = d^2 / 2,  k3 = exp(d) - d - 1
    if use_bias_correction_kl:  kl = kl * ratio       (TRL's option; the ratio keeps its gradient)
    loss      = (pg + beta * kl) * mask                (exactly 0 where mask == 0)

`old_logp=None` means the sample is on-policy (num_iterations == 1): old_logp = logp.detach(),
so the ratio is 1 with the right gradient (d ratio / d logp = 1, as in TRL).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# exp(20) ~ 4.9e8: large enough never to bind for a sane policy, small enough that ratio * A and
# its gradient stay finite in fp32 (and bf16) for |A| up to ~1e30.
LOG_RATIO_CLAMP = 20.0

KL_ESTIMATORS = ("k1", "k2", "k3")


@dataclass
class GRPOTokenOutput:
    """Per-token outputs, all of the token shape (ids.shape)."""

    loss: torch.Tensor  # pg + beta * kl, masked (differentiable)
    logp: torch.Tensor  # per-token log-prob of the sampled id, fp32 (differentiable)
    kl: torch.Tensor | None  # per-token KL estimate, masked; None without ref_logp
    clipped_low: torch.Tensor  # bool: capped ratio < 1 - eps_low and A < 0 (TRL's is_low_clipped)
    clipped_high: torch.Tensor  # bool: capped ratio > 1 + eps_high and A > 0 (is_high_clipped)
    clipped_dual: torch.Tensor  # bool: the dual-clip bound -dual_clip * A was taken (A < 0)
    clipped_delta: torch.Tensor  # bool: ratio > delta and the min took the capped term
    entropy: torch.Tensor | None  # per-token entropy of softmax(logits / T), if asked


def selective_logp(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log_softmax(logits / T) gathered at ids; fp32 (or float64 for float64 input). Shape ids.shape."""
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    x = x / temperature
    return x.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)


def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    logp = torch.log_softmax(x / temperature, dim=-1)
    p = logp.exp()
    # 0 * -inf is NaN; an impossible token contributes 0.
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(-1)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """KL(policy || reference) per token from log-probs of the sampled token (no bias correction:
    `grpo_loss_from_logp(use_bias_correction_kl=True)` multiplies it by the ratio)."""
    d = torch.clamp(ref_logp - logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        return torch.exp(d) - d - 1.0
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def check_clip_args(delta: float | None, dual_clip: float | None) -> None:
    """The two ratio bounds' domains (one message for the public API and the references)."""
    if delta is not None and not delta > 1.0:
        raise ValueError(
            f"delta (the two-sided clip's cap on the ratio, TRL's GRPOConfig.delta) must be > 1, "
            f"got {delta} (INTELLECT-2 recommends > 1 + eps_high)"
        )
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip (the dual-clip PPO bound for A < 0) must be > 1, got {dual_clip}")


def grpo_loss_from_logp(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    delta: float | None = None,
    dual_clip: float | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    use_bias_correction_kl: bool = False,
) -> GRPOTokenOutput:
    """The clipped-ratio + KL loss from per-token log-probs. advantages broadcast to logp.shape."""
    if eps_high is None:
        eps_high = eps_low
    check_clip_args(delta, dual_clip)
    mask_b = mask.bool()
    adv = torch.broadcast_to(advantages.to(logp.dtype), logp.shape)
    old = logp.detach() if old_logp is None else old_logp.to(logp.dtype)
    log_ratio = torch.clamp(logp - old, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    clipped_ratio = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    capped = ratio if delta is None else torch.clamp(ratio, max=delta)
    unclipped_term, clipped_term = capped * adv, clipped_ratio * adv
    pg = -torch.minimum(unclipped_term, clipped_term)
    clipped_low = (capped < 1.0 - eps_low) & (adv < 0) & mask_b
    clipped_high = (capped > 1.0 + eps_high) & (adv > 0) & mask_b
    clipped_delta = torch.zeros_like(mask_b)
    if delta is not None:
        clipped_delta = (ratio > delta) & (unclipped_term < clipped_term) & mask_b
    clipped_dual = torch.zeros_like(mask_b)
    if dual_clip is not None:
        bound = -dual_clip * adv
        take = (adv < 0) & (pg > bound)
        pg = torch.where(take, bound, pg)
        clipped_dual = take & mask_b
    loss = pg
    kl = None
    if ref_logp is not None:
        kl = kl_estimate(logp, ref_logp.to(logp.dtype), kl_estimator)
        if use_bias_correction_kl:
            kl = kl * ratio
        if beta != 0.0:
            loss = loss + beta * kl
        kl = torch.where(mask_b, kl, torch.zeros_like(kl))
    elif beta != 0.0:
        raise ValueError("beta != 0 needs ref_logp")
    # where(), not multiply: a masked token with a non-finite value must still give exactly 0.
    loss = torch.where(mask_b, loss, torch.zeros_like(loss))
    return GRPOTokenOutput(
        loss, logp, kl, clipped_low, clipped_high, clipped_dual, clipped_delta, None
    )


def grpo_loss_reference(
    logits: torch.Tensor,
    ids: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    delta: float | None = None,
    dual_clip: float | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    use_bias_correction_kl: bool = False,
    compute_entropy: bool = False,
) -> GRPOTokenOutput:
    """Logits-input reference: logits [..., V], ids/old/ref/mask [...], advantages broadcastable."""
    logp = selective_logp(logits, ids, temperature)
    out = grpo_loss_from_logp(
        logp, old_logp, ref_logp, advantages, mask,
        eps_low=eps_low, eps_high=eps_high, delta=delta, dual_clip=dual_clip, beta=beta,
        kl_estimator=kl_estimator, use_bias_correction_kl=use_bias_correction_kl,
    )
    if compute_entropy:
        with torch.no_grad():
            out.entropy = token_entropy(logits, temperature)
    return out


def fused_linear_grpo_loss_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    ids: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    **kwargs,
) -> GRPOTokenOutput:
    """Fused-linear reference: hidden [N, H] @ weight[V, H].T (+ bias) -> logits, then as above."""
    logits = hidden @ weight.t()
    if bias is not None:
        logits = logits + bias
    return grpo_loss_reference(logits, ids, old_logp, ref_logp, advantages, mask, **kwargs)
