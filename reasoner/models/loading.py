"""Loading a local Hugging Face causal LM for training: tokenizer padding, dtype, device,
gradient checkpointing, dropout off, LoRA adapters, and the policy / reference pair a trainer
starts from (under ZeRO-3 each rank loads only its shard)."""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reasoner.config import ConfigError

DTYPES = ("float32", "bfloat16", "float16")


def check_model_dir(path: str | Path, field: str = "model.path") -> None:
    """`path` is a local Hugging Face model directory (ConfigError naming `field` otherwise)."""
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{field} {str(p)!r} does not exist; give a local Hugging Face "
                          "model directory (nothing is downloaded)"
                          + (" or 'tiny'" if field == "model.path" else ""))
    if not (p / "config.json").is_file():
        raise ConfigError(f"{field} {str(p)!r} is not a Hugging Face model directory (no "
                          "config.json)")


def context_length(model_config: Any) -> tuple[int, str] | None:
    """(the positions the model has, the config field that says so), or None when it does not
    say: ``max_position_embeddings`` (RoPE models; raised to factor x original length when the
    rope parameters extend it, YaRN-style) or ``n_positions`` (GPT-2's learned positions)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        n = getattr(model_config, name, None)
        if isinstance(n, int) and n > 0:
            break
    else:
        return None
    name = getattr(model_config, "attribute_map", {}).get(name, name)  # GPT-2: n_positions
    rope = getattr(model_config, "rope_parameters", None) or getattr(
        model_config, "rope_scaling", None)
    if isinstance(rope, dict) and rope.get("factor") and rope.get(
            "original_max_position_embeddings"):
        n = max(n, int(rope["factor"] * rope["original_max_position_embeddings"]))
    return n, name


def check_context(model_config: Any, longest_prompt: int, max_new_tokens: int, *,
                  new_tokens_field: str = "rollout.max_completion_length",
                  prompt_field: str | None = "rollout.max_prompt_length") -> None:
    """The longest prompt plus the completion budget fits in the model's positions
    (ConfigError naming the fields otherwise): past them a learned-position model (GPT-2) fails
    deep inside torch and a RoPE model runs on, silently, where it was never trained."""
    found = context_length(model_config)
    if found is None:
        return
    n, name = found
    if longest_prompt + max_new_tokens > n:
        raise ConfigError(
            f"the longest prompt ({longest_prompt} tokens) + {new_tokens_field} "
            f"({max_new_tokens}) = {longest_prompt + max_new_tokens} tokens do not fit in the "
            f"model's {n} positions ({name}); lower {new_tokens_field}"
            + (f", or leave long prompts out with {prompt_field}" if prompt_field else ""))


def load_model_and_tokenizer(
    path: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    gradient_checkpointing: bool = False,
    auto_class: Any = None,
    model_kwargs: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Load a local Hugging Face causal LM directory: (model, tokenizer).

    The tokenizer pads on the left (for generation) and always has a pad token (falls back to EOS).
    `dtype`: None (as saved / fp32), a torch dtype, or a name ("float32", "bfloat16", "auto").
    `auto_class` / `model_kwargs`: another transformers Auto class and its from_pretrained
    keywords (a reward model: AutoModelForSequenceClassification, num_labels=1).
    """
    from reasoner.distributed import quiet_deepspeed_accelerator

    quiet_deepspeed_accelerator()  # before transformers imports deepspeed
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    check_model_dir(p, "model directory")
    if isinstance(dtype, str) and dtype != "auto":
        try:
            dtype = getattr(torch, dtype)
        except AttributeError:
            raise ValueError(f"unknown dtype {dtype!r}") from None
    tokenizer = AutoTokenizer.from_pretrained(p)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer in {str(p)!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = dict(model_kwargs or {})
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = (auto_class or AutoModelForCausalLM).from_pretrained(p, **kwargs)
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():  # under zero.Init the shards are placed already
        model.to(device)
    gen_cfg = getattr(model, "generation_config", None)
    if gen_cfg is not None and gen_cfg.pad_token_id is None:
        gen_cfg.pad_token_id = tokenizer.pad_token_id
    if gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model, tokenizer


def enable_activation_checkpointing(model: Any) -> None:
    """Gradient (activation) checkpointing on, by the name the installed transformers has
    (5.x renamed it; the old name warns), and the KV cache off."""
    enable = getattr(model, "activation_checkpointing_enable", None) \
        or model.gradient_checkpointing_enable
    enable()
    model.config.use_cache = False


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def disable_dropout(model: Any) -> None:
    """Dropout off (p = 0 in every Dropout module and in the config's dropout fields): the
    policy's log-probs must be the same in the scoring pass and in the update."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    cfg = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "dropout"):
        if cfg is not None and isinstance(getattr(cfg, name, None), float):
            setattr(cfg, name, 0.0)


def add_lora(model: Any, lora: Any, *, seed: int, gradient_checkpointing: bool,
             task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None) -> Any:
    """`model` wrapped with LoRA adapters (peft) as the ``lora`` config section says; the
    adapters' initialisation is seeded with `seed` without touching the global RNG.
    ``lora.target_modules`` is peft's: module names, or a string (``all-linear``, or a regex).
    `task_type`: peft's (SEQ_CLS for a reward model: its score head is trained in full).
    `modules_to_save`: modules trained (and saved with the adapters) in full, e.g. a value
    head."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("lora.enabled needs peft: pip install 'reasoner-grpo[lora]'") from None
    targets = lora.target_modules
    targets = targets if isinstance(targets, str) else list(targets)
    if isinstance(targets, list):
        have = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        if not have & set(targets):
            raise ConfigError(
                f"lora.target_modules {targets} match no module of {type(model).__name__}; its "
                f"linear layers are {', '.join(linear_module_names(model))}: set "
                f"lora.target_modules to some of them, or to all-linear")
    if gradient_checkpointing:  # checkpointed blocks need a grad-carrying input
        model.enable_input_require_grads()
    # GPT-2's Conv1D layers store their weight transposed (peft would fix it, with a warning)
    conv1d = any(type(m).__name__ == "Conv1D" for m in model.modules())
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft reads transformers' deprecated is_gradient_checkpointing: its noise, not ours
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*deprecated",
                                category=FutureWarning)
        torch.manual_seed(seed)
        return get_peft_model(model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=targets, task_type=task_type, fan_in_fan_out=conv1d,
            modules_to_save=modules_to_save,
        ))


