"""The policy update of one step: ``num_iterations`` optimizer steps over the step's rollout batch,
each accumulated over micro-batches, with the loss expressed as per-token weights
(`reasoner.algos.aggregation`) so that any split into micro-batches gives the same gradient.

Shared by the policy-gradient trainers (GRPO now; PPO, RLOO, REINFORCE++ next): the trainer
gives the batch, the advantages and a micro-batch loss function (its registered policy loss
over the model's forward); this module runs the micro-batches through the engine and returns
the update's metrics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from reasoner_kernels import GRPOTokenOutput

from reasoner import distributed
from reasoner.algos.aggregation import BatchTotals, token_weights
from reasoner.engine import Engine
from reasoner.trainers.batch import Batch, RowTensors, take_rows


@dataclass
class UpdateSettings:
    micro_batch_size: int  # train.per_device_train_batch_size
    num_iterations: int  # algo.num_iterations
    loss_type: str  # algo.loss_type
    max_completion_length: int
    kl_estimator: str
    kl_in_loss: bool  # the loss has a KL term (every row has a gradient then)
    skip_zero_advantage: bool


@dataclass
class UpdateInputs:
    """This rank's share of the step."""

    batch: Batch
    advantages: torch.Tensor  # [N] (or [N, C]) float32, on the training device
    loss_mask: torch.Tensor  # [N, C] (0: dropped samples, masked-out completions)
    in_batch: torch.Tensor  # [N] bool: the rows the loss normalisers count (not dropped)
    old_logp: torch.Tensor | None  # [N, C] (num_iterations > 1)
    ref_logp: torch.Tensor | None  # [N, C] (a KL term or KL metric)


@dataclass
class MicroBatch:
    """What a micro-batch loss function gets: rows of the batch and their slices."""

    rows: RowTensors
    advantages: torch.Tensor  # [n, 1] or [n, c]
    loss_mask: torch.Tensor  # [n, c]
    old_logp: torch.Tensor | None  # None: on-policy (the first of num_iterations passes)
    ref_logp: torch.Tensor | None  # only when the loss has a KL term
    # gathered weights stay whole through the micro-batch's backward: a loss function that
    # reads a weight outside its module's forward enters `engine.gathered(...)` on this stack
    stack: contextlib.ExitStack


MicroLoss = Callable[[MicroBatch], GRPOTokenOutput]


def _micro_slices(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def policy_update(engine: Engine, inp: UpdateInputs, s: UpdateSettings,
                  micro_loss: MicroLoss) -> dict[str, float]:
    """Run the update; returns the metrics of its first (on-policy) pass summed over ranks:
    loss, clip fractions, KL, entropy, grad norm, lr, skipped updates, trained-rows fraction."""
    lens = inp.loss_mask.sum(1)
    keep = lens > 0
    if not s.kl_in_loss and s.skip_zero_advantage:
        adv_rows = inp.advantages if inp.advantages.dim() == 1 else inp.advantages.abs().sum(1)
        keep &= adv_rows != 0  # no KL term: a zero-advantage row has exactly zero gradient
    idx = keep.nonzero().squeeze(1)
    n_trained = idx.numel()
    # one all-reduce for every count the step needs over all ranks
    n_tok, n_rows, n_all_rows, n_kept_tok, n_trained_all = distributed.sum_all(
        [float(lens.sum()), float(inp.in_batch.sum()), float(len(lens)), float(lens[keep].sum()),
         float(n_trained)])
    # weights over the WHOLE batch (all ranks) first: rows left out still count
    weights = token_weights(
        s.loss_type, inp.loss_mask,
        totals=BatchTotals(tokens=n_tok, rows=n_rows, world_size=distributed.world_size()),
        micro_batch_size=s.micro_batch_size, max_completion_length=s.max_completion_length,
    ).to(inp.loss_mask.device)
    # every rank must run as many forward/backward passes as the busiest one (ZeRO's
    # collectives); a rank short of rows repeats a row with zero weight
    slices = _micro_slices(n_trained, s.micro_batch_size)
    n_micro = len(slices)
    n_micro_all = max(int(distributed.max_all([float(n_micro)])[0]), engine.min_micro_batches)
    pad_micro = n_micro_all - n_micro
    if n_trained == 0 and pad_micro > 0:
        idx = torch.zeros(1, dtype=torch.long, device=keep.device)
    sub = take_rows(inp.batch, idx)
    w = sub.width
    adv = inp.advantages[idx]
    adv = adv[:, None] if adv.dim() == 1 else adv[:, :w]
    mask, weights = inp.loss_mask[idx][:, :w], weights[idx][:, :w]
    old = None if inp.old_logp is None else inp.old_logp[idx][:, :w]
    ref = None if inp.ref_logp is None else inp.ref_logp[idx][:, :w]
    slices += [slice(0, 1)] * pad_micro
    zero_weight = [False] * n_micro + [True] * pad_micro
    m = {"loss": 0.0, "clip/low": 0.0, "clip/high": 0.0, "clip/dual": 0.0, "clip/delta": 0.0,
         "kl": 0.0,
         "entropy": 0.0, "grad_norm": 0.0, "skipped_updates": 0.0,
         "update/trained_rows_frac": n_trained_all / max(n_all_rows, 1.0)}
    engine.model.train()
    for it in range(s.num_iterations):
        total = torch.zeros((), dtype=torch.float64)
        sums = dict.fromkeys(("low", "high", "dual", "delta", "kl", "ent"), 0.0)
        for sl, dummy in zip(slices, zero_weight):
            engine.begin_micro_batch()
            with contextlib.ExitStack() as stack:
                rows = RowTensors(sub.prompt_ids[sl], sub.prompt_mask[sl], sub.completion_ids[sl],
                                  sub.completion_mask[sl], w)
                mb = MicroBatch(rows, adv[sl], mask[sl],
                                None if old is None or s.num_iterations == 1 else old[sl],
                                ref[sl] if ref is not None and s.kl_in_loss else None, stack)
                with engine.autocast():
                    out = micro_loss(mb)
                wt = torch.zeros_like(weights[sl]) if dummy else weights[sl]
                loss = (out.loss.float() * wt).sum()
                engine.backward(loss)
            if dummy:
                continue
            total += loss.detach().double().cpu()
            mk = mask[sl].bool()
            sums["low"] += float(out.clipped_low[mk].sum())
            sums["high"] += float(out.clipped_high[mk].sum())
            sums["dual"] += float(out.clipped_dual[mk].sum())
            sums["delta"] += float(out.clipped_delta[mk].sum())
            if out.entropy is not None:
                sums["ent"] += float(out.entropy[mk].float().sum())
            if ref is not None:
                from reasoner_kernels import kl_estimate

                kl = kl_estimate(out.logp.detach().float(), ref[sl].float(), s.kl_estimator)
                sums["kl"] += float(kl[mk].sum())
        res = engine.step(loss_finite=bool(torch.isfinite(total)))
        if not res.applied:
            m["skipped_updates"] += 1
        if it == 0:  # metrics of the first (on-policy) pass, summed over ranks
            tot, low, high, dual, dlt, kl, ent = distributed.sum_all(
                [float(total), sums["low"], sums["high"], sums["dual"], sums["delta"], sums["kl"],
                 sums["ent"]])
            d, dk = max(n_tok, 1.0), max(n_kept_tok, 1.0)
            m.update({"loss": tot, "clip/low": low / d, "clip/high": high / d,
                      "clip/dual": dual / d, "clip/delta": dlt / d, "kl": kl / dk,
                      "entropy": ent / dk,
                      "grad_norm": res.grad_norm, "lr": res.lr})
    engine.model.eval()
    return m
