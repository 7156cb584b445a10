"""Reward models: a scalar head on the last non-pad token.

The head is Hugging Face's ``*ForSequenceClassification`` with ``num_labels=1`` (one linear
``score`` layer over the final hidden states, read at the rightmost token that is not the pad
token): THE head implementation here, so a reward model saved by `reasoner rm` loads with
``AutoModelForSequenceClassification`` and TRL's RewardTrainer output and ours are
interchangeable. Any local causal LM directory (or the tiny model) starts one: the backbone's
weights load, the head is initialised from the seeded global RNG.

What a reward model reads is one encoding, in one place (`encode_sequence`), shared by training
and scoring; it is TRL's RewardTrainer's: plain text is ``prompt + completion`` with the EOS
token appended unless it is already there, tokenized as the tokenizer does by default;
conversational data is the chat template applied to the prompt's messages followed by the
completion's.

`RewardModelReward` is the learned reward of ``reasoner train`` (``rewards.names:
[reward_model]``): TRL's reward signature, scored in batches on the policy's device, prepared by
the engine like the KL reference (sharded under ZeRO-3, cast under bf16), with optional running
normalization whose moments are in the checkpoint.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from reasoner.verifiers.rewards import ModelReward, RewardContext


def reward_model_options() -> dict[str, Any]:
    """`load_starting_models` keywords that load a scalar reward model (HF sequence
    classification, one label; LoRA's task type SEQ_CLS keeps the head trainable)."""
    from transformers import AutoModelForSequenceClassification

    return {"auto_class": AutoModelForSequenceClassification, "model_kwargs": {"num_labels": 1},
            "lora_task_type": "SEQ_CLS"}


def set_pad_token(model: Any, tokenizer: Any) -> None:
    """The head reads the last token that is not ``config.pad_token_id``: it must be the
    tokenizer's pad token."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner.config.pad_token_id = tokenizer.pad_token_id


def load_reward_model(path: str | Path, *, dtype: str | None = None,
                      device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) of a saved reward model directory (or a causal LM, head new), in eval
    mode with dropout off and no gradients."""
    from reasoner.models.loading import disable_dropout, load_model_and_tokenizer

    opts = reward_model_options()
    model, tok = load_model_and_tokenizer(path, dtype=dtype, device=device,
                                          auto_class=opts["auto_class"],
                                          model_kwargs=opts["model_kwargs"])
    set_pad_token(model, tok)
    disable_dropout(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def check_reward_model_dir(path: str | Path, field: str) -> None:
    """`path` is a trained reward model: a local Hugging Face directory whose config names a
    *ForSequenceClassification architecture with one label (ours or TRL's RewardTrainer's
    output). A causal LM would load with a new, random score head and train a policy against
    noise; a classifier of several labels has no one score. ConfigError naming `field`."""
    from reasoner.config import ConfigError
    from reasoner.models.loading import check_model_dir, model_config_json

    check_model_dir(path, field)
    try:
        config = model_config_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{field} {str(path)!r}: config.json is not readable JSON ({e})"
                          ) from None
    archs = config.get("architectures") or []
    if archs and not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise ConfigError(f"{field} {str(path)!r} is a {archs[0]}, not a reward model: it has "
                          "no trained score head (a reward model is `reasoner rm`'s "
                          "output_dir/final, or TRL RewardTrainer's output)")
    labels = config.get("id2label") or {}
    n = len(labels) if labels else int(config.get("num_labels", 1) or 1)
    if n != 1:
        raise ConfigError(f"{field} {str(path)!r} is a classifier of {n} labels; a reward "
                          "model has one score (num_labels 1)")


def encode_sequence(tokenizer: Any, prompt: Any, completion: Any) -> list[int]:
    """The token ids a reward model reads for (prompt, completion); TRL's encoding (see the
    module docstring). `prompt` may be "" (TRL's implicit prompt)."""
    if isinstance(completion, list):  # conversational
        messages = (list(prompt) if isinstance(prompt, list) else []) + list(completion)
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        return list(ids["input_ids"])
    text = (prompt or "") + completion
    eos = tokenizer.eos_token
    if eos is not None and not text.endswith(eos):
        text += eos
    return list(tokenizer(text)["input_ids"])


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [M, L], attention_mask [M, L]) right-padded (TRL's collator's padding)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for k, s in enumerate(seqs):
        ids[k, :len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[k, :len(s)] = 1
    return ids.to(device), mask.to(device)


def sequence_scores(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                    allow_lean: bool = True) -> torch.Tensor:
    """The reward of each sequence [M] (float32): the model's head on the hidden state of the
    token its own forward pools (the rightmost token that is not the pad id, as Hugging Face's
    *ForSequenceClassification picks it). For a plain Qwen2/Llama/Mistral/Qwen3 model
    (`lean_decoder`) with `allow_lean`, each row's tokens up to that one are right-aligned and go
    through the lean forward, which skips the padding and runs the last layer for the pooled
    position only: the same scores and gradients (tests/models/test_reward_scores.py). Other
    models run their own forward."""
    from reasoner.models.forward import forward_logits
    from reasoner.models.lean import lean_decoder
    from reasoner.models.value import VALUE_HEAD, unwrapped

    base = unwrapped(model)
    pad = getattr(base.config.get_text_config(), "pad_token_id", None)
    lean = (lean_decoder(base, input_ids.shape[1])
            if allow_lean and pad is not None and hasattr(base, VALUE_HEAD) else None)
    if lean is None:
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits[:, 0].float()
    cols = torch.arange(input_ids.shape[1], device=input_ids.device)
    last = (cols * (input_ids != pad)).argmax(-1)  # the pooled position of each row
    width = int(last.max()) + 1
    src = torch.arange(width, device=input_ids.device)[None, :] - (width - 1 - last)[:, None]
    real = src >= 0  # right-aligned: row r's tokens 0..last[r] end in the last column
    src = src.clamp(min=0)
    ids = torch.where(real, input_ids.gather(1, src), torch.zeros_like(src))
    mask = attention_mask.gather(1, src) * real
    one = torch.ones_like(ids[:, :1])  # forward_logits feeds the prompt and no completion token
    hidden = forward_logits(base, ids, mask, one, one, return_hidden=True, allow_lean=True)
    return getattr(base, VALUE_HEAD)(hidden[:, -1]).squeeze(-1).float()


@torch.no_grad()
def score_sequences(model: Any, seqs: Sequence[Sequence[int]], pad_id: int, *,
                    batch_size: int, device: torch.device | str,
                    autocast: Any = contextlib.nullcontext,
                    on_batch: Callable[[int, int], None] | None = None) -> list[float]:
    """Rewards of token sequences, `batch_size` at a time (longest first, so each batch pads
    little), in the order given. `on_batch(batches done, sequences done)` after each batch."""
    order = sorted(range(len(seqs)), key=lambda k: -len(seqs[k]))
    out = [0.0] * len(seqs)
    for b, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start:start + batch_size]
        ids, mask = pad_right([seqs[k] for k in idx], pad_id, device)
        with autocast():
            s = sequence_scores(model, ids, mask).cpu().tolist()
        for k, v in zip(idx, s):
            out[k] = v
        if on_batch is not None:
            on_batch(b + 1, start + len(idx))
    return out


