"""The update of one step: epochs over the step's rollout batch, each made of mini-batches, each
mini-batch one optimizer step accumulated over micro-batches, with the loss expressed as
per-token weights (`reasoner.algos.aggregation`) over the mini-batch's rows of every rank, so
that any split into micro-batches gives the same gradient.

Shared by every policy-gradient trainer. GRPO (and RLOO, REINFORCE++): ``num_iterations``
epochs of one mini-batch (every row). PPO / A2C: ``num_ppo_epochs`` epochs of shuffled
mini-batches, a value loss beside the policy's (through the critic's own engine, or summed with
the policy loss when the value head sits on the policy's trunk) and an optional per-step loss
(PPO-ptx). The trainer gives the batch, the advantages and a micro-batch loss function (its
registered policy loss over the model's forward); this module runs the micro-batches through the
engines and returns the update's metrics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from reasoner_kernels import GRPOTokenOutput

from reasoner import distributed
from reasoner.algos.aggregation import BatchTotals, token_weights
from reasoner.engine import Engine, StepResult
from reasoner.trainers.batch import Batch, RowTensors, take_rows


@dataclass
class UpdateSettings:
    micro_batch_size: int  # train.per_device_train_batch_size
    num_iterations: int  # epochs when the trainer gives no mini-batches (algo.num_iterations)
    loss_type: str  # algo.loss_type
    max_completion_length: int
    kl_estimator: str
    kl_in_loss: bool  # the loss has a KL term (every row has a gradient then)
    skip_zero_advantage: bool
    value_coef: float = 0.0  # the value loss's weight (algo.vf_coef), when there is one
    train_policy: bool = True  # False: only the critic learns (critic warm-up)


@dataclass
class UpdateInputs:
    """This rank's share of the step."""

    batch: Batch
    advantages: torch.Tensor  # [N] (or [N, C]) float32, on the training device
    loss_mask: torch.Tensor  # [N, C] (0: dropped samples, masked-out completions)
    in_batch: torch.Tensor  # [N] bool: the rows the loss normalisers count (not dropped)
    old_logp: torch.Tensor | None  # [N, C] (more than one optimizer step)
    ref_logp: torch.Tensor | None  # [N, C] (a KL term or KL metric)
    returns: torch.Tensor | None = None  # [N, C] the critic's targets (a value loss)
    old_values: torch.Tensor | None = None  # [N, C] the critic's values at rollout time
    # mini_batches[e][k]: this rank's rows (sorted, possibly none) of epoch e's optimizer step
    # k; None: `num_iterations` epochs of one step over every row
    mini_batches: list[list[torch.Tensor]] | None = None


@dataclass
class MicroBatch:
    """What a micro-batch loss function gets: rows of the batch and their slices."""

    rows: RowTensors
    advantages: torch.Tensor  # [n, 1] or [n, c]
    loss_mask: torch.Tensor  # [n, c]
    old_logp: torch.Tensor | None  # None: on-policy (the step's only optimizer step)
    ref_logp: torch.Tensor | None  # only when the loss has a KL term
    # gathered weights stay whole through the micro-batch's backward: a loss function that
    # reads a weight outside its module's forward enters `engine.gathered(...)` on this stack
    stack: contextlib.ExitStack
    returns: torch.Tensor | None = None  # [n, c] with a value loss
    old_values: torch.Tensor | None = None  # [n, c]
    train_policy: bool = True  # False: the policy loss is not needed (critic warm-up)
    weights: torch.Tensor | None = None  # [n, c] the tokens' aggregation weights (0: padding)


@dataclass
class MicroOutput:
    """A micro-batch's losses when there is more than the policy's (PPO / A2C)."""

    policy: GRPOTokenOutput | None  # None while only the critic learns
    value_loss: torch.Tensor | None = None  # [n, c] per-token value loss, weighted as the policy's
    value_clipped: torch.Tensor | None = None  # [n, c] bool


MicroLoss = Callable[[MicroBatch], "GRPOTokenOutput | MicroOutput"]


def _weighted_policy_loss(out: GRPOTokenOutput, weights: torch.Tensor) -> torch.Tensor:
    """sum(weights * per-token loss): the loss's own weighted sum when it computed one (the
    kernels' fused forward+backward mode), else from its per-token loss."""
    total = getattr(out, "weighted_loss", None)
    return total.float() if total is not None else (out.loss.float() * weights).sum()


def _micro_slices(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@dataclass
class _Plan:
    """One optimizer step: its rows (those trained), their token weights, its micro-batches."""

    idx: torch.Tensor
    weights: torch.Tensor  # [len(idx), C]
    slices: list[slice]
    dummy: list[bool]  # zero-weight micro-batches a rank short of rows runs for the collectives


@dataclass
class _Sums:
    """Metric sums of this rank (first epoch: loss, kl, entropy, value loss; every epoch: clip
    flags)."""

    values: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("loss", "low", "high", "dual", "delta", "kl", "ent", "vloss", "vclip", "ptx"), 0.0))


