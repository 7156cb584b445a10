"""The base trainer: what every trainer shares, whatever it learns from.

`BaseTrainer` owns the setup (processes and device, the output directory, seeds, the starting
models, the engine, resume), the loop (`train`: steps, metrics.jsonl / TensorBoard / sample
records written by rank 0, the progress line, checkpoints), atomic checkpoints with bit-exact
resume (`save` / restore) and the final export. A trainer (`reasoner.trainers.grpo`, and PPO,
reward-model training next) implements `setup_data` and `train_step`, and says how many
optimizer steps a step makes and whether it needs a KL reference.

Everything that decides the run's numbers (data order, RNG states, optimizer and schedule) is in
the checkpoint, so a killed run resumed with --resume ends bit-identical to an uninterrupted one
on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reasoner import distributed
from reasoner.checkpoint import (
    CONFIG_FILE,
    FINAL_DIR,
    begin_checkpoint,
    capture_rng_state,
    check_output_dir,
    commit_checkpoint,
    debug_kill,
    drop_held,
    earlier_run,
    hold_earlier_run,
    latest_checkpoint,
    load_checkpoint,
    remove_partial_checkpoints,
    restore_held,
    restore_rng_state,
    rng_file,
    run_outputs,
)
from reasoner.config import Config, ConfigError, save_config
from reasoner.engine import Engine, build_engine
from reasoner.metrics import METRICS_FILE, MetricsLogger, Progress, plot_metrics
from reasoner.models.loading import (
    StartingModels,
    check_model_dir,
    hidden_size_of,
    load_starting_models,
)


def set_seed(seed: int) -> None:
    """Seed python's, numpy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Runtime:
    """This process's place in the run."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class StepOutput:
    """What one training step returns to the loop."""

    metrics: dict[str, Any]
    # example records for completions.jsonl (written every train.log_completions_steps)
    samples: list[dict[str, Any]] = field(default_factory=list)


class PhaseTimer:
    """Wall seconds spent per phase of a step: ``with timer("generation"): ...``."""

    def __init__(self, *phases: str) -> None:
        self.seconds = dict.fromkeys(phases, 0.0)

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0


def peak_memory_gb(device: torch.device) -> float:
    """This process's peak memory so far: allocated GPU memory on CUDA, resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def gathered(x: torch.Tensor) -> torch.Tensor:
    """The concatenation over ranks (rank 0's first) of a small 1-D tensor; itself in one
    process."""
    if distributed.world_size() == 1:
        return x
    return torch.cat([part for part in distributed.gather_objects(x.detach().cpu())])


def _deepspeed_setup(cfg: Config, deepspeed_config: str | None, world: int
                     ) -> tuple[dict[str, Any] | None, bool]:
    """(the DeepSpeed config or None, whether ZeRO-2 defaults were chosen for a launch of
    several processes without --deepspeed). A bad file fails here, before anything loads."""
    from reasoner.engine.deepspeed_engine import (
        default_deepspeed_config,
        load_deepspeed_config,
        zero_stage,
    )

    implicit = deepspeed_config is None and world > 1
    if deepspeed_config is None and not implicit:
        return None, False
    ds = default_deepspeed_config() if implicit else load_deepspeed_config(deepspeed_config)
    if cfg.lora.enabled and zero_stage(ds) == 3:
        raise ValueError("lora.enabled under ZeRO-3 is not supported: use a ZeRO-2 config "
                         "(configs/zero2.json); the adapters are small anyway")
    return ds, implicit


# what --resume may change: how far the run goes, saving, logging, the device and kernels it
# runs on, evaluation, and what may be swapped between rounds of online RLHF (the reward
# model scored against; a critic's start, which the checkpoint replaces)
RESUMABLE_CHANGES = frozenset({
    "train.output_dir", "train.max_steps", "train.save_steps", "train.save_total_limit",
    "train.logging_steps", "train.log_completions_steps", "train.num_completions_to_log",
    "train.report_to_tensorboard", "train.device", "train.loss_backend",
    "train.use_fused_linear", "train.gradient_checkpointing", "rewards.reward_model_path",
    "rewards.reward_model_batch_size", "critic.model_path", "rm.eval_dataset_path",
    "rm.eval_steps", "rm.eval_batch_size", "rm.calibration_bins"})

