"""The training configuration: one dataclass tree, a YAML file, dotted command-line overrides.

    reasoner train --config configs/tiny.yaml algo.beta=0.04 model.path=/models/qwen

Sections: ``model`` (what is trained), ``lora``, ``data`` (rows and prompts), ``rewards`` (the
reward functions), ``rollout`` (sampling the completions), ``algo`` (the algorithm: trainer,
advantage estimator, policy loss and their settings), ``critic`` (PPO / A2C's value model),
``train`` (the run and its optimisation, shared by every trainer), ``rm`` (reward-model
training: the preference data and TRL RewardConfig's settings). Every field carries its help
text (``reasoner train --help-config``
prints them all). Hyperparameter names follow TRL's GRPOConfig / TrainingArguments where the
concept is the same, and then mean what TRL's mean. Every bad value is rejected with a
``ConfigError`` naming the field: unknown keys, wrong types, out-of-range values and incompatible
combinations.

Files written before the split into ``rollout`` / ``algo`` / ``train`` put all of those fields in
one ``grpo`` section; such a section is still read (each field goes to its section), except
``grpo.delta``, which meant dual-clip PPO and is now ``algo.dual_clip``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml


class ConfigError(ValueError):
    """A user-fixable configuration problem; the message names the field."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelConfig:
    path: str = _f("tiny", "Local Hugging Face model directory, or 'tiny' to build the tiny "
                   "random model (char tokenizer) described by the tiny_* fields below.")
    dtype: str = _f("float32", "Weights dtype when loading: float32 | bfloat16. bfloat16 "
                    "weights train through fp32 master weights and fp32 optimizer state (our "
                    "engine's masters, or DeepSpeed's bf16 mode), so updates far below a bf16 "
                    "ulp still add up; checkpoints and final/ hold bf16 weights. float16 is "
                    "refused: it needs loss scaling, which is not implemented (use bfloat16).")
    lean_forward: str = _f("auto", "auto: plain Qwen2 / Llama / Mistral / Qwen3 models run the "
                           "lean forward (the same math without the transformers module "
                           "machinery) in training, scoring and decoding; the log and the "
                           "metrics forward/lean_decode, forward/lean_update say which ran | "
                           "off: always the model's own forward.")
    tiny_arch: str = _f("qwen2", "Tiny model architecture: qwen2 | llama | mistral | qwen3 | "
                        "gpt2.")
    tiny_hidden_size: int = _f(64, "Tiny model hidden size.")
    tiny_num_layers: int = _f(2, "Tiny model number of layers.")
    tiny_num_heads: int = _f(4, "Tiny model attention heads.")
    tiny_num_kv_heads: int = _f(2, "Tiny model key/value heads (GQA).")
    tiny_intermediate_size: Optional[int] = _f(None, "Tiny model MLP size (default 4 * hidden).")
    tiny_max_position_embeddings: int = _f(512, "Tiny model maximum sequence length.")
    tiny_seed: int = _f(0, "Seed of the tiny model's random initialisation.")


@dataclass
class LoraConfig:
    enabled: bool = _f(False, "Train LoRA adapters (peft) instead of all weights; the reference "
                       "model is then the base model with adapters disabled.")
    r: int = _f(8, "LoRA rank.")
    alpha: int = _f(16, "LoRA alpha (scaling = alpha / r).")
    dropout: float = _f(0.0, "LoRA dropout.")
    target_modules: Union[list[str], str] = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "Module names that get adapters (peft's target_modules: the default fits Qwen2 / Llama / "
        "Mistral / Qwen3; GPT-2's are c_attn, c_proj, c_fc), or a string: all-linear (every "
        "linear layer but the LM head) or a regex of module names.")


@dataclass
class DataConfig:
    task: Optional[str] = _f("arithmetic", "Procedural task by name (arithmetic, countdown, a "
                             "registered one, or 'module:Class'); null to read dataset_path "
                             "instead.")
    task_options: dict[str, Any] = _f({}, "Keyword options passed to the task (difficulty etc.).")
    num_train_rows: Optional[int] = _f(None, "Rows generated from the task for training; null: "
                                       "10000, or every distinct train row of a task that has "
                                       "fewer (a number the task can't make is refused).")
    dataset_path: Optional[str] = _f(None, "jsonl / parquet / HF datasets directory on disk "
                                     "(used when task is null).")
    split: Optional[str] = _f(None, "Split of a datasets directory (a file has none).")
    column_map: dict[str, str] = _f({}, "Rename dataset columns to ours, e.g. "
                                    "{question: problem, answer: solution}.")
    template: Optional[str] = _f(None, "Prompt template: r1_zero | r1_short | chat | plain; "
                                 "null = the task's default (r1_zero for datasets).")
    system_prompt: Optional[str] = _f(None, "System prompt (chat template).")
    data_seed: int = _f(1234, "Seed of the task's row generation.")


