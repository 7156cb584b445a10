"""`reasoner demo rlhf`: the seeds' RLHF pipeline end to end on a CPU, then iterated online.

    warm start (SFT) -> K samples per prompt -> the synthetic annotator ranks them
      -> reward model (Bradley–Terry on the rankings; its backbone the same SFT run continued
         to demo.rm_sft_steps) -> PPO against it, KL penalty to the warm start
      -> evaluate                                                                 (round 0)
      -> rounds 1..R: sample the current policy -> the annotator ranks the samples -> update the
         reward model on them (the last round's model, trained on) -> continue PPO against it
         -> evaluate
    beside it: the same PPO without the KL penalty against round 0's reward model

Every stage is a public API that is also a command (`run_sft` = ``reasoner sft``,
`sample_preferences` = ``reasoner preferences``, the ``rm`` trainer = ``reasoner rm``, the PPO
trainer = ``reasoner train``); each run writes its resolved config.yaml, so a stage can be rerun
by hand. A round continues the same PPO run (``resume``: the policy, the critic, their optimizers
and the KL controller) with the new reward model, so the KL reference stays the warm start.

What is measured, on the held-out prompts (`eval_prompts` of the task's test split, the same for
every evaluation; K samples each at the training temperature):

- true score: the annotator's mean hidden utility of the samples (the objective a real project
  never sees), in [0, 1];
- RM score: the mean reward-model score of the same samples (round 0's reward model for the
  top-level figures and the no-KL run, so they share one scale; each round's own model in its
  entry);
- KL: the mean over the samples of sum_t log pi(y_t) - log pi_warm(y_t) (k1, an unbiased
  estimate of KL(pi || pi_warm));
- the annotator's rankings of these samples are the reward models' held-out data: held-out
  pairwise accuracy beside the annotator's Bayes-optimal accuracy on the same pairs.

Writes D/summary.json (the figures), D/details.json (per-stage seconds, every evaluation, the
recipe), D/metrics.jsonl and the PPO run's plots and final/ (D is the PPO run's output
directory), D/scores_vs_kl.png and D/rounds.png. The recipe is embedded (RLHF_RECIPE);
configs/rlhf_demo.yaml is the same recipe as a file (a test keeps them equal).
"""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoner.config import Config, ConfigError, config_from_dict, read_config_file

RLHF_RECIPE: dict[str, Any] = {
    "demo": {
        "seed": 0,
        # warm start: SFT on worked solutions at a constant learning rate (label smoothing keeps
        # its samples varied), stopped at sft_steps while the additions are partly learnt (the
        # policy); the same run continues to rm_sft_steps for round 0's reward model's backbone
        # (it checks additions better; the rankings are still of the policy's samples)
        "sft_rows": 4000,
        "sft_steps": 1000,
        "rm_sft_steps": 1600,
        "sft_batch_size": 32,
        "sft_lr": 1.0e-3,
        "sft_lr_scheduler_type": "constant_with_warmup",
        "sft_label_smoothing": 0.1,
        # the synthetic annotator ranks k samples per prompt (Bradley-Terry noise temperature)
        "k": 4,
        "noise_temperature": 0.05,
        "rm_prompts": 1000,  # round 0's rankings (of the warm start's samples)
        "round_prompts": 1000,  # each online round's new rankings (of the current policy's)
        "eval_prompts": 200,  # held-out prompts of every evaluation
        "rounds": 2,  # online rounds after round 0
        "round_rm_steps": 60,  # reward-model update steps per online round
        "round_ppo_steps": 25,  # PPO steps per online round (round 0: ppo.train.max_steps)
        "no_kl": True,  # also run PPO without the KL penalty against round 0's reward model
        "parallel": True,  # ... in a second process, beside the rounds
        "torch_threads": 1,
    },
    "model": {
        "path": "tiny",
        "tiny_hidden_size": 128,
        "tiny_num_layers": 4,
        "tiny_num_heads": 4,
        "tiny_num_kv_heads": 2,
        "tiny_max_position_embeddings": 128,
    },
    "data": {
        "task": "arithmetic",
        "task_options": {"ops": ["+"], "digits": [1, 2]},
        "num_train_rows": 4000,
        "template": "r1_short",
    },
    # `reasoner rm`'s sections for round 0's reward model (from rm_sft_steps of the warm start's
    # scalar head); an online round continues from the last one for round_rm_steps steps
    "reward_model": {
        "rm": {"max_length": 128},
        "train": {
            "max_steps": 120,
            "device": "cpu",
            "per_device_train_batch_size": 32,
            "learning_rate": 1.0e-3,
            "lr_scheduler_type": "linear",
            "warmup_ratio": 0.05,
            "save_steps": 0,
            "save_total_limit": 1,
            "logging_steps": 50,
            "report_to_tensorboard": False,
        },
    },
    # `reasoner train`'s sections for PPO against the reward model (the reward model's path and
    # the critic's start, round 0's reward model, are filled in by the demo)
    "ppo": {
        "rewards": {"names": ["reward_model"], "reward_model_batch_size": 128},
        "rollout": {"num_generations": 4, "max_completion_length": 20, "temperature": 1.0},
        "algo": {
            "name": "ppo",
            "num_ppo_epochs": 2,
            "num_mini_batches": 2,
            "cliprange": 0.2,
            "cliprange_value": 0.2,
            "vf_coef": 0.1,
            "kl_coef": 0.05,
            "kl_estimator": "k1",
            "loss_type": "dapo",
        },
        "critic": {"learning_rate": 1.0e-4},
        "train": {
            "max_steps": 50,
            "device": "cpu",
            "per_device_train_batch_size": 64,
            "gradient_accumulation_steps": 2,
            "learning_rate": 5.0e-5,
            "lr_scheduler_type": "constant",
            "save_steps": 0,
            "save_total_limit": 1,
            "logging_steps": 10,
            "log_completions_steps": 10,
            "report_to_tensorboard": False,
        },
    },
}

