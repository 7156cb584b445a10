"""Reward shaping before the advantages: DAPO's soft overlong penalty, TRL's missing-EOS penalty,
and the KL penalty in the reward (``algo.kl_in_reward``; PPO's per-token ``algo.kl_coef``)."""

from __future__ import annotations

import torch


def overlong_penalty(
    lengths: torch.Tensor, max_completion_length: int, buffer_len: int, factor: float
) -> torch.Tensor:
    """DAPO soft overlong punishment (<= 0), added to the reward.

    0 up to L_max - buffer, then linear down to -factor at L_max, -factor beyond.
    """
    start = max_completion_length - buffer_len
    over = (lengths.to(torch.float64) - start).clamp(min=0)
    return -(over / buffer_len).clamp(max=1.0) * factor


def missing_eos_penalty(truncated: torch.Tensor, penalty: float) -> torch.Tensor:
    """-penalty for completions that end without EOS (cut at max_completion_length), else 0;
    added to the reward (TRL's missing_eos_penalty)."""
    return -penalty * truncated.to(torch.float64)


def token_kl(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: str = "k1"
) -> torch.Tensor:
    """Per-token KL(policy || ref) estimate [N, C] (float64), 0 outside `mask`."""
    from reasoner_kernels import kl_estimate

    kl = kl_estimate(logp.double(), ref_logp.double(), estimator)
    return torch.where(mask.bool(), kl, torch.zeros_like(kl))


def sequence_kl(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: str = "k1"
) -> torch.Tensor:
    """Per-sequence KL(policy || ref): sum over the active tokens of the per-token estimate."""
    return token_kl(logp, ref_logp, mask, estimator).sum(-1)