@dataclass
class RewardsConfig:
    names: list[str] = _f([], "Reward function names (registered: reasoner.verifiers.rewards."
                          "REWARDS) or 'module:function' with TRL's signature; empty = the "
                          "task's own reward functions and weights.")
    reward_weights: Optional[list[float]] = _f(None, "One weight per reward function (TRL: "
                                               "reward_weights); null = all 1.0.")
    accuracy_reward: Optional[str] = _f(None, "Reward whose value is logged as accuracy "
                                        "(a sample is right at >= 1); one outside "
                                        "rewards.names is scored for the logs only, never "
                                        "trained on; none: no accuracy. Default: the "
                                        "task's accuracy reward, else the first name unless "
                                        "it is reward_model.")
    reward_model_path: Optional[str] = _f(None, "The reward model of the reward_model reward "
                                          "(a directory saved by reasoner rm, its final/; any "
                                          "AutoModelForSequenceClassification with one label).")
    reward_model_batch_size: int = _f(64, "Completions the reward model scores per forward.")
    reward_model_normalize: bool = _f(False, "Normalize the reward model's scores by the running "
                                      "mean and std of every score so far (this batch "
                                      "included; the same on every rank, kept in checkpoints).")


@dataclass
class RolloutConfig:
    """Sampling the completions an RL step learns from (GRPO now; PPO, RLOO, ... the same)."""

    num_generations: int = _f(8, "Completions sampled per prompt (the group size G).")
    max_prompt_length: Optional[int] = _f(None, "Rows whose prompt is longer than this (tokens) "
                                          "are left out of training (checked once, at start).")
    max_completion_length: int = _f(64, "Maximum new tokens per completion.")
    temperature: float = _f(1.0, "Sampling temperature (also applied to training log-probs).")
    top_p: float = _f(1.0, "Nucleus sampling threshold (1.0 = off).")
    top_k: int = _f(0, "Top-k sampling (0 = off).")
    dynamic_sampling: bool = _f(False, "DAPO dynamic sampling: replace zero-std groups with "
                                "groups from new prompts.")
    max_dynamic_sampling_tries: int = _f(3, "Extra generation rounds per step for dynamic sampling.")


@dataclass
class AlgoConfig:
    """The algorithm: which trainer, advantage estimator and policy loss, and their settings
    (PPO / A2C's value model has its own section, ``critic``)."""

    name: str = _f("grpo", "Algorithm (its trainer): grpo | rloo | reinforce_plus_plus (GRPO's "
                   "trainer with that advantage estimator) | ppo | a2c (with a critic), or a "
                   "registered one (reasoner.trainers.ALGORITHMS).")
    adv_estimator: Optional[str] = _f(None, "Advantage estimator (reasoner.algos.ADV_ESTIMATORS: "
                                      "grpo, rloo, reinforce_plus_plus, or 'module:function'); "
                                      "null = the algorithm's (grpo: grpo). PPO / A2C use GAE "
                                      "over the critic's values.")
    policy_loss: Optional[str] = _f(None, "Policy loss (reasoner.algos.POLICY_LOSSES: clipped, "
                                    "vanilla, or 'module:function'); null = the algorithm's "
                                    "(clipped; a2c: vanilla, no ratio clip).")
    beta: float = _f(0.0, "KL coefficient (0 = no reference model).")
    kl_estimator: str = _f("k3", "KL estimator: k1 | k2 | k3 (GRPO: in the loss or, with "
                           "kl_in_reward, the reward; PPO / A2C: in the per-token reward, TRL's "
                           "PPO default being k1).")
    kl_in_reward: bool = _f(False, "Subtract beta * sequence KL from the reward instead of adding "
                            "beta * KL to the loss.")
    use_bias_correction_kl: bool = _f(True, "TRL's option (and default): multiply the per-token "
                                      "KL term of the loss by the importance ratio, so its "
                                      "gradient is the unbiased gradient of KL(policy || ref).")
    epsilon: float = _f(0.2, "Lower clip range: ratio >= 1 - epsilon.")
    epsilon_high: Optional[float] = _f(None, "Upper clip range (DAPO clip-higher); null = epsilon.")
    delta: Optional[float] = _f(None, "TRL's two-sided clip (INTELLECT-2): the ratio in the "
                                "unclipped term is capped at delta whatever the sign of the "
                                "advantage; must be > 1 + epsilon_high; null = off.")
    dual_clip: Optional[float] = _f(None, "Dual-clip PPO bound c > 1: for negative advantages "
                                    "the loss is at most -c * A; null = off.")
    num_iterations: int = _f(1, "Policy updates per rollout batch (mu); > 1 uses old log-probs.")
    loss_type: str = _f("dapo", "Loss aggregation, TRL's names: grpo (mean over a sequence's "
                        "tokens, then over sequences) | dapo (mean over all tokens of the step, "
                        "all ranks) | dr_grpo (sum / (sequences * max_completion_length)) | bnpo "
                        "(mean over the tokens of each micro-batch, then over micro-batches); "
                        "see reasoner/algos/aggregation.py.")
    scale_rewards: str = _f("group", "Advantage scaling: group std | batch std | none.")
    skip_zero_advantage: bool = _f(True, "With no KL term in the loss, leave rows whose advantage "
                                   "is 0 (flat groups) out of the forward and backward: their "
                                   "gradient is exactly 0; the loss normalisers still count them.")
    mask_truncated_completions: bool = _f(False, "Exclude completions that hit "
                                          "max_completion_length from the loss.")
    overlong_buffer_len: Optional[int] = _f(None, "DAPO soft overlong penalty: buffer length in "
                                            "tokens before max_completion_length; null = off.")
    overlong_penalty_factor: float = _f(1.0, "Maximum soft overlong penalty.")
    missing_eos_penalty: Optional[float] = _f(None, "Subtract this from the reward of completions "
                                              "that end without an EOS token (hit "
                                              "max_completion_length); TRL's PPO / RLOO option; "
                                              "null = off.")
    # PPO with a critic and A2C (algo.name: ppo | a2c); REINFORCE++ reads gamma. TRL's PPOConfig
    # names, with TRL's meanings (see README "PPO, A2C, RLOO, REINFORCE++").
    num_ppo_epochs: int = _f(4, "PPO: passes over each rollout batch (TRL). A2C makes one.")
    num_mini_batches: int = _f(1, "PPO: mini-batches per pass, each one optimizer step of the "
                               "policy and the critic; the rows of every rank are shuffled "
                               "together and split (TRL). A2C makes one.")
    cliprange: float = _f(0.2, "PPO: the ratio is clipped to [1 - cliprange, 1 + cliprange] "
                          "(TRL's PPO name; GRPO's is epsilon). A2C does not clip.")
    cliprange_value: float = _f(0.2, "PPO: the value prediction is clipped to the rollout's "
                                "value +- cliprange_value and the larger squared error is taken "
                                "(TRL).")
    vf_coef: float = _f(0.1, "Value loss coefficient (TRL): loss = policy loss + vf_coef * "
                        "value loss, value loss = 0.5 * mean squared error.")
    gamma: float = _f(1.0, "Discount factor of the per-token returns (TRL); PPO, A2C, "
                      "REINFORCE++.")
    lam: float = _f(0.95, "Lambda of generalised advantage estimation (TRL).")
    kl_coef: float = _f(0.05, "PPO / A2C: coefficient of the per-token KL penalty in the reward, "
                        "r_t = -kl_coef * KL_t plus the sequence score at the last token "
                        "(TRL); the starting value with adap_kl_ctrl; 0 = no reference model.")
    adap_kl_ctrl: bool = _f(False, "PPO / A2C: the adaptive KL controller of Ziegler et al. "
                            "(2019), as TRL <= 0.11's adap_kl_ctrl: after each step kl_coef *= "
                            "1 + clip(KL / kl_target - 1, -0.2, 0.2) * completions / kl_horizon, "
                            "KL the mean sequence KL of the step.")
    kl_target: float = _f(6.0, "Target sequence KL of the adaptive controller (TRL <= 0.11's "
                          "target).")
    kl_horizon: int = _f(10000, "Horizon of the adaptive controller, in completions (TRL <= "
                         "0.11's horizon).")
    whiten_rewards: bool = _f(False, "PPO / A2C: whiten the per-token rewards (scaled to unit "
                              "variance, mean kept) before GAE (TRL).")
    whiten_advantages: bool = _f(True, "PPO / A2C: whiten the GAE advantages over the step's "
                                 "tokens (TRL always does).")
    ptx_coef: float = _f(0.0, "PPO-ptx (InstructGPT): add ptx_coef * the SFT loss of "
                         "ptx_batch_size rows (prompt + worked solution) to every policy "
                         "optimizer step; 0 = off.")
    ptx_dataset_path: Optional[str] = _f(None, "PPO-ptx rows: a jsonl / parquet / datasets "
                                         "directory with question and solution columns; null = "
                                         "the task's worked solutions.")
    ptx_batch_size: int = _f(8, "PPO-ptx rows per optimizer step (per process).")


