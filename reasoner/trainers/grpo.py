"""GRPO (and any algorithm made of an advantage estimator and a policy loss without a critic).

One step (see docs/architecture.md):

    prompts (data order) -> rollouts: G completions per prompt (reasoner.rollout)
      -> rewards: several functions, weights, TRL's None (reasoner.verifiers.rewards)
      -> [dynamic sampling: replace zero-std groups with fresh prompts, bounded tries]
      -> reward shaping: soft overlong penalty, [KL in reward] (reasoner.algos.shaping)
      -> advantages: the registered estimator over every rank's rewards (reasoner.algos)
      -> old / ref log-probs, no grad, through the kernels (reasoner.scoring)
      -> num_iterations x (micro-batches, the registered policy loss, token weights ->
         one optimizer step) (reasoner.trainers.update)
      -> metrics, sample completions; the loop, checkpoints and logging are the base
         trainer's (reasoner.trainers.base)
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from reasoner_kernels import GRPOTokenOutput

from reasoner import distributed
from reasoner.algos import AdvantageInput, PolicyLossInput, get_adv_estimator, get_policy_loss
from reasoner.algos.advantages import group_stats
from reasoner.algos.losses import kl_coef_in_loss
from reasoner.algos.shaping import missing_eos_penalty, overlong_penalty, token_kl
from reasoner.config import Config, ConfigError
from reasoner.data import DataOrder, load_training_data, render_prompt
from reasoner.models.forward import forward_logits
from reasoner.models.lean import forward_path, lean_allowed
from reasoner.models.loading import StartingModels, check_context
from reasoner.rollout import generate_rollouts
from reasoner.scoring import ScoringSettings, token_logprobs
from reasoner.trainers.base import BaseTrainer, PhaseTimer, StepOutput, gathered, peak_memory_gb
from reasoner.trainers.batch import Batch, RowTensors, cat_batches, select_groups
from reasoner.trainers.update import MicroBatch, UpdateInputs, UpdateSettings, policy_update
from reasoner.verifiers.rewards import (
    CombinedRewards,
    RewardContext,
    WeightedReward,
    accuracy_monitor,
    accuracy_reward_name,
    combine_rewards,
    explain_unjudged,
    load_reward_states,
    prepare_rewards,
    reward_states,
    run_rewards,
    score_completions,
)

PHASES = ("generation", "reward", "logprobs", "update")


@dataclass(kw_only=True)
class GRPOStep(StepOutput):
    """A GRPO step's metrics and samples, and what it trained on (for inspection)."""

    batch: Batch  # this rank's rollout batch
    rewards: CombinedRewards  # the reward functions' combined rewards (before shaping)
    shaped: torch.Tensor  # [N] the rewards the advantages were computed from
    advantages: torch.Tensor  # [N] (or [N, C] per token) float64 (0 for dropped samples)


NO_SIGNAL_STEPS = 10  # steps in a row without a learning signal before the warning