def _plans(inp: UpdateInputs, s: UpdateSettings, keep: torch.Tensor, lens: torch.Tensor,
           engine_min_micro: int) -> list[list[_Plan]]:
    """Per epoch, per optimizer step: rows, token weights over the step's rows of every rank,
    and micro-batches (as many on every rank as on the busiest one)."""
    n = len(lens)
    every = torch.arange(n, device=lens.device)
    epochs = inp.mini_batches or [[every] for _ in range(s.num_iterations)]
    flat = [mb.to(lens.device) for epoch in epochs for mb in epoch]
    # one all-reduce for every step's token and row counts, one for its micro-batch counts
    counts = distributed.sum_all([v for mb in flat for v in
                                  (float(lens[mb].sum()), float(inp.in_batch[mb].sum()))])
    n_micro = distributed.max_all(
        [float(len(_micro_slices(int(keep[mb].sum()), s.micro_batch_size))) for mb in flat])
    plans, j = [], 0
    for epoch in epochs:
        row = []
        for _ in epoch:
            mb = flat[j]
            weights = token_weights(
                s.loss_type, inp.loss_mask[mb],
                totals=BatchTotals(tokens=counts[2 * j], rows=counts[2 * j + 1],
                                   world_size=distributed.world_size()),
                micro_batch_size=s.micro_batch_size,
                max_completion_length=s.max_completion_length).to(inp.loss_mask.device)
            kept = keep[mb]
            idx, weights = mb[kept], weights[kept]
            slices = _micro_slices(idx.numel(), s.micro_batch_size)
            pad = max(int(n_micro[j]), engine_min_micro) - len(slices)
            if idx.numel() == 0 and pad > 0:  # nothing to train here: repeat row 0, weight 0
                idx = torch.zeros(1, dtype=torch.long, device=lens.device)
                weights = torch.zeros_like(inp.loss_mask[:1], dtype=torch.float32)
            row.append(_Plan(idx, weights, slices + [slice(0, 1)] * pad,
                             [False] * len(slices) + [True] * pad))
            j += 1
        plans.append(row)
    return plans