@dataclass
class CriticConfig:
    """The value model of PPO / A2C (algo.name: ppo | a2c)."""

    model_path: Optional[str] = _f(None, "Local Hugging Face directory the value model starts from "
                                   "(e.g. a reward model saved by reasoner rm; a model without a "
                                   "score head gets a fresh one); null = the policy's starting "
                                   "weights (model.path). Loaded as "
                                   "AutoModelForSequenceClassification with num_labels=1.")
    shared_trunk: bool = _f(False, "A value head on the policy's trunk instead of a separate value "
                            "model: one model and one optimizer, the value loss trains the trunk "
                            "too.")
    learning_rate: Optional[float] = _f(None, "The separate value model's peak learning rate; "
                                        "null = train.learning_rate.")
    critic_warmup_steps: int = _f(0, "Steps at the start in which only the critic learns (the "
                                  "policy is not updated; separate value model only).")


@dataclass
class RMConfig:
    """Reward-model training (`reasoner rm`, algo.name=rm); the run and its optimisation are the
    train section's (train.per_device_train_batch_size counts preference records: a pair, a
    ranking, or a prompt's comparisons). Names are TRL RewardConfig's where the concept is the
    same."""

    dataset_path: Optional[str] = _f(None, "Preference JSONL: TRL pairs (prompt, chosen, "
                                     "rejected, margin), rankings (prompt, completions best "
                                     "first, a list = tied group) or comparisons (prompt, a, "
                                     "b, winner); see reasoner/preferences/formats.py.")
    eval_dataset_path: Optional[str] = _f(None, "Held-out preference JSONL (null: hold out "
                                          "rm.eval_fraction of the training prompts).")
    eval_fraction: float = _f(0.1, "Without eval_dataset_path: the fraction of prompts held out "
                              "for evaluation (by a stable hash of the prompt; 0 = none).")
    format: str = _f("auto", "auto (each line by its keys) | pairs | rankings | comparisons.")
    max_length: Optional[int] = _f(1024, "TRL's: records with a sequence (prompt + completion) "
                                   "longer than this many tokens are left out (counted and "
                                   "printed); null = no limit.")
    center_rewards_coefficient: Optional[float] = _f(None, "TRL's: adds coefficient * mean over "
                                                     "pairs of (r_chosen + r_rejected)^2 to the "
                                                     "loss (mean-zero rewards); e.g. 0.01.")
    ties: str = _f("drop", "Tied pairs: drop (not in the loss) | half (each side half a win: "
                   "-(log s(d) + log s(-d)) / 2).")
    eval_steps: int = _f(0, "Evaluate on the held-out records every N steps (0 = at the end "
                         "only).")
    eval_batch_size: int = _f(64, "Sequences per forward in evaluation.")
    calibration_bins: int = _f(10, "Bins of predicted win probability for calibration and ECE.")