def linear_module_names(model: Any) -> list[str]:
    """The distinct names of `model`'s linear layers below the LM head (nn.Linear, and the
    Conv1D of GPT-2), e.g. ['q_proj', 'k_proj', ...]: what LoRA may target."""
    out: list[str] = []
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, mod in model.named_modules():
        if mod is head or not name:
            continue
        if isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D":
            short = name.rsplit(".", 1)[-1]
            if short not in out:
                out.append(short)
    return out


def model_config_json(path: str | Path) -> dict[str, Any]:
    """A model directory's config.json as a mapping, no weights loaded (OSError or ValueError
    when it can't be read)."""
    config = json.loads((Path(path) / "config.json").read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path}/config.json is not a JSON object")
    return config


def hidden_size_of(model_cfg: Any) -> int | None:
    """The hidden size from the ``model`` config section alone (no weights loaded)."""
    if model_cfg.path == "tiny":
        return int(model_cfg.tiny_hidden_size)
    try:
        return int(model_config_json(model_cfg.path)["hidden_size"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def resolve_model_path(model_cfg: Any, out_dir: Path, *, is_main: bool = True) -> str:
    """The model directory: ``model.path``, or for "tiny" the tiny model built (by rank 0, once)
    into ``out_dir/init_model`` from the ``model.tiny_*`` fields."""
    from reasoner import distributed
    from reasoner.models.tiny import build_tiny_from_config

    if model_cfg.path != "tiny":
        return model_cfg.path
    path = out_dir / "init_model"
    if is_main:
        build_tiny_from_config(model_cfg, path)
    distributed.barrier()
    return str(path)


@dataclass
class StartingModels:
    """What a trainer starts from."""

    policy: Any  # dropout off; with LoRA, wrapped with adapters
    tokenizer: Any
    reference: Any | None  # a frozen copy of the initial policy for the KL term; None without
    # one, or with LoRA (the reference is then the policy with its adapters disabled)


def load_starting_models(cfg: Any, *, out_dir: Path, device: torch.device, is_main: bool,
                         with_reference: bool, zero3_config: dict[str, Any] | None = None,
                         auto_class: Any = None, model_kwargs: dict[str, Any] | None = None,
                         lora_task_type: str = "CAUSAL_LM",
                         extra_modules: Callable[[Any], list[str]] | None = None,
                         ) -> StartingModels:
    """Load the policy (and a reference copy when `with_reference` and not LoRA) as the config
    says. `zero3_config`: a resolved ZeRO-3 DeepSpeed config; every rank then loads only its
    shard (deepspeed.zero.Init inside from_pretrained), the reference too. `auto_class`,
    `model_kwargs`, `lora_task_type`: another kind of model (a reward model,
    `reasoner.models.reward.reward_model_options`). `extra_modules`: called with the loaded
    policy before LoRA wraps it, adds modules to it (a value head) and returns their names (LoRA
    trains and saves them whole)."""
    m, lora = cfg.model, cfg.lora
    zero3: AbstractContextManager[Any] = nullcontext()
    if zero3_config is not None:
        zero3 = _zero3_loading(zero3_config)
    with zero3:
        path = resolve_model_path(m, out_dir, is_main=is_main)

        def load() -> tuple[Any, Any]:
            model, tokenizer = load_model_and_tokenizer(
                path, dtype=m.dtype, device=device,
                gradient_checkpointing=cfg.train.gradient_checkpointing,
                auto_class=auto_class, model_kwargs=model_kwargs)
            disable_dropout(model)
            return model, tokenizer

        policy, tokenizer = load()
        ref = None
        if with_reference and not lora.enabled:
            # a second load when the policy is sharded already, else a copy
            ref = load()[0] if zero3_config is not None else copy.deepcopy(policy)
    # (outside the ZeRO-3 loading context: modules added here are whole; DeepSpeed partitions
    # them when the engine is built)
    added = [] if extra_modules is None else extra_modules(policy)
    if lora.enabled:
        policy = add_lora(policy, lora, seed=cfg.train.seed,
                          gradient_checkpointing=cfg.train.gradient_checkpointing,
                          task_type=lora_task_type, modules_to_save=added or None)
    return StartingModels(policy, tokenizer, ref)


class _zero3_loading(AbstractContextManager[None]):
    """While inside, from_pretrained loads each rank's shard only (HfDeepSpeedConfig); later
    loads load whole again."""

    def __init__(self, ds_config: dict[str, Any]) -> None:
        self.ds_config = ds_config

    def __enter__(self) -> None:
        from transformers.integrations import HfDeepSpeedConfig

        self.keep = HfDeepSpeedConfig(self.ds_config)  # alive while loading

    def __exit__(self, *exc: object) -> None:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        del self.keep


zero3_loading = _zero3_loading  # public name (a reward model loads sharded the same way)