def policy_update(engine: Engine, inp: UpdateInputs, s: UpdateSettings, micro_loss: MicroLoss,
                  *, critic: Engine | None = None,
                  step_loss: Callable[[], torch.Tensor] | None = None) -> dict[str, float]:
    """Run the update; returns its metrics summed over ranks: of the first epoch (every row
    once) loss, KL, entropy, value loss, grad norms (means over its optimizer steps); clip
    fractions over every epoch; skipped updates, lr, trained-rows fraction.

    `critic`: the separate value model's engine: the value loss backpropagates through it and it
    steps with the policy (without it a value loss is added to the policy's). `step_loss`: a
    scalar loss added to each policy optimizer step through its own backward (PPO-ptx)."""
    lens = inp.loss_mask.sum(1)
    keep = lens > 0
    has_value = inp.returns is not None
    if not s.kl_in_loss and s.skip_zero_advantage and not has_value:
        adv_rows = inp.advantages if inp.advantages.dim() == 1 else inp.advantages.abs().sum(1)
        keep &= adv_rows != 0  # no KL term: a zero-advantage row has exactly zero gradient
    n_trained = int(keep.sum())
    n_tok, n_all_rows, n_kept_tok, n_trained_all = distributed.sum_all(
        [float(lens.sum()), float(len(lens)), float(lens[keep].sum()), float(n_trained)])
    min_micro = max(engine.min_micro_batches if s.train_policy else 0,
                    critic.min_micro_batches if critic is not None else 0)
    plans = _plans(inp, s, keep, lens, min_micro)
    one_step = sum(len(epoch) for epoch in plans) == 1
    sums = _Sums().values
    grad_norms, critic_norms, lrs = [], [], []
    skipped = critic_skipped = 0
    engines = [e for e in (engine if s.train_policy else None, critic) if e is not None]
    for e in engines:
        e.model.train()
    for epoch_i, epoch in enumerate(plans):
        first = epoch_i == 0
        for plan in epoch:
            sub = take_rows(inp.batch, plan.idx)
            w = sub.width
            adv = inp.advantages[plan.idx]
            adv = adv[:, None] if adv.dim() == 1 else adv[:, :w]
            mask, weights = inp.loss_mask[plan.idx][:, :w], plan.weights[:, :w]

            def cut(t: torch.Tensor | None, idx: torch.Tensor = plan.idx, w: int = w
                    ) -> torch.Tensor | None:
                return None if t is None else t[idx][:, :w]

            old = None if one_step else cut(inp.old_logp)
            ref = cut(inp.ref_logp)
            ret, old_v = cut(inp.returns), cut(inp.old_values)
            total = torch.zeros((), dtype=torch.float64)
            v_total = torch.zeros((), dtype=torch.float64)
            for sl, dummy in zip(plan.slices, plan.dummy):
                for e in engines:
                    e.begin_micro_batch()
                with contextlib.ExitStack() as stack:
                    rows = RowTensors(sub.prompt_ids[sl], sub.prompt_mask[sl],
                                      sub.completion_ids[sl], sub.completion_mask[sl], w)
                    wt = torch.zeros_like(weights[sl]) if dummy else weights[sl]
                    mb = MicroBatch(rows, adv[sl], mask[sl], None if old is None else old[sl],
                                    ref[sl] if ref is not None and s.kl_in_loss else None, stack,
                                    None if ret is None else ret[sl],
                                    None if old_v is None else old_v[sl], s.train_policy, wt)
                    with engine.autocast():
                        out = micro_loss(mb)
                    if isinstance(out, GRPOTokenOutput):
                        out = MicroOutput(out)
                    pol = None if out.policy is None else _weighted_policy_loss(out.policy, wt)
                    val = None if out.value_loss is None else (out.value_loss.float() * wt).sum()
                    if critic is None:  # one model: policy and value loss in one backward
                        parts = [x for x in (pol, None if val is None else s.value_coef * val)
                                 if x is not None]
                        if parts and s.train_policy:
                            engine.backward(sum(parts[1:], parts[0]))
                    else:
                        if pol is not None and s.train_policy:
                            engine.backward(pol)
                        if val is not None:
                            critic.backward(s.value_coef * val)
                if dummy:
                    continue
                mk = mask[sl].bool()
                if pol is not None:
                    total += pol.detach().double().cpu()
                    p = out.policy
                    for key, flags in (("low", p.clipped_low), ("high", p.clipped_high),
                                       ("dual", p.clipped_dual), ("delta", p.clipped_delta)):
                        sums[key] += float(flags[mk].sum())
                    if first and p.entropy is not None:
                        sums["ent"] += float(p.entropy[mk].float().sum())
                    if first and ref is not None:
                        from reasoner_kernels import kl_estimate

                        kl = kl_estimate(p.logp.detach().float(), ref[sl].float(), s.kl_estimator)
                        sums["kl"] += float(kl[mk].sum())
                if val is not None:
                    v_total += val.detach().double().cpu()
                    if out.value_clipped is not None:
                        sums["vclip"] += float(out.value_clipped[mk].sum())
            extra = torch.zeros((), dtype=torch.float64)
            if step_loss is not None and s.train_policy:
                engine.begin_micro_batch()
                with engine.autocast():
                    loss = step_loss()
                engine.backward(loss)
                extra = loss.detach().double().cpu()
            if s.train_policy:
                res: StepResult = engine.step(loss_finite=bool(torch.isfinite(total + extra)))
                skipped += not res.applied
                if first:
                    grad_norms.append(res.grad_norm)
                    lrs.append(res.lr)
            if critic is not None:
                cres = critic.step(loss_finite=bool(torch.isfinite(v_total)))
                critic_skipped += not cres.applied
                if first:
                    critic_norms.append(cres.grad_norm)
            if first:
                sums["loss"] += float(total)
                sums["vloss"] += float(v_total)
                sums["ptx"] += float(extra)
    for e in engines:
        e.model.eval()
    n_first, n_epochs = len(plans[0]), len(plans)
    keys = list(sums)
    tot = dict(zip(keys, distributed.sum_all([sums[k] for k in keys])))
    d, dk = max(n_tok, 1.0), max(n_kept_tok, 1.0)
    m = {"loss": tot["loss"] / n_first, "clip/low": tot["low"] / (d * n_epochs),
         "clip/high": tot["high"] / (d * n_epochs), "clip/dual": tot["dual"] / (d * n_epochs),
         "clip/delta": tot["delta"] / (d * n_epochs), "kl": tot["kl"] / dk,
         "entropy": tot["ent"] / dk,
         "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else 0.0,
         "skipped_updates": float(skipped),
         "update/trained_rows_frac": n_trained_all / max(n_all_rows, 1.0)}
    if lrs:
        m["lr"] = lrs[0]
    if has_value:
        m["value_loss"] = tot["vloss"] / n_first
        m["value_clipfrac"] = tot["vclip"] / (d * n_epochs)
    if step_loss is not None:
        m["ptx_loss"] = tot["ptx"] / n_first
    if critic is not None:
        m["critic/grad_norm"] = sum(critic_norms) / len(critic_norms)
        m["critic/skipped_updates"] = float(critic_skipped)
    return m