DEMO_KEYS = frozenset(RLHF_RECIPE["demo"])
SECTIONS = frozenset(RLHF_RECIPE)
# the config sections each stage may set (model and data are shared)
STAGE_SECTIONS = {"reward_model": frozenset({"rm", "train", "lora"}),
                  "ppo": frozenset({"rewards", "rollout", "algo", "critic", "train", "lora"})}
# schedules whose learning rate does not depend on train.max_steps (a round extends the run)
EXTENSIBLE_SCHEDULES = ("constant", "constant_with_warmup")
SUMMARY_KEYS = ("true_score_before", "true_score_after", "rm_score_before", "rm_score_after",
                "rm_accuracy", "annotator_accuracy", "kl_after", "rounds", "no_kl",
                "wall_seconds")
NO_KL_DIR = "no_kl"
FIRST_RM = "rm-0"


def load_rlhf_recipe(path: str | Path | None) -> dict[str, Any]:
    """The recipe: the embedded one, or a YAML file with the same sections."""
    if path is None:
        return copy.deepcopy(RLHF_RECIPE)
    data = read_config_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections {sorted(SECTIONS)}")
    return data


@dataclass
class Recipe:
    """The recipe checked and split by stage: the demo's own settings and one config per kind
    of run (paths, steps and seeds are set per run)."""

    demo: dict[str, Any]
    rm: Config  # round 0's reward model
    ppo: Config  # the PPO run with the KL penalty

    @property
    def seed(self) -> int:
        return int(self.demo["seed"])


def _int(demo: dict[str, Any], key: str, low: int) -> int:
    v = demo[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"demo.{key} must be an integer >= {low}, got {v!r}")
    return v


