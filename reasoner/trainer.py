"""The GRPO training loop.

One step (see DESIGN.md):

    prompts (data order) -> rollouts: G completions per prompt (rollout.generate_rollouts)
      -> rewards (several functions, weights; None = can't judge -> skipped sample)
      -> [dynamic sampling: replace zero-std groups with fresh prompts, bounded tries]
      -> soft overlong penalty, [KL in reward], group-relative advantages (grpo.py)
      -> old / ref log-probs (no grad; old only when num_iterations > 1 or KL in reward)
      -> num_iterations x (micro-batches with gradient accumulation -> one optimizer step)
      -> metrics, completions, checkpoint

Everything that decides the run's numbers (data order, sampling seeds, RNG states, optimizer and
scheduler) is in the checkpoint, so a killed run resumed with --resume ends bit-identical to an
uninterrupted one on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reasoner import distributed, grpo
from reasoner.checkpoint import (
    begin_checkpoint,
    capture_rng_state,
    commit_checkpoint,
    debug_kill,
    latest_checkpoint,
    load_checkpoint,
    remove_partial_checkpoints,
    restore_rng_state,
    rng_file,
)
from reasoner.config import Config, save_config
from reasoner.engine import build_engine
from reasoner.engine.deepspeed_engine import (
    default_deepspeed_config,
    load_deepspeed_config,
    resolve_deepspeed_config,
)
from reasoner.metrics import MetricsLogger, Progress, plot_metrics


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Batch:
    """One step's rollout batch (N = groups * G completions), on the training device."""

    prompt_ids: torch.Tensor  # [N, P] left padded
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor  # [N, C] right padded
    completion_mask: torch.Tensor  # [N, C] tokens through the first EOS
    texts: list[str]
    truncated: torch.Tensor  # [N] bool
    rows: list[dict[str, Any]]  # the dataset row of each completion
    prompts: list[str]  # the prompt text of each completion
    per_func: list[list[float | None]]  # one list of N rewards per reward function

    def __len__(self) -> int:
        return len(self.texts)


def _pad_to(x: torch.Tensor, width: int, value: int, left: bool) -> torch.Tensor:
    extra = width - x.shape[1]
    if extra <= 0:
        return x
    pad = torch.full((x.shape[0], extra), value, dtype=x.dtype, device=x.device)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


def cat_batches(parts: list[Batch], pad_id: int) -> Batch:
    """Concatenate batches whose prompts / completions have different padded widths."""
    if len(parts) == 1:
        return parts[0]
    p = max(b.prompt_ids.shape[1] for b in parts)
    c = max(b.completion_ids.shape[1] for b in parts)
    return Batch(
        prompt_ids=torch.cat([_pad_to(b.prompt_ids, p, pad_id, True) for b in parts]),
        prompt_mask=torch.cat([_pad_to(b.prompt_mask, p, 0, True) for b in parts]),
        completion_ids=torch.cat([_pad_to(b.completion_ids, c, pad_id, False) for b in parts]),
        completion_mask=torch.cat([_pad_to(b.completion_mask, c, 0, False) for b in parts]),
        texts=[t for b in parts for t in b.texts],
        truncated=torch.cat([b.truncated for b in parts]),
        rows=[r for b in parts for r in b.rows],
        prompts=[q for b in parts for q in b.prompts],
        per_func=[[v for b in parts for v in b.per_func[k]] for k in range(len(parts[0].per_func))],
    )


def select_groups(b: Batch, groups: list[int], g: int) -> Batch:
    idx = [gi * g + j for gi in groups for j in range(g)]
    t = torch.tensor(idx, dtype=torch.long, device=b.prompt_ids.device)
    return Batch(
        prompt_ids=b.prompt_ids[t], prompt_mask=b.prompt_mask[t],
        completion_ids=b.completion_ids[t], completion_mask=b.completion_mask[t],
        texts=[b.texts[i] for i in idx], truncated=b.truncated[t],
        rows=[b.rows[i] for i in idx], prompts=[b.prompts[i] for i in idx],
        per_func=[[f[i] for i in idx] for f in b.per_func],
    )


@dataclass
class RowTensors:
    """The model inputs of some rows of a Batch, with all-padding columns trimmed."""

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    width: int  # completion columns kept


def _take_rows(b: Batch, idx: torch.Tensor) -> RowTensors:
    pm = b.prompt_mask[idx]
    cm = b.completion_mask[idx]
    p = max(int(pm.sum(1).max()), 1) if idx.numel() else 1
    c = max(int(cm.sum(1).max()), 1) if idx.numel() else 1
    return RowTensors(b.prompt_ids[idx][:, -p:], pm[:, -p:], b.completion_ids[idx][:, :c],
                      cm[:, :c], c)


