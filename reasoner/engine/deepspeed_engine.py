"""The DeepSpeed ZeRO engine (stages 0-3, optional offload) for one or many processes, and the
DeepSpeed config file: read it, and fill its "auto" values from the ``train`` settings.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from reasoner.engine.base import Engine, StepResult, freeze
from reasoner.engine.optim import (
    EngineSettings,
    apply_schedule,
    build_optimizer,
    build_scheduler,
)


class DeepSpeedSettings(EngineSettings, Protocol):
    """The ``train`` fields a DeepSpeed config's "auto" values come from."""

    per_device_train_batch_size: int
    gradient_accumulation_steps: int


# ------------------------------------------------------------------------------------ DeepSpeed

# Keys of a DeepSpeed config that may say "auto": filled from the train section (as the HF Trainer
# does), so the hyperparameters have one home.
_OPTIMIZER_AUTO = ("lr", "betas", "eps", "weight_decay")


def default_deepspeed_config() -> dict[str, Any]:
    """Used when a multi-process launch gives no --deepspeed: ZeRO-2, everything else auto."""
    return {"zero_optimization": {"stage": 2}, "bf16": {"enabled": "auto"},
            "gradient_clipping": "auto", "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto"}


def load_deepspeed_config(path: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Read a DeepSpeed JSON config, naming the file in every error."""
    if isinstance(path, dict):
        return copy.deepcopy(path)
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--deepspeed {str(p)!r}: no such file")
    try:
        ds = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--deepspeed {str(p)!r}: not valid JSON ({e})") from None
    if not isinstance(ds, dict):
        raise ValueError(f"--deepspeed {str(p)!r}: the top level must be a JSON object")
    return ds


def zero_stage(ds: dict[str, Any]) -> int:
    return int(ds.get("zero_optimization", {}).get("stage", 0))


def resolve_deepspeed_config(ds: dict[str, Any], cfg: DeepSpeedSettings, world: int,
                             hidden_size: int | None = None, *,
                             bf16_weights: bool = False) -> dict[str, Any]:
    """Fill every "auto" (and every absent batch / clipping / precision key) from the GRPO
    config; reject values that contradict it. ZeRO's bucket sizes and persistence threshold
    may say "auto" too: sized from the model's hidden size h (h*h, 0.9*h*h, 10*h, as the
    Hugging Face integration does), or 5e7 / 5e7 / 1e5 when h is not known. Returns a new
    dict.

    `bf16_weights` (model.dtype=bfloat16): bf16 mode is on whatever train.bf16 says, so
    DeepSpeed keeps fp32 master weights and optimizer state (its bf16 mode); a config that
    turns it off is refused, since updates below half a bf16 ulp would round away."""
    ds = copy.deepcopy(ds)

    def fill(d: dict[str, Any], key: str, value: Any, name: str) -> None:
        if d.get(key, "auto") == "auto":
            d[key] = value
        elif d[key] != value:
            raise ValueError(f"deepspeed config {key}={d[key]!r} contradicts {name}={value!r}; "
                             f'set it to "auto" or to the same value')

    mb, ga = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    fill(ds, "train_micro_batch_size_per_gpu", mb, "train.per_device_train_batch_size")
    fill(ds, "gradient_accumulation_steps", ga, "train.gradient_accumulation_steps")
    fill(ds, "train_batch_size", mb * ga * world,
         "per_device_train_batch_size * gradient_accumulation_steps * world size")
    fill(ds, "gradient_clipping", float(max(cfg.max_grad_norm, 0.0)), "train.max_grad_norm")
    bf16 = ds.setdefault("bf16", {})
    if bf16_weights and bf16.get("enabled", "auto") is False:
        raise ValueError('deepspeed config bf16.enabled=false with model.dtype=bfloat16: '
                         'DeepSpeed would train the bf16 weights without fp32 master weights '
                         'and small updates would round away; set it to "auto" or true')
    fill(bf16, "enabled", bool(cfg.bf16) or bf16_weights,
         "model.dtype=bfloat16" if bf16_weights else "train.bf16")
    if ds.get("fp16", {}).get("enabled") in (True, "auto"):
        raise ValueError("deepspeed config fp16: fp16 training is not supported (use bf16)")
    # the trainer decides how many micro-batches make a step (rows with no gradient are skipped),
    # so every engine.step() is an accumulation boundary
    if ds.get("managed_gradient_accumulation", False):
        raise ValueError("deepspeed config managed_gradient_accumulation must be false (the "
                         "trainer owns the accumulation boundary)")
    ds["managed_gradient_accumulation"] = False
    opt = ds.get("optimizer")
    if opt is not None:
        params = opt.setdefault("params", {})
        values = {"lr": cfg.learning_rate, "betas": [cfg.adam_beta1, cfg.adam_beta2],
                  "eps": cfg.adam_epsilon, "weight_decay": cfg.weight_decay}
        for key in _OPTIMIZER_AUTO:
            fill(params, key, values[key], f"train ({key})")
    if "scheduler" in ds:
        raise ValueError("deepspeed config 'scheduler': remove it; the schedule comes from "
                         "train.lr_scheduler_type / warmup_ratio / warmup_steps")
    zero = ds.setdefault("zero_optimization", {})
    zero.setdefault("stage", 0)
    h = hidden_size
    for key, value in (("reduce_bucket_size", h * h if h else 50_000_000),
                       ("stage3_prefetch_bucket_size", int(0.9 * h * h) if h else 50_000_000),
                       ("stage3_param_persistence_threshold", 10 * h if h else 100_000)):
        if zero.get(key) == "auto":
            zero[key] = value
    ds.setdefault("steps_per_print", 10**9)  # our own progress and metrics
    ds.setdefault("wall_clock_breakdown", False)
    return ds


class DeepSpeedEngine(Engine):
    """The policy inside a DeepSpeed engine. The trainer normalises the loss by the token count
    of all ranks; DeepSpeed averages gradients over ranks, so backward scales by the world size
    to make the update the gradient of the global sum."""

    per_rank_checkpoint = True
    min_micro_batches = 1  # DeepSpeed's step wants at least one backward

    def __init__(self, model: torch.nn.Module, cfg: DeepSpeedSettings, num_optimizer_steps: int,
                 device: torch.device, ds_config: dict[str, Any]) -> None:
        import deepspeed

        from reasoner import distributed

        # (`device` is DeepSpeed's to choose: LOCAL_RANK's GPU, or the CPU)
        self.world = distributed.world_size()
        self.ds_config = resolve_deepspeed_config(
            ds_config, cfg, self.world,
            getattr(getattr(model, "config", None), "hidden_size", None), bf16_weights=any(p.dtype == torch.bfloat16 for p in model.parameters()
                             if p.requires_grad))
        self.stage = zero_stage(self.ds_config)
        self.partitioned = self.stage == 3
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")

        def schedule(opt: torch.optim.Optimizer) -> Any:
            return build_scheduler(opt, cfg, num_optimizer_steps)

        client_opt = None
        if "optimizer" not in self.ds_config:  # ZeRO wraps it; its own (unfused) update
            client_opt = build_optimizer(params, cfg, fused=False)
        self.ds, _, _, self.scheduler = deepspeed.initialize(
            model=model, model_parameters=params, optimizer=client_opt, lr_scheduler=schedule,
            config=self.ds_config)
        self.model = self.ds.module
        self.params = params

    @contextlib.contextmanager
    def generation(self) -> Iterator[None]:
        """Under ZeRO-3: every weight gathered ONCE for the whole rollout phase, and the per-module
        fetch/release hooks taken off meanwhile (they would gather per layer per token)."""
        if not self.partitioned:
            yield
            return
        import deepspeed

        offload = self.ds.optimizer.parameter_offload
        top = self.model
        with deepspeed.zero.GatheredParameters(list(top.parameters())):
            for hook in offload.forward_hooks + offload.backward_hooks:
                hook.remove()
            offload.forward_hooks, offload.backward_hooks = [], []
            # the engine's own bookkeeping hooks on the top module (timers, the coordinator's
            # step reset): set aside too, so the lean decode path may stand in for the modules
            pre, post = dict(top._forward_pre_hooks), dict(top._forward_hooks)
            top._forward_pre_hooks.clear()
            top._forward_hooks.clear()
            try:
                yield
            finally:
                top._forward_pre_hooks.update(pre)
                top._forward_hooks.update(post)
                for p in top.parameters():
                    p.ds_active_sub_modules.clear()
                offload._register_deepspeed_module(offload.module)

    def begin_micro_batch(self) -> None:
        # what DeepSpeedEngine.forward does first: we call the module itself (with our own
        # arguments), so we must tell ZeRO that a new micro-batch starts, or ZeRO-3 overwrites
        # the previous micro-batches' gradient partitions instead of accumulating them
        from deepspeed.runtime.base_optimizer import ZeROOptimizer

        if isinstance(self.ds.optimizer, ZeROOptimizer):
            self.ds.optimizer.clear_backward_seen_flag()

    @contextlib.contextmanager
    def gathered(self, params: list[torch.nn.Parameter]) -> Iterator[None]:
        """`params` whole inside, under ZeRO-3 too: for code that reads a weight outside its
        module's forward (the fused-linear loss reads lm_head.weight), forward AND backward."""
        if not self.partitioned:
            yield
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        self.ds.backward(loss * self.world, scale_wrt_gas=False)

    def step(self, *, loss_finite: bool = True) -> StepResult:
        """Apply the update unless some rank saw a non-finite loss or gradient; then every rank
        drops the step. ZeRO-1/2 check the gradient norm themselves (an overflow skips the
        step); ZeRO-3 does not, so its gradient partitions are checked here."""
        from reasoner import distributed

        lr = self.scheduler.get_last_lr()[0]
        ok = loss_finite and (not self.partitioned or self._grad_partitions_finite())
        if distributed.sum_all([0.0 if ok else 1.0])[0] != 0.0:
            if self.partitioned:
                self._drop_gradients()
                return StepResult(grad_norm=float("nan"), applied=False, lr=lr)
            # make sure ZeRO-1/2's own overflow check sees it, whatever the gradients hold
            self.begin_micro_batch()
            poison = sum(p.float().sum() for p in self.params) * float("nan")
            self.ds.backward(poison, scale_wrt_gas=False)
        self.ds.step()
        norm = self.ds.get_global_grad_norm()
        norm = float("nan") if norm is None else float(norm)
        applied = bool(getattr(self.ds, "_step_applied", True)) and math.isfinite(norm)
        return StepResult(grad_norm=norm, applied=applied, lr=lr)

    def _grad_partitions_finite(self) -> bool:
        parts = getattr(self.ds.optimizer,
                        "_DeepSpeedZeroOptimizer_Stage3__param_id_to_grad_partition", None)
        return parts is None or all(bool(torch.isfinite(t).all()) for t in parts.values())

    def _drop_gradients(self) -> None:
        """ZeRO-3: forget this step's accumulated gradients without an optimizer step (the
        next backward starts a fresh accumulation)."""
        self.ds.optimizer.zero_grad(set_to_none=True)  # resets ZeRO-3's micro-step counter
        for p in self.model.parameters():
            p.grad = None
        self.ds._unmanaged_backward_count = 0

    def save(self, directory: Path) -> None:
        """This rank's shard of weights, optimizer and scheduler under ``deepspeed/`` (every rank
        calls it)."""
        self.ds.save_checkpoint(str(directory), tag="deepspeed", save_latest=False)

    def load(self, directory: Path) -> None:
        path, _ = self.ds.load_checkpoint(str(directory), tag="deepspeed")
        if path is None:
            raise FileNotFoundError(f"{directory}: no DeepSpeed checkpoint (tag 'deepspeed')")
        apply_schedule(self.scheduler)  # this run's schedule (train.max_steps may have grown)

    @contextlib.contextmanager
    def full_weights(self) -> Iterator[torch.nn.Module]:
        """The module with its full weights (gathered from the shards under ZeRO-3), for
        export; every rank must enter."""
        if not self.partitioned:
            yield self.model
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.model.parameters())):
            yield self.model


    def prepare_reference(self, ref: torch.nn.Module) -> torch.nn.Module:
        """Under ZeRO-3 the reference lives in its own inference engine with partitioned weights
        (1/world of the memory); under bf16 it is cast to bf16 as the policy's weights are."""
        ref = freeze(ref)
        if self.partitioned:
            import deepspeed

            zero = {k: v for k, v in self.ds_config["zero_optimization"].items()
                    if not k.startswith("offload_optimizer")}
            ref_cfg = {"train_micro_batch_size_per_gpu": self.ds_config[
                "train_micro_batch_size_per_gpu"], "zero_optimization": zero,
                "bf16": self.ds_config.get("bf16", {}), "steps_per_print": 10**9}
            ref, *_ = deepspeed.initialize(model=ref, config=ref_cfg)
            ref = ref.module.eval()
        elif self.ds_config["bf16"].get("enabled"):
            ref = ref.to(torch.bfloat16)
        return ref