def build_recipe(data: dict[str, Any], *, seed: int | None = None) -> Recipe:
    """Check the recipe (unknown keys, each stage's config) and build the stage configs; every
    error names the field."""
    unknown = set(data) - SECTIONS
    if unknown:
        raise ConfigError(f"unknown recipe sections {sorted(unknown)}; known: {sorted(SECTIONS)}")
    for name in sorted(SECTIONS):
        if data.get(name) is not None and not isinstance(data[name], dict):
            raise ConfigError(f"{name}: expected a mapping, got {data[name]!r}")
    missing = SECTIONS - {"demo"} - set(data)
    if missing:
        raise ConfigError(f"recipe sections {sorted(missing)} are missing: a recipe is a whole "
                          "one (an edited copy of configs/rlhf_demo.yaml); only the demo "
                          "section's keys default to the embedded recipe's")
    demo = {**RLHF_RECIPE["demo"], **(data.get("demo") or {})}
    bad = set(demo) - DEMO_KEYS
    if bad:
        raise ConfigError(f"unknown demo keys {sorted(bad)}; known: {sorted(DEMO_KEYS)}")
    if seed is not None:
        demo["seed"] = seed
    for key, low in (("seed", 0), ("sft_rows", 1), ("sft_steps", 1), ("rm_sft_steps", 1),
                     ("sft_batch_size", 1),
                     ("k", 2), ("rm_prompts", 1), ("round_prompts", 1), ("eval_prompts", 1),
                     ("rounds", 0), ("round_rm_steps", 1), ("round_ppo_steps", 1),
                     ("torch_threads", 0)):
        _int(demo, key, low)
    for key in ("no_kl", "parallel"):
        if not isinstance(demo[key], bool):
            raise ConfigError(f"demo.{key} must be true or false, got {demo[key]!r}")
    if demo["rm_sft_steps"] < demo["sft_steps"]:
        raise ConfigError(f"demo.rm_sft_steps must be >= demo.sft_steps ({demo['sft_steps']}): "
                          f"the reward model's backbone is the warm start's SFT run continued, "
                          f"got {demo['rm_sft_steps']}")
    from reasoner.engine.optim import SCHEDULERS

    if demo["sft_lr_scheduler_type"] not in SCHEDULERS:
        raise ConfigError(f"demo.sft_lr_scheduler_type must be one of {list(SCHEDULERS)}, got "
                          f"{demo['sft_lr_scheduler_type']!r}")
    for key in ("sft_lr", "sft_label_smoothing"):
        v = demo[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (
                key == "sft_lr" and v == 0):
            raise ConfigError(f"demo.{key} must be a number {'> 0' if key == 'sft_lr' else '>= 0'}"
                              f", got {v!r}")
    if not (isinstance(demo["noise_temperature"], (int, float))
            and demo["noise_temperature"] > 0):
        raise ConfigError(f"demo.noise_temperature must be > 0, got {demo['noise_temperature']!r}")
    shared = {k: copy.deepcopy(data.get(k) or {}) for k in ("model", "data")}
    s = int(demo["seed"])
    shared["model"]["tiny_seed"] = s
    configs = {}
    for stage, allowed in STAGE_SECTIONS.items():
        sections = data.get(stage) or {}
        if not isinstance(sections, dict):
            raise ConfigError(f"{stage}: expected a mapping of config sections")
        extra = set(sections) - allowed
        if extra:
            raise ConfigError(f"{stage}: sections {sorted(extra)} are not this stage's; it may "
                              f"set {sorted(allowed)} (model and data are shared)")
        d = {**copy.deepcopy(sections), **copy.deepcopy(shared)}
        d["train"] = {**d.get("train", {}), "seed": s}
        if stage == "reward_model":
            d["algo"] = {"name": "rm"}
            # the data files are the demo's; placeholders so the config checks pass
            d["rm"] = {**d.get("rm", {}), "dataset_path": "-", "eval_dataset_path": "-"}
        else:
            from reasoner.trainers import CRITIC_ALGORITHMS

            name = (d.get("algo") or {}).get("name", "grpo")
            if name not in CRITIC_ALGORITHMS:  # before the config's own checks of PPO's fields
                raise ConfigError(f"ppo.algo.name must be one of {CRITIC_ALGORITHMS} (a critic "
                                  f"started from the reward model), got {name!r}")
            names = d.get("rewards", {}).get("names", [])
            if "reward_model" not in names:
                raise ConfigError("ppo.rewards.names must include reward_model (the policy "
                                  "is optimized against the learned reward model)")
            d["rewards"] = {**d["rewards"], "reward_model_path": "-"}
        try:
            configs[stage] = config_from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{stage}: {e}") from None
    ppo = configs["ppo"]
    if ppo.algo.kl_coef <= 0 and not ppo.algo.adap_kl_ctrl:
        raise ConfigError("ppo.algo.kl_coef must be > 0: the demo's main run has the KL penalty "
                          "(demo.no_kl adds the run without it)")
    if demo["rounds"] and ppo.train.lr_scheduler_type not in EXTENSIBLE_SCHEDULES:
        raise ConfigError(f"ppo.train.lr_scheduler_type must be one of {EXTENSIBLE_SCHEDULES} "
                          f"with demo.rounds > 0 (each round extends the run), got "
                          f"{ppo.train.lr_scheduler_type!r}")
    if ppo.data.task is None:
        raise ConfigError("data.task must be a task: the annotator judges its answers")
    if ppo.critic.shared_trunk:
        raise ConfigError("ppo.critic.shared_trunk must be false: the demo's critic is a "
                          "separate value model started from the reward model")
    import torch

    for stage, cfg in configs.items():  # found now, not after minutes of SFT
        if cfg.train.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{stage}.train.device=cuda, but torch sees no CUDA device; set "
                              "it to cpu, or auto (a GPU when there is one)")
    return Recipe(demo, configs["reward_model"], ppo)


# ---------------------------------------------------------------------------------------------
# evaluating a policy on the held-out prompts


@dataclass
class PolicySamples:
    """A policy's first draws on the held-out prompts (K per prompt), what the annotator and the
    warm start make of them, and the file of the annotator's rankings of them."""

    name: str
    prompts: list[str]
    texts: list[str]
    utilities: list[float]
    kl: list[float]  # per sample: sum_t log pi - log pi_warm
    rankings: Path
    bayes_accuracy: float
    seconds: float
    rm_scores: dict[str, float] = field(default_factory=dict)  # reward model -> mean score

    @property
    def true_score(self) -> float:
        return sum(self.utilities) / len(self.utilities)

    @property
    def kl_mean(self) -> float:
        return sum(self.kl) / len(self.kl)

    def accuracy(self, correct_weight: float) -> float:
        """The fraction of correct samples (a correct answer alone is worth correct_weight,
        more than form and brevity together)."""
        return sum(u >= correct_weight - 1e-9 for u in self.utilities) / len(self.utilities)