# (key, value in an older config.yaml, value now) that mean the same run: data.num_train_rows
# null is 10000 rows of a task that has them (an older run's 10000 could only start on such a task)
SAME_MEANING = frozenset({("data.num_train_rows", 10000, None)})


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, a's value, b's value) where two config mappings differ; keys that only
    one has (a config.yaml of an older version) are not differences."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in a:
            if k in b:
                out += _differences(a[k], b[k], f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


class BaseTrainer(ABC):
    """Setup, the loop, checkpoints and logging; subclasses add the learning."""

    def __init__(self, cfg: Config, *, resume: bool = False, deepspeed_config: str | None = None,
                 progress: bool = True, overwrite: bool = False, **data: Any) -> None:
        """`data`: keyword arguments for `setup_data` (e.g. rows / reward functions that replace
        the config's). An output directory holding an earlier run is refused unless `resume`
        (continue it) or `overwrite` (delete it first). A run that fails while starting removes
        what it wrote."""
        self.cfg = cfg
        t = cfg.train
        # several processes: a launcher (torchrun / deepspeed) started us, or --deepspeed given
        ds_config, implicit_zero2 = _deepspeed_setup(cfg, deepspeed_config,
                                                     distributed.launched_world_size())
        self._preflight()
        self.out = Path(t.output_dir)
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"train.output_dir {str(self.out)!r} is a file, not a folder")
        check_output_dir(self.out, resume=resume, overwrite=overwrite,
                         outputs=self.run_outputs())
        self._check_resume_and_overwrite(resume=resume, overwrite=overwrite)
        # what was there before (a failed start removes only what it added)
        self._found = {p.name for p in self.out.iterdir()} if self.out.is_dir() else None
        self._held: Path | None = None  # --overwrite: the earlier run, until this one started
        try:
            self._setup(ds_config, implicit_zero2, resume=resume, overwrite=overwrite,
                        progress=progress, data=data)
        except BaseException:
            self._undo_start()
            raise

    # what this trainer writes besides the base trainer's outputs (run_outputs)
    extra_outputs: tuple[str, ...] = ()

    def run_outputs(self) -> set[str]:
        """The names a run of this trainer writes into its output directory (checkpoints
        aside): what --overwrite deletes and what marks the directory as holding a run."""
        plots = () if self.plots is None else tuple(name for name, _, _ in self.plots)
        return run_outputs((*plots, *self.extra_outputs))

    def input_paths(self) -> dict[str, str]:
        """The config's fields that name something the run reads (`*path` fields: the model, a
        critic or reward model, data files), by dotted name."""
        found: dict[str, str] = {}

        def walk(d: dict[str, Any], pre: str) -> None:
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(v, f"{pre}{k}.")
                elif k.endswith("path") and isinstance(v, str) and v not in ("tiny", "-"):
                    found[pre + k] = v

        walk(self.cfg.to_dict(), "")
        return found

    def _check_resume_and_overwrite(self, *, resume: bool, overwrite: bool) -> None:
        """Before anything is deleted or written: --overwrite must not delete what the run reads
        (a model.path inside the earlier run's final/, say), and --resume of a run that left no
        checkpoint would start over and truncate its metrics: both are refused."""
        found = earlier_run(self.out, self.run_outputs())
        if not found:
            if resume and distributed.launched_rank() == 0:
                print(f"--resume: no earlier run in {str(self.out)!r}; starting a new one")
            return
        if resume:
            if latest_checkpoint(self.out) is None:
                raise ConfigError(f"--resume: {str(self.out)!r} holds an earlier run but no "
                                  "checkpoint to resume from (train.save_steps 0, or stopped "
                                  "before its first save); --overwrite starts it over")
            self._check_resumed_config()
            return
        if overwrite:
            doomed = [(self.out / name).resolve() for name in found]
            for field, value in self.input_paths().items():
                p = Path(value).resolve()
                if any(p == d or d in p.parents for d in doomed):
                    raise ConfigError(f"{field} {value!r} lies in {str(self.out)!r}, in what "
                                      "--overwrite would delete; copy it elsewhere or choose "
                                      "another train.output_dir")

    def _check_resumed_config(self) -> None:
        """--resume continues the run as it was configured: the optimizer, the schedule, the
        KL controller and the data order come back from the checkpoint, so a changed learning
        rate, algorithm or dataset would be ignored or mixed in (and config.yaml would say
        otherwise). Only RESUMABLE_CHANGES may differ from the run's config.yaml."""
        import yaml

        saved_file = self.out / CONFIG_FILE
        if not saved_file.is_file():
            return
        try:
            saved = yaml.safe_load(saved_file.read_text()) or {}
        except yaml.YAMLError:
            return
        now = yaml.safe_load(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        changed = [f"{k} {a!r} -> {b!r}" for k, a, b in _differences(saved, now)
                   if k not in RESUMABLE_CHANGES and (k, a, b) not in SAME_MEANING]
        if changed:
            raise ConfigError(
                f"--resume continues the run in {str(self.out)!r} as its {CONFIG_FILE} says; "
                f"these differ: {', '.join(changed[:6])}{', ...' if len(changed) > 6 else ''}"
                f" (on resume only {', '.join(sorted(RESUMABLE_CHANGES))} may change); "
                "--overwrite starts a new run with them")

    def _preflight(self) -> None:
        """The mistakes found without loading anything, before anything is written."""
        t, m = self.cfg.train, self.cfg.model
        if t.device == "cuda" and not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no GPU visible"
            raise ConfigError(f"train.device=cuda, but torch {torch.__version__} sees no CUDA "
                              f"device ({build}); set train.device=cpu, or auto (a GPU when "
                              "there is one)")
        if m.path != "tiny":
            check_model_dir(m.path, "model.path")

    def _undo_start(self) -> None:
        """After a failed start (setup or the first step): the earlier run --overwrite set
        aside comes back, and what this run added is deleted."""
        if self._held is not None:
            restore_held(self.out, self._held)
            self._held = None
        self._remove_litter()

    def _remove_litter(self) -> None:
        """After a failed start: delete what this run added to the output directory (all of it
        when the directory is new); rank 0 only."""
        import shutil

        if distributed.launched_rank() != 0 or not self.out.is_dir():
            return
        if self._found is None:
            shutil.rmtree(self.out, ignore_errors=True)
            return
        for p in self.out.iterdir():
            if p.name in self._found:
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def _setup(self, ds_config: dict[str, Any] | None, implicit_zero2: bool, *, resume: bool,
               overwrite: bool, progress: bool, data: dict[str, Any]) -> None:
        t, cfg = self.cfg.train, self.cfg
        if overwrite and not resume and distributed.launched_rank() == 0:
            # set aside, not deleted: a start that fails (a bad split, a reward that raises in
            # the first step) puts it back; deleted once the first step is done
            self._held = hold_earlier_run(self.out, self.run_outputs())
        self.out.mkdir(parents=True, exist_ok=True)
        self.runtime = self._start_processes(ds_config is not None)
        self.rank, self.world = self.runtime.rank, self.runtime.world
        self.is_main, self.device = self.runtime.is_main, self.runtime.device
        self.show_progress = progress and self.is_main
        if self.is_main and implicit_zero2:
            print(f"{self.world} processes and no --deepspeed: training under ZeRO-2 defaults")
        set_seed(t.seed)
        self.resume_from = latest_checkpoint(self.out) if resume else None
        if self.resume_from is None and not resume and self.is_main:
            remove_partial_checkpoints(self.out)
        distributed.barrier()

        # under ZeRO-3 the weights load sharded (kept for frozen models loaded in setup_data)
        self.zero3_config = self._zero3_config(ds_config)
        models = load_starting_models(
            cfg, out_dir=self.out, device=self.device, is_main=self.is_main,
            with_reference=self.needs_reference(), zero3_config=self.zero3_config,
            extra_modules=self.add_policy_modules, **self.starting_model_options())
        self.tokenizer = models.tokenizer
        self.setup_data(models, **data)
        self.engine: Engine = build_engine(
            models.policy, t, self.num_optimizer_steps(), self.device, ds_config)
        self.model = self.engine.model
        self.ref_model = (None if models.reference is None
                          else self.engine.prepare_reference(models.reference))
        self.extra_engines: dict[str, Engine] = self.setup_engines(ds_config)
        self.after_engine()
        self.step = 0
        if self.resume_from is not None:
            self._restore(self.resume_from)
        if self.is_main:
            save_config(cfg, self.out / CONFIG_FILE)

    # ------------------------------------------------------------------ what a trainer adds

    @abstractmethod
    def setup_data(self, models: StartingModels, **data: Any) -> None:
        """Load what the trainer learns from (rows, reward functions, ...), before the engine
        is built and a checkpoint restored."""

    @abstractmethod
    def train_step(self) -> StepOutput:
        """One training step; advances `self.step`."""

    def needs_reference(self) -> bool:
        """Whether a frozen copy of the initial policy is loaded (a KL term)."""
        return False

    def starting_model_options(self) -> dict[str, Any]:
        """Extra `load_starting_models` keywords: another kind of model than a causal LM (a
        reward model: `reasoner.models.reward.reward_model_options`)."""
        return {}

    def after_engine(self) -> None:  # noqa: B027 - optional
        """Once the engine exists (before a checkpoint is restored): place other frozen models
        as the engine places the reference (a reward model used as a reward)."""

    def optimizer_steps_per_step(self) -> int:
        """Optimizer steps one training step makes (the learning-rate schedule's length is
        ``train.max_steps`` times this)."""
        return 1

    def num_optimizer_steps(self) -> int:
        """The policy's optimizer steps over the run (the learning-rate schedule's length)."""
        return self.cfg.train.max_steps * self.optimizer_steps_per_step()

    def add_policy_modules(self, policy: Any) -> list[str]:
        """Add modules to the freshly loaded policy before LoRA wraps it (a value head); returns
        their names (LoRA trains and saves them whole). None by default."""
        return []

    def setup_engines(self, ds_config: dict[str, Any] | None) -> dict[str, Engine]:
        """Engines besides the policy's (a critic), by the name of the checkpoint sub-directory
        each saves into; built after the policy's engine, before a checkpoint is restored.
        `ds_config`: the DeepSpeed config the policy's engine got (None: plain torch)."""
        return {}

    def policy_export_excludes(self) -> tuple[str, ...]:
        """State-dict key prefixes left out of the exported policy in final/ (a value head)."""
        return ()

    def trainer_state(self) -> dict[str, Any]:
        """What the checkpoint must hold to continue (beyond step, weights, optimizer, RNG)."""
        return {}

    def load_trainer_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional
        """Restore `trainer_state`'s contents."""

    @property
    def progress_description(self) -> str:
        """The progress bar's label: the algorithm's name (algo.name)."""
        name = self.cfg.algo.name
        return {"reinforce_plus_plus": "REINFORCE++"}.get(name, name.upper())

    plots: tuple[tuple[str, str, tuple[str, ...]], ...] | None = None  # None: metrics.PLOTS

    def progress_info(self, metrics: dict[str, Any]) -> str | None:
        """The live text of the progress bar (None: metrics.Progress's default)."""
        return None

    def progress_line(self, metrics: dict[str, Any]) -> str:
        """The line printed every ``train.logging_steps`` steps."""
        return f"step {self.step}: " + " ".join(
            f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))

    # ------------------------------------------------------------------ setup

    def _start_processes(self, multi: bool) -> Runtime:
        dev = self.cfg.train.device
        cuda = torch.cuda.is_available() if dev == "auto" else dev == "cuda"
        if multi:
            distributed.init("cuda" if cuda else "cpu")
            if cuda:
                torch.cuda.set_device(distributed.local_rank())
        device = (torch.device("cuda", distributed.local_rank()) if cuda and multi
                  else torch.device("cuda" if cuda else "cpu"))
        return Runtime(distributed.rank(), distributed.world_size(), device)

    def _zero3_config(self, ds_config: dict[str, Any] | None) -> dict[str, Any] | None:
        """The resolved DeepSpeed config when the weights load sharded (ZeRO-3), else None."""
        from reasoner.engine.deepspeed_engine import resolve_deepspeed_config, zero_stage

        if ds_config is None or zero_stage(ds_config) != 3:
            return None
        return resolve_deepspeed_config(ds_config, self.cfg.train, self.world,
                                        hidden_size_of(self.cfg.model),
                                        bf16_weights=self.cfg.model.dtype == "bfloat16")

    # ------------------------------------------------------------------ checkpoints

    @property
    def _rng_rank(self) -> int | None:
        return self.rank if self.engine.per_rank_checkpoint else None

    def _state(self) -> dict[str, Any]:
        return {**self.trainer_state(), "max_steps": self.cfg.train.max_steps}

    def save(self) -> Path:
        """An atomic checkpoint of this step: every rank writes its part (the engine's, its RNG
        state) into a temporary directory; rank 0 adds the tokenizer and the trainer state and
        renames it last."""
        tmp = self.out / f".tmp-checkpoint-{self.step}"
        if self.is_main:
            begin_checkpoint(self.out, self.step)
        distributed.barrier()
        self.engine.save(tmp)
        for name, engine in self.extra_engines.items():
            (tmp / name).mkdir(exist_ok=True)
            engine.save(tmp / name)
        torch.save(capture_rng_state(), tmp / rng_file(self._rng_rank))
        distributed.barrier()
        if self.is_main:
            self.tokenizer.save_pretrained(tmp)
            debug_kill("save", self.step)
            commit_checkpoint(self.out, self.step, tmp, self._state(),
                              self.cfg.train.save_total_limit)
        distributed.barrier()
        return self.out / f"checkpoint-{self.step}"

    def _restore(self, path: Path) -> None:
        """Continue from checkpoint `path`: weights, optimizer, schedule, step, trainer state and
        (last, so nothing after it draws from them) the RNG states."""
        if self.is_main:
            remove_partial_checkpoints(self.out)
        self.engine.load(path)
        for name, engine in self.extra_engines.items():
            engine.load(path / name)
        ck = load_checkpoint(path, rank=self._rng_rank)
        self.step = int(ck["trainer"]["step"])
        self.load_trainer_state(ck["trainer"])
        restore_rng_state(ck["rng"])

    def save_final(self) -> Path:
        """The policy in Hugging Face format in output_dir/final (under ZeRO-3 consolidated from
        the shards: every rank takes part in the gather, rank 0 writes)."""
        path = self.out / FINAL_DIR
        with self.engine.full_weights() as model:
            if self.is_main:
                if self.cfg.lora.enabled:
                    model = copy.deepcopy(model).merge_and_unload()
                kw: dict[str, Any] = {}
                exclude = self.policy_export_excludes()
                if exclude:
                    kw["state_dict"] = {k: v for k, v in model.state_dict().items()
                                        if not k.startswith(exclude)}
                model.save_pretrained(path, safe_serialization=True, **kw)
                self.tokenizer.save_pretrained(path)
        distributed.barrier()
        return path

    # ------------------------------------------------------------------ the loop

    def train(self) -> dict[str, Any]:
        """Steps until ``train.max_steps``, then the final export; returns a summary."""
        t = self.cfg.train
        start = self.step
        logger = MetricsLogger(self.out, tensorboard=t.report_to_tensorboard,
                               resume_step=start if self.resume_from is not None else None) \
            if self.is_main else None  # only rank 0 writes
        bar = Progress(t.max_steps, start, enabled=self.show_progress,
                       description=self.progress_description, info=self.progress_info)
        last: dict[str, Any] = {}
        t0 = time.perf_counter()
        failed_at_start = False
        try:
            while self.step < t.max_steps:
                out = self.train_step()
                last = out.metrics
                if self._held is not None:  # started: the earlier run --overwrite replaces goes
                    drop_held(self._held)
                    self._held = None
                if logger is not None:
                    logger.log(self.step, last)
                    if t.log_completions_steps and self.step % t.log_completions_steps == 0:
                        logger.log_completions(self.step, out.samples)
                bar.update(self.step, last)
                if self.step % t.logging_steps == 0 and self.is_main:
                    bar.print(self.progress_line(last))
                if (t.save_steps and self.step % t.save_steps == 0) or self.step == t.max_steps:
                    self.save()
        except BaseException:  # the first step failed (no sample judged, a reward that raised)
            failed_at_start = self.step == start and self.resume_from is None
            raise
        finally:
            bar.close()
            if logger is not None:
                logger.close()
            if failed_at_start:
                self._undo_start()
        self.save_final()
        if self.is_main:
            plot_metrics(self.out / METRICS_FILE, self.out, plots=self.plots)
        return {"steps": self.step, "resumed_from": start, "wall_seconds": time.perf_counter() - t0,
                "last": last, "final": str(self.out / FINAL_DIR), "rank": self.rank,
                "world_size": self.world}