@dataclass
class TrainConfig:
    """The run and its optimisation, shared by every trainer (TRL's TrainingArguments names)."""

    output_dir: str = _f("runs/grpo", "Where metrics, checkpoints and final/ are written.")
    max_steps: int = _f(100, "Training steps: one rollout batch and algo.num_iterations "
                        "optimizer steps each (TRL counts optimizer steps).")
    seed: int = _f(0, "Seed of everything: data order, sampling, dropout.")
    device: str = _f("auto", "auto | cpu | cuda.")
    per_device_train_batch_size: int = _f(16, "Completions per micro-batch (one forward and "
                                          "backward).")
    gradient_accumulation_steps: int = _f(1, "Micro-batches whose gradients make one optimizer "
                                          "step (TRL's meaning); a step's rollout batch is "
                                          "per_device_train_batch_size * this completions per "
                                          "process (TRL's generation batch).")
    learning_rate: float = _f(1e-6, "AdamW peak learning rate.")
    lr_scheduler_type: str = _f("linear", "linear | cosine | constant | constant_with_warmup.")
    warmup_ratio: float = _f(0.0, "Warmup as a fraction of optimizer steps.")
    warmup_steps: int = _f(0, "Warmup optimizer steps (overrides warmup_ratio when > 0).")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.99, "AdamW beta2.")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 = off; the norm is still logged).")
    bf16: bool = _f(False, "bf16 compute for generation, log-probs and the update. One process: "
                    "torch autocast, the weights (model.dtype) and the optimizer state stay as "
                    "they are (fp32 by default; on CPU it pays off with AMX / AVX512-BF16). "
                    "Under --deepspeed: DeepSpeed's bf16 mode, bf16 weights in the forward with "
                    "fp32 master weights and optimizer state.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward.")
    loss_backend: str = _f("auto", "Per-token loss and log-prob kernels: auto (Triton on CUDA, "
                           "pure torch otherwise) | triton | torch (the pure-torch reference).")
    use_fused_linear: bool = _f(False, "Use the fused linear + loss / log-prob kernels (never "
                                "materialise the logits) instead of the logits-input ones.")
    save_steps: int = _f(50, "Checkpoint every N steps (0 = only at the end).")
    save_total_limit: Optional[int] = _f(2, "Keep the last K checkpoints (null = all).")
    logging_steps: int = _f(1, "Print a metrics line every N steps (metrics.jsonl gets every step).")
    log_completions_steps: int = _f(10, "Write sample completions to completions.jsonl every N steps "
                                    "(0 = never).")
    num_completions_to_log: int = _f(4, "Completions written each time.")
    report_to_tensorboard: bool = _f(True, "Also write TensorBoard event files under output_dir/tb.")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rm: RMConfig = field(default_factory=RMConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def generation_batch_size(self) -> int:
        """Completions per step (one process)."""
        return self.train.per_device_train_batch_size * self.train.gradient_accumulation_steps

    @property
    def prompts_per_step(self) -> int:
        return self.generation_batch_size // self.rollout.num_generations


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}

# the one-section layout of older files: ``grpo.<field>`` -> the section that holds it now
LEGACY_SECTION = "grpo"
_LEGACY_FIELDS = {f.name: sec for sec, cls in (("rollout", RolloutConfig), ("algo", AlgoConfig),
                                               ("train", TrainConfig))
                  for f in dataclasses.fields(cls) if f.name != "name"}
_LEGACY_REFUSED = {"delta": "grpo.delta meant dual-clip PPO; it is algo.dual_clip now "
                            "(algo.delta is TRL's two-sided ratio cap)"}


def _legacy_target(key: str) -> str:
    """The section of legacy field grpo.<key> (ConfigError for a field that has no new home)."""
    if key in _LEGACY_REFUSED:
        raise ConfigError(_LEGACY_REFUSED[key])
    if key not in _LEGACY_FIELDS:
        raise ConfigError(f"unknown config key {LEGACY_SECTION}.{key}; the grpo section's fields "
                          f"now live in rollout, algo and train")
    return _LEGACY_FIELDS[key]


