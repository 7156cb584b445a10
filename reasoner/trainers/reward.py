"""Reward-model training (`reasoner rm`, ``algo.name: rm``): Bradley–Terry on preference records.

One step:

    this rank's records (data order; pairs, rankings or a prompt's comparisons)
      -> micro-batches of train.per_device_train_batch_size records: every distinct completion
         of a record encoded ONCE (a ranking of K: K sequences for its K(K-1)/2 pairs)
      -> the scalar head on the last non-pad token (HF *ForSequenceClassification, num_labels=1)
      -> per pair: -log sigmoid(r_w - r_l - margin) [+ center_rewards_coefficient (r_w + r_l)^2]
         (TRL RewardTrainer's loss), a tie with rm.ties=half: -(log s(d) + log s(-d)) / 2
      -> the sum over the micro-batch's pairs / the pairs of the whole step (all micro-batches,
         all ranks), so the gradient is that of TRL's mean whatever the split
      -> one optimizer step; metrics; held-out evaluation every rm.eval_steps and at the end
         (output_dir/eval.json, calibration.png)

Setup, the loop, checkpoints with exact resume, LoRA, DeepSpeed and the final Hugging Face
export (loads with AutoModelForSequenceClassification) are the base trainer's.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from reasoner import distributed
from reasoner.config import Config, ConfigError
from reasoner.data import DataOrder
from reasoner.metrics import clean_json
from reasoner.models.lean import lean_allowed
from reasoner.models.loading import StartingModels
from reasoner.models.reward import (
    encode_sequence,
    pad_right,
    reward_model_options,
    score_sequences,
    sequence_scores,
    set_pad_token,
)
from reasoner.preferences.evaluation import pairwise_metrics, plot_calibration
from reasoner.preferences.formats import PreferenceRecord, _key, read_preferences
from reasoner.trainers.base import BaseTrainer, StepOutput, peak_memory_gb

TIES = ("drop", "half")
EVAL_FILE = "eval.json"
RM_PLOTS = (("loss.png", "loss", ("loss", "eval/loss")),
            ("accuracy.png", "pairwise accuracy", ("accuracy", "eval/accuracy")),
            ("margin.png", "mean margin r_w - r_l", ("margin", "eval/mean_margin")))


@dataclass
class EncodedRecord:
    """A preference record's completions as token ids (one sequence each) and its comparisons
    as index tensors."""

    record: PreferenceRecord
    seqs: list[list[int]]
    first: torch.Tensor  # [P] long: the winner (or one side of a tie)
    second: torch.Tensor  # [P] long
    tie: torch.Tensor  # [P] bool
    margin: torch.Tensor  # [P] float (0 without a margin column)


def encode_record(tokenizer: Any, rec: PreferenceRecord) -> EncodedRecord:
    """Each distinct completion of `rec` encoded once (`encode_sequence`)."""
    seqs = [encode_sequence(tokenizer, rec.prompt, c) for c in rec.completions]
    cs = rec.comparisons
    return EncodedRecord(
        rec, seqs, torch.tensor([c.first for c in cs], dtype=torch.long),
        torch.tensor([c.second for c in cs], dtype=torch.long),
        torch.tensor([c.tie for c in cs], dtype=torch.bool),
        torch.tensor([c.margin or 0.0 for c in cs], dtype=torch.float32))


def drop_same_token_pairs(enc: EncodedRecord) -> tuple[EncodedRecord, int]:
    """`enc` without the comparisons whose two completions encode to the same token ids (the
    record's comparisons filtered alike, so the evaluation counts the same pairs), and how many
    were dropped."""
    keep = [enc.seqs[int(a)] != enc.seqs[int(b)] for a, b in zip(enc.first, enc.second)]
    if all(keep):
        return enc, 0
    k = torch.tensor(keep, dtype=torch.bool)
    rec = replace(enc.record, comparisons=[c for c, ok in zip(enc.record.comparisons, keep) if ok])
    return EncodedRecord(rec, enc.seqs, enc.first[k], enc.second[k], enc.tie[k],
                         enc.margin[k]), len(keep) - int(k.sum())


@dataclass
class PairBatch:
    """Micro-batch records joined: sequences and global pair indices."""

    seqs: list[list[int]]
    first: torch.Tensor
    second: torch.Tensor
    tie: torch.Tensor
    margin: torch.Tensor


def join_records(recs: list[EncodedRecord]) -> PairBatch:
    seqs: list[list[int]] = []
    firsts, seconds = [], []
    for r in recs:
        firsts.append(r.first + len(seqs))
        seconds.append(r.second + len(seqs))
        seqs.extend(r.seqs)
    return PairBatch(seqs, torch.cat(firsts), torch.cat(seconds),
                     torch.cat([r.tie for r in recs]), torch.cat([r.margin for r in recs]))


def pair_weights(tie: torch.Tensor, ties: str) -> torch.Tensor:
    """1 for each pair in the loss (ties only with ties=half)."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    return torch.ones_like(tie, dtype=torch.float32) if ties == "half" else (~tie).float()


def pair_losses(scores: torch.Tensor, first: torch.Tensor, second: torch.Tensor,
                tie: torch.Tensor, margin: torch.Tensor, *,
                center_rewards_coefficient: float | None = None) -> torch.Tensor:
    """The loss of each pair [P] from the sequences' scores [M]: TRL RewardTrainer's
    -log sigmoid(r_w - r_l - margin) (+ center_rewards_coefficient * (r_w + r_l)^2), and for a
    tie -(log sigmoid(d) + log sigmoid(-d)) / 2. TRL's loss is the mean of these over pairs."""
    rw, rl = scores[first], scores[second]
    d = rw - rl
    f = torch.nn.functional.logsigmoid
    loss = torch.where(tie, -0.5 * (f(d) + f(-d)), -f(d - margin.to(d.dtype)))
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * (rw + rl) ** 2
    return loss


def in_eval_split(rec: PreferenceRecord, fraction: float) -> bool:
    """Whether a record is held out: a stable hash of its prompt below `fraction` (a prompt's
    records stay together); records without a prompt (TRL's implicit prompt, the whole
    conversation in chosen and rejected) are split by their completions."""
    key = _key(rec.prompt) if rec.prompt else _key(rec.completions)
    h = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)
    return h / 16**12 < fraction


