"""Rollouts: G sampled completions per prompt, and the one forward pass that re-scores them.

`generate_rollouts` runs Hugging Face ``model.generate`` (KV cache) on the prompts, each repeated
G times (rows ``g*G .. g*G+G-1`` are prompt g's group), and returns a `Rollout` of padded tensors.

`forward_logits` runs the policy (or reference) model once over prompt + completion with the same
left-padding treatment generate used (attention mask + explicit position ids), and returns the
logits that predict each completion token; the loss code applies temperature and log-softmax.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Rollout:
    """One batch of completions; N = B * G rows, group g = rows [g*G, (g+1)*G).

    prompt_ids / prompt_mask:   [N, P], LEFT padded.
    completion_ids:             [N, C], RIGHT padded with the pad id (C <= max_completion_length:
                                trimmed to the longest completion).
    completion_mask:            [N, C], 1 for tokens up to and including the first EOS, 0 after.
    completion_texts:           N decoded completions (special tokens such as EOS dropped; added
                                non-special tokens such as the <think>/<answer> tags kept).
    truncated:                  [N] bool, no EOS within max_completion_length.
    group_ids:                  [N] long, the prompt index of each row.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    completion_texts: list[str]
    truncated: torch.Tensor
    group_ids: torch.Tensor
    num_generations: int

    @property
    def completion_lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends a completion: the tokenizer's EOS and the generation config's."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, gen_eos):
        if value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if int(v) not in ids:
                ids.append(int(v))
    if not ids:
        raise ValueError("neither the tokenizer nor the generation config defines an EOS token")
    return ids


def completion_masks(
    completion_ids: torch.Tensor, eos_ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [N, C] of tokens up to and including the first EOS, truncated [N] = no EOS)."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    n, c = completion_ids.shape
    has_eos = is_eos.any(dim=1)
    first = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full((n,), c, device=is_eos.device))
    idx = torch.arange(c, device=completion_ids.device).unsqueeze(0)
    mask = (idx <= first.unsqueeze(1)).long()
    return mask, ~has_eos


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's RNG(s) for sampling, restoring the previous state afterwards."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def generate_rollouts(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    num_generations: int,
    max_completion_length: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    do_sample: bool = True,
    generator_seed: int | None = None,
    add_special_tokens: bool = False,
    return_logits: bool = False,
    generate_kwargs: dict[str, Any] | None = None,
) -> Rollout:
    """Sample `num_generations` completions for each prompt with ``model.generate``.

    temperature == 0 (or do_sample=False) is greedy decoding. With `return_logits`, the
    generate-time logits [N, C, V] are attached as ``rollout.generation_logits`` (for tests).
    `generate_kwargs` go to ``model.generate`` as they are (e.g. a ``logits_processor``).
    """
    if num_generations < 1 or max_completion_length < 1:
        raise ValueError("num_generations and max_completion_length must be >= 1")
    if not prompts:
        raise ValueError("no prompts")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token (load it with load_model_and_tokenizer)")
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens
        )
    finally:
        tokenizer.padding_side = old_side
    prompt_ids = enc["input_ids"].repeat_interleave(num_generations, dim=0).to(device)
    prompt_mask = enc["attention_mask"].repeat_interleave(num_generations, dim=0).to(device)
    eos_ids = eos_token_ids(model, tokenizer)
    sample = do_sample and temperature > 0
    gen_kwargs: dict[str, Any] = dict(
        max_new_tokens=max_completion_length,
        do_sample=sample,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids,
        use_cache=True,
        return_dict_in_generate=True,
        output_logits=return_logits,
    )
    if sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
    else:  # silence generation_config sampling defaults in greedy mode
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    gen_kwargs.update(generate_kwargs or {})

    was_training = model.training
    model.eval()
    try:
        with _seeded(generator_seed, device):
            out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **gen_kwargs)
    finally:
        model.train(was_training)

    completion_ids = out.sequences[:, prompt_ids.shape[1] :]
    completion_mask, truncated = completion_masks(completion_ids, eos_ids)
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    keep = max(int(completion_mask.sum(dim=1).max()), 1)
    completion_ids, completion_mask = completion_ids[:, :keep], completion_mask[:, :keep]
    texts = []
    for ids, m in zip(completion_ids.tolist(), completion_mask.tolist()):
        toks = [t for t, k in zip(ids, m) if k and t not in eos_ids]
        texts.append(tokenizer.decode(toks, skip_special_tokens=True))
    n = len(prompts)
    rollout = Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids.contiguous(),
        completion_mask=completion_mask,
        completion_texts=texts,
        truncated=truncated.to(device),
        group_ids=torch.arange(n, device=device).repeat_interleave(num_generations),
        num_generations=num_generations,
    )
    if return_logits:
        logits = torch.stack(out.logits, dim=1)[:, :keep]
        rollout.generation_logits = logits  # type: ignore[attr-defined]
    return rollout


def _supports_logits_to_keep(model: Any) -> bool:
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def forward_logits(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    return_hidden: bool = False,
) -> torch.Tensor:
    """Logits [N, C, V] predicting each completion token (or the final hidden states [N, C, H]
    that the LM head turns into them, with `return_hidden`), from ONE forward over
    prompt + completion. Left padding is handled as generate does: attention mask plus
    position ids = cumsum(mask) - 1, so a padded row scores exactly like the unpadded sequence."""
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1).long()
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    c = completion_ids.shape[1]
    if return_hidden:
        base = getattr(model, model.base_model_prefix, None) or model.get_decoder()
        out = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False)
        return out.last_hidden_state[:, -c - 1 : -1, :]
    kwargs: dict[str, Any] = {}
    if _supports_logits_to_keep(model):
        kwargs["logits_to_keep"] = c + 1
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=False, **kwargs)
    return out.logits[:, -c - 1 : -1, :]


def completion_logprobs(
    model: Any,
    rollout: Rollout,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token log-probs [N, C] of the rollout's completion tokens (pure torch, for tests,
    evaluation and reference implementations)."""
    logits = forward_logits(
        model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask
    ).float()
    if temperature and temperature != 1.0:
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)
