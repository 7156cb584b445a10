"""Advantage estimators: rewards of one rollout batch -> one advantage per completion.

An estimator is a small registered function (`reasoner.algos.ADV_ESTIMATORS`,
``@register_adv_est(name)``, the entry-point group ``reasoner.advantage_estimators``)::

    def estimator(batch: AdvantageInput, cfg: AlgoConfig) -> torch.Tensor   # [N] float64

It sees the rewards of the GLOBAL batch (every rank's completions, rank 0's first), so batch
statistics need no collective; the trainer keeps its own rank's slice and sets the advantage of
dropped samples to 0 whatever the estimator returns. ``algo.adv_estimator`` names it. An
estimator returns one advantage per completion [N], or one per token [N, C] (REINFORCE++), for
which the batch carries the completion mask and the per-token rewards.

Built in: ``grpo`` (group-relative), ``rloo`` (leave-one-out baseline), ``reinforce_plus_plus``
(batch-whitened per-token returns). PPO / A2C's generalised advantage estimation over a critic's
values is `gae` (not an estimator of rewards alone: the PPO trainer calls it with the values).
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
    # per token (every rank's rows right-padded to one width C):
    mask: torch.Tensor | None = None  # [N, C] 1 on each completion's tokens (a prefix of the row)
    # [N, C] rewards given on tokens (the KL penalty -beta * KL_t with algo.kl_in_reward), already
    # summed into `rewards`; the rest of `rewards` (the score) belongs to the last token
    token_rewards: torch.Tensor | None = None


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


def rloo(batch: AdvantageInput, cfg: Any) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024): each reward minus the mean reward of the OTHER valid
    completions of its group, r_i - (sum_j r_j - r_i) / (n - 1) = n / (n - 1) (r_i - mean);
    0 in a group with fewer than two valid completions. Not scaled (``algo.scale_rewards`` is
    GRPO's)."""
    g = batch.num_generations
    if batch.rewards.numel() % g:
        raise ValueError(f"{batch.rewards.numel()} rewards is not a multiple of G={g}")
    r = batch.rewards.to(torch.float64).view(-1, g)
    v = batch.valid.view(-1, g)
    rv = torch.where(v, r, torch.zeros_like(r))
    cnt = v.to(torch.float64).sum(1, keepdim=True)
    baseline = (rv.sum(1, keepdim=True) - rv) / (cnt - 1).clamp(min=1)
    return torch.where(v & (cnt >= 2), r - baseline, torch.zeros_like(r)).view(-1)


def with_score_at_last_token(token_rewards: torch.Tensor, scores: torch.Tensor,
                             mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[N, C] float64: `token_rewards` on the masked tokens, plus each valid row's sequence
    score on its last masked token (InstructGPT's reward: the score where the episode ends)."""
    out = token_rewards.to(torch.float64) * mask.to(torch.float64)
    lengths = mask.sum(1).long()
    has = valid.bool() & (lengths > 0)
    rows = torch.arange(mask.shape[0])[has]
    out[rows, lengths[has] - 1] += scores.to(torch.float64)[has]
    return out


def last_token_rewards(batch: AdvantageInput) -> torch.Tensor:
    """[N, C] per-token rewards: `token_rewards` (0 when absent) plus, on each valid row's last
    token, the part of its sequence reward not already on its tokens (the score)."""
    if batch.mask is None:
        raise ValueError("a per-token estimator needs the completion mask (AdvantageInput.mask)")
    mask = batch.mask.to(torch.float64)
    tok = (torch.zeros_like(mask) if batch.token_rewards is None
           else batch.token_rewards.to(torch.float64) * mask)
    scores = torch.where(batch.valid, batch.rewards.to(torch.float64) - tok.sum(1),
                         torch.zeros_like(mask[:, 0]))
    return with_score_at_last_token(tok, scores, batch.mask, batch.valid)


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{s >= t} gamma^(s - t) r_s over each row's masked tokens (0 outside)."""
    m = mask.to(rewards.dtype)
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = (rewards[:, t] + gamma * running) * m[:, t]
        out[:, t] = running
    return out


def reinforce_plus_plus(batch: AdvantageInput, cfg: Any) -> torch.Tensor:
    """REINFORCE++ (Hu 2025): per-token returns G_t = sum_{s>=t} gamma^(s-t) r_s of the token
    rewards (the KL penalty -beta * KL_s on every token with ``algo.kl_in_reward``, the score at
    the last token; ``algo.gamma``), whitened over every valid token of the batch (global
    batch normalisation, no critic). Returns [N, C]."""
    r = last_token_rewards(batch)
    m = batch.mask.bool() & batch.valid[:, None]
    returns = discounted_returns(r, m, cfg.gamma)
    if int(m.sum()) < 2:
        return torch.zeros_like(returns)
    return torch.where(m, masked_whiten(returns, m), torch.zeros_like(returns))


# ---------------------------------------------------------------------------------------------
# per-token statistics (TRL's PPO formulas) and GAE


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum()


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of the masked entries (TRL's masked_var: Bessel's n / (n - 1))."""
    m = mask.to(x.dtype)
    n = m.sum()
    if n < 2:
        raise ValueError(f"the variance of {int(n)} token(s) is undefined: whitening needs a batch "
                         "of at least two completion tokens")
    centred = x - masked_mean(x, mask)
    return (centred * centred * m).sum() / n * (n / (n - 1))


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over the masked entries (TRL's masked_whiten); with
    ``shift_mean=False`` the mean is added back (only the scale changes). Entries outside the
    mask are transformed too: callers zero them."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) per token: (advantages, returns).

    rewards, values: [N, C]; values[i, t] = V(s_t), the critic's value of the state before
    completion token t. mask: [N, C], each row's completion tokens as a prefix. The state after
    a row's last token is terminal (value 0), whether the completion ended with EOS or was cut at
    max_completion_length (its score is its final reward):

        delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1}

    with V and A past the last token 0. returns = A + V (the critic's targets); both are 0
    outside the mask."""
    m = mask.to(values.dtype)
    r, v = rewards.to(values.dtype) * m, values * m
    adv = torch.zeros_like(v)
    next_v = torch.zeros_like(v[:, 0])
    next_a = torch.zeros_like(v[:, 0])
    for t in reversed(range(v.shape[1])):
        delta = r[:, t] + gamma * next_v - v[:, t]
        next_a = (delta + gamma * lam * next_a) * m[:, t]
        adv[:, t] = next_a
        next_v = v[:, t]
    return adv, (adv + v) * m


def explained_variance(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(target - pred) / Var(target) over the masked entries (1: perfect, 0: no better
    than the mean, < 0: worse); NaN with fewer than two entries or a constant target."""
    m = mask.bool()
    if int(m.sum()) < 2:
        return float("nan")
    var_t = masked_var(target, m)
    if float(var_t) == 0.0:
        return float("nan")
    return float(1.0 - masked_var(target - pred, m) / var_t)