class Judges:
    """What evaluations share: the task, the annotator, the warm start (the KL reference), the
    reward models loaded so far, and their held-out metrics per rankings file."""

    def __init__(self, recipe: Recipe, out: Path) -> None:
        from reasoner.models import load_model_and_tokenizer
        from reasoner.preferences.annotator import SyntheticAnnotator

        self.recipe, self.out = recipe, out
        cfg = recipe.ppo
        self.task_name, self.task_options = cfg.data.task, dict(cfg.data.task_options)
        self.template = cfg.data.template
        self.annotator = SyntheticAnnotator(noise_temperature=float(
            recipe.demo["noise_temperature"]))
        self.max_new_tokens = cfg.rollout.max_completion_length
        self.temperature = cfg.rollout.temperature
        self.reference, _ = load_model_and_tokenizer(out / "sft")
        self.reference.eval()
        self.rms: dict[str, Any] = {}  # name -> RewardModelReward
        self.rm_metrics: dict[tuple[str, str], dict[str, Any]] = {}

    def add_rm(self, name: str, path: Path) -> None:
        from reasoner.models.reward import RewardModelReward, load_reward_model

        model, tok = load_reward_model(path)
        self.rms[name] = RewardModelReward(model, tok, batch_size=256, device="cpu")

    def sample(self, policy: Path, *, split: str, n: int, seed: int, output: Path
               ) -> tuple[Any, list[Any]]:
        """The annotator's rankings of K samples per prompt of `policy` (written to `output`),
        and the first draws (`SampleChunk`s)."""
        from reasoner.preferences.sample import sample_preferences

        chunks: list[Any] = []
        r = sample_preferences(
            policy, self.task_name, k=int(self.recipe.demo["k"]), n=n, output=output,
            task_options=self.task_options, split=split, annotator=self.annotator,
            temperature=self.temperature, max_new_tokens=self.max_new_tokens,
            template=self.template, seed=seed, progress=False, on_samples=chunks.append)
        return r, chunks

    def evaluate(self, policy: Path, name: str) -> PolicySamples:
        """Sample `policy` on the held-out prompts; the true score, KL to the warm start, the
        annotator's rankings (for the reward models' held-out accuracy)."""
        import torch

        from reasoner.models import load_model_and_tokenizer
        from reasoner.scoring import completion_logprobs

        t0 = time.perf_counter()
        d = self.recipe.demo
        path = self.out / "prefs" / f"eval-{name}.jsonl"
        # the same held-out prompts and sampling seeds for every policy
        r, chunks = self.sample(policy, split="test", n=int(d["eval_prompts"]),
                                seed=1000 * self.recipe.seed + 999, output=path)
        model, _ = load_model_and_tokenizer(policy)
        model.eval()
        prompts, texts, utilities, kl = [], [], [], []
        with torch.no_grad():
            for c in chunks:
                ro = c.rollout
                mask = ro.completion_mask.float()
                lp = completion_logprobs(model, ro, temperature=self.temperature)
                lr = completion_logprobs(self.reference, ro, temperature=self.temperature)
                kl += ((lp - lr) * mask).sum(1).tolist()
                prompts += c.prompts
                texts += ro.completion_texts
                utilities += c.utilities
        return PolicySamples(name, prompts, texts, utilities, kl, path, r.bayes_accuracy,
                             time.perf_counter() - t0)

    def rm_score(self, rm: str, s: PolicySamples) -> float:
        """The mean score of reward model `rm` on the samples (computed once)."""
        if rm not in s.rm_scores:
            scores = self.rms[rm](s.prompts, s.texts)
            s.rm_scores[rm] = sum(scores) / len(scores)
        return s.rm_scores[rm]

    def rm_accuracy(self, rm: str, s: PolicySamples) -> dict[str, Any]:
        """Held-out metrics of reward model `rm` on the annotator's rankings of the samples."""
        key = (rm, s.name)
        if key not in self.rm_metrics:
            from reasoner.preferences.evaluation import evaluate_reward_model
            from reasoner.preferences.formats import read_preferences

            r = self.rms[rm]
            m = evaluate_reward_model(r.model, r.tokenizer, read_preferences(s.rankings),
                                      batch_size=256)
            self.rm_metrics[key] = {k: m[k] for k in ("accuracy", "bayes_accuracy", "ece",
                                                      "mean_margin", "num_pairs",
                                                      "by_annotator_confidence")}
        return self.rm_metrics[key]

    def describe(self, s: PolicySamples) -> dict[str, Any]:
        return {"policy": s.name, "true_score": s.true_score, "kl": s.kl_mean,
                "accuracy": s.accuracy(self.annotator.correct_weight),
                "mean_chars": sum(len(t) for t in s.texts) / len(s.texts),
                "rm_scores": dict(s.rm_scores), "samples": len(s.texts),
                "rankings": str(s.rankings), "seconds": s.seconds}