def _move_legacy_section(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of `data` with a ``grpo`` section's fields moved to their sections."""
    legacy = data.get(LEGACY_SECTION)
    if legacy is None:
        return {k: v for k, v in data.items() if k != LEGACY_SECTION}
    if not isinstance(legacy, dict):
        raise ConfigError(f"{LEGACY_SECTION}: expected a mapping of fields, got {legacy!r}")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()
           if k != LEGACY_SECTION}
    for key, value in legacy.items():
        sec = _legacy_target(key)
        node = out.setdefault(sec, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{sec}: expected a mapping of fields, got {node!r}")
        if key in node:
            raise ConfigError(f"{LEGACY_SECTION}.{key} and {sec}.{key} are both set; keep "
                              f"{sec}.{key}")
        node[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# type checking of one value


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _check_type(value: Any, tp: Any, name: str) -> Any:
    """Return `value` coerced to `tp` (int -> float only), or raise ConfigError naming `name`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{name}: must not be null")
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _check_type(value, inner[0], name)
        for a in inner:  # the first alternative that fits
            try:
                return _check_type(value, a, name)
            except ConfigError:
                pass
        raise ConfigError(f"{name}: expected {' or '.join(_type_str(a) for a in inner)}, got "
                          f"{value!r}")
    if value is None:
        raise ConfigError(f"{name}: must not be null (expected {_type_name(tp)})")
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ConfigError(f"{name}: must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted on / off as a boolean
            value = "on" if value else "off"
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return [_check_type(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        for k, v in value.items():
            if v is None and isinstance(k, str) and ":" in k:  # {a:b} is the key "a:b" in YAML
                fixed = k.replace(":", ": ", 1)
                raise ConfigError(f"{name}: the key {k!r} has no value: YAML reads {{{k}}} as one "
                                  f"key; put a space after the colon: {{{fixed}}}")
        return {str(k): _check_type(v, args[1], f"{name}.{k}") for k, v in value.items()}
    raise ConfigError(f"{name}: unsupported type {tp}")  # pragma: no cover


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build_section(cls: type, values: dict[str, Any], section: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected a mapping of fields, got {values!r}")
    hints = _hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key {section}.{key}; known keys in {section}: "
                              f"{', '.join(sorted(known))}")
    kwargs = {k: _check_type(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested mapping (as read from YAML)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping of sections, got {type(data).__name__}")
    for key in data:
        if key not in SECTIONS and key != LEGACY_SECTION:
            raise ConfigError(f"unknown config section {key!r}; sections: {', '.join(SECTIONS)}")
    data = _move_legacy_section(data)
    hints = _hints(Config)
    sections = {name: _build_section(hints[name], data.get(name) or {}, name) for name in SECTIONS}
    cfg = Config(**sections)
    validate(cfg)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """'algo.beta=0.04' -> (['algo', 'beta'], 0.04). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override key {key!r} must be section.field (e.g. algo.beta)")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {e}") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = dict(data or {})
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] == LEGACY_SECTION:  # grpo.beta=... of older command lines
            parts = [_legacy_target(parts[1]), *parts[1:]]
        legacy = data.get(LEGACY_SECTION)
        if isinstance(legacy, dict) and _LEGACY_FIELDS.get(parts[1]) == parts[0] \
                and parts[1] in legacy:  # an older file's value of the overridden field
            data[LEGACY_SECTION] = {k: v for k, v in legacy.items() if k != parts[1]}
        section = parts[0]
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r} in override {text!r}; "
                              f"sections: {', '.join(SECTIONS)}")
        node = data.setdefault(section, {}) or {}
        data[section] = node = dict(node)
        for p in parts[1:-1]:  # nested dict fields (data.task_options.max_value=9)
            node[p] = dict(node.get(p) or {})
            node = node[p]
        node[parts[-1]] = value
    return data


def read_config_file(path: str | Path) -> Any:
    """The YAML document of config file `path` ({} when empty); a missing file or invalid YAML
    is a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML file (or start from the defaults), apply dotted overrides, validate."""
    data = read_config_file(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides or []))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# ---------------------------------------------------------------------------------------------
# validation


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _choice(value: Any, choices: tuple[str, ...], name: str) -> None:
    _require(value in choices, f"{name} must be one of {', '.join(choices)}, got {value!r}")


