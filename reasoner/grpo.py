"""GRPO's arithmetic around the per-token loss: rewards -> advantages, token weights, KL-in-reward.

The per-token loss itself (log-prob gather, clipped ratio, dual clip, KL estimate) lives in
`reasoner_kernels` (Triton kernels on CUDA, the pure-torch reference otherwise); `token_loss` calls it.

Loss aggregation is expressed as per-token *weights* over the whole accumulated batch:

    loss = sum_{i,t} w[i, t] * l[i, t]

so a micro-batch contributes `sum(w[mb] * l[mb])` and the gradients of any split into
micro-batches add up to exactly the full-batch gradient (no "divide by accumulation steps").

    grpo     w = mask / (len_i * n_seq)          mean over tokens of a sequence, then over sequences
    bnpo     w = mask / n_tok                    all tokens of the accumulated batch (this rank)
    dr_grpo  w = mask / (N * max_completion_length)   N = all sequences of the batch
    dapo     w = mask / n_tok_global             tokens of the accumulated batch on all ranks

n_seq counts sequences with at least one active token; masked-out (skipped, truncated) sequences
have no weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

ADV_EPS = 1e-4  # added to the std when scaling advantages (as TRL)


@dataclass
class Advantages:
    """Group-relative advantages of one rollout batch of N = groups * G completions."""

    rewards: torch.Tensor  # [N] combined reward (NaN where the sample is skipped)
    advantages: torch.Tensor  # [N] (0 where skipped)
    valid: torch.Tensor  # [N] bool: the sample could be judged
    group_mean: torch.Tensor  # [groups]
    group_std: torch.Tensor  # [groups] (0 when fewer than 2 valid members)
    zero_std: torch.Tensor  # [groups] bool: all valid rewards equal -> no learning signal


def combine_rewards(
    per_func: Sequence[Sequence[float | None]], weights: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sum of several reward functions' outputs.

    per_func: one list of N values per function. A sample with None from any function whose
    weight is non-zero can't be judged: its combined reward is NaN and valid is False.
    Returns (rewards [N] float64, valid [N] bool).
    """
    if len(per_func) != len(weights):
        raise ValueError(f"{len(per_func)} reward lists for {len(weights)} weights")
    n = len(per_func[0]) if per_func else 0
    total = torch.zeros(n, dtype=torch.float64)
    valid = torch.ones(n, dtype=torch.bool)
    for values, w in zip(per_func, weights):
        if len(values) != n:
            raise ValueError(f"reward function returned {len(values)} values for {n} completions")
        for i, v in enumerate(values):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                if w != 0:
                    valid[i] = False
            else:
                total[i] += w * float(v)
    total[~valid] = float("nan")
    return total, valid


def overlong_penalty(
    lengths: torch.Tensor, max_completion_length: int, buffer_len: int, factor: float
) -> torch.Tensor:
    """DAPO soft overlong punishment (<= 0), added to the reward.

    0 up to L_max - buffer, then linear down to -factor at L_max, -factor beyond.
    """
    start = max_completion_length - buffer_len
    over = (lengths.to(torch.float64) - start).clamp(min=0)
    return -(over / buffer_len).clamp(max=1.0) * factor