class GRPOTrainer(BaseTrainer):
    """GRPO: group-relative advantages and the clipped policy loss by default; any registered
    advantage estimator / policy loss by ``algo.adv_estimator`` / ``algo.policy_loss``.

    `rows` and `reward_funcs` replace the config's rows / reward functions (tests, notebooks).
    """

    default_adv_estimator: str | None = "grpo"
    default_policy_loss = "clipped"

    def __init__(self, cfg: Config, *, rows: list[dict[str, Any]] | None = None,
                 reward_funcs: list[WeightedReward] | None = None, **kw: Any) -> None:
        a = cfg.algo
        if self.default_adv_estimator is not None:
            self.adv_estimator = get_adv_estimator(a.adv_estimator or self.default_adv_estimator)
        self.policy_loss = get_policy_loss(a.policy_loss or self.default_policy_loss)
        self.loss_config: Any = a  # what the policy loss reads (PPO: its cliprange as epsilon)
        super().__init__(cfg, rows=rows, reward_funcs=reward_funcs, **kw)

    # ------------------------------------------------------------------ setup

    def needs_reference(self) -> bool:
        return self.cfg.algo.beta != 0.0

    def optimizer_steps_per_step(self) -> int:
        return self.cfg.algo.num_iterations

    def setup_data(self, models: StartingModels, *, rows: list[dict[str, Any]] | None = None,
                   reward_funcs: list[WeightedReward] | None = None) -> None:
        """The rows (the config's, or `rows`), the prompt template, the reward functions (the
        config's, the task's, or `reward_funcs`) and the accuracy reward."""
        cfg = self.cfg
        data = load_training_data(cfg.data, rows)
        self.task, self.template = data.task, data.template
        kept = data.rows
        if not kept:
            raise ValueError("no training rows")
        lengths = self._prompt_lengths(kept)
        if cfg.rollout.max_prompt_length is not None:
            kept, lengths = self._drop_long_prompts(kept, lengths, cfg.rollout.max_prompt_length)
        check_context(models.policy.config, max(lengths), cfg.rollout.max_completion_length)
        self.rows = kept
        if reward_funcs is not None:
            if not reward_funcs:
                raise ValueError("no reward functions")
            self.reward_funcs = list(reward_funcs)
            self.accuracy_reward = accuracy_reward_name(cfg.rewards.accuracy_reward, self.task,
                                                        self.reward_funcs)
        else:  # a reward that holds a model loads it here (sharded under ZeRO-3)
            self.reward_funcs, self.accuracy_reward = run_rewards(
                cfg.rewards, self.task, context=RewardContext(cfg, self.device, self.zero3_config))
        # the accuracy reward when the run does not train on it: scored for the logs only
        self.accuracy_monitor = accuracy_monitor(self.reward_funcs, self.accuracy_reward)
        self.order = DataOrder(len(self.rows), cfg.train.seed)
        # what ran the forward, in words (`forward_path`), for the log and the metrics
        self.paths: dict[str, str] = {"decode": "", "update": ""}  # "": not run yet
        self._paths_said = ""
        self._no_signal = 0  # consecutive steps in which every group's rewards were equal

    def after_engine(self) -> None:
        prepare_rewards(self.reward_funcs, self.engine)  # a reward model: like the reference

    def trainer_state(self) -> dict[str, Any]:
        return {"data": self.order.state(), "rewards": reward_states(self.reward_funcs)}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        d = state["data"]
        self.order = DataOrder(len(self.rows), self.cfg.train.seed, d["epoch"], d["index"])
        load_reward_states(self.reward_funcs, state.get("rewards", {}))

    # ------------------------------------------------------------------ settings

    @property
    def share_prompts(self) -> bool:
        # sharing a group's prompt runs a data-dependent number of forwards; under ZeRO-3 each
        # forward gathers weights collectively, so every rank must run the same number
        return not self.engine.partitioned

    @property
    def allow_lean(self) -> bool:
        return lean_allowed(self.cfg.model.lean_forward)

    def scoring_settings(self) -> ScoringSettings:
        t = self.cfg.train
        return ScoringSettings(
            temperature=self.cfg.rollout.temperature, micro_batch_size=t.per_device_train_batch_size,
            use_fused_linear=t.use_fused_linear, backend=t.loss_backend,
            allow_lean=self.allow_lean, share_prompts=self.share_prompts)

    # ------------------------------------------------------------------ rollouts and rewards

    def _sample_seed(self, attempt: int) -> int:
        seed = self.cfg.train.seed * 1_000_003 + self.step * 1009 + attempt
        return (seed + self.rank * 7_919_317) % 2**62

    def prompt(self, row: dict[str, Any]) -> str:
        return render_prompt(row["question"], template=self.template,
                             tokenizer=self.tokenizer, system_prompt=self.cfg.data.system_prompt)

    def _prompt_lengths(self, rows: list[dict[str, Any]]) -> list[int]:
        """Each row's prompt length in tokens (the template rendered once for every row, so a
        template that can't be rendered fails here, naming data.template)."""
        try:
            prompts = [self.prompt(r) for r in rows]
        except ValueError as e:
            raise ConfigError(f"data.template={self.template}: {e}") from None
        return [len(x) for x in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]

    def _drop_long_prompts(self, rows: list[dict[str, Any]], lengths: list[int], limit: int
                           ) -> tuple[list[dict[str, Any]], list[int]]:
        """Rows whose rendered prompt fits in `limit` tokens, and their lengths (checked once,
        before training, so a long prompt never stops a run half-way); how many were left out
        is printed."""
        keep = [i for i, n in enumerate(lengths) if n <= limit]
        if not keep:
            raise ConfigError(f"every prompt is longer than rollout.max_prompt_length={limit} "
                              f"tokens (shortest: {min(lengths)})")
        if len(keep) < len(rows) and self.is_main:
            print(f"rollout.max_prompt_length={limit}: left out {len(rows) - len(keep)} of "
                  f"{len(rows)} rows whose prompt is longer")
        return [rows[i] for i in keep], [lengths[i] for i in keep]

    def _take_prompts(self, n: int) -> list[dict[str, Any]]:
        """This rank's n prompts: every rank walks the same data order and takes its own slice
        of world * n rows, so the position stays one shared pair of ints."""
        idx = self.order.take(n * self.world)
        return [self.rows[i] for i in idx[self.rank * n:(self.rank + 1) * n]]

    def _rollout(self, n_prompts: int, attempt: int, timer: PhaseTimer) -> Batch:
        ro = self.cfg.rollout
        rows = self._take_prompts(n_prompts)
        prompts = [self.prompt(r) for r in rows]
        with timer("generation"), self.engine.generation(), self.engine.autocast():
            out = generate_rollouts(
                self.model, self.tokenizer, prompts, num_generations=ro.num_generations,
                max_completion_length=ro.max_completion_length, temperature=ro.temperature,
                top_p=ro.top_p, top_k=ro.top_k, do_sample=True,
                generator_seed=self._sample_seed(attempt), allow_lean=self.allow_lean,
            )
        self.paths["decode"] = out.forward
        g = ro.num_generations
        rep_rows = [r for r in rows for _ in range(g)]
        rep_prompts = [p for p in prompts for _ in range(g)]
        with timer("reward"):
            per_func = score_completions(self.reward_funcs, rep_prompts, out.completion_texts,
                                         rep_rows)
            monitored = (None if self.accuracy_monitor is None else score_completions(
                [self.accuracy_monitor], rep_prompts, out.completion_texts, rep_rows)[0])
        return Batch(out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask,
                     list(out.completion_texts), out.truncated.bool(), rep_rows, rep_prompts,
                     per_func, monitored)

    def combined(self, b: Batch) -> CombinedRewards:
        return combine_rewards(b.per_func, [f.weight for f in self.reward_funcs])

    def collect(self, timer: PhaseTimer) -> tuple[Batch, dict[str, float]]:
        """The step's batch; with dynamic sampling, zero-std groups replaced by fresh ones."""
        cfg, ro = self.cfg, self.cfg.rollout
        g, b_prompts = ro.num_generations, cfg.prompts_per_step
        batch = self._rollout(b_prompts, 0, timer)
        stats = {"dynamic_sampling/tries": 0.0}
        if not ro.dynamic_sampling:
            return batch, stats

        def informative(b: Batch) -> tuple[list[int], list[int]]:
            c = self.combined(b)
            flat = group_stats(c.total, c.valid, g).zero_std.tolist()
            return ([i for i, z in enumerate(flat) if not z], [i for i, z in enumerate(flat) if z])

        good, bad = informative(batch)
        kept = [select_groups(batch, good, g)] if good else []
        spare = [select_groups(batch, bad, g)] if bad else []
        n_good, tries = len(good), 0
        while tries < ro.max_dynamic_sampling_tries:
            # ranks roll out in lockstep (generation under ZeRO-3 is collective): the neediest
            # rank sets how many prompts every rank draws
            need = int(distributed.max_all([float(b_prompts - n_good)])[0])
            if need == 0:
                break
            tries += 1
            more = self._rollout(need, tries, timer)
            good, bad = informative(more)
            if good and n_good < b_prompts:
                kept.append(select_groups(more, good[: b_prompts - n_good], g))
                n_good += min(len(good), b_prompts - n_good)
            if bad:
                spare.append(select_groups(more, bad, g))
        pad_id = self.tokenizer.pad_token_id
        if n_good < b_prompts:  # out of tries: fill with zero-signal groups (zero advantage)
            sp = cat_batches(spare, pad_id)
            kept.append(select_groups(sp, list(range(b_prompts - n_good)), g))
        stats["dynamic_sampling/tries"] = float(tries)
        stats["dynamic_sampling/filled_frac"] = n_good / b_prompts
        return cat_batches(kept, pad_id), stats

    def check_judged(self, b: Batch, comb: CombinedRewards) -> None:
        """A step in which most samples (all ranks) got no reward is a loud warning, and one in
        which none did an error (ConfigError: the data or the reward functions need fixing),
        each saying which function returned None, why, and an example gold answer: a run that
        can't judge its samples must not go on as a string of no-op steps."""
        bad, total = distributed.sum_all([float((~comb.valid).sum()), float(len(comb.valid))])
        if bad <= total / 2:
            return
        why = explain_unjudged(self.reward_funcs, b.per_func, b.prompts, b.texts, b.rows)
        msg = (f"step {self.step + 1}: {int(bad)} of {int(total)} samples could not be judged"
               + (f": {why}" if why else " (non-finite rewards)"))
        if bad == total:
            raise ConfigError(f"{msg}; nothing to learn from: fix the data (data.column_map says "
                              "which of your columns is our 'answer') or the reward functions "
                              "(rewards.names)")
        if self.is_main:
            print(f"WARNING: {msg}", file=sys.stderr, flush=True)

    def warn_without_signal(self, m: dict[str, Any]) -> None:
        """`NO_SIGNAL_STEPS` steps in a row in which every group's samples got equal rewards
        (zero advantages: nothing but the KL term moves the weights) print a warning once per
        such stretch, so that a run whose model never (or always) earns the reward is not a
        silent string of no-op steps."""
        # both: an estimator with a baseline beyond the group (REINFORCE++'s batch, G=1) or a
        # per-token KL reward still has advantages when every group's rewards are equal
        silent = m["frac_zero_std_groups"] >= 1.0 and m.get("advantage/abs_mean", 0.0) < 1e-6
        self._no_signal = self._no_signal + 1 if silent else 0
        if self._no_signal == NO_SIGNAL_STEPS and self.is_main:
            print(f"WARNING: steps {self.step - NO_SIGNAL_STEPS + 1}-{self.step}: in every group "
                  f"all {self.cfg.rollout.num_generations} samples got the same reward (this "
                  f"step's mean {m.get('reward/mean', float('nan')):.3f}), so the advantages are "
                  "zero and the policy does not learn; the model never (or always) earns the "
                  "reward: check it with reasoner eval, warm-start it (reasoner sft), sample more "
                  "(rollout.num_generations, rollout.temperature) or add a denser reward "
                  "(rewards.names)", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ advantages and loss

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C] right-padded with zeros to rollout.max_completion_length columns (one width on
        every rank, for gathering)."""
        extra = self.cfg.rollout.max_completion_length - x.shape[1]
        return torch.nn.functional.pad(x, (0, extra)) if extra > 0 else x

    def advantages(self, rewards: torch.Tensor, valid: torch.Tensor, mask: torch.Tensor,
                   token_rewards: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(this rank's advantages, every rank's rewards, every rank's valid flags, every rank's
        advantages): the registered estimator sees the global batch (per-token fields padded to
        max_completion_length); dropped samples (and padding) get advantage 0. `mask`: this
        rank's completion mask [N, C]; `token_rewards`: the part of `rewards` given per token."""
        r_all, v_all = gathered(rewards.double()), gathered(valid)
        m_all = gathered(self.padded(mask.cpu().bool()))
        tr_all = None if token_rewards is None else gathered(self.padded(token_rewards.cpu()))
        adv = self.adv_estimator(
            AdvantageInput(r_all, v_all, self.cfg.rollout.num_generations, m_all, tr_all),
            self.cfg.algo)
        n, c = rewards.numel(), mask.shape[1]
        if adv.shape == r_all.shape:
            adv = torch.where(v_all, adv.double(), torch.zeros_like(r_all))
            mine = adv[self.rank * n:(self.rank + 1) * n]
        elif adv.shape == m_all.shape:
            adv = torch.where(v_all[:, None] & m_all, adv.double(), torch.zeros_like(adv.double()))
            mine = adv[self.rank * n:(self.rank + 1) * n, :c]
        else:
            raise ValueError(f"advantage estimator returned shape {tuple(adv.shape)} for "
                             f"{tuple(r_all.shape)} rewards (expected that, or "
                             f"{tuple(m_all.shape)} per token)")
        return mine, r_all, v_all, adv

    def shaped_rewards(self, b: Batch, comb: CombinedRewards) -> torch.Tensor:
        """The combined rewards with the soft overlong and the missing-EOS penalties."""
        a, ro = self.cfg.algo, self.cfg.rollout
        rewards = comb.total.clone()
        if a.overlong_buffer_len is not None:
            lengths = b.completion_mask.sum(1).cpu()
            rewards = rewards + overlong_penalty(lengths, ro.max_completion_length,
                                                 a.overlong_buffer_len, a.overlong_penalty_factor)
        if a.missing_eos_penalty is not None:
            rewards = rewards + missing_eos_penalty(b.truncated.cpu(), a.missing_eos_penalty)
        return rewards

    def policy_forward(self, rows: RowTensors, *, hidden: bool) -> torch.Tensor:
        """The policy's forward over a micro-batch's rows: the logits predicting each completion
        token, or with `hidden` the final hidden states the LM head turns into them."""
        self.paths["update"] = forward_path(
            self.model, self.allow_lean, rows.prompt_ids.shape[1] + rows.completion_ids.shape[1])
        return forward_logits(self.model, rows.prompt_ids, rows.prompt_mask, rows.completion_ids,
                              rows.completion_mask, return_hidden=hidden,
                              share_prompts=self.share_prompts, allow_lean=self.allow_lean)

    def policy_loss_of(self, mb: MicroBatch, x: torch.Tensor, *, hidden: bool) -> GRPOTokenOutput:
        """The registered policy loss of a micro-batch from its forward `x` (logits, or hidden
        states with `hidden`: through the fused-linear kernel with train.use_fused_linear, else
        through the LM head)."""
        t, rows = self.cfg.train, mb.rows
        inp = PolicyLossInput(ids=rows.completion_ids, advantages=mb.advantages,
                              mask=mb.loss_mask, old_logp=mb.old_logp, ref_logp=mb.ref_logp,
                              temperature=self.cfg.rollout.temperature, backend=t.loss_backend,
                              weights=mb.weights)
        if hidden:
            head = self.model.get_output_embeddings()
            # the head's weight is read outside its module's forward: under ZeRO-3 it is
            # gathered here, after the decoder's forward (whose hooks release a tied
            # embedding), and stays whole through this micro-batch's backward
            mb.stack.enter_context(self.engine.gathered(list(head.parameters())))
            bias = getattr(head, "bias", None)
            if t.use_fused_linear:
                inp.hidden, inp.weight, inp.bias = x, head.weight, bias
            else:
                inp.logits = torch.nn.functional.linear(x, head.weight, bias)
        else:
            inp.logits = x
        return self.policy_loss(inp, self.loss_config)

    def micro_batch_loss(self, mb: MicroBatch) -> GRPOTokenOutput:
        """The registered policy loss of one micro-batch, over the model's forward (from the
        logits, or with train.use_fused_linear from the hidden states and the LM head)."""
        fused = self.cfg.train.use_fused_linear
        return self.policy_loss_of(mb, self.policy_forward(mb.rows, hidden=fused), hidden=fused)

    # ------------------------------------------------------------------ the step

    def train_step(self) -> GRPOStep:
        """One full step; returns its metrics and what it trained on."""
        ro, a, t = self.cfg.rollout, self.cfg.algo, self.cfg.train
        t_step = time.perf_counter()
        timer = PhaseTimer(*PHASES)
        b, ds_stats = self.collect(timer)

        comb = self.combined(b)
        self.check_judged(b, comb)
        valid = comb.valid
        rewards = self.shaped_rewards(b, comb)
        lengths = b.completion_mask.sum(1).cpu()
        # old / ref log-probs (no grad)
        with timer("logprobs"):
            settings = self.scoring_settings()
            need_old = a.num_iterations > 1 or a.kl_in_reward
            old = token_logprobs(self.model, b, settings, self.engine) if need_old else None
            ref = self.reference_logprobs(b, settings) if a.beta != 0.0 else None
        seq_kl = tok_rewards = None
        if a.kl_in_reward:
            kl_tok = token_kl(old, ref, b.completion_mask, a.kl_estimator).cpu()
            seq_kl = kl_tok.sum(-1)
            rewards = rewards - a.beta * seq_kl
            tok_rewards = -a.beta * kl_tok
        adv, r_all, v_all, adv_all = self.advantages(rewards, valid, b.completion_mask,
                                                     tok_rewards)
        loss_mask = self.loss_mask(b, valid)
        with timer("update"):
            upd = policy_update(
                self.engine,
                UpdateInputs(b, adv.float().to(self.device), loss_mask,
                             valid.to(self.device), old, ref),
                UpdateSettings(micro_batch_size=t.per_device_train_batch_size,
                               num_iterations=a.num_iterations, loss_type=a.loss_type,
                               max_completion_length=ro.max_completion_length,
                               kl_estimator=a.kl_estimator,
                               kl_in_loss=kl_coef_in_loss(a) != 0.0,
                               skip_zero_advantage=a.skip_zero_advantage),
                self.micro_batch_loss)
        self.step += 1
        dt = time.perf_counter() - t_step
        m = self._metrics(b, comb, r_all, v_all, adv_all, lengths, seq_kl, timer, dt)
        m.update(upd)
        m.update(ds_stats)
        m.update(self.forward_paths())
        self.warn_without_signal(m)
        return GRPOStep(metrics=m, samples=self._samples(b, rewards, adv), batch=b, rewards=comb,
                        shaped=rewards, advantages=adv)

    def reference_logprobs(self, b: Batch, settings: ScoringSettings) -> torch.Tensor:
        """The KL reference's per-token log-probs of the batch's completions (no grad): the
        policy with its adapters off under LoRA, else the frozen reference model."""
        if self.cfg.lora.enabled:
            return token_logprobs(self.model, b, settings, self.engine, disable_adapter=True)
        return token_logprobs(self.ref_model, b, settings, self.engine)

    def loss_mask(self, b: Batch, valid: torch.Tensor) -> torch.Tensor:
        """The completion tokens the loss counts: not those of dropped samples (`valid` false)
        nor, with algo.mask_truncated_completions, of truncated ones."""
        mask = b.completion_mask.clone()
        mask[~valid.to(mask.device)] = 0
        if self.cfg.algo.mask_truncated_completions:
            mask[b.truncated] = 0
        return mask

    def _metrics(self, b: Batch, comb: CombinedRewards, r_all: torch.Tensor,
                 v_all: torch.Tensor, adv_all: torch.Tensor, lengths: torch.Tensor,
                 seq_kl: torch.Tensor | None, timer: PhaseTimer, dt: float) -> dict[str, Any]:
        """Metrics over the global batch (every rank's completions; `adv_all`: every rank's
        advantages, [N] or [N, C] padded)."""
        m: dict[str, Any] = {}
        good = r_all[v_all]
        m["reward/mean"] = float(good.mean()) if good.numel() else float("nan")
        m["reward/std"] = float(good.std()) if good.numel() > 1 else 0.0
        names = [f.name for f in self.reward_funcs]
        per_func = [[v for part in distributed.gather_objects(vals) for v in part]
                    for vals in b.per_func] if self.world > 1 else b.per_func
        for name, vals in zip(names, per_func):
            x = torch.tensor([v for v in vals if v is not None and math.isfinite(v)],
                             dtype=torch.float64)
            m[f"rewards/{name}/mean"] = float(x.mean()) if x.numel() else float("nan")
            m[f"rewards/{name}/std"] = float(x.std()) if x.numel() > 1 else 0.0
        acc = self.accuracy_values(b)
        if acc is not None:
            if self.world > 1:
                acc = [v for part in distributed.gather_objects(acc) for v in part]
            x = [v for v in acc if v is not None and math.isfinite(v)]
            m["accuracy"] = sum(1.0 for v in x if v >= 1.0) / len(x) if x else float("nan")
        m["skipped_samples"] = float((~v_all).sum())
        m["skipped_samples/unscorable"], m["skipped_samples/non_finite"] = distributed.sum_all(
            [float(comb.unscorable.sum()), float(comb.non_finite.sum())])
        g = self.cfg.rollout.num_generations
        m["frac_zero_std_groups"] = float(group_stats(r_all, v_all, g).zero_std.float().mean())
        if adv_all.dim() == 1:
            m["advantage/abs_mean"] = float(adv_all.abs().mean())
        else:  # per token: over the completion tokens of the valid rows
            nz = adv_all[adv_all != 0]
            m["advantage/abs_mean"] = float(nz.abs().mean()) if nz.numel() else 0.0
        lengths = gathered(lengths)
        m["completion_length/mean"] = float(lengths.float().mean())
        m["completion_length/max"] = float(lengths.max())
        m["truncated_ratio"] = float(gathered(b.truncated.cpu()).float().mean())
        if seq_kl is not None:
            m["kl_in_reward/mean"] = float(gathered(seq_kl).mean())
        phases = list(timer.seconds)
        slowest = distributed.max_all([timer.seconds[k] for k in phases] + [dt])
        for k, v in zip(phases, slowest):  # the slowest rank sets the pace
            m[f"time/{k}"] = v
        dt = slowest[-1]
        m["time/step"] = dt
        tok_p, tok_c = distributed.sum_all([float(b.prompt_mask.sum()),
                                            float(b.completion_mask.sum())])
        m["tokens_per_second"] = (tok_p + tok_c) / dt
        m["completion_tokens_per_second"] = tok_c / dt
        peaks = distributed.gather_objects(peak_memory_gb(self.device))
        m["memory/peak_gb"] = max(peaks)
        if self.world > 1:
            for r, v in enumerate(peaks):
                m[f"memory/rank{r}_peak_gb"] = v
        return m

    def accuracy_values(self, b: Batch) -> list[float | None] | None:
        """This rank's values of the accuracy reward (a training reward's, or the monitor's);
        None when the run logs no accuracy."""
        if b.monitored is not None:
            return b.monitored
        names = [f.name for f in self.reward_funcs]
        if self.accuracy_reward in names:
            return b.per_func[names.index(self.accuracy_reward)]
        return None

    def _samples(self, b: Batch, rewards: torch.Tensor, adv: torch.Tensor) -> list[dict[str, Any]]:
        monitor = self.accuracy_monitor
        recs = []
        for i in range(min(self.cfg.train.num_completions_to_log, len(b))):
            recs.append({
                "prompt": b.prompts[i], "completion": b.texts[i],
                "answer": b.rows[i].get("answer"),
                "reward": None if math.isnan(float(rewards[i])) else float(rewards[i]),
                "advantage": float(adv[i] if adv.dim() == 1 else adv[i].sum()
                                   / b.completion_mask[i].sum().clamp(min=1).cpu()),
                **{f"reward/{f.name}": vals[i] for f, vals in zip(self.reward_funcs, b.per_func)},
                **({} if monitor is None or b.monitored is None
                   else {f"accuracy/{monitor.name}": b.monitored[i]}),
            })
        return recs

    def forward_paths(self) -> dict[str, float]:
        """Metrics ``forward/lean_decode`` and ``forward/lean_update`` (1.0: the lean forward
        ran, 0.0: the model's own; absent until that phase first ran: a step whose rows have
        no gradient runs no update forward); the first step, and any step where what ran
        changes, also prints them in words with the reason."""
        ran = {k: v for k, v in self.paths.items() if v}
        said = "; ".join(f"{k}: {v}" for k, v in ran.items())
        if said != self._paths_said and self.is_main:
            print(f"forward paths: {said}", flush=True)
        self._paths_said = said
        return {f"forward/lean_{k}": float(v == "lean") for k, v in ran.items()}

    def progress_line(self, m: dict[str, Any]) -> str:
        return (f"step {self.step}: reward {m.get('reward/mean', float('nan')):.3f} "
                f"acc {m.get('accuracy', float('nan')):.3f} "
                f"len {m['completion_length/mean']:.1f} kl {m['kl']:.4f} "
                f"grad {m['grad_norm']:.3f} {m['tokens_per_second']:.0f} tok/s")


class RLOOTrainer(GRPOTrainer):
    """RLOO: GRPO's step with the leave-one-out baseline (the ``rloo`` advantage estimator);
    ``algo.name: rloo``."""

    default_adv_estimator = "rloo"


class ReinforcePlusPlusTrainer(GRPOTrainer):
    """REINFORCE++: GRPO's step with batch-whitened per-token returns (``algo.adv_estimator``
    reinforce_plus_plus); the per-token KL penalty in the reward with ``algo.beta`` and
    ``algo.kl_in_reward``; ``algo.name: reinforce_plus_plus``."""

    default_adv_estimator = "reinforce_plus_plus"
