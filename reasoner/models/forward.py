"""The one forward pass that scores completions, for the update and for the log-prob passes.

`forward_logits` runs the policy (or reference) model once over prompt + completion with the same
left-padding treatment generate used (attention mask + explicit position ids), and returns the
logits that predict each completion token (or the final hidden states the LM head turns into
them); the loss and log-prob code applies temperature and log-softmax.
"""

from __future__ import annotations

from typing import Any

import torch

from reasoner.models.lean import lean_decoder, lean_forward


def _forward_params(model: Any) -> Any:
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    try:
        return inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return {}


def supports_logits_to_keep(model: Any) -> bool:
    return "logits_to_keep" in _forward_params(model)


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword that hands a KV cache to `model`'s forward: ``cache`` in the transformers
    releases that have it (``past_key_values`` is deprecated there, to be removed in 5.40),
    ``past_key_values`` before."""
    name = "cache" if "cache" in _forward_params(model) else "past_key_values"
    return {name: cache, "use_cache": True}


def forward_logits(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    return_hidden: bool = False,
    share_prompts: bool = False,
    allow_lean: bool = True,
) -> torch.Tensor:
    """Logits [N, C, V] predicting each completion token (or the final hidden states [N, C, H]
    that the LM head turns into them, with `return_hidden`), from ONE forward over
    prompt + completion. Left padding is handled as generate does: attention mask plus
    position ids = cumsum(mask) - 1, so a padded row scores exactly like the unpadded sequence.
    The last completion token predicts nothing, so it is not fed.

    With `share_prompts`, rows with identical (prompt_ids, prompt_mask) -- a GRPO group -- run
    their prompt once: the unique prompts go through the model with a KV cache, the cache is
    gathered back to the N rows (differentiably) and the completions attend to it. Same values
    up to float rounding, gradients included; fewer FLOPs when G > 1.

    For a plain Qwen2/Llama/Mistral/Qwen3 model (`lean_decoder`), the forward runs
    `lean_forward`, the same ops as the model's forward without its module machinery, unless
    `allow_lean` is False (``model.lean_forward: off``); other models (peft, ZeRO-3, gradient
    checkpointing, ...) run their own forward."""
    c = completion_ids.shape[1]
    width = prompt_ids.shape[1] + c
    # a value / reward model (a ``score`` head, no LM head) takes the lean path for its hidden
    # states only
    lean = lean_decoder(model, width) if allow_lean and (
        return_hidden or hasattr(model, "lm_head")) else None
    if share_prompts and c > 0:
        shared = _forward_shared_prompts(model, lean, prompt_ids, prompt_mask, completion_ids,
                                         completion_mask, return_hidden)
        if shared is not None:
            return shared
    input_ids = torch.cat([prompt_ids, completion_ids[:, :-1]], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask[:, :-1]], dim=1).long()
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    if lean is not None and c > 0:
        blocks = [(input_ids, position_ids, attention_mask.bool(), None)]
        hidden = lean_forward(lean, blocks, keep=[c])[0]
        return hidden if return_hidden else lm_head_logits(model, hidden)
    if return_hidden:
        out = decoder_stack(model)(input_ids=input_ids, attention_mask=attention_mask,
                                   position_ids=position_ids, use_cache=False)
        return out.last_hidden_state[:, -c:, :]
    kwargs: dict[str, Any] = {}
    if supports_logits_to_keep(model):
        kwargs["logits_to_keep"] = c
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=False, **kwargs)
    return out.logits[:, -c:, :]


def decoder_stack(model: Any) -> Any:
    """The model's decoder stack without the head (its final hidden states); inside a peft
    wrapper, the wrapped model's (the adapters stay active in it)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, inner.base_model_prefix, None) or inner.get_decoder()


def lm_head_logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    head = model.lm_head
    return torch.nn.functional.linear(hidden, head.weight, head.bias)