def round_figures(before: dict[str, Any], after: dict[str, Any], rm: str,
                  rm_metrics: dict[str, Any], steps: int) -> dict[str, Any]:
    """One round's figures from two evaluations (`Judges.describe`): the policy before and
    after `steps` PPO steps against reward model `rm`, and `rm_metrics`, that reward model's
    held-out metrics on the samples of the policy it optimized (the annotator's Bayes-optimal
    accuracy on the same pairs beside its own)."""
    return {"true_score_before": before["true_score"], "true_score_after": after["true_score"],
            "rm_score_before": before["rm_scores"][rm], "rm_score_after": after["rm_scores"][rm],
            "rm_accuracy": rm_metrics["accuracy"],
            "annotator_accuracy": rm_metrics["bayes_accuracy"], "kl_after": after["kl"],
            # where the reward model loses against the annotator, by the annotator's confidence
            "rm_accuracy_by_annotator_confidence": rm_metrics["by_annotator_confidence"],
            # round 0's reward model on the policy after the round: one scale for every round
            # and both runs
            "rm_0_score_after": after["rm_scores"][FIRST_RM], "reward_model": rm,
            "ppo_steps": steps}


# ---------------------------------------------------------------------------------------------
# the stages


def _log(progress: bool, text: str) -> None:
    if progress:
        print(f"[rlhf] {text}", file=sys.stderr, flush=True)


def train_reward_model(recipe: Recipe, out: Path, *, start: Path, train_file: Path,
                       eval_file: Path, max_steps: int, progress: bool) -> dict[str, Any]:
    """`reasoner rm` on the rankings in `train_file` from the model in `start` (the warm start:
    a new head; a reward model: its head too); held out: `eval_file`. Returns the trainer's
    summary (with "eval")."""
    from reasoner.trainers import ALGORITHMS

    cfg = copy.deepcopy(recipe.rm)
    cfg.model.path = str(start)
    cfg.rm.dataset_path, cfg.rm.eval_dataset_path = str(train_file), str(eval_file)
    cfg.train.output_dir, cfg.train.max_steps = str(out), max_steps
    # the demo's directories are its own: a second demo replaces the first one's runs
    return ALGORITHMS.get(cfg.algo.name)(cfg, progress=progress, overwrite=True).train()


def ppo_config(recipe: Recipe, out: Path, *, warm_start: Path, rm: Path, critic: Path,
               max_steps: int, kl: bool) -> Config:
    """The PPO run's config: from `warm_start` (also the KL reference), against reward model
    `rm`, the critic from `critic` (round 0's reward model), `max_steps` in all so far; `kl`
    False: no KL penalty (and no reference model)."""
    cfg = copy.deepcopy(recipe.ppo)
    cfg.model.path = str(warm_start)
    cfg.rewards.reward_model_path = str(rm)
    cfg.critic.model_path = str(critic)
    cfg.train.output_dir, cfg.train.max_steps = str(out), max_steps
    if not kl:
        cfg.algo.kl_coef, cfg.algo.adap_kl_ctrl = 0.0, False
    return cfg


def run_ppo(cfg: Config, *, resume: bool, progress: bool) -> dict[str, Any]:
    """`reasoner train` with `cfg`: a new run (replacing an earlier demo's) or, `resume`, the
    run in its output directory continued to `cfg.train.max_steps`."""
    from reasoner.trainers import ALGORITHMS

    return ALGORITHMS.get(cfg.algo.name)(cfg, resume=resume, overwrite=not resume,
                                         progress=progress).train()


def recipe_paths(out: Path) -> dict[str, Path]:
    """Where the demo writes (D = out)."""
    return {"init": out / "init_model", "sft": out / "sft", "rm_sft": out / "rm_sft",
            "prefs": out / "prefs", "no_kl": out / NO_KL_DIR}


def _mean_tail(losses: list[float], n: int = 10) -> float:
    """The mean of the last `n` losses (as run_sft's loss_last)."""
    tail = losses[-min(n, len(losses)):]
    return sum(tail) / len(tail)


def step_plan(recipe: Recipe) -> list[int]:
    """The PPO run's step count at the end of each round (round 0, then the online rounds)."""
    d = recipe.demo
    first = recipe.ppo.train.max_steps
    return [first + r * int(d["round_ppo_steps"]) for r in range(int(d["rounds"]) + 1)]


