"""The critic's value model: Hugging Face's ``AutoModelForSequenceClassification`` with
``num_labels=1`` (the class a reward model is), read per token as TRL's PPO reads it: the
backbone's final hidden states through the ``score`` layer give V(s_t) at every completion
position t, the value of the state before completion token t.

Two placements, one head implementation (the ``score`` layer of that class):

- a separate value model (`load_value_model`): a reward model's directory, or the policy's
  starting weights with a fresh head; trained by an engine of its own;
- a value head on the policy's trunk (`attach_value_head`): the ``score`` layer of the policy
  architecture's *ForSequenceClassification class, attached to the policy as ``policy.score``
  and trained with it; `export_shared_value_model` writes trunk + head as that class.

A fresh head starts at zero (V = 0 everywhere), so it needs no random numbers and is the same on
every rank. `forward_values` is the training forward, `token_values` the no-grad pass of a
rollout batch.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from reasoner.engine.base import Engine
from reasoner.models.forward import forward_logits
from reasoner.models.loading import disable_dropout, enable_activation_checkpointing
from reasoner.scoring import ScoringSettings, Sequences

VALUE_HEAD = "score"  # the head's attribute name in *ForSequenceClassification


def unwrapped(model: Any) -> Any:
    """The Hugging Face model inside a peft wrapper (adapters stay active in it), else
    `model`."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def _modifiable(params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Inside, `params` are whole and writes to them stick (gathered ZeRO-3 shards, written back
    from rank 0), else a no-op."""
    if not any(hasattr(p, "ds_id") for p in params):
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
        yield


def _zero_head(head: torch.nn.Module) -> None:
    params = list(head.parameters())
    with _modifiable(params), torch.no_grad():
        for p in params:
            p.zero_()


def load_value_model(path: str | Path, *, dtype: str | torch.dtype | None, device: torch.device,
                     gradient_checkpointing: bool, pad_token_id: int | None) -> Any:
    """The value model from a local directory: a reward / value model keeps its ``score`` head,
    any other model (a causal LM: the policy's weights) gets a fresh one, set to zero. Dropout
    off, on `device` (under ZeRO-3 loading each rank holds its shard)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.integrations import is_deepspeed_zero3_enabled

    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"critic.model_path {str(p)!r} is not a Hugging Face model "
                                f"directory (no config.json)")
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    kw: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
    model, info = AutoModelForSequenceClassification.from_pretrained(
        p, num_labels=1, output_loading_info=True, **kw)
    if not is_deepspeed_zero3_enabled():
        model.to(device)
    if any(k.startswith(f"{VALUE_HEAD}.") for k in info["missing_keys"]):
        _zero_head(getattr(model, VALUE_HEAD))
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    disable_dropout(model)
    if gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model


def _sequence_classification_class(config: Any) -> type:
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification._model_mapping[type(config)]
    except KeyError:
        raise ValueError(f"critic.shared_trunk: {type(config).__name__} has no "
                         f"*ForSequenceClassification class in transformers") from None


def attach_value_head(policy: Any) -> list[str]:
    """Give `policy` (a causal LM, before LoRA wraps it) the ``score`` layer of its
    architecture's *ForSequenceClassification class, set to zero; returns the names of the
    modules it added (what LoRA must train and save: peft's modules_to_save)."""
    config = copy.deepcopy(policy.config)
    config.num_labels = 1
    with torch.device("meta"):
        shell = _sequence_classification_class(config)(config)
    ref = policy.get_output_embeddings().weight
    head = getattr(shell, VALUE_HEAD).to_empty(device=ref.device).to(ref.dtype)
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
    setattr(policy, VALUE_HEAD, head)
    return [VALUE_HEAD]


def export_shared_value_model(policy: Any, path: Path) -> None:
    """Save a policy carrying a value head (`attach_value_head`, full weights) as the
    *ForSequenceClassification model of its trunk and head; it loads with
    AutoModelForSequenceClassification."""
    config = copy.deepcopy(policy.config)
    config.num_labels = 1
    cls = _sequence_classification_class(config)
    prefix = policy.base_model_prefix
    with torch.device("meta"):
        shell = cls(config)
    state = {k: v for k, v in policy.state_dict().items()
             if k.startswith(f"{prefix}.") or k.startswith(f"{VALUE_HEAD}.")}
    shell.load_state_dict(state, strict=True, assign=True)
    shell.save_pretrained(path, safe_serialization=True)


def forward_values(model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                   completion_ids: torch.Tensor, completion_mask: torch.Tensor, *,
                   share_prompts: bool, allow_lean: bool,
                   hidden: torch.Tensor | None = None) -> torch.Tensor:
    """Values [n, c] (float32) of the state before each completion token: the model's final
    hidden states (from the same forward the log-probs use, `reasoner.models.forward`) through
    its ``score`` head. `model`: a value model, or a policy with a value head; `hidden`: that
    forward's hidden states when the caller has them already (shared trunk)."""
    base = unwrapped(model)
    if hidden is None:
        hidden = forward_logits(base, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                return_hidden=True, share_prompts=share_prompts,
                                allow_lean=allow_lean)
    return getattr(base, VALUE_HEAD)(hidden).squeeze(-1).float()


@torch.no_grad()
def token_values(model: Any, seqs: Sequences, settings: ScoringSettings, engine: Engine
                 ) -> torch.Tensor:
    """The values [N, C] (float32) of a batch's completions without gradients, micro-batch by
    micro-batch, in the engine's precision; 0 on padding."""
    model.eval()
    out = []
    n = seqs.completion_ids.shape[0]
    with engine.autocast():
        for i in range(0, n, settings.micro_batch_size):
            s = slice(i, min(i + settings.micro_batch_size, n))
            v = forward_values(model, seqs.prompt_ids[s], seqs.prompt_mask[s],
                               seqs.completion_ids[s], seqs.completion_mask[s],
                               share_prompts=settings.share_prompts,
                               allow_lean=settings.allow_lean)
            out.append(v * seqs.completion_mask[s].to(v.dtype))
    return torch.cat(out) if out else torch.zeros(seqs.completion_ids.shape)
