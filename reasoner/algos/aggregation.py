"""How per-token losses add up to the step's loss: aggregation modes, as per-token WEIGHTS.

    loss = sum_{i,t} w[i, t] * l[i, t]

over the step's whole batch (every micro-batch, every rank), so a micro-batch contributes
``sum(w[mb] * l[mb])`` and any split of the forward into micro-batches gives exactly the
full-batch gradient. The modes are named for what they compute; ``algo.loss_type`` takes TRL's
names for them:

    loss_type  mode                     w[i, t]
    grpo       seq_mean_token_mean      mask / (len_i * rows)          mean over a sequence's
                                                                       tokens, then over rows
    dapo       token_mean               mask / tokens                  mean over every token
    dr_grpo    seq_mean_token_sum_norm  mask / (rows * max_completion_length)
    bnpo       micro_batch_token_mean   mask / (tokens of i's micro-batch * micro-batches)

tokens = active loss tokens of the step, rows = completions in the step's batch (dropped
samples are out of it; a truncated completion masked by ``mask_truncated_completions`` stays in
it, as in TRL), both over all ranks. ``bnpo`` is TRL's: each micro-batch of
``per_device_train_batch_size`` rows of a rank's batch is normalised by its own active tokens,
and the micro-batches of all ranks are averaged (TRL divides by ``gradient_accumulation_steps``
and data parallelism averages over ranks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class BatchTotals:
    """Counts of the step's whole batch over all ranks (this rank's own in one process)."""

    tokens: float  # active loss tokens
    rows: float  # completions in the batch (dropped samples excluded)
    world_size: int = 1


def seq_mean_token_mean(mask: torch.Tensor, totals: BatchTotals, **_: int) -> torch.Tensor:
    return mask / mask.sum(-1).clamp(min=1)[:, None] / max(totals.rows, 1.0)


def token_mean(mask: torch.Tensor, totals: BatchTotals, **_: int) -> torch.Tensor:
    return mask / max(totals.tokens, 1.0)


def seq_mean_token_sum_norm(mask: torch.Tensor, totals: BatchTotals, *,
                            max_completion_length: int, **_: int) -> torch.Tensor:
    return mask / (max(totals.rows, 1.0) * max_completion_length)


def micro_batch_token_mean(mask: torch.Tensor, totals: BatchTotals, *, micro_batch_size: int,
                           **_: int) -> torch.Tensor:
    n = mask.shape[0]
    n_micro = max(math.ceil(n / micro_batch_size), 1)
    mb = torch.arange(n, device=mask.device) // micro_batch_size
    tokens = torch.zeros(n_micro, dtype=mask.dtype, device=mask.device)
    tokens.index_add_(0, mb, mask.sum(-1))
    return mask / tokens.clamp(min=1)[mb][:, None] / (n_micro * totals.world_size)


AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "seq_mean_token_mean": seq_mean_token_mean,
    "token_mean": token_mean,
    "seq_mean_token_sum_norm": seq_mean_token_sum_norm,
    "micro_batch_token_mean": micro_batch_token_mean,
}
# algo.loss_type (TRL's names) -> the aggregation mode it means
LOSS_TYPES: dict[str, str] = {
    "grpo": "seq_mean_token_mean",
    "dapo": "token_mean",
    "dr_grpo": "seq_mean_token_sum_norm",
    "bnpo": "micro_batch_token_mean",
}


def token_weights(
    loss_type: str,
    mask: torch.Tensor,
    *,
    totals: BatchTotals | None = None,
    rows: torch.Tensor | None = None,
    micro_batch_size: int,
    max_completion_length: int,
) -> torch.Tensor:
    """Per-token weights [N, C] (float32) of this rank's batch for `loss_type`.

    `mask`: the loss mask [N, C] (0 for dropped samples and masked-out completions). `totals`:
    the counts of all ranks; by default this batch's own, with `rows` [N] bool the completions
    in the batch (default: all N)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")
    m = mask.to(torch.float32)
    if totals is None:
        n_rows = float(m.shape[0]) if rows is None else float(rows.sum())
        totals = BatchTotals(tokens=float(m.sum()), rows=n_rows)
    return AGGREGATIONS[LOSS_TYPES[loss_type]](
        m, totals, micro_batch_size=micro_batch_size, max_completion_length=max_completion_length)