def _quiet_setup(threads: int) -> None:
    """The torch thread count (tiny matmuls: thread overhead beats parallelism) and no
    third-party progress bars or load reports (a model is loaded and saved at every stage; the
    reward models' new head, reported missing, is expected)."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    if threads:
        import torch

        torch.set_num_threads(threads)


def exit_with_parent(parent_pid: int, every: float = 2.0) -> None:
    """In a worker process: a daemon thread that ends the process when `parent_pid` is no
    longer its parent (the demo was killed: the worker would otherwise train on, write into
    the demo's folder and then wait for work forever)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def no_kl_run(recipe_data: dict[str, Any], seed: int, out: str, progress: bool,
              parent_pid: int | None = None) -> dict[str, Any]:
    """PPO without the KL penalty against round 0's reward model, in the same steps as the
    main run's rounds, evaluated after each (in a second process when demo.parallel: it exits
    if the demo's process dies, `parent_pid`). Returns the evaluations (`Judges.describe`,
    with round 0's reward model's held-out metrics)."""
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    recipe = build_recipe(recipe_data, seed=seed)
    _quiet_setup(int(recipe.demo["torch_threads"]))
    root = Path(out)
    paths = recipe_paths(root)
    j = Judges(recipe, root)
    j.add_rm(FIRST_RM, root / FIRST_RM / "final")
    evals, t0 = [], time.perf_counter()
    for r, steps in enumerate(step_plan(recipe)):
        cfg = ppo_config(recipe, paths["no_kl"], warm_start=paths["sft"],
                         rm=root / FIRST_RM / "final", critic=root / FIRST_RM / "final",
                         max_steps=steps, kl=False)
        run_ppo(cfg, resume=r > 0, progress=False)
        s = j.evaluate(paths["no_kl"] / "final", f"no_kl-{r}")
        j.rm_score(FIRST_RM, s)
        evals.append({**j.describe(s), FIRST_RM: j.rm_accuracy(FIRST_RM, s)})
        _log(progress, f"no KL, {steps} PPO steps: true score {s.true_score:.3f}, round 0's "
                       f"RM score {s.rm_scores[FIRST_RM]:.3f}, KL {s.kl_mean:.3f}")
    return {"evals": evals, "seconds": time.perf_counter() - t0}


