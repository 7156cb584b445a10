"""Rollouts: G sampled completions per prompt.

`generate_rollouts` runs our own KV-cache decode loop (`reasoner.rollout.decode`, engine="loop")
or Hugging Face ``model.generate`` (engine="hf") on the prompts, each repeated G times (rows
``g*G .. g*G+G-1`` are prompt g's group), and returns a `Rollout` of padded tensors. Another
generation engine plugs in behind the same function and record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from reasoner.models.lean import forward_path
from reasoner.rollout.decode import decode_loop

ENGINES = ("auto", "loop", "hf")


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
    forward:                    what decoded: "lean", or "transformers (why)" (see
                                `reasoner.models.lean.forward_path`).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    completion_texts: list[str]
    truncated: torch.Tensor
    group_ids: torch.Tensor
    num_generations: int
    forward: str = "transformers"

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
    engine: str = "auto",
    allow_lean: bool = True,
) -> Rollout:
    """Sample `num_generations` completions for each prompt.

    engine: "loop" is our own KV-cache decode loop (`decode_loop`, torch.Generator seeded from
    `generator_seed`, finished rows dropped from the batch); "hf" is ``model.generate`` (global
    RNG seeded from `generator_seed` and restored); "auto" = "hf" when `generate_kwargs` are
    given (they go to ``model.generate`` as they are, e.g. a ``logits_processor``), else "loop".
    Both engines sample from the same distribution but draw different random numbers.

    `allow_lean`: the loop engine may run the lean decoder of Qwen2 / Llama / Mistral / Qwen3
    (``model.lean_forward``).
    temperature == 0 (or do_sample=False) is greedy decoding. With `return_logits`, the
    generate-time logits [N, C, V] are attached as ``rollout.generation_logits`` (for tests).
    """
    if num_generations < 1 or max_completion_length < 1:
        raise ValueError("num_generations and max_completion_length must be >= 1")
    if not prompts:
        raise ValueError("no prompts")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        engine = "hf" if generate_kwargs else "loop"
    if engine == "loop" and generate_kwargs:
        raise ValueError("generate_kwargs need engine='hf' (the loop engine takes no HF kwargs)")
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

    was_training = model.training
    model.eval()
    gen_logits: torch.Tensor | None = None
    path = "transformers (engine=hf)"
    try:
        if engine == "loop":
            # the predicate decode_loop applies, on the same model state and width
            path = forward_path(model, allow_lean, prompt_ids.shape[1] + max_completion_length)
            gen = None
            if sample and generator_seed is not None:
                gen = torch.Generator(device=device)
                gen.manual_seed(int(generator_seed))
            completion_ids, gen_logits = decode_loop(
                model, prompt_ids, prompt_mask, max_new_tokens=max_completion_length,
                eos_ids=eos_ids, pad_id=tokenizer.pad_token_id, sample=sample,
                temperature=temperature, top_k=top_k, top_p=top_p, generator=gen,
                return_logits=return_logits, allow_lean=allow_lean,
            )
        else:
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
            with _seeded(generator_seed, device):
                out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask,
                                     **gen_kwargs)
            completion_ids = out.sequences[:, prompt_ids.shape[1] :]
            if return_logits:
                gen_logits = torch.stack(out.logits, dim=1)
    finally:
        model.train(was_training)

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
        forward=path,
    )
    if gen_logits is not None:
        rollout.generation_logits = gen_logits[:, :keep]  # type: ignore[attr-defined]
    return rollout