class RunningMoments:
    """Running mean and standard deviation of every score seen (Chan's parallel update), the
    same on every rank (each batch's sums are added over ranks)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0.0, 0.0, 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 0 else 1.0

    def update(self, xs: Sequence[float]) -> None:
        from reasoner import distributed

        n, s, ss = distributed.sum_all([float(len(xs)), float(sum(xs)),
                                        float(sum(x * x for x in xs))])
        if n == 0:
            return
        mean_b = s / n
        m2_b = max(ss - n * mean_b * mean_b, 0.0)
        total = self.count + n
        delta = mean_b - self.mean
        self.mean += delta * n / total
        self.m2 += m2_b + delta * delta * self.count * n / total
        self.count = total

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = (float(state["count"]), float(state["mean"]),
                                          float(state["m2"]))


class RewardModelReward(ModelReward):
    """A trained reward model as a reward function (``rewards.names: [reward_model]``,
    ``rewards.reward_model_path`` / ``_batch_size`` / ``_normalize``)."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int, device: torch.device,
                 normalize: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"reward model batch size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.device = batch_size, device
        self.moments = RunningMoments() if normalize else None
        self.autocast: Any = contextlib.nullcontext

    @classmethod
    def from_context(cls, ctx: RewardContext) -> RewardModelReward:
        r = ctx.cfg.rewards
        if r.reward_model_path is None:
            raise ValueError("rewards.names has reward_model: set rewards.reward_model_path to a "
                             "reward model directory (reasoner rm's output_dir/final)")
        check_reward_model_dir(r.reward_model_path, "rewards.reward_model_path")
        with ctx.loading():  # under ZeRO-3 each rank loads its shard, as for the reference
            model, tok = load_reward_model(r.reward_model_path, dtype=ctx.cfg.model.dtype,
                                           device=ctx.device)
        return cls(model, tok, batch_size=r.reward_model_batch_size, device=ctx.device,
                   normalize=r.reward_model_normalize)

    def check_fits(self, seqs: Sequence[Sequence[int]]) -> None:
        """Every sequence fits in the reward model's positions: past them a learned-position
        model fails deep in torch and a RoPE one scores, silently, where it never trained."""
        from reasoner.config import ConfigError
        from reasoner.models.loading import context_length

        found = context_length(self.model.config)
        longest = max((len(s) for s in seqs), default=0)
        if found is not None and longest > found[0]:
            raise ConfigError(f"rewards.reward_model_path: a prompt + completion of {longest} "
                              f"tokens does not fit in the reward model's {found[0]} positions "
                              f"({found[1]}); lower rollout.max_completion_length (or "
                              "rollout.max_prompt_length), or use a reward model with a longer "
                              "context")

    def prepare(self, engine: Any) -> None:
        self.model = engine.prepare_reference(self.model)
        self.autocast = engine.autocast

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any
                 ) -> list[float | None]:
        seqs = [encode_sequence(self.tokenizer, p, c) for p, c in zip(prompts, completions)]
        self.check_fits(seqs)
        scores = score_sequences(self.model, seqs, self.tokenizer.pad_token_id,
                                 batch_size=self.batch_size, device=self.device,
                                 autocast=self.autocast) if seqs else []
        if self.moments is not None:
            self.moments.update(scores)
            scores = [(s - self.moments.mean) / (self.moments.std + 1e-8) for s in scores]
        return list(scores)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.moments is None else {"moments": self.moments.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.moments is not None and "moments" in state:
            self.moments.load_state_dict(state["moments"])