def _cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_rlhf_demo(output_dir: str | Path, *, config_path: str | Path | None = None,
                  progress: bool = True, seed: int | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    """The demo (see the module docstring); returns the summary written to D/summary.json.
    `output_dir`: see `reasoner.demo.prepare_demo_dir` (`overwrite`)."""
    from reasoner.demo import prepare_demo_dir
    from reasoner.models import build_tiny_from_config, load_model_and_tokenizer
    from reasoner.tasks import get_task
    from reasoner.trainers.base import set_seed
    from reasoner.trainers.sft import run_sft

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    cpu_children0 = _cpu_seconds(resource.RUSAGE_CHILDREN)
    out = Path(output_dir)
    data = load_rlhf_recipe(config_path)
    recipe = build_recipe(data, seed=seed)
    d, s = recipe.demo, recipe.seed
    paths = recipe_paths(out)
    prepare_demo_dir(out, "rlhf", overwrite=overwrite)
    # an earlier run's checkpoints would be resumed from: the PPO runs start clean
    for old in [*out.glob("checkpoint-*"), paths["no_kl"]]:
        shutil.rmtree(old, ignore_errors=True)
    for old in ("summary.json", "details.json"):
        (out / old).unlink(missing_ok=True)
    paths["prefs"].mkdir(exist_ok=True)
    _quiet_setup(int(d["torch_threads"]))
    set_seed(s)
    seconds: dict[str, float] = {}

    def timed(stage: str, t: float) -> None:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - t

    # warm start: the configured model fine-tuned on worked solutions
    t = time.perf_counter()
    cfg = recipe.ppo
    task = get_task(cfg.data.task, **cfg.data.task_options)
    template = cfg.data.template or task.default_template
    init = (build_tiny_from_config(cfg.model, paths["init"]) if cfg.model.path == "tiny"
            else Path(cfg.model.path))
    model, tok = load_model_and_tokenizer(init, dtype=cfg.model.dtype)
    policy_steps, rm_steps = int(d["sft_steps"]), int(d["rm_sft_steps"])

    def save(step: int) -> None:  # the policy part-way, the reward model's backbone at the end
        for where, at in (("sft", policy_steps), ("rm_sft", rm_steps)):
            if step == at:
                model.save_pretrained(paths[where], safe_serialization=True)
                tok.save_pretrained(paths[where])

    sft = run_sft(model, tok, task.rows("train", int(d["sft_rows"]), cfg.data.data_seed + 1),
                  template=template, max_steps=rm_steps, batch_size=int(d["sft_batch_size"]),
                  lr=float(d["sft_lr"]), seed=s, progress=progress,
                  label_smoothing=float(d["sft_label_smoothing"]),
                  lr_scheduler_type=str(d["sft_lr_scheduler_type"]), on_step=save)
    timed("sft", t)
    sft["loss_policy"] = _mean_tail(sft["losses"][:policy_steps])
    _log(progress, f"warm start: {policy_steps} SFT steps, loss {sft['loss_policy']:.3f}; the "
                   f"reward model's backbone: {rm_steps} steps, loss {sft['loss_last']:.3f}")

    j = Judges(recipe, out)
    t = time.perf_counter()
    evals = [j.evaluate(paths["sft"], "sft")]
    timed("evaluation", t)
    train_files: list[Path] = []
    rm_runs: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    plan = step_plan(recipe)
    pool: Any = None
    future: Any = None
    cpu_at_no_kl = 0.0
    for r, steps in enumerate(plan):
        policy = paths["sft"] if r == 0 else out / "final"
        # the annotator ranks K samples per prompt of the current policy
        t = time.perf_counter()
        n = int(d["rm_prompts"] if r == 0 else d["round_prompts"])
        train_files.append(paths["prefs"] / f"train-{r}.jsonl")
        prefs, _ = j.sample(policy, split="train", n=n, seed=1000 * s + r,
                            output=train_files[-1])
        timed("preferences", t)
        # the reward model: round 0's from the warm start, then the last round's model trained
        # on the new rankings alone (samples of the policy it will now judge; training on every
        # ranking so far, mostly the warm start's, judged the current policy's samples worse)
        t = time.perf_counter()
        rm_name, rm_dir = f"rm-{r}", out / f"rm-{r}"
        rm_sum = train_reward_model(
            recipe, rm_dir, start=paths["rm_sft"] if r == 0 else out / f"rm-{r - 1}" / "final",
            train_file=train_files[r],
            eval_file=evals[-1].rankings,
            max_steps=recipe.rm.train.max_steps if r == 0 else int(d["round_rm_steps"]),
            progress=progress)
        j.add_rm(rm_name, rm_dir / "final")
        timed("reward_model", t)
        rm_runs.append({"round": r, "new_rankings": prefs.records, "steps": rm_sum["steps"],
                        "eval": {k: rm_sum["eval"][k] for k in (
                            "accuracy", "bayes_accuracy", "ece", "num_pairs")}})
        _log(progress, f"round {r}: {prefs.records} new rankings; {rm_name}'s held-out accuracy "
                       f"{rm_sum['eval']['accuracy']:.3f} (the annotator's Bayes-optimal "
                       f"{rm_sum['eval']['bayes_accuracy']:.3f})")
        if r == 0 and d["no_kl"] and d["parallel"]:
            # the run without the KL penalty needs only round 0's reward model: beside the rounds
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            cpu_at_no_kl = _cpu_seconds() - cpu0
            pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            future = pool.submit(no_kl_run, data, s, str(out), progress, os.getpid())
        # PPO against this round's reward model: round 0 starts the run, a round continues it
        t = time.perf_counter()
        run_ppo(ppo_config(recipe, out, warm_start=paths["sft"], rm=rm_dir / "final",
                           critic=out / FIRST_RM / "final", max_steps=steps, kl=True),
                resume=r > 0, progress=progress)
        timed("ppo", t)
        t = time.perf_counter()
        evals.append(j.evaluate(out / "final", f"ppo-{r}"))
        before, after = evals[-2], evals[-1]
        for name in {rm_name, FIRST_RM}:
            j.rm_score(name, before)
            j.rm_score(name, after)
        fig = round_figures(j.describe(before), j.describe(after), rm_name,
                            j.rm_accuracy(rm_name, before), steps - (plan[r - 1] if r else 0))
        if r > 0:  # the last round's reward model on this round's policy, before the update
            fig["rm_accuracy_before_update"] = j.rm_accuracy(f"rm-{r - 1}", before)["accuracy"]
        timed("evaluation", t)
        rounds.append({"round": r, **fig})
        _log(progress, f"round {r}: true score {fig['true_score_before']:.3f} -> "
                       f"{fig['true_score_after']:.3f}, {rm_name}'s score "
                       f"{fig['rm_score_before']:.3f} -> {fig['rm_score_after']:.3f}, KL "
                       f"{fig['kl_after']:.3f}")

    no_kl: dict[str, Any] | None = None
    no_kl_evals: list[dict[str, Any]] = []
    if d["no_kl"]:
        t = time.perf_counter()
        if future is not None:
            res = future.result()
            pool.shutdown()
        else:
            res = no_kl_run(data, s, str(out), progress)
        timed("no_kl" if future is None else "no_kl_wait", t)
        seconds["no_kl_run"] = res["seconds"]
        no_kl_evals = res["evals"]
        start = {**j.describe(evals[0]), FIRST_RM: j.rm_accuracy(FIRST_RM, evals[0])}
        segs = [{"round": r, **round_figures(b, a, FIRST_RM, b[FIRST_RM],
                                             plan[r] - (plan[r - 1] if r else 0))}
                for r, (b, a) in enumerate(zip([start, *no_kl_evals[:-1]], no_kl_evals))]
        last_nk = no_kl_evals[-1]
        no_kl = {"true_score_before": start["true_score"],
                 "true_score_after": last_nk["true_score"],
                 "rm_score_before": start["rm_scores"][FIRST_RM],
                 "rm_score_after": last_nk["rm_scores"][FIRST_RM],
                 # round 0's reward model on the samples of the policy it was gamed into
                 "rm_accuracy": last_nk[FIRST_RM]["accuracy"],
                 "annotator_accuracy": last_nk[FIRST_RM]["bayes_accuracy"],
                 "kl_after": last_nk["kl"], "rounds": segs}
    first, last = evals[0], evals[-1]
    summary: dict[str, Any] = {
        "true_score_before": first.true_score,
        "true_score_after": last.true_score,
        # round 0's reward model: the same scale as the no-KL run's
        "rm_score_before": j.rm_score(FIRST_RM, first),
        "rm_score_after": j.rm_score(FIRST_RM, last),
        # the final reward model on the samples of the policy it was trained for (held out)
        "rm_accuracy": rounds[-1]["rm_accuracy"],
        "annotator_accuracy": rounds[-1]["annotator_accuracy"],
        "kl_after": last.kl_mean,
        "rounds": rounds,
        "no_kl": no_kl,
        "wall_seconds": time.perf_counter() - t0,
    }
    main_cpu = _cpu_seconds() - cpu0
    second = _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_children0
    details = {
        "seconds": seconds,
        # user + sys; with one torch thread each process keeps one core busy, so on a quiet
        # 2-core machine the wall time is about the estimate (the no-KL process beside the main)
        "cpu_seconds": {"main_process": main_cpu, "no_kl_process": second,
                        "quiet_wall_estimate": max(main_cpu, cpu_at_no_kl + second)},
        "sft": {k: v for k, v in sft.items() if k != "losses"},
        "reward_models": rm_runs,
        "evaluations": [j.describe(e) for e in evals],
        "no_kl_evaluations": no_kl_evals,
        "rm_metrics": {f"{a} on {b}": m for (a, b), m in j.rm_metrics.items()},
        "ppo_steps": plan,
        "recipe": {"demo": d, "reward_model": recipe.rm.to_dict(), "ppo": recipe.ppo.to_dict()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "details.json").write_text(json.dumps(details, indent=1))
    plot_rlhf(summary, out)
    return summary


# ---------------------------------------------------------------------------------------------
# plots


def _trajectory(run: dict[str, Any]) -> tuple[list[float], list[float], list[float]]:
    """A run's (KL to the warm start, true score, round 0's reward-model score) at the start and
    after each round."""
    rs = run["rounds"]
    return ([0.0] + [r["kl_after"] for r in rs],
            [run["true_score_before"]] + [r["true_score_after"] for r in rs],
            [run["rm_score_before"]] + [r["rm_0_score_after"] for r in rs])


def plot_rlhf(summary: dict[str, Any], out: str | Path) -> list[Path]:
    """scores_vs_kl.png: each run's true score and round 0's reward-model score (one scale for
    both runs) against KL to the warm start, a point per round; rounds.png: per round, the true
    score, the round's own reward-model score before and after its PPO steps, and its held-out
    accuracy (and the last round's model's, before the update) beside the annotator's
    Bayes-optimal accuracy. Drawn from the summary alone."""
    from reasoner.metrics import pyplot, save_figure

    plt = pyplot()
    out = Path(out)
    runs = [("with the KL penalty, online rounds", summary, "tab:blue", "o")]
    if summary.get("no_kl"):
        runs.append(("without the KL penalty, round 0's RM", summary["no_kl"], "tab:red", "s"))
    fig, (ax_t, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    for label, run, color, marker in runs:
        kl, true, rm = _trajectory(run)
        for ax, y in ((ax_t, true), (ax_r, rm)):
            ax.plot(kl, y, marker=marker, color=color, label=label)
            for k, (xk, yk) in enumerate(zip(kl[1:], y[1:])):
                ax.annotate(str(k), (xk, yk), textcoords="offset points", xytext=(4, 4),
                            fontsize=8, color=color)
    ax_t.set_title("the annotator's true score (hidden from training)")
    ax_t.set_ylabel("mean utility of held-out samples")
    ax_r.set_title("round 0's reward-model score (what PPO sees)")
    ax_r.set_ylabel("mean reward-model score")
    for ax in (ax_t, ax_r):
        ax.set_xlabel("KL(policy || warm start) per completion (numbers: rounds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    paths = [save_figure(fig, out / "scores_vs_kl.png")]

    rs = summary["rounds"]
    x = [r["round"] for r in rs]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 3.8))
    a1.plot(x, [r["true_score_after"] for r in rs], marker="o", color="tab:blue",
            label="with the KL penalty")
    if summary.get("no_kl"):
        a1.plot(x, [r["true_score_after"] for r in summary["no_kl"]["rounds"]], marker="s",
                color="tab:red", label="without")
    a1.axhline(summary["true_score_before"], color="gray", linestyle=":", label="warm start")
    a1.set_title("true score after the round")
    a2.plot(x, [r["rm_score_before"] for r in rs], marker="o", label="before the round's PPO")
    a2.plot(x, [r["rm_score_after"] for r in rs], marker="o", label="after")
    a2.set_title("the round's reward-model score")
    a3.plot(x, [r["rm_accuracy"] for r in rs], marker="o", label="the round's reward model")
    stale = [(r["round"], r["rm_accuracy_before_update"]) for r in rs
             if "rm_accuracy_before_update" in r]
    if stale:
        a3.plot([p[0] for p in stale], [p[1] for p in stale], marker="x", linestyle="--",
                label="the last round's, before the update")
    a3.plot(x, [r["annotator_accuracy"] for r in rs], marker="^", color="gray",
            label="the annotator (Bayes-optimal)")
    a3.set_title("held-out pairwise accuracy on the round's policy")
    for ax in (a1, a2, a3):
        ax.set_xlabel("round")
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "rounds.png"))
    return paths