def validate(cfg: Config) -> None:
    """Range and compatibility checks; raises ConfigError naming the field. The choices come
    from the modules that own them (one tuple each)."""
    from reasoner_kernels import KL_ESTIMATORS
    from reasoner_kernels.api import BACKENDS

    from reasoner.algos.advantages import SCALE_REWARDS
    from reasoner.algos.aggregation import LOSS_TYPES
    from reasoner.data.templates import TEMPLATES
    from reasoner.distributed import DEVICES
    from reasoner.engine.optim import SCHEDULERS
    from reasoner.models.lean import LEAN_FORWARD_MODES
    from reasoner.models.loading import DTYPES
    from reasoner.models.tiny import ARCHS

    m, lo, d, r = cfg.model, cfg.lora, cfg.data, cfg.rewards
    ro, a, t = cfg.rollout, cfg.algo, cfg.train
    _require(m.path != "", "model.path must be a directory or 'tiny'")
    _choice(m.dtype, DTYPES, "model.dtype")
    _require(m.dtype != "float16", "model.dtype=float16 does not train here (fp16 gradients need "
             "loss scaling, which is not implemented); use model.dtype=bfloat16 (fp32 master "
             "weights and optimizer state are kept) or float32")
    _choice(m.lean_forward, LEAN_FORWARD_MODES, "model.lean_forward")
    _choice(m.tiny_arch, ARCHS, "model.tiny_arch")
    for name in ("tiny_hidden_size", "tiny_num_layers", "tiny_num_heads", "tiny_num_kv_heads",
                 "tiny_max_position_embeddings"):
        _require(getattr(m, name) >= 1, f"model.{name} must be >= 1, got {getattr(m, name)}")
    _require(m.tiny_hidden_size % m.tiny_num_heads == 0,
             "model.tiny_hidden_size must be divisible by model.tiny_num_heads")
    _require(m.tiny_num_heads % m.tiny_num_kv_heads == 0,
             "model.tiny_num_heads must be divisible by model.tiny_num_kv_heads")

    _require(lo.r >= 1, f"lora.r must be >= 1, got {lo.r}")
    _require(lo.alpha >= 1, f"lora.alpha must be >= 1, got {lo.alpha}")
    _require(0.0 <= lo.dropout < 1.0, f"lora.dropout must be in [0, 1), got {lo.dropout}")
    _require(not lo.enabled or len(lo.target_modules) > 0, "lora.target_modules must not be empty")
    _require(not isinstance(lo.target_modules, str) or lo.target_modules.strip() != "",
             "lora.target_modules must not be empty")

    _require(d.task is not None or d.dataset_path is not None,
             "data.task or data.dataset_path must be set")
    _require(d.task is None or d.dataset_path is None,
             "data.task and data.dataset_path are exclusive; set data.task=null to use a dataset")
    if d.template is not None:
        _choice(d.template, TEMPLATES, "data.template")
    _require(d.num_train_rows is None or d.num_train_rows >= 1,
             f"data.num_train_rows must be >= 1 or null, got {d.num_train_rows}")
    if d.task is not None:
        _check_task(d.task, d.task_options)
    else:
        _require(not d.task_options, "data.task_options needs data.task (a dataset takes none): "
                 "set data.task_options={}")

    if r.reward_weights is not None:
        _require(len(r.names) > 0, "rewards.reward_weights needs rewards.names")
        _require(len(r.reward_weights) == len(r.names),
                 f"rewards.reward_weights has {len(r.reward_weights)} values for "
                 f"{len(r.names)} rewards.names")
    if d.task is None:
        _require(len(r.names) > 0, "rewards.names must be set when data.task is null")
    for i, n in enumerate(r.names):
        try:
            resolve_reward(n)
        except (KeyError, TypeError) as e:
            raise ConfigError(f"rewards.names[{i}]: {e}") from None
    from reasoner.verifiers.rewards import NO_ACCURACY, holds_model

    if r.accuracy_reward not in (None, NO_ACCURACY, *r.names):
        # scored beside the rewards for the logs only (accuracy_monitor): a rule-based one
        try:
            fn = resolve_reward(r.accuracy_reward)
        except (KeyError, TypeError) as e:
            raise ConfigError(f"rewards.accuracy_reward: {e}") from None
        _require(not holds_model(fn),
                 f"rewards.accuracy_reward {r.accuracy_reward!r} holds a model: a learned "
                 "score is not a verdict; name a rule-based reward or one of rewards.names")
    _require("reward_model" not in r.names or r.reward_model_path is not None,
             "rewards.names has reward_model: set rewards.reward_model_path (reasoner rm's "
             "output_dir/final)")
    _require(r.reward_model_batch_size >= 1,
             f"rewards.reward_model_batch_size must be >= 1, got {r.reward_model_batch_size}")
    _validate_rm(cfg)

    for sec, obj, names in (
            ("rollout", ro, ("num_generations", "max_completion_length")),
            ("algo", a, ("num_iterations",)),
            ("train", t, ("max_steps", "per_device_train_batch_size",
                          "gradient_accumulation_steps", "logging_steps",
                          "num_completions_to_log"))):
        for name in names:
            _require(getattr(obj, name) >= 1,
                     f"{sec}.{name} must be >= 1, got {getattr(obj, name)}")
    from reasoner.trainers import CRITIC_ALGORITHMS

    with_critic = a.name in CRITIC_ALGORITHMS
    _require(ro.num_generations >= (1 if with_critic else 2),
             f"rollout.num_generations must be >= 2 (group-relative advantages need a group; "
             f"ppo and a2c take 1), got {ro.num_generations}")
    _require(a.name == "rm" or cfg.generation_batch_size % ro.num_generations == 0,
             f"train.per_device_train_batch_size * train.gradient_accumulation_steps "
             f"({cfg.generation_batch_size}) must be divisible by rollout.num_generations "
             f"({ro.num_generations})")
    _require(ro.temperature > 0, f"rollout.temperature must be > 0, got {ro.temperature}")
    _require(0 < ro.top_p <= 1, f"rollout.top_p must be in (0, 1], got {ro.top_p}")
    _require(ro.top_k >= 0, f"rollout.top_k must be >= 0, got {ro.top_k}")
    _require(ro.max_prompt_length is None or ro.max_prompt_length >= 1,
             "rollout.max_prompt_length must be >= 1 or null")
    _require(ro.max_dynamic_sampling_tries >= 0,
             "rollout.max_dynamic_sampling_tries must be >= 0")

    _check_named("algo.name", a.name, "reasoner.trainers", "ALGORITHMS", load=False)
    if a.adv_estimator is not None:
        _check_named("algo.adv_estimator", a.adv_estimator, "reasoner.algos", "ADV_ESTIMATORS")
    if a.policy_loss is not None:
        _check_named("algo.policy_loss", a.policy_loss, "reasoner.algos", "POLICY_LOSSES")
    _require(a.beta >= 0, f"algo.beta must be >= 0, got {a.beta}")
    _choice(a.kl_estimator, KL_ESTIMATORS, "algo.kl_estimator")
    _require(not a.kl_in_reward or a.beta > 0, "algo.kl_in_reward needs algo.beta > 0")
    _require(0 < a.epsilon < 1, f"algo.epsilon must be in (0, 1), got {a.epsilon}")
    _require(a.epsilon_high is None or a.epsilon_high > 0,
             f"algo.epsilon_high must be > 0, got {a.epsilon_high}")
    eps_high = a.epsilon if a.epsilon_high is None else a.epsilon_high
    _require(a.delta is None or a.delta > 1 + eps_high,
             f"algo.delta (TRL's two-sided ratio cap) must be > 1 + epsilon_high = "
             f"{1 + eps_high:g}, got {a.delta}")
    _require(a.dual_clip is None or a.dual_clip > 1,
             f"algo.dual_clip must be > 1, got {a.dual_clip}")
    _choice(a.loss_type, tuple(LOSS_TYPES), "algo.loss_type")
    _choice(a.scale_rewards, SCALE_REWARDS, "algo.scale_rewards")
    _require(a.loss_type != "dr_grpo" or a.scale_rewards == "none",
             f"algo.loss_type=dr_grpo uses unscaled advantages: set algo.scale_rewards=none "
             f"(got {a.scale_rewards!r})")
    if a.overlong_buffer_len is not None:
        _require(0 < a.overlong_buffer_len <= ro.max_completion_length,
                 f"algo.overlong_buffer_len must be in [1, rollout.max_completion_length="
                 f"{ro.max_completion_length}], got {a.overlong_buffer_len}")
    _require(a.overlong_penalty_factor >= 0, "algo.overlong_penalty_factor must be >= 0")
    _check_actor_critic(cfg, with_critic)

    _choice(t.device, DEVICES, "train.device")
    _require(t.learning_rate > 0, f"train.learning_rate must be > 0, got {t.learning_rate}")
    _choice(t.lr_scheduler_type, SCHEDULERS, "train.lr_scheduler_type")
    _require(0 <= t.warmup_ratio < 1,
             f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    _require(t.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {t.warmup_steps}")
    _require(t.weight_decay >= 0, "train.weight_decay must be >= 0")
    _require(0 <= t.adam_beta1 < 1, "train.adam_beta1 must be in [0, 1)")
    _require(0 <= t.adam_beta2 < 1, "train.adam_beta2 must be in [0, 1)")
    _require(t.adam_epsilon > 0, "train.adam_epsilon must be > 0")
    _require(t.max_grad_norm >= 0, f"train.max_grad_norm must be >= 0, got {t.max_grad_norm}")
    _choice(t.loss_backend, BACKENDS, "train.loss_backend")
    _require(t.save_steps >= 0, f"train.save_steps must be >= 0, got {t.save_steps}")
    _require(t.save_total_limit is None or t.save_total_limit >= 1,
             f"train.save_total_limit must be >= 1 or null, got {t.save_total_limit}")
    _require(t.log_completions_steps >= 0, "train.log_completions_steps must be >= 0")


def _validate_rm(cfg: Config) -> None:
    from reasoner.preferences.formats import FORMATS
    from reasoner.trainers.reward import TIES

    rm = cfg.rm
    _require(cfg.algo.name != "rm" or rm.dataset_path is not None,
             "rm.dataset_path must be set (a preference JSONL) to train a reward model")
    _choice(rm.format, ("auto", *FORMATS), "rm.format")
    _choice(rm.ties, TIES, "rm.ties")
    _require(0 <= rm.eval_fraction < 1, f"rm.eval_fraction must be in [0, 1), got "
             f"{rm.eval_fraction}")
    _require(rm.max_length is None or rm.max_length >= 1, "rm.max_length must be >= 1 or null")
    _require(rm.center_rewards_coefficient is None or rm.center_rewards_coefficient >= 0,
             f"rm.center_rewards_coefficient must be >= 0 or null, got "
             f"{rm.center_rewards_coefficient}")
    for name in ("eval_batch_size", "calibration_bins"):
        _require(getattr(rm, name) >= 1, f"rm.{name} must be >= 1, got {getattr(rm, name)}")
    _require(rm.eval_steps >= 0, f"rm.eval_steps must be >= 0, got {rm.eval_steps}")


# algo fields only the actor-critic trainers (ppo, a2c) read
CRITIC_ONLY_ALGO_FIELDS = ("num_ppo_epochs", "num_mini_batches", "cliprange", "cliprange_value",
                           "lam", "whiten_rewards", "whiten_advantages", "vf_coef", "kl_coef",
                           "adap_kl_ctrl", "kl_target", "kl_horizon")


def _check_actor_critic(cfg: Config, with_critic: bool) -> None:
    """PPO / A2C / REINFORCE++ settings and the critic section."""
    a, c, t = cfg.algo, cfg.critic, cfg.train
    for name in ("num_ppo_epochs", "num_mini_batches", "kl_horizon", "ptx_batch_size"):
        _require(getattr(a, name) >= 1, f"algo.{name} must be >= 1, got {getattr(a, name)}")
    _require(0 < a.cliprange < 1, f"algo.cliprange must be in (0, 1), got {a.cliprange}")
    _require(a.cliprange_value > 0, f"algo.cliprange_value must be > 0, got {a.cliprange_value}")
    _require(a.vf_coef >= 0, f"algo.vf_coef must be >= 0, got {a.vf_coef}")
    _require(0 <= a.gamma <= 1, f"algo.gamma must be in [0, 1], got {a.gamma}")
    _require(0 <= a.lam <= 1, f"algo.lam must be in [0, 1], got {a.lam}")
    _require(a.kl_coef >= 0, f"algo.kl_coef must be >= 0, got {a.kl_coef}")
    _require(a.kl_target > 0, f"algo.kl_target must be > 0, got {a.kl_target}")
    _require(not (a.adap_kl_ctrl and a.kl_coef == 0),
             "algo.adap_kl_ctrl scales algo.kl_coef, its start: with kl_coef 0 it stays 0; set "
             "kl_coef > 0, or adap_kl_ctrl false for no KL penalty")
    _require(a.ptx_coef >= 0, f"algo.ptx_coef must be >= 0, got {a.ptx_coef}")
    _require(a.missing_eos_penalty is None or a.missing_eos_penalty >= 0,
             f"algo.missing_eos_penalty must be >= 0 or null, got {a.missing_eos_penalty}")
    _require(c.learning_rate is None or c.learning_rate > 0,
             f"critic.learning_rate must be > 0 or null, got {c.learning_rate}")
    _require(c.critic_warmup_steps >= 0,
             f"critic.critic_warmup_steps must be >= 0, got {c.critic_warmup_steps}")
    if not with_critic:
        _require(a.ptx_coef == 0, f"algo.ptx_coef (PPO-ptx) needs algo.name ppo or a2c, got "
                 f"{a.name!r}")
        # set, they would be ignored: a run that looks like PPO but is not
        algo0, critic0 = AlgoConfig(), CriticConfig()
        unused = [f"algo.{n}" for n in CRITIC_ONLY_ALGO_FIELDS
                  if getattr(a, n) != getattr(algo0, n)]
        unused += [f"critic.{f.name}" for f in dataclasses.fields(CriticConfig)
                   if getattr(c, f.name) != getattr(critic0, f.name)]
        _require(not unused, f"{', '.join(unused)}: PPO / A2C settings (the critic, its "
                 f"epochs and mini-batches, its KL penalty in the reward), which "
                 f"algo.name={a.name} does not read; remove them, or set algo.name ppo or a2c"
                 + ("; this algorithm's KL penalty is algo.beta" if any(
                     n in unused for n in ("algo.kl_coef", "algo.adap_kl_ctrl")) else ""))
        return
    _require(a.adv_estimator is None, f"algo.adv_estimator must be null for algo.name={a.name}: "
             f"its advantages are GAE over the critic's values (got {a.adv_estimator!r})")
    _require(a.beta == 0 and not a.kl_in_reward,
             f"algo.beta / algo.kl_in_reward are GRPO's KL settings; {a.name}'s KL penalty is in "
             f"the per-token reward: set algo.kl_coef (and algo.beta=0)")
    _require(a.epsilon == AlgoConfig.epsilon,
             f"algo.epsilon is GRPO's clip range; {a.name}'s is algo.cliprange (TRL's PPO name)")
    _require(not cfg.rollout.dynamic_sampling,
             f"rollout.dynamic_sampling refills zero-std groups for group-relative advantages; "
             f"{a.name} has a critic: set it to false")
    _require(c.critic_warmup_steps < t.max_steps,
             f"critic.critic_warmup_steps ({c.critic_warmup_steps}) must be < train.max_steps "
             f"({t.max_steps}): the policy would never learn")
    _require(not (c.shared_trunk and c.critic_warmup_steps > 0),
             "critic.critic_warmup_steps needs a separate value model: with critic.shared_trunk "
             "the value loss trains the policy's trunk")
    _require(not (c.shared_trunk and c.model_path is not None),
             "critic.model_path is the separate value model's start; with critic.shared_trunk the "
             "value head sits on the policy's trunk: leave it null")


def _check_task(name: str, options: dict[str, Any]) -> None:
    """The task exists and accepts its options (a task is cheap to build)."""
    from reasoner.registry import UnknownNameError
    from reasoner.tasks import get_task

    try:
        get_task(name, **options)
    except UnknownNameError as e:
        raise ConfigError(f"data.task: {e}") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data.task_options {options!r} do not fit data.task={name!r}: "
                          f"{e}") from None


def _check_named(field_name: str, name: str, module: str, registry: str, *,
                 load: bool = True) -> None:
    """`name` is known to the registry `module.registry` (with `load`, it also imports)."""
    import importlib

    from reasoner.registry import UnknownNameError

    reg = getattr(importlib.import_module(module), registry)
    try:
        if load or name not in reg:
            reg.get(name)
    except UnknownNameError as e:
        raise ConfigError(f"{field_name}: {e}") from None


def resolve_reward(name: str) -> Any:
    """A reward function by registered name or 'module:function' import path."""
    from reasoner.verifiers.rewards import get_reward

    return get_reward(name)


# ---------------------------------------------------------------------------------------------
# help


def describe_config() -> str:
    """Every field with its type, default and help, section by section."""
    lines = []
    hints = _hints(Config)
    for section in SECTIONS:
        cls = hints[section]
        lines.append(f"Section {section}:")
        sh = _hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  {section}.{f.name} ({_type_str(sh[f.name])}, default {default!r})")
            lines.append(f"      {f.metadata.get('help', '')}")
    return "\n".join(lines)


def _type_str(tp: Any) -> str:
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_str(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_str(a) for a in args)}]"
    return "any" if tp is Any else getattr(tp, "__name__", str(tp))