class RewardTrainer(BaseTrainer):
    """A scalar reward model from preference records (see the module docstring).

    `records` / `eval_records` replace the config's files (tests, notebooks)."""

    progress_description = "RM"
    plots = RM_PLOTS
    extra_outputs = (EVAL_FILE, "calibration.png")

    def __init__(self, cfg: Config, *, records: list[PreferenceRecord] | None = None,
                 eval_records: list[PreferenceRecord] | None = None, **kw: Any) -> None:
        self.last_eval: tuple[int, dict[str, Any]] | None = None
        super().__init__(cfg, records=records, eval_records=eval_records, **kw)

    def starting_model_options(self) -> dict[str, Any]:
        return reward_model_options()

    # ------------------------------------------------------------------ data

    def _encode(self, recs: list[PreferenceRecord], what: str) -> list[EncodedRecord]:
        """Encoded records; those with a sequence over rm.max_length (TRL's filter) or with no
        pair in the loss are left out and counted. A pair whose two completions encode to the
        same token ids (texts that differ only where the tokenizer drops or merges, e.g. a
        trailing EOS the encoding adds anyway) is left out too: its reward difference is 0 by
        construction, so it adds log 2 to the loss, no gradient, and a wrong answer to the
        accuracy whatever the model learns."""
        rm = self.cfg.rm
        out, too_long, no_pairs, same, first_same = [], 0, 0, 0, None
        for rec in recs:
            enc, dropped = drop_same_token_pairs(encode_record(self.tokenizer, rec))
            if dropped and first_same is None:
                first_same = rec.source
            same += dropped
            if rm.max_length is not None and max(len(s) for s in enc.seqs) > rm.max_length:
                too_long += 1
            elif float(pair_weights(enc.tie, rm.ties).sum()) == 0:
                no_pairs += 1
            else:
                out.append(enc)
        self.left_out[what] = (too_long, no_pairs, same)
        if self.is_main and same:
            print(f"{what}: left out {same} pairs whose two completions encode to the same "
                  f"token ids (the texts differ only where this tokenizer drops or merges "
                  f"characters; the model can't tell them apart), the first at {first_same}")
        if self.is_main and (too_long or no_pairs):
            print(f"{what}: left out {too_long} records with a sequence longer than "
                  f"rm.max_length={rm.max_length} tokens and {no_pairs} with no pair left in "
                  f"the loss (only ties with rm.ties={rm.ties}, or only same-token pairs); "
                  f"{len(out)} remain")
        return out

    def setup_data(self, models: StartingModels, *,
                   records: list[PreferenceRecord] | None = None,
                   eval_records: list[PreferenceRecord] | None = None) -> None:
        rm = self.cfg.rm
        set_pad_token(models.policy, self.tokenizer)
        if records is None:
            records = read_preferences(rm.dataset_path, fmt=rm.format)
        if eval_records is None:
            if rm.eval_dataset_path is not None:
                eval_records = read_preferences(rm.eval_dataset_path, fmt=rm.format)
            else:
                held = [in_eval_split(r, rm.eval_fraction) for r in records]
                eval_records = [r for r, h in zip(records, held) if h]
                records = [r for r, h in zip(records, held) if not h]
                if self.is_main and eval_records:
                    print(f"rm.eval_fraction={rm.eval_fraction}: {len(eval_records)} of "
                          f"{len(records) + len(eval_records)} records held out for evaluation")
        self.left_out: dict[str, tuple[int, int, int]] = {}
        self.train_records = self._encode(records, "training records")
        self.eval_records = self._encode(eval_records, "evaluation records")
        if not self.train_records:
            too_long, no_pairs, same = self.left_out["training records"]
            held = (f", {len(eval_records)} held out for evaluation (rm.eval_fraction="
                    f"{rm.eval_fraction})" if rm.eval_dataset_path is None and eval_records
                    else "")
            raise ConfigError(f"no preference records to train on: of {len(records)} left for "
                              f"training{held}, {too_long} have a sequence longer than "
                              f"rm.max_length={rm.max_length} tokens and {no_pairs} no pair "
                              f"left in the loss (only ties with rm.ties={rm.ties}"
                              + (f", or only pairs whose two sides encode to the same token ids: "
                                 f"{same} such pairs" if same else "") + ")")
        self.order = DataOrder(len(self.train_records), self.cfg.train.seed)

    def trainer_state(self) -> dict[str, Any]:
        return {"data": self.order.state()}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        d = state["data"]
        self.order = DataOrder(len(self.train_records), self.cfg.train.seed, d["epoch"],
                               d["index"])

    def _take_records(self, n: int) -> list[EncodedRecord]:
        """This rank's n records: every rank walks the same order, each takes its slice."""
        idx = self.order.take(n * self.world)
        return [self.train_records[i] for i in idx[self.rank * n:(self.rank + 1) * n]]

    # ------------------------------------------------------------------ the step

    def train_step(self) -> StepOutput:
        t, rm = self.cfg.train, self.cfg.rm
        t0 = time.perf_counter()
        bs, ga = t.per_device_train_batch_size, t.gradient_accumulation_steps
        recs = self._take_records(bs * ga)
        micro = [join_records(recs[k:k + bs]) for k in range(0, len(recs), bs)]
        weights = [pair_weights(b.tie, rm.ties) for b in micro]
        n_pairs = distributed.sum_all([float(sum(float(w.sum()) for w in weights))])[0]
        self.model.train()
        loss_sum, correct, margin, n_judged, finite = 0.0, 0.0, 0.0, 0.0, True
        tokens, all_scores = 0, []
        for b, w in zip(micro, weights):
            ids, mask = pad_right(b.seqs, self.tokenizer.pad_token_id, self.device)
            tokens += int(mask.sum())
            self.engine.begin_micro_batch()
            with self.engine.autocast():
                scores = sequence_scores(self.model, ids, mask,
                                         allow_lean=lean_allowed(self.cfg.model.lean_forward))
            dev = scores.device
            losses = pair_losses(scores, b.first.to(dev), b.second.to(dev), b.tie.to(dev),
                                 b.margin.to(dev),
                                 center_rewards_coefficient=rm.center_rewards_coefficient)
            loss = (losses * w.to(dev)).sum() / n_pairs
            finite = finite and bool(torch.isfinite(loss))
            self.engine.backward(loss)
            with torch.no_grad():
                s = scores.detach().double().cpu()
                d = s[b.first] - s[b.second]
                judged = ~b.tie
                loss_sum += float(loss.detach())
                correct += float((d[judged] > 0).sum())
                margin += float(d[judged].sum())
                n_judged += float(judged.sum())
                all_scores.append(s)
        res = self.engine.step(loss_finite=finite)
        self.step += 1
        sc = torch.cat(all_scores)
        loss_g, correct, margin, n_judged, n_seq, s1, s2, tok = distributed.sum_all(
            [loss_sum, correct, margin, n_judged, float(sc.numel()), float(sc.sum()),
             float((sc * sc).sum()), float(tokens)])
        dt = distributed.max_all([time.perf_counter() - t0])[0]
        mean = s1 / n_seq
        m: dict[str, Any] = {
            "loss": loss_g, "accuracy": correct / n_judged if n_judged else float("nan"),
            "margin": margin / n_judged if n_judged else float("nan"),
            "rewards/mean": mean, "rewards/std": math.sqrt(max(s2 / n_seq - mean * mean, 0.0)),
            "grad_norm": res.grad_norm, "lr": res.lr,
            "skipped_updates": 0.0 if res.applied else 1.0,
            "pairs": n_pairs, "sequences": n_seq, "time/step": dt,
            "pairs_per_second": n_pairs / dt, "sequences_per_second": n_seq / dt,
            "tokens_per_second": tok / dt,
            "memory/peak_gb": max(distributed.gather_objects(peak_memory_gb(self.device))),
        }
        if rm.eval_steps and self.step % rm.eval_steps == 0 and self.eval_records:
            m.update({f"eval/{k}": v for k, v in self.evaluate().items()
                      if isinstance(v, (int, float))})
        return StepOutput(metrics=m)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, progress: bool = False) -> dict[str, Any]:
        """Held-out metrics of the current model (`pairwise_metrics`); every rank scores every
        record (under ZeRO-3 each forward is collective)."""
        if self.last_eval is not None and self.last_eval[0] == self.step:
            return self.last_eval[1]
        rm = self.cfg.rm
        seqs = [s for r in self.eval_records for s in r.seqs]
        bar = None
        if progress and self.is_main:
            from reasoner.metrics import Progress

            bar = Progress(math.ceil(len(seqs) / rm.eval_batch_size), enabled=True,
                           description="RM eval", info=lambda m: f"{m['sequences']} sequences")
        self.model.eval()
        try:
            flat = score_sequences(
                self.model, seqs, self.tokenizer.pad_token_id, batch_size=rm.eval_batch_size,
                device=self.device, autocast=self.engine.autocast,
                on_batch=None if bar is None else (
                    lambda k, done: bar.update(k, {"sequences": done})))
        finally:
            self.model.train()
            if bar is not None:
                bar.close()
        scores, k = [], 0
        for r in self.eval_records:
            scores.append(flat[k:k + len(r.seqs)])
            k += len(r.seqs)
        out = pairwise_metrics([r.record for r in self.eval_records], scores,
                               bins=rm.calibration_bins,
                               center_rewards_coefficient=rm.center_rewards_coefficient)
        self.last_eval = (self.step, out)
        return out

    def train(self) -> dict[str, Any]:
        """The loop, then the held-out evaluation: output_dir/eval.json and calibration.png."""
        summary = super().train()
        if self.eval_records:
            metrics = self.evaluate(progress=self.show_progress)
            metrics = {"step": self.step, **metrics,
                       "dataset": self.cfg.rm.eval_dataset_path or
                       f"{self.cfg.rm.dataset_path} (rm.eval_fraction={self.cfg.rm.eval_fraction})"}
            if self.is_main:
                (self.out / EVAL_FILE).write_text(json.dumps(clean_json(metrics), indent=1))
                plot_calibration(metrics, self.out / "calibration.png")
            summary["eval"] = metrics
        elif self.is_main:
            too_long, no_pairs, _ = self.left_out.get("evaluation records", (0, 0, 0))
            why = (f"all were left out ({too_long} longer than rm.max_length, {no_pairs} with no "
                   "pair left in the loss)" if too_long or no_pairs else
                   "set rm.eval_dataset_path or rm.eval_fraction > 0")
            print(f"no held-out records: eval.json not written ({why})")
        distributed.barrier()
        return summary

    def progress_info(self, m: dict[str, Any]) -> str | None:
        return (f"loss {m.get('loss', float('nan')):.4f}  acc "
                f"{m.get('accuracy', float('nan')):.3f}  margin "
                f"{m.get('margin', float('nan')):.3f}")

    def progress_line(self, m: dict[str, Any]) -> str:
        line = (f"step {self.step}: loss {m['loss']:.4f} acc {m['accuracy']:.3f} margin "
                f"{m['margin']:.3f} grad {m['grad_norm']:.3f} {m['pairs_per_second']:.0f} "
                "pairs/s")
        if "eval/accuracy" in m:
            line += f" | eval acc {m['eval/accuracy']:.3f} ece {m['eval/ece']:.3f}"
        return line
