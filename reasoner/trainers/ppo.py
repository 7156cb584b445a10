"""PPO with a critic, and A2C (its one-pass, unclipped form), on GRPO's rollouts and rewards.

One step (see docs/architecture.md; the names are TRL's PPOConfig fields in ``algo``):

    prompts -> rollouts -> rewards: the reward functions GRPO uses (verifiers, or a reward model
      behind the same signature) give each completion its sequence score (+ the overlong and
      missing-EOS penalties)
      -> old / ref log-probs and the critic's values V(s_t), no grad
      -> per-token rewards, InstructGPT's r = score - kl_coef * KL: -kl_coef * KL_t on every
         token (k1 / k2 / k3), the score added on the last token [whiten_rewards]
      -> GAE(gamma, lam) over the values: advantages [whitened] and returns
         (reasoner.algos.advantages.gae), over every rank's rows
      -> num_ppo_epochs x num_mini_batches (rows of all ranks shuffled together): the clipped
         policy loss (cliprange) + vf_coef * the clipped value loss (cliprange_value)
         [+ ptx_coef * an SFT loss, PPO-ptx] -> one optimizer step of the policy and one of the
         critic each (reasoner.trainers.update)
      -> the KL controller (fixed, or Ziegler et al.'s adaptive one) sees the step's KL

The critic is a separate value model with its own engine (checkpointed in ``critic/``, exported
to ``final_critic/``), or a value head on the policy's trunk (``critic.shared_trunk``); both are
Hugging Face *ForSequenceClassification heads (reasoner.models.value). A2C: the same critic,
one optimizer step per batch, no ratio or value clipping.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reasoner import distributed
from reasoner.algos.advantages import (
    explained_variance,
    gae,
    masked_mean,
    masked_whiten,
    with_score_at_last_token,
)
from reasoner.algos.kl_control import kl_controller
from reasoner.algos.losses import clipped_value_loss
from reasoner.algos.shaping import token_kl
from reasoner.config import Config, ConfigError
from reasoner.engine import Engine, build_engine
from reasoner.models.loading import StartingModels, _zero3_loading, add_lora, resolve_model_path
from reasoner.models.value import (
    VALUE_HEAD,
    attach_value_head,
    export_shared_value_model,
    forward_values,
    token_values,
)
from reasoner.scoring import ScoringSettings, logprobs_from_forward, token_logprobs
from reasoner.trainers.base import PhaseTimer, gathered
from reasoner.trainers.batch import Batch, RowTensors, take_rows
from reasoner.trainers.grpo import PHASES, GRPOStep, GRPOTrainer
from reasoner.trainers.update import (
    MicroBatch,
    MicroOutput,
    UpdateInputs,
    UpdateSettings,
    policy_update,
)
from reasoner.verifiers.rewards import WeightedReward


@dataclass
class CriticTargets:
    """What the critic's values and the rewards give one step (this rank's rows; [N, C])."""

    advantages: torch.Tensor  # float64, whitened when algo.whiten_advantages
    returns: torch.Tensor  # float64, the value loss's targets
    scores: torch.Tensor  # [N_all] every rank's sequence scores (NaN: dropped)
    valid: torch.Tensor  # [N_all] every rank's valid flags
    advantages_all: torch.Tensor  # every rank's advantages (padded)
    stats: dict[str, float]  # KL, returns, values, explained variance over the global batch


@dataclass
class FirstForward:
    """The update's first micro-batch forward (policy and critic, with their graphs), run
    before the step's targets: the old policy's log-probs and the rollout-time values of its
    rows are read from it (no optimizer step has run yet, so these ARE the old policy's and the
    critic's), and the update's first micro-batch takes its loss from it instead of running the
    forward again."""

    idx: torch.Tensor  # [n] the rows of the batch (sorted)
    rows: RowTensors  # what the update's first micro-batch is made of
    x: torch.Tensor  # the policy's forward: logits, or hidden states (fused linear / shared)
    values: torch.Tensor  # [n, w] with their graph


@dataclass(kw_only=True)
class PPOStep(GRPOStep):
    """A PPO step's metrics and what it trained on (`advantages` per token)."""

    values: torch.Tensor  # [N, C] the critic's values at rollout time (0: rows without loss tokens)
    returns: torch.Tensor  # [N, C]


class PPOTrainer(GRPOTrainer):
    """PPO with a critic (``algo.name: ppo``). `rows` and `reward_funcs` replace the config's
    (tests, notebooks), as for GRPO."""

    extra_outputs = ("final_critic",)

    default_adv_estimator = None  # GAE over the critic's values
    default_policy_loss = "clipped"
    one_pass = False  # A2C: one optimizer step per batch, no clipping
    # read the old log-probs and the values of the update's first micro-batch from its own
    # forward (`FirstForward`) instead of separate no-grad passes (False: always the passes)
    fold_first_forward = True

    def __init__(self, cfg: Config, *, rows: list[dict[str, Any]] | None = None,
                 reward_funcs: list[WeightedReward] | None = None, **kw: Any) -> None:
        self.kl_ctl = kl_controller(cfg.algo)
        self.shared = cfg.critic.shared_trunk
        self.critic_engine: Engine | None = None
        self._first: FirstForward | None = None
        super().__init__(cfg, rows=rows, reward_funcs=reward_funcs, **kw)
        a = cfg.algo
        # the registered policy loss reads GRPO's names: PPO's clip is cliprange, no KL term
        self.loss_config = dataclasses.replace(a, epsilon=a.cliprange, beta=0.0,
                                               kl_in_reward=False)

    # ------------------------------------------------------------------ setup

    @property
    def epochs_and_mini_batches(self) -> tuple[int, int]:
        a = self.cfg.algo
        return (1, 1) if self.one_pass else (a.num_ppo_epochs, a.num_mini_batches)

    def needs_reference(self) -> bool:
        return self.cfg.algo.kl_coef > 0 or self.cfg.algo.adap_kl_ctrl

    def optimizer_steps_per_step(self) -> int:
        epochs, k = self.epochs_and_mini_batches
        return epochs * k

    def num_optimizer_steps(self) -> int:
        # the policy does not step during the critic's warm-up
        t, c = self.cfg.train, self.cfg.critic
        return (t.max_steps - c.critic_warmup_steps) * self.optimizer_steps_per_step()

    def add_policy_modules(self, policy: Any) -> list[str]:
        return attach_value_head(policy) if self.shared else []

    def policy_export_excludes(self) -> tuple[str, ...]:
        return (f"{VALUE_HEAD}.",) if self.shared else ()

    def setup_data(self, models: StartingModels, *, rows: list[dict[str, Any]] | None = None,
                   reward_funcs: list[WeightedReward] | None = None) -> None:
        super().setup_data(models, rows=rows, reward_funcs=reward_funcs)
        self.ptx_examples: list[tuple[list[int], int]] = []
        a = self.cfg.algo
        if a.ptx_coef > 0:
            from reasoner.data import load_rows
            from reasoner.trainers.sft import tokenize_examples

            try:
                ptx_rows = (load_rows(a.ptx_dataset_path) if a.ptx_dataset_path is not None
                            else self.rows)
            except (ValueError, OSError) as e:
                raise ConfigError(f"algo.ptx_dataset_path: {e}") from None
            if not ptx_rows:
                raise ConfigError("algo.ptx_coef > 0 but the PPO-ptx dataset has no rows")
            try:
                self.ptx_examples = tokenize_examples(self.tokenizer, ptx_rows,
                                                      template=self.template,
                                                      system_prompt=self.cfg.data.system_prompt)
            except ValueError as e:
                raise ConfigError(f"algo.ptx_coef (PPO-ptx): {e}; set algo.ptx_dataset_path to "
                                 f"rows with question and solution columns") from None

    def setup_engines(self, ds_config: dict[str, Any] | None) -> dict[str, Engine]:
        """The separate value model's engine (none with a value head on the policy's
        trunk): loaded as the policy is (ZeRO-3 shards, LoRA adapters), its own optimizer and
        learning rate (critic.learning_rate)."""
        per_step = self.cfg.generation_batch_size * self.world
        if self.cfg.algo.num_mini_batches > per_step:
            raise ConfigError(f"algo.num_mini_batches ({self.cfg.algo.num_mini_batches}) exceeds "
                              f"the completions per step ({per_step}): a mini-batch would hold "
                              "none and its optimizer step would still move the weights")
        if self.shared:
            self.critic_model = self.model
            return {}
        from reasoner.models.value import load_value_model

        cfg, t, c = self.cfg, self.cfg.train, self.cfg.critic
        path = c.model_path or resolve_model_path(cfg.model, self.out, is_main=self.is_main)
        if c.model_path is not None:
            self._check_critic_vocabulary(c.model_path)
        loading = (nullcontext() if self.zero3_config is None
                   else _zero3_loading(self.zero3_config))
        with loading:
            critic = load_value_model(path, dtype=cfg.model.dtype, device=self.device,
                                      gradient_checkpointing=t.gradient_checkpointing,
                                      pad_token_id=self.tokenizer.pad_token_id)
        if cfg.lora.enabled:  # adapters on the trunk, the score head trained whole
            critic = add_lora(critic, cfg.lora, seed=t.seed + 1,
                              gradient_checkpointing=t.gradient_checkpointing,
                              task_type="SEQ_CLS")
        settings = dataclasses.replace(t, learning_rate=c.learning_rate or t.learning_rate)
        self.critic_engine = build_engine(
            critic, settings, t.max_steps * self.optimizer_steps_per_step(), self.device,
            ds_config)
        self.critic_model = self.critic_engine.model
        return {"critic": self.critic_engine}

    def _check_critic_vocabulary(self, path: str) -> None:
        """The critic reads the policy's token ids: a critic.model_path with another
        vocabulary would index past its embeddings, or silently read other tokens."""
        from transformers import AutoTokenizer

        from reasoner.models.loading import model_config_json

        p = Path(path)
        try:
            vocab = model_config_json(p).get("vocab_size")
        except (OSError, ValueError):
            vocab = None
        if isinstance(vocab, int) and vocab < len(self.tokenizer):
            raise ConfigError(f"critic.model_path {path!r} has {vocab} token embeddings, fewer "
                              f"than the policy's tokenizer ({len(self.tokenizer)}): the critic "
                              "reads the policy's token ids; start it from a model with the "
                              "policy's tokenizer")
        if any(p.glob("tokenizer*")):
            try:
                theirs = AutoTokenizer.from_pretrained(str(p))
            except (OSError, ValueError):  # tokenizer files it can't read: the size check only
                return
            if theirs.get_vocab() != self.tokenizer.get_vocab():
                raise ConfigError(f"critic.model_path {path!r} has another tokenizer than "
                                  "model.path: the critic reads the policy's token ids; start "
                                  "it from a model with the policy's tokenizer")

    def trainer_state(self) -> dict[str, Any]:
        return {**super().trainer_state(), "kl_controller": self.kl_ctl.state()}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        super().load_trainer_state(state)
        self.kl_ctl.load_state(state["kl_controller"])

    def save_final(self) -> Any:
        """final/ (the policy, as GRPO's) and final_critic/: the value model in Hugging Face
        format (AutoModelForSequenceClassification), trunk + head with a shared trunk."""
        path = super().save_final()
        out = self.out / "final_critic"
        engine = self.engine if self.shared else self.critic_engine
        assert engine is not None
        with engine.full_weights() as model:
            if self.is_main:
                if self.cfg.lora.enabled:
                    model = copy.deepcopy(model).merge_and_unload()
                if self.shared:
                    export_shared_value_model(model, out)
                else:
                    model.save_pretrained(out, safe_serialization=True)
                self.tokenizer.save_pretrained(out)
        distributed.barrier()
        return path

    # ------------------------------------------------------------------ the critic's targets

    def mini_batch_plan(self, n: int) -> list[list[torch.Tensor]]:
        """Per epoch, per mini-batch: this rank's rows of it. Every rank shuffles the rows of
        ALL ranks with the same seeded permutation (train.seed, step, epoch) and splits it into
        num_mini_batches, so a mini-batch is the same set of completions whatever the number of
        ranks; each rank trains its own rows of it."""
        epochs, k = self.epochs_and_mini_batches
        total = n * self.world
        plan = []
        for e in range(epochs):
            gen = torch.Generator().manual_seed(
                (self.cfg.train.seed * 1_000_003 + self.step * 1009 + e) % 2**62)
            perm = torch.randperm(total, generator=gen)
            row = []
            for chunk in torch.tensor_split(perm, k):
                mine = chunk[chunk // n == self.rank] % n
                row.append(torch.sort(mine).values.to(self.device))
            plan.append(row)
        return plan

    def critic_targets(self, scores: torch.Tensor, valid: torch.Tensor, mask: torch.Tensor,
                       kl: torch.Tensor, values: torch.Tensor) -> CriticTargets:
        """Per-token rewards (-kl_coef * KL_t, the score on the last token), GAE advantages and
        returns, over the global batch (every rank's rows, padded to max_completion_length);
        this rank's rows back. `mask`: the loss mask [N, C]; `kl`: the per-token KL estimate
        (0 without a reference)."""
        a = self.cfg.algo
        n, c = mask.shape
        s_all, v_all = gathered(scores.double()), gathered(valid)
        m_all = gathered(self.padded(mask.cpu())).bool() & v_all[:, None]
        kl_all = gathered(self.padded(kl.cpu().double()))
        val_all = gathered(self.padded(values.detach().cpu().double())) * m_all
        kl_rewards = -self.kl_ctl.value * kl_all * m_all
        rewards = with_score_at_last_token(kl_rewards, torch.nan_to_num(s_all), m_all, v_all)
        if a.whiten_rewards and int(m_all.sum()) >= 2:
            rewards = torch.where(m_all, masked_whiten(rewards, m_all, shift_mean=False), 0.0)
        adv, ret = gae(rewards, val_all, m_all, a.gamma, a.lam)
        if a.whiten_advantages and int(m_all.sum()) >= 2:
            adv = torch.where(m_all, masked_whiten(adv, m_all), 0.0)
        rows = v_all & m_all.any(1)
        seq_kl = kl_all.sum(1)[rows]
        non_score = kl_rewards.sum(1)[rows]
        good = s_all[v_all]
        stats = {
            "kl": float(seq_kl.mean()) if seq_kl.numel() else 0.0,
            "kl_coef": self.kl_ctl.value,
            "non_score_reward": float(non_score.mean()) if non_score.numel() else 0.0,
            "rlhf_reward": (float(good.mean() + non_score.mean())
                            if good.numel() and non_score.numel() else float("nan")),
            "returns/mean": float(masked_mean(ret, m_all)) if m_all.any() else 0.0,
            "values/mean": float(masked_mean(val_all, m_all)) if m_all.any() else 0.0,
            "explained_variance": explained_variance(val_all, ret, m_all),
            "completions": float(rows.sum()),
        }
        lo, hi = self.rank * n, (self.rank + 1) * n
        return CriticTargets(adv[lo:hi, :c], ret[lo:hi, :c], s_all, v_all, adv, stats)

    # ------------------------------------------------------------------ losses

    def micro_batch_loss(self, mb: MicroBatch) -> MicroOutput:
        """The policy loss (the registered one, with cliprange) and the value loss of a
        micro-batch; with a shared trunk both from one forward. The step's first micro-batch
        takes its forward from `FirstForward` when the step ran it early."""
        rows, first = mb.rows, self._first
        self._first = None
        if first is not None and not (torch.equal(first.rows.completion_ids, rows.completion_ids)
                                      and torch.equal(first.rows.prompt_ids, rows.prompt_ids)):
            raise RuntimeError("the update's first micro-batch is not the one run early")
        policy = None
        fused = self.cfg.train.use_fused_linear
        if self.shared:
            hidden = first.x if first is not None else self.policy_forward(rows, hidden=True)
            values = first.values if first is not None else forward_values(
                self.model, rows.prompt_ids, rows.prompt_mask, rows.completion_ids,
                rows.completion_mask, share_prompts=self.share_prompts,
                allow_lean=self.allow_lean, hidden=hidden)
            policy = self.policy_loss_of(mb, hidden, hidden=True)
        else:
            if mb.train_policy:
                x = first.x if first is not None else self.policy_forward(rows, hidden=fused)
                policy = self.policy_loss_of(mb, x, hidden=fused)
            values = first.values if first is not None else forward_values(
                self.critic_model, rows.prompt_ids, rows.prompt_mask, rows.completion_ids,
                rows.completion_mask, share_prompts=self.share_prompts,
                allow_lean=self.allow_lean)
        assert mb.returns is not None and mb.old_values is not None
        vl = clipped_value_loss(values, mb.old_values, mb.returns, mb.loss_mask,
                                None if self.one_pass else self.cfg.algo.cliprange_value)
        return MicroOutput(policy, vl.loss, vl.clipped)

    def ptx_loss(self) -> torch.Tensor:
        """PPO-ptx: ptx_coef times the SFT loss of ptx_batch_size rows drawn for this optimizer
        step (seeded by seed, step, call and rank), divided by the number of ranks (the engine
        sums the ranks' gradients)."""
        from reasoner.trainers.sft import collate, completion_loss

        a, t = self.cfg.algo, self.cfg.train
        seed = t.seed * 1_000_003 + self.step * 1009 + self._ptx_calls * 7 + self.rank * 7_919_317
        self._ptx_calls += 1
        gen = torch.Generator().manual_seed(seed % 2**62)
        idx = torch.randint(len(self.ptx_examples), (a.ptx_batch_size,), generator=gen)
        batch = collate([self.ptx_examples[i] for i in idx.tolist()], self.tokenizer.pad_token_id)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        return completion_loss(self.model, batch) * (a.ptx_coef / self.world)

    # ------------------------------------------------------------------ old log-probs, values

    def first_forward(self, b: Batch, loss_mask: torch.Tensor,
                      plan: list[list[torch.Tensor]]) -> FirstForward | None:
        """The update's first micro-batch forward, run now (see `FirstForward`), when the
        first optimizer step's rows of this rank (those with loss tokens, as the update keeps
        them) fit in one micro-batch, no engine partitions its weights (a ZeRO-3 forward is
        collective: every rank must run the same ones) and no LoRA dropout makes the training
        forward differ from the old policy's; else None."""
        if not self.fold_first_forward or self.engine.partitioned or (
                self.critic_engine is not None and self.critic_engine.partitioned):
            return None
        if self.cfg.lora.enabled and self.cfg.lora.dropout > 0:
            return None  # a training forward drops adapter units: not the old policy's log-probs
        mb = plan[0][0]
        idx = mb[loss_mask[mb].sum(1) > 0]
        if idx.numel() == 0 or idx.numel() > self.cfg.train.per_device_train_batch_size:
            return None
        rows = take_rows(b, idx)
        engines = [self.engine] + ([self.critic_engine] if self.critic_engine else [])
        for e in engines:  # as the update runs it
            e.model.train()
        with self.engine.autocast():
            x = self.policy_forward(rows, hidden=self.shared or self.cfg.train.use_fused_linear)
            model = self.model if self.shared else self.critic_model
            values = forward_values(model, rows.prompt_ids, rows.prompt_mask, rows.completion_ids,
                                    rows.completion_mask, share_prompts=self.share_prompts,
                                    allow_lean=self.allow_lean,
                                    hidden=x if self.shared else None)
        return FirstForward(idx, rows, x, values)

    def old_and_values(self, b: Batch, loss_mask: torch.Tensor, settings: ScoringSettings,
                       first: FirstForward | None, need_old: bool
                       ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The old policy's log-probs [N, C] (None when not needed) and the critic's values
        [N, C] (0 on padding) at rollout time: without `first`, no-grad passes over the batch;
        with it, `first`'s rows read from its forward and the other rows with loss tokens
        through the passes (rows without loss tokens: 0, nothing reads them)."""
        critic = self.critic_engine or self.engine
        if first is None:
            old = token_logprobs(self.model, b, settings, self.engine) if need_old else None
            return old, token_values(self.critic_model, b, settings, critic)
        shape = b.completion_ids.shape
        old = torch.zeros(shape, device=b.completion_ids.device) if need_old else None
        values = torch.zeros(shape, device=b.completion_ids.device)
        w = first.rows.width
        with torch.no_grad():
            m = first.rows.completion_mask
            values[first.idx, :w] = first.values.detach().float() * m.to(torch.float32)
            if old is not None:
                x_settings = dataclasses.replace(
                    settings, use_fused_linear=self.shared or settings.use_fused_linear)
                with self.engine.autocast():
                    old[first.idx, :w] = logprobs_from_forward(
                        self.model, first.x, first.rows.completion_ids, x_settings, self.engine)
        rest = (loss_mask.sum(1) > 0).nonzero().squeeze(1)
        rest = rest[~torch.isin(rest, first.idx)]
        if rest.numel():
            sub = take_rows(b, rest)
            values[rest, :sub.width] = token_values(self.critic_model, sub, settings, critic)
            if old is not None:
                old[rest, :sub.width] = token_logprobs(self.model, sub, settings, self.engine)
        return old, values

    # ------------------------------------------------------------------ the step

    def train_step(self) -> PPOStep:
        a, c, t, ro = self.cfg.algo, self.cfg.critic, self.cfg.train, self.cfg.rollout
        t_step = time.perf_counter()
        timer = PhaseTimer(*PHASES)
        b, ds_stats = self.collect(timer)
        comb = self.combined(b)
        self.check_judged(b, comb)
        valid = comb.valid
        scores = self.shaped_rewards(b, comb)
        lengths = b.completion_mask.sum(1).cpu()
        loss_mask = self.loss_mask(b, valid)
        epochs, k = self.epochs_and_mini_batches
        train_policy = self.step >= c.critic_warmup_steps
        plan = self.mini_batch_plan(len(b))
        self._first = None
        with timer("update"):  # the update's first forward, when it runs early
            first = self.first_forward(b, loss_mask, plan) if train_policy else None
        with timer("logprobs"):
            settings = self.scoring_settings()
            need_ref = self.needs_reference()
            old, values = self.old_and_values(b, loss_mask, settings, first,
                                              need_ref or epochs * k > 1)
            ref = self.reference_logprobs(b, settings) if need_ref else None
        kl = (token_kl(old, ref, loss_mask, a.kl_estimator) if ref is not None
              else torch.zeros(loss_mask.shape, dtype=torch.float64))
        tg = self.critic_targets(scores, valid, loss_mask, kl, values)
        self._first = first
        try:
            with timer("update"):
                self._ptx_calls = 0
                upd = policy_update(
                    self.engine,
                    UpdateInputs(b, tg.advantages.float().to(self.device), loss_mask,
                                 valid.to(self.device), old, None,
                                 returns=tg.returns.float().to(self.device),
                                 old_values=values.float().to(self.device),
                                 mini_batches=plan),
                    UpdateSettings(micro_batch_size=t.per_device_train_batch_size,
                                   num_iterations=1, loss_type=a.loss_type,
                                   max_completion_length=ro.max_completion_length,
                                   kl_estimator=a.kl_estimator, kl_in_loss=False,
                                   skip_zero_advantage=False, value_coef=a.vf_coef,
                                   train_policy=train_policy),
                    self.micro_batch_loss, critic=self.critic_engine,
                    step_loss=self.ptx_loss if a.ptx_coef > 0 and train_policy else None)
        finally:
            self._first = None  # used by the first micro-batch, or dropped
        self.kl_ctl.update(tg.stats["kl"], int(tg.stats.pop("completions")))
        self.step += 1
        dt = time.perf_counter() - t_step
        m = self._metrics(b, comb, tg.scores, tg.valid, tg.advantages_all, lengths, None, timer,
                          dt)
        m.update(upd)
        m.update(tg.stats)  # the rollout's KL (the update's own "kl" metric has no reference)
        m.update(ds_stats)
        m.update(self.forward_paths())
        m["critic/warmup"] = 0.0 if train_policy else 1.0
        return PPOStep(metrics=m, samples=self._samples(b, scores, tg.advantages), batch=b,
                       rewards=comb, shaped=scores, advantages=tg.advantages, values=values,
                       returns=tg.returns)

    def progress_line(self, m: dict[str, Any]) -> str:
        return (f"step {self.step}: reward {m.get('reward/mean', float('nan')):.3f} "
                f"acc {m.get('accuracy', float('nan')):.3f} "
                f"len {m['completion_length/mean']:.1f} kl {m['kl']:.4f} "
                f"(coef {m['kl_coef']:.3g}) vloss {m['value_loss']:.4f} "
                f"ev {m['explained_variance']:.3f} {m['tokens_per_second']:.0f} tok/s")


class A2CTrainer(PPOTrainer):
    """A2C (``algo.name: a2c``; Gopher's synchronous advantage actor-critic): PPO's critic,
    rewards and GAE, one optimizer step per rollout batch, the policy-gradient loss without a
    ratio clip (``vanilla``) and the value loss without clipping."""

    default_policy_loss = "vanilla"
    one_pass = True