def group_advantages(
    rewards: torch.Tensor, valid: torch.Tensor, num_generations: int, scale_rewards: str = "group",
    *, batch_std: float | None = None,
) -> Advantages:
    """Group-relative advantages: (r - mean_group) / (std + eps) with std of the group ("group"),
    of the whole batch ("batch") or none (advantage = r - mean_group; dr_grpo).

    Skipped samples (valid False) are left out of the means and stds and get advantage 0.
    std is the unbiased sample std (as TRL); a group with < 2 valid members has std 0.
    `batch_std`: the "batch" std computed elsewhere (over the rewards of all ranks).
    """
    if rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards is not a multiple of G={num_generations}")
    r = rewards.to(torch.float64).view(-1, num_generations)
    v = valid.view(-1, num_generations)
    vf = v.to(torch.float64)
    r0 = torch.where(v, r, torch.zeros_like(r))
    cnt = vf.sum(1)
    mean = r0.sum(1) / cnt.clamp(min=1)
    dev = torch.where(v, r - mean[:, None], torch.zeros_like(r))
    var = (dev * dev).sum(1) / (cnt - 1).clamp(min=1)
    std = torch.where(cnt >= 2, var.sqrt(), torch.zeros_like(var))
    zero_std = std < 1e-6
    if scale_rewards == "group":
        adv = dev / (std[:, None] + ADV_EPS)
    elif scale_rewards == "batch":
        flat = r[v]
        bstd = flat.std() if flat.numel() >= 2 else torch.zeros((), dtype=torch.float64)
        if batch_std is not None:
            bstd = torch.tensor(float(batch_std), dtype=torch.float64)
        adv = dev / (bstd + ADV_EPS)
    elif scale_rewards == "none":
        adv = dev
    else:
        raise ValueError(f"scale_rewards must be group, batch or none, got {scale_rewards!r}")
    adv = torch.where(v, adv, torch.zeros_like(adv))
    return Advantages(
        rewards=torch.where(v, r, torch.full_like(r, float("nan"))).view(-1),
        advantages=adv.view(-1),
        valid=valid.clone(),
        group_mean=mean,
        group_std=std,
        zero_std=zero_std,
    )


def sequence_kl(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, estimator: str = "k1"
) -> torch.Tensor:
    """Per-sequence KL(policy || ref): sum over the active tokens of the per-token estimate."""
    from reasoner_kernels import kl_estimate

    kl = kl_estimate(logp.double(), ref_logp.double(), estimator)
    return torch.where(mask.bool(), kl, torch.zeros_like(kl)).sum(-1)


def token_weights(
    loss_type: str,
    mask: torch.Tensor,
    max_completion_length: int,
    *,
    global_num_tokens: float | None = None,
    global_num_seqs: float | None = None,
    global_num_rows: float | None = None,
) -> torch.Tensor:
    """Per-token weights [N, C] over the whole accumulated batch (see the module docstring).

    Under data parallelism each rank passes the totals of ALL ranks (active tokens, sequences
    with at least one active token, rows), so the ranks' weighted sums add up to the loss of
    the global batch; by default they are this batch's own counts.
    """
    m = mask.to(torch.float32)
    lens = m.sum(-1)

    def total(local: torch.Tensor, given: float | None) -> torch.Tensor:
        return (local if given is None else torch.tensor(float(given))).clamp(min=1)

    if loss_type == "grpo":
        n_seq = total((lens > 0).sum().float(), global_num_seqs)
        return m / lens.clamp(min=1)[:, None] / n_seq
    if loss_type in ("bnpo", "dapo"):
        return m / total(m.sum(), global_num_tokens)
    if loss_type == "dr_grpo":
        return m / (total(torch.tensor(float(m.shape[0])), global_num_rows)
                    * max_completion_length)
    raise ValueError(f"loss_type must be one of grpo, bnpo, dr_grpo, dapo, got {loss_type!r}")


def token_loss(
    logits: torch.Tensor,
    ids: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float,
    eps_low: float,
    eps_high: float | None,
    delta: float | None,
    beta: float,
    kl_estimator: str,
    compute_entropy: bool = True,
    backend: str = "auto",
):
    """The per-token GRPO loss (`reasoner_kernels.grpo_loss`: Triton on CUDA tensors with
    backend "auto", the pure-torch reference otherwise). Returns GRPOTokenOutput."""
    import reasoner_kernels as rk

    return rk.grpo_loss(
        logits, ids, old_logp, ref_logp, advantages, mask, temperature=temperature,
        eps_low=eps_low, eps_high=eps_high, delta=delta, beta=beta, kl_estimator=kl_estimator,
        compute_entropy=compute_entropy, backend=backend,
    )


def fused_linear_token_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    ids: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
    **kw,
):
    """As `token_loss` but from the last hidden states [N, H] and the LM head weight [V, H]."""
    import reasoner_kernels as rk

    return rk.fused_linear_grpo_loss(
        hidden, weight, ids, old_logp, ref_logp, advantages, mask, bias=bias, backend=backend, **kw
    )


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    m = mask.to(x.dtype)
    n = m.sum()
    return float((x * m).sum() / n) if n > 0 else 0.0