def _forward_shared_prompts(
    model: Any,
    base: Any | None,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    return_hidden: bool,
) -> torch.Tensor | None:
    """forward_logits over unique prompts + a cache gathered to all rows; None when no two rows
    share a prompt (the caller then runs the plain forward). `base`: the decoder stack when the
    lean `lean_forward` may run (see `lean_decoder`), else None (the model's own forward)."""
    from transformers import DynamicCache

    p = prompt_ids.shape[1]
    key = torch.cat([prompt_ids, prompt_mask.to(prompt_ids.dtype)], dim=1)
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    if uniq.shape[0] == key.shape[0] or p == 0:
        return None
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    checkpointing = getattr(inner, "is_activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = getattr(inner, "is_gradient_checkpointing", False)
    if model.training and checkpointing:
        return None  # HF turns the cache off under gradient checkpointing
    u_ids, u_mask = uniq[:, :p], uniq[:, p:].long()
    u_pos = (u_mask.cumsum(dim=1) - 1).clamp(min=0)
    c = completion_ids.shape[1]
    start = prompt_mask.long().sum(dim=1, keepdim=True)
    # rows in length buckets, each fed its completion tokens but a row's last (w of them; w = 0:
    # only the first token is in the bucket, and the prompt predicts it)
    plan = [(idx, width - 1) for idx, width in
            (_length_buckets(completion_mask.long().sum(dim=1), c) if c > 1 else [])]
    buckets = []  # (row idx, w, key mask [n, p + w], position ids [n, w]) of the fed buckets
    for idx, w in plan:
        if w >= 1:
            key_mask = torch.cat([prompt_mask[idx], completion_mask[idx, :w]], dim=1).long()
            position_ids = start[idx] + torch.arange(w, device=start.device).unsqueeze(0)
            buckets.append((idx, w, key_mask, position_ids))
    if base is not None:  # prompts and all buckets in one packed lean forward
        blocks = [(u_ids, u_pos, u_mask.bool(), None)]
        blocks += [(completion_ids[idx, :w], pos, km.bool(), inverse[idx])
                   for idx, w, km, pos in buckets]
        # the prompts' last position predicts token 0; the buckets' every position the rest
        hidden = lean_forward(base, blocks, keep=[1] + [w for _, w, _, _ in buckets])
        first = hidden[0][inverse]
        rest_parts = iter(hidden[1:])
    else:
        net = decoder_stack(model) if return_hidden else model
        cache = DynamicCache(config=model.config)
        kw: dict[str, Any] = {}
        if not return_hidden and supports_logits_to_keep(model):
            kw["logits_to_keep"] = 1
        out = net(input_ids=u_ids, attention_mask=u_mask, position_ids=u_pos,
                  **cache_kwargs(net, cache), **kw)
        first = (out.last_hidden_state if return_hidden else out.logits)[:, -1:, :][inverse]
        prompt_kv = [(layer.keys, layer.values) for layer in cache.layers]
        hf_parts = []
        for idx, w, key_mask, position_ids in buckets:
            rows = inverse[idx]
            bucket_cache = DynamicCache(config=model.config)
            for li, (k, v) in enumerate(prompt_kv):
                bucket_cache.update(k[rows], v[rows], li)
            out = net(input_ids=completion_ids[idx, :w], attention_mask=key_mask,
                      position_ids=position_ids, **cache_kwargs(net, bucket_cache))
            hf_parts.append(out.last_hidden_state if return_hidden else out.logits)
        rest_parts = iter(hf_parts)
    if plan:  # completion positions 1.. from the buckets, padded to c - 1, in row order
        parts = [torch.nn.functional.pad(next(rest_parts), (0, 0, 0, c - 1 - w)) if w >= 1
                 else first.new_zeros((idx.numel(), c - 1, first.shape[-1])) for idx, w in plan]
        rest = torch.cat(parts) if len(parts) > 1 else parts[0]
        if len(plan) > 1:
            rest = rest[torch.argsort(torch.cat([idx for idx, _ in plan]))]
        first = torch.cat([first, rest], dim=1)
    return lm_head_logits(model, first) if base is not None and not return_hidden else first


def _length_buckets(lengths: torch.Tensor, width: int) -> list[tuple[torch.Tensor, int]]:
    """Rows split into at most two groups by completion length, each with its own width (the
    longest completion in it), when that cuts the fed columns by >= 10 %; else one group."""
    n = lengths.numel()
    whole = [(torch.arange(n, device=lengths.device), width)]
    if n < 2:
        return whole
    sorted_len, perm = torch.sort(lengths, stable=True)
    s = sorted_len.tolist()
    longest = max(s[-1], 1)
    best_k, best_cost = 0, n * longest
    for k in range(1, n):
        cost = k * max(s[k - 1], 1) + (n - k) * longest
        if cost < best_cost:
            best_k, best_cost = k, cost
    if best_k == 0 or best_cost > 0.9 * n * width:
        return whole
    return [(perm[:best_k], max(s[best_k - 1], 1)), (perm[best_k:], min(longest, width))]