class DataOrder:
    """Endless shuffled passes over the rows; the position is two ints (epoch, index)."""

    def __init__(self, n: int, seed: int, epoch: int = 0, index: int = 0) -> None:
        self.n, self.seed, self.epoch, self.index = n, seed, epoch, index
        self._perm = self._make_perm()

    def _make_perm(self) -> list[int]:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist()

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            if self.index >= self.n:
                self.epoch, self.index = self.epoch + 1, 0
                self._perm = self._make_perm()
            out.append(self._perm[self.index])
            self.index += 1
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}


class GRPOTrainer:
    """GRPO on one process (plain torch engine). `train()` runs the loop."""

    def __init__(
        self,
        cfg: Config,
        *,
        resume: bool = False,
        deepspeed_config: str | None = None,
        progress: bool = True,
        model: Any = None,
        tokenizer: Any = None,
        rows: list[dict[str, Any]] | None = None,
        reward_funcs: list[tuple[str, Any, float]] | None = None,
    ) -> None:
        self.cfg = cfg
        g = cfg.grpo
        # multi-process: a launcher (torchrun / deepspeed) started us, or --deepspeed was given
        ds_config = None
        implicit_zero2 = deepspeed_config is None and distributed.launched_world_size() > 1
        if implicit_zero2:
            deepspeed_config = default_deepspeed_config()  # announced below, on rank 0
        if deepspeed_config is not None:  # fail on a bad file before loading anything
            ds_config = load_deepspeed_config(deepspeed_config)
            if cfg.lora.enabled and ds_config.get("zero_optimization", {}).get("stage", 0) == 3:
                raise ValueError("lora.enabled under ZeRO-3 is not supported: use a ZeRO-2 "
                                 "config (configs/zero2.json); the adapters are small anyway")
        self.out = Path(g.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        cuda = torch.cuda.is_available() if g.device == "auto" else g.device == "cuda"
        if ds_config is not None:
            distributed.init("cuda" if cuda else "cpu")
            if cuda:
                torch.cuda.set_device(distributed.local_rank())
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        self.device = torch.device("cuda", distributed.local_rank()) if cuda and ds_config \
            else torch.device("cuda" if cuda else "cpu")
        self.show_progress = progress and self.is_main
        if self.is_main and implicit_zero2:
            print(f"{self.world} processes and no --deepspeed: training under ZeRO-2 defaults")
        set_seed(g.seed)
        self.resume_from = latest_checkpoint(self.out) if resume else None
        if self.resume_from is None and not resume and self.is_main:
            remove_partial_checkpoints(self.out)
        distributed.barrier()

        # model, tokenizer, reference
        zero3_init = None
        if model is None and ds_config is not None and \
                ds_config.get("zero_optimization", {}).get("stage", 0) == 3:
            # ZeRO-3: every rank loads only its shard of the weights (deepspeed.zero.Init inside
            # from_pretrained while this object lives), never the whole model
            from transformers.integrations import HfDeepSpeedConfig

            zero3_init = HfDeepSpeedConfig(resolve_deepspeed_config(
                ds_config, g, self.world, self._hidden_size()))
        if model is None:
            model, tokenizer = self._load_model()
        self.tokenizer = tokenizer
        _disable_dropout(model)
        if cfg.lora.enabled:
            model = self._add_lora(model)
        ref = None
        if g.beta != 0.0 and not cfg.lora.enabled:
            # a second load when the policy is sharded already, else a copy (before ZeRO-3)
            ref = self._load_model()[0] if zero3_init is not None else copy.deepcopy(model)
            _disable_dropout(ref)
        if zero3_init is not None:  # loading is done: later from_pretrained calls load whole
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config

            unset_hf_deepspeed_config()
            del zero3_init

        # data and rewards
        self.task = None
        self.rows = rows if rows is not None else self._load_rows()
        if not self.rows:
            raise ValueError("no training rows")
        self.template = cfg.data.template or (
            self.task.default_template if self.task is not None else "r1_zero")
        if g.max_prompt_length is not None:
            self.rows = self._drop_long_prompts(self.rows, g.max_prompt_length)
        self.reward_funcs = reward_funcs if reward_funcs is not None else self._reward_funcs()
        self.accuracy_reward = cfg.rewards.accuracy_reward or (
            self.task.accuracy_reward if self.task is not None and not cfg.rewards.names
            else self.reward_funcs[0][0])
        self.order = DataOrder(len(self.rows), g.seed)

        self.engine = build_engine(model, g, g.max_steps * g.num_iterations, self.device,
                                   ds_config)
        self.model = self.engine.model
        self.ref_model = None if ref is None else self.engine.prepare_reference(ref)
        self.step = 0
        self._head_gather = contextlib.ExitStack()  # per micro-batch, see _update / _loss_micro
        if self.resume_from is not None:
            self._restore(self.resume_from)
        if self.is_main:
            save_config(cfg, self.out / "config.yaml")

    # ------------------------------------------------------------------ setup

    def _hidden_size(self) -> int | None:
        """The model's hidden size from its config alone (no weights loaded)."""
        m = self.cfg.model
        if m.path == "tiny":
            return m.tiny_hidden_size
        try:
            return int(json.loads((Path(m.path) / "config.json").read_text())["hidden_size"])
        except (OSError, KeyError, ValueError, TypeError):
            return None

    def _load_model(self) -> tuple[Any, Any]:
        from reasoner.models import build_tiny_model, load_model_and_tokenizer

        m = self.cfg.model
        path = m.path
        if path == "tiny":  # built once, by rank 0, then loaded by every rank
            path = str(self.out / "init_model")
            if self.is_main and not getattr(self, "_built_tiny", False):
                self._built_tiny = True
                build_tiny_model(
                    path, arch=m.tiny_arch, hidden_size=m.tiny_hidden_size,
                    num_layers=m.tiny_num_layers, num_heads=m.tiny_num_heads,
                    num_kv_heads=m.tiny_num_kv_heads, intermediate_size=m.tiny_intermediate_size,
                    max_position_embeddings=m.tiny_max_position_embeddings, seed=m.tiny_seed,
                )
            distributed.barrier()
        return load_model_and_tokenizer(
            path, dtype=m.dtype, device=self.device,
            gradient_checkpointing=self.cfg.grpo.gradient_checkpointing,
        )

    def _add_lora(self, model: Any) -> Any:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ImportError("lora.enabled needs peft: pip install 'reasoner-grpo[lora]'") from None
        lo = self.cfg.lora
        if self.cfg.grpo.gradient_checkpointing:  # checkpointed blocks need a grad-carrying input
            model.enable_input_require_grads()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.grpo.seed)
            return get_peft_model(model, LoraConfig(
                r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                target_modules=list(lo.target_modules), task_type="CAUSAL_LM",
            ))

    def _load_rows(self) -> list[dict[str, Any]]:
        d = self.cfg.data
        if d.task is not None:
            from reasoner.tasks import get_task

            self.task = get_task(d.task, **d.task_options)
            return self.task.rows("train", d.num_train_rows, d.data_seed)
        from reasoner.data import load_rows

        return load_rows(d.dataset_path, columns=d.column_map or None, split=d.split)

    def _reward_funcs(self) -> list[tuple[str, Any, float]]:
        from reasoner.config import resolve_reward

        r = self.cfg.rewards
        if r.names:
            weights = r.reward_weights or [1.0] * len(r.names)
            pairs = list(zip(r.names, weights))
        else:
            pairs = list(self.task.reward_funcs)
        return [(name, resolve_reward(name), float(w)) for name, w in pairs]

    # ------------------------------------------------------------------ checkpoints

    def _trainer_state(self) -> dict[str, Any]:
        return {"data": self.order.state(), "max_steps": self.cfg.grpo.max_steps}

    def save(self) -> Path:
        """An atomic checkpoint: every rank writes its part (the engine's, its RNG state) into
        the temporary directory; rank 0 renames it last."""
        tmp = self.out / f".tmp-checkpoint-{self.step}"
        if self.is_main:
            begin_checkpoint(self.out, self.step)
        distributed.barrier()
        self.engine.save(tmp)
        torch.save(capture_rng_state(), tmp / rng_file(self._rng_rank))
        distributed.barrier()
        if self.is_main:
            self.tokenizer.save_pretrained(tmp)
            debug_kill("save", self.step)
            commit_checkpoint(self.out, self.step, tmp, self._trainer_state(),
                              self.cfg.grpo.save_total_limit)
        distributed.barrier()
        return self.out / f"checkpoint-{self.step}"

    @property
    def _rng_rank(self) -> int | None:
        return self.rank if self.engine.per_rank_checkpoint else None

    def _restore(self, path: Path) -> None:
        if self.is_main:
            remove_partial_checkpoints(self.out)
        self.engine.load(path)
        self._restore_trainer(load_checkpoint(path, rank=self._rng_rank))

    def _restore_trainer(self, ck: dict[str, Any]) -> None:
        self.step = int(ck["trainer"]["step"])
        data = ck["trainer"]["data"]
        self.order = DataOrder(len(self.rows), self.cfg.grpo.seed, data["epoch"], data["index"])
        self._rng_state = ck["rng"]

    # ------------------------------------------------------------------ one step: rollouts

    def _sample_seed(self, attempt: int) -> int:
        seed = self.cfg.grpo.seed * 1_000_003 + self.step * 1009 + attempt
        return (seed + self.rank * 7_919_317) % 2**62

    def _prompt(self, row: dict[str, Any]) -> str:
        from reasoner.data import render_prompt

        return render_prompt(str(row["question"]), template=self.template,
                             tokenizer=self.tokenizer, system_prompt=self.cfg.data.system_prompt)

    def _drop_long_prompts(self, rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
        """Rows whose rendered prompt fits in `limit` tokens (checked once, before training, so
        a long prompt never stops a run half-way); how many were left out is printed."""
        ids = self.tokenizer([self._prompt(r) for r in rows], add_special_tokens=False)["input_ids"]
        kept = [r for r, x in zip(rows, ids) if len(x) <= limit]
        if not kept:
            raise ValueError(f"every prompt is longer than grpo.max_prompt_length={limit} tokens "
                             f"(shortest: {min(map(len, ids))})")
        if len(kept) < len(rows) and self.is_main:
            print(f"grpo.max_prompt_length={limit}: left out {len(rows) - len(kept)} of "
                  f"{len(rows)} rows whose prompt is longer")
        return kept

    def _take_prompts(self, n: int) -> list[dict[str, Any]]:
        """This rank's n prompts: every rank walks the same data order and takes its own slice
        of world * n rows, so the position stays one shared pair of ints."""
        idx = self.order.take(n * self.world)
        return [self.rows[i] for i in idx[self.rank * n:(self.rank + 1) * n]]

    def _rollout(self, n_prompts: int, attempt: int) -> Batch:
        from reasoner.rollout import generate_rollouts

        g = self.cfg.grpo
        rows = self._take_prompts(n_prompts)
        prompts = [self._prompt(r) for r in rows]
        t0 = time.perf_counter()
        with self.engine.generation(), self.engine.autocast():
            ro = generate_rollouts(
                self.model, self.tokenizer, prompts, num_generations=g.num_generations,
                max_completion_length=g.max_completion_length, temperature=g.temperature,
                top_p=g.top_p, top_k=g.top_k, do_sample=True,
                generator_seed=self._sample_seed(attempt),
            )
        self._times["generation"] += time.perf_counter() - t0
        G = g.num_generations
        rep_rows = [r for r in rows for _ in range(G)]
        rep_prompts = [p for p in prompts for _ in range(G)]
        t0 = time.perf_counter()
        per_func = self._score(rep_prompts, ro.completion_texts, rep_rows)
        self._times["reward"] += time.perf_counter() - t0
        return Batch(ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask,
                     list(ro.completion_texts), ro.truncated.bool(), rep_rows, rep_prompts, per_func)

    def _score(self, prompts: list[str], texts: list[str],
               rows: list[dict[str, Any]]) -> list[list[float | None]]:
        keys = sorted({k for r in rows for k in r})
        columns = {k: [r.get(k) for r in rows] for k in keys}
        out = []
        for name, fn, _ in self.reward_funcs:
            vals = list(fn(prompts, texts, **columns))
            if len(vals) != len(texts):
                raise ValueError(f"reward {name!r} returned {len(vals)} values for {len(texts)} "
                                 "completions")
            out.append([None if v is None else float(v) for v in vals])
        return out

    def _collect(self) -> tuple[Batch, dict[str, float]]:
        """The step's batch; with dynamic sampling, zero-std groups replaced by fresh ones."""
        cfg, g = self.cfg, self.cfg.grpo
        G, B = g.num_generations, cfg.prompts_per_step
        weights = [w for _, _, w in self.reward_funcs]
        batch = self._rollout(B, 0)
        stats = {"dynamic_sampling/tries": 0.0}
        if not g.dynamic_sampling:
            return batch, stats

        def informative(b: Batch) -> tuple[list[int], list[int]]:
            r, v = grpo.combine_rewards(b.per_func, weights)
            adv = grpo.group_advantages(r, v, G, "none")
            good = [i for i in range(len(b) // G) if not bool(adv.zero_std[i])]
            bad = [i for i in range(len(b) // G) if bool(adv.zero_std[i])]
            return good, bad

        good, bad = informative(batch)
        kept = [select_groups(batch, good, G)] if good else []
        spare = [select_groups(batch, bad, G)] if bad else []
        n_good, tries = len(good), 0
        while tries < g.max_dynamic_sampling_tries:
            # ranks roll out in lockstep (generation under ZeRO-3 is collective): the neediest
            # rank sets how many prompts every rank draws
            need = int(distributed.max_all([float(B - n_good)])[0])
            if need == 0:
                break
            tries += 1
            more = self._rollout(need, tries)
            good, bad = informative(more)
            if good and n_good < B:
                kept.append(select_groups(more, good[: B - n_good], G))
                n_good += min(len(good), B - n_good)
            if bad:
                spare.append(select_groups(more, bad, G))
        pad_id = self.tokenizer.pad_token_id
        if n_good < B:  # out of tries: fill with zero-signal groups (zero advantage)
            sp = cat_batches(spare, pad_id)
            kept.append(select_groups(sp, list(range(B - n_good)), G))
        stats["dynamic_sampling/tries"] = float(tries)
        stats["dynamic_sampling/filled_frac"] = n_good / B
        return cat_batches(kept, pad_id), stats

    # ------------------------------------------------------------------ one step: log-probs

    @property
    def _share_prompts(self) -> bool:
        # sharing a group's prompt runs a data-dependent number of forwards; under ZeRO-3 each
        # forward gathers weights collectively, so every rank must run the same number
        return not self.engine.partitioned

    def _micro_slices(self, n: int) -> list[slice]:
        mb = self.cfg.grpo.per_device_train_batch_size
        return [slice(i, min(i + mb, n)) for i in range(0, n, mb)]

    @torch.no_grad()
    def _logps(self, model: Any, b: Batch, *, disable_adapter: bool = False) -> torch.Tensor:
        from reasoner_kernels import selective_logp

        from reasoner.rollout import forward_logits

        model.eval()
        out = []
        ctx = model.disable_adapter() if disable_adapter else nullcontext()
        with ctx, self.engine.autocast():
            for s in self._micro_slices(len(b)):
                logits = forward_logits(model, b.prompt_ids[s], b.prompt_mask[s],
                                        b.completion_ids[s], b.completion_mask[s],
                                        share_prompts=self._share_prompts)
                out.append(selective_logp(logits, b.completion_ids[s],
                                          self.cfg.grpo.temperature).float())
        return torch.cat(out)

    def _ref_logps(self, b: Batch) -> torch.Tensor | None:
        if self.cfg.grpo.beta == 0.0:
            return None
        if self.cfg.lora.enabled:
            return self._logps(self.model, b, disable_adapter=True)
        return self._logps(self.ref_model, b)

    # ------------------------------------------------------------------ one step: update

    def _loss_micro(self, b: Batch, s: slice, old: torch.Tensor | None,
                    ref: torch.Tensor | None, adv: torch.Tensor, loss_mask: torch.Tensor,
                    beta: float) -> Any:
        from reasoner.rollout import forward_logits

        g = self.cfg.grpo
        kw = dict(temperature=g.temperature, eps_low=g.epsilon, eps_high=g.epsilon_high,
                  delta=g.delta, beta=beta, kl_estimator=g.kl_estimator, compute_entropy=True,
                  backend=g.loss_backend)
        ids = b.completion_ids[s]
        old_s = None if old is None else old[s]
        ref_s = None if ref is None else ref[s]
        adv_s = adv[s][:, None]
        if g.use_fused_linear:
            hidden = forward_logits(self.model, b.prompt_ids[s], b.prompt_mask[s], ids,
                                    b.completion_mask[s], return_hidden=True,
                                    share_prompts=self._share_prompts)
            head = self.model.get_output_embeddings()
            # the kernel reads the head's weight outside the module's forward: under ZeRO-3 it
            # is gathered here, after the decoder's forward (whose hooks release a tied
            # embedding), and stays whole through this micro-batch's backward
            self._head_gather.enter_context(self.engine.gathered(list(head.parameters())))
            n, c, h = hidden.shape
            out = grpo.fused_linear_token_loss(
                hidden.reshape(n * c, h), head.weight, ids.reshape(-1),
                None if old_s is None else old_s.reshape(-1),
                None if ref_s is None else ref_s.reshape(-1),
                adv_s.expand(n, c).reshape(-1), loss_mask[s].reshape(-1),
                bias=getattr(head, "bias", None), **kw)
            for name in ("loss", "logp", "kl", "clipped_low", "clipped_high", "clipped_dual",
                         "entropy"):
                v = getattr(out, name)
                if v is not None:
                    setattr(out, name, v.reshape(n, c))
            return out
        logits = forward_logits(self.model, b.prompt_ids[s], b.prompt_mask[s], ids,
                                b.completion_mask[s], share_prompts=self._share_prompts)
        return grpo.token_loss(logits, ids, old_s, ref_s, adv_s, loss_mask[s], **kw)

    def _update(self, b: Batch, adv: torch.Tensor, loss_mask: torch.Tensor,
                old: torch.Tensor | None, ref: torch.Tensor | None) -> dict[str, float]:
        g = self.cfg.grpo
        beta = 0.0 if g.kl_in_reward else g.beta
        # weights over the WHOLE batch (all ranks) first: dropped rows still count in the
        # normalisers
        lens = loss_mask.sum(1)
        keep = lens > 0
        if beta == 0.0 and g.skip_zero_advantage:
            keep &= adv != 0  # no KL term: a zero-advantage row has exactly zero gradient
        idx = keep.nonzero().squeeze(1)
        n_trained = idx.numel()
        # one all-reduce for every count the step needs over all ranks
        n_tok, n_seq, n_rows, n_kept_tok, n_trained_all = distributed.sum_all(
            [float(lens.sum()), float((lens > 0).sum()), float(len(lens)),
             float(lens[keep].sum()), float(n_trained)])
        weights = grpo.token_weights(g.loss_type, loss_mask, g.max_completion_length,
                                     global_num_tokens=n_tok, global_num_seqs=n_seq,
                                     global_num_rows=n_rows).to(self.device)
        # every rank must run as many forward/backward passes as the busiest one (ZeRO's
        # collectives); a rank short of rows repeats a row with zero weight
        slices = self._micro_slices(n_trained)
        n_micro = len(slices)
        n_micro_all = max(int(distributed.max_all([float(n_micro)])[0]),
                          self.engine.min_micro_batches)
        pad_micro = n_micro_all - n_micro
        if n_trained == 0 and pad_micro > 0:
            idx = torch.zeros(1, dtype=torch.long, device=keep.device)
        sub = _take_rows(b, idx)
        adv, loss_mask, weights = adv[idx], loss_mask[idx][:, : sub.width], weights[idx][:, : sub.width]
        old = None if old is None else old[idx][:, : sub.width]
        ref = None if ref is None else ref[idx][:, : sub.width]
        ref_for_loss = ref if beta != 0.0 else None
        slices += [slice(0, 1)] * pad_micro
        zero_weight = [False] * n_micro + [True] * pad_micro
        m = {"loss": 0.0, "clip/low": 0.0, "clip/high": 0.0, "clip/dual": 0.0, "kl": 0.0,
             "entropy": 0.0, "grad_norm": 0.0, "skipped_updates": 0.0,
             "update/trained_rows_frac": n_trained_all / max(n_rows, 1.0)}
        self.model.train()
        for it in range(g.num_iterations):
            total = torch.zeros((), dtype=torch.float64)
            sums = dict.fromkeys(("low", "high", "dual", "kl", "ent"), 0.0)
            for s, dummy in zip(slices, zero_weight):
                self.engine.begin_micro_batch()
                with contextlib.ExitStack() as self._head_gather:  # see _loss_micro
                    with self.engine.autocast():
                        out = self._loss_micro(sub, s, old if g.num_iterations > 1 else None,
                                               ref_for_loss, adv, loss_mask, beta)
                    w = torch.zeros_like(weights[s]) if dummy else weights[s]
                    loss = (out.loss.float() * w).sum()
                    self.engine.backward(loss)
                if dummy:
                    continue
                total += loss.detach().double().cpu()
                mk = loss_mask[s].bool()
                sums["low"] += float(out.clipped_low[mk].sum())
                sums["high"] += float(out.clipped_high[mk].sum())
                sums["dual"] += float(out.clipped_dual[mk].sum())
                if out.entropy is not None:
                    sums["ent"] += float(out.entropy[mk].float().sum())
                if ref is not None:
                    from reasoner_kernels import kl_estimate

                    kl = kl_estimate(out.logp.detach().float(), ref[s].float(), g.kl_estimator)
                    sums["kl"] += float(kl[mk].sum())
            res = self.engine.step(loss_finite=bool(torch.isfinite(total)))
            if not res.applied:
                m["skipped_updates"] += 1
            if it == 0:  # metrics of the first (on-policy) pass, summed over ranks
                tot, low, high, dual, kl, ent = distributed.sum_all(
                    [float(total), sums["low"], sums["high"], sums["dual"], sums["kl"],
                     sums["ent"]])
                d, dk = max(n_tok, 1.0), max(n_kept_tok, 1.0)
                m.update({"loss": tot, "clip/low": low / d, "clip/high": high / d,
                          "clip/dual": dual / d, "kl": kl / dk, "entropy": ent / dk,
                          "grad_norm": res.grad_norm, "lr": res.lr})
        self.model.eval()
        return m

    def train_step(self) -> dict[str, Any]:
        """One full GRPO step; returns its metrics."""
        g = self.cfg.grpo
        G = g.num_generations
        t_step = time.perf_counter()
        self._times = dict.fromkeys(("generation", "reward", "logprobs", "update"), 0.0)
        b, ds_stats = self._collect()

        names = [n for n, _, _ in self.reward_funcs]
        weights = [w for _, _, w in self.reward_funcs]
        rewards, valid = grpo.combine_rewards(b.per_func, weights)
        lengths = b.completion_mask.sum(1).cpu()
        if g.overlong_buffer_len is not None:
            rewards = rewards + grpo.overlong_penalty(
                lengths, g.max_completion_length, g.overlong_buffer_len,
                g.overlong_penalty_factor)

        # old / ref log-probs (no grad)
        t0 = time.perf_counter()
        need_old = g.num_iterations > 1 or g.kl_in_reward
        old = self._logps(self.model, b) if need_old else None
        ref = self._ref_logps(b)
        self._times["logprobs"] += time.perf_counter() - t0
        seq_kl = None
        if g.kl_in_reward:
            seq_kl = grpo.sequence_kl(old, ref, b.completion_mask, g.kl_estimator).cpu()
            rewards = rewards - g.beta * seq_kl

        batch_std = None
        if g.scale_rewards == "batch" and self.world > 1:  # the std of ALL ranks' rewards
            flat = _gathered(rewards[valid].double())
            batch_std = float(flat.std()) if flat.numel() >= 2 else 0.0
        adv = grpo.group_advantages(rewards, valid, G, g.scale_rewards, batch_std=batch_std)
        loss_mask = b.completion_mask.clone()
        loss_mask[~valid.to(loss_mask.device)] = 0
        if g.mask_truncated_completions:
            loss_mask[b.truncated] = 0

        t0 = time.perf_counter()
        upd = self._update(b, adv.advantages.float().to(self.device), loss_mask, old, ref)
        self._times["update"] += time.perf_counter() - t0
        self.step += 1
        dt = time.perf_counter() - t_step

        # metrics over the global batch (every rank's completions)
        m: dict[str, Any] = {}
        comb = _gathered(adv.rewards[adv.valid])
        m["reward/mean"] = float(comb.mean()) if comb.numel() else float("nan")
        m["reward/std"] = float(comb.std()) if comb.numel() > 1 else 0.0
        per_func = [[v for part in distributed.gather_objects(vals) for v in part]
                    for vals in b.per_func] if self.world > 1 else b.per_func
        for name, vals in zip(names, per_func):
            x = torch.tensor([v for v in vals if v is not None], dtype=torch.float64)
            m[f"rewards/{name}/mean"] = float(x.mean()) if x.numel() else float("nan")
            m[f"rewards/{name}/std"] = float(x.std()) if x.numel() > 1 else 0.0
        acc = per_func[names.index(self.accuracy_reward)] if self.accuracy_reward in names \
            else None
        if acc is not None:
            x = [v for v in acc if v is not None]
            m["accuracy"] = sum(1.0 for v in x if v >= 1.0) / len(x) if x else float("nan")
        lengths = _gathered(lengths)
        m["skipped_samples"] = float(_gathered(~valid).sum())
        m["frac_zero_std_groups"] = float(_gathered(adv.zero_std).float().mean())
        m["advantage/abs_mean"] = float(_gathered(adv.advantages).abs().mean())
        m["completion_length/mean"] = float(lengths.float().mean())
        m["completion_length/max"] = float(lengths.max())
        m["truncated_ratio"] = float(_gathered(b.truncated.cpu()).float().mean())
        if seq_kl is not None:
            m["kl_in_reward/mean"] = float(_gathered(seq_kl).mean())
        m.update(upd)
        m.update(ds_stats)
        names_t = list(self._times)
        slowest = distributed.max_all([self._times[k] for k in names_t] + [dt])
        for k, v in zip(names_t, slowest):  # the slowest rank sets the pace
            m[f"time/{k}"] = v
        dt = slowest[-1]
        m["time/step"] = dt
        tok_p, tok_c = distributed.sum_all([float(b.prompt_mask.sum()),
                                            float(b.completion_mask.sum())])
        m["tokens_per_second"] = (tok_p + tok_c) / dt
        m["completion_tokens_per_second"] = tok_c / dt
        peaks = distributed.gather_objects(_peak_memory_gb(self.device))
        m["memory/peak_gb"] = max(peaks)
        if self.world > 1:
            for r, v in enumerate(peaks):
                m[f"memory/rank{r}_peak_gb"] = v
        self._last_batch = (b, rewards, adv)
        return m

    def _completion_records(self) -> list[dict[str, Any]]:
        b, rewards, adv = self._last_batch
        recs = []
        for i in range(min(self.cfg.grpo.num_completions_to_log, len(b))):
            recs.append({
                "prompt": b.prompts[i], "completion": b.texts[i],
                "answer": b.rows[i].get("answer"),
                "reward": None if math.isnan(float(rewards[i])) else float(rewards[i]),
                "advantage": float(adv.advantages[i]),
                **{f"reward/{n}": f[i] for (n, _, _), f in zip(self.reward_funcs, b.per_func)},
            })
        return recs

    # ------------------------------------------------------------------ the loop

    def train(self) -> dict[str, Any]:
        g = self.cfg.grpo
        start = self.step
        logger = MetricsLogger(self.out, tensorboard=g.report_to_tensorboard,
                               resume_step=start if self.resume_from is not None else None) \
            if self.is_main else None  # only rank 0 writes
        if getattr(self, "_rng_state", None) is not None:
            restore_rng_state(self._rng_state)
        bar = Progress(g.max_steps, start, enabled=self.show_progress)
        last: dict[str, Any] = {}
        t0 = time.perf_counter()
        try:
            while self.step < g.max_steps:
                last = self.train_step()
                if logger is not None:
                    logger.log(self.step, last)
                    if g.log_completions_steps and self.step % g.log_completions_steps == 0:
                        logger.log_completions(self.step, self._completion_records())
                bar.update(self.step, last)
                if self.step % g.logging_steps == 0 and self.is_main:
                    bar.print(_line(self.step, last))
                if (g.save_steps and self.step % g.save_steps == 0) or self.step == g.max_steps:
                    self.save()
        finally:
            bar.close()
            if logger is not None:
                logger.close()
        self.save_final()
        if self.is_main:
            plot_metrics(self.out / "metrics.jsonl", self.out)
        return {"steps": self.step, "resumed_from": start, "wall_seconds": time.perf_counter() - t0,
                "last": last, "final": str(self.out / "final"), "rank": self.rank,
                "world_size": self.world}

    def save_final(self) -> Path:
        """The policy in Hugging Face format in output_dir/final (under ZeRO-3 consolidated from
        the shards: every rank takes part in the gather, rank 0 writes)."""
        path = self.out / "final"
        with self.engine.full_weights() as model:
            if self.is_main:
                if self.cfg.lora.enabled:
                    model = copy.deepcopy(model).merge_and_unload()
                model.save_pretrained(path, safe_serialization=True)
                self.tokenizer.save_pretrained(path)
        distributed.barrier()
        return path


def _peak_memory_gb(device: torch.device) -> float:
    """This process's peak memory so far: allocated GPU memory on CUDA, resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _gathered(x: torch.Tensor) -> torch.Tensor:
    """The concatenation over ranks of a small 1-D tensor (itself in one process)."""
    if distributed.world_size() == 1:
        return x
    return torch.cat([part for part in distributed.gather_objects(x.detach().cpu())])


def _line(step: int, m: dict[str, Any]) -> str:
    return (f"step {step}: reward {m.get('reward/mean', float('nan')):.3f} "
            f"acc {m.get('accuracy', float('nan')):.3f} len {m['completion_length/mean']:.1f} "
            f"kl {m['kl']:.4f} grad {m['grad_norm']:.3f} {m['tokens_per_second']:.0f} tok/s")


def _disable_dropout(model: Any) -> None:
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    cfg = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "dropout"):
        if cfg is not None and isinstance(getattr(cfg, name, None), float):
            setattr(cfg, name, 0.0)


def train(cfg: Config, *, resume: bool = False, deepspeed_config: str | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Run GRPO as configured; returns a summary (steps, wall time, last metrics, final path)."""
    trainer = GRPOTrainer(cfg, resume=resume, deepspeed_config=deepspeed_config, progress=progress)
    try:
        return trainer.train()
    finally:
        distributed.shutdown()
