"""Advantage estimators: rewards of one rollout batch -> one advantage per completion.

An estimator is a small registered function (`reasoner.algos.ADV_ESTIMATORS`,
``@register_adv_est(name)``, the entry-point group ``reasoner.advantage_estimators``)::

    def estimator(batch: AdvantageInput, cfg: AlgoConfig) -> torch.Tensor   # [N] float64

It sees the rewards of the GLOBAL batch (every rank's completions, rank 0's first), so batch
statistics need no collective; the trainer keeps its own rank's slice and sets the advantage of
dropped samples to 0 whatever the estimator returns. ``algo.adv_estimator`` names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

ADV_EPS = 1e-4  # added to the std when scaling advantages (as TRL)
SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class AdvantageInput:
    """The rewards of one rollout batch of N = groups * G completions (all ranks)."""

    rewards: torch.Tensor  # [N] float64 combined reward; NaN where the sample is dropped
    valid: torch.Tensor  # [N] bool: the sample has a reward (not dropped)
    num_generations: int  # G: rows g*G .. g*G+G-1 are prompt g's group


@dataclass
class GroupStats:
    """Per-group reward statistics over the valid members (dropped samples left out)."""

    mean: torch.Tensor  # [groups]
    std: torch.Tensor  # [groups] unbiased sample std; 0 with fewer than 2 valid members
    zero_std: torch.Tensor  # [groups] bool: all valid rewards equal -> no learning signal


def group_stats(rewards: torch.Tensor, valid: torch.Tensor, num_generations: int) -> GroupStats:
    """Mean and unbiased std (as TRL) of each group's valid rewards."""
    if rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards is not a multiple of G={num_generations}")
    r = rewards.to(torch.float64).view(-1, num_generations)
    v = valid.view(-1, num_generations)
    cnt = v.to(torch.float64).sum(1)
    mean = torch.where(v, r, torch.zeros_like(r)).sum(1) / cnt.clamp(min=1)
    dev = torch.where(v, r - mean[:, None], torch.zeros_like(r))
    var = (dev * dev).sum(1) / (cnt - 1).clamp(min=1)
    std = torch.where(cnt >= 2, var.sqrt(), torch.zeros_like(var))
    return GroupStats(mean=mean, std=std, zero_std=std < 1e-6)


def grpo(batch: AdvantageInput, cfg: Any) -> torch.Tensor:
    """Group-relative advantages (GRPO, TRL's ``scale_rewards``): r - mean of the group, divided
    by the std of the group ("group") or of the whole batch ("batch") plus 1e-4, or not divided
    ("none", Dr. GRPO). Dropped samples are left out of the means and stds."""
    g = batch.num_generations
    st = group_stats(batch.rewards, batch.valid, g)
    r = batch.rewards.to(torch.float64).view(-1, g)
    v = batch.valid.view(-1, g)
    dev = torch.where(v, r - st.mean[:, None], torch.zeros_like(r))
    if cfg.scale_rewards == "group":
        adv = dev / (st.std[:, None] + ADV_EPS)
    elif cfg.scale_rewards == "batch":
        flat = r[v]
        bstd = flat.std() if flat.numel() >= 2 else torch.zeros((), dtype=torch.float64)
        adv = dev / (bstd + ADV_EPS)
    elif cfg.scale_rewards == "none":
        adv = dev
    else:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS}, got "
                         f"{cfg.scale_rewards!r}")
    return adv.view(-1)
