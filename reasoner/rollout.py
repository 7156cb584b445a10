"""Rollouts: G sampled completions per prompt, and the one forward pass that re-scores them.

`generate_rollouts` runs our own KV-cache decode loop (or Hugging Face ``model.generate``,
engine="hf") on the prompts, each repeated G times (rows ``g*G .. g*G+G-1`` are prompt g's
group), and returns a `Rollout` of padded tensors.

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


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then top-p (nucleus) filtering of [N, V] logits, as HF's warpers do: a token is
    removed (set to -inf) if its logit is below the k-th largest, or if, in ascending order of
    probability, the cumulative probability up to and including it is <= 1 - top_p (the most
    likely token always stays)."""
    v = logits.shape[-1]
    if 0 < top_k < v:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= 1.0 - top_p
        remove_sorted[..., -1] = False  # keep at least the most likely token
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_tokens(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row of [N, V] logits: temperature, top-k, top-p, then an exact draw from the
    softmax by inverse CDF (one uniform per row; u in (0, 1] never selects a zero-prob token)."""
    x = logits.float()
    if temperature != 1.0:
        x = x / temperature
    x = filter_logits(x, top_k, top_p)
    cdf = x.softmax(dim=-1).cumsum(dim=-1)
    u = 1.0 - torch.rand((x.shape[0], 1), generator=generator, device=x.device, dtype=cdf.dtype)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:])
    return idx.squeeze(1).clamp_(max=x.shape[-1] - 1)


def _fast_decoder(model: Any) -> Any | None:
    """The decoder stack when `model` is a plain (no adapters) Qwen2/Llama causal LM whose
    decode step `_fast_step` reproduces; None otherwise (the loop then calls the model)."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) not in ("qwen2", "llama"):
        return None
    if getattr(cfg, "use_sliding_window", False) or getattr(cfg, "pretraining_tp", 1) != 1:
        return None
    base = getattr(model, "model", None)
    head = getattr(model, "lm_head", None)
    if base is None or type(head) is not torch.nn.Linear or not hasattr(base, "rotary_emb"):
        return None
    for layer in base.layers:
        a, m = layer.self_attn, layer.mlp
        for lin in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj):
            if type(lin) is not torch.nn.Linear:
                return None
    return base


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def _fast_step(
    base: Any,
    head: torch.nn.Linear,
    tok: torch.Tensor,
    pos: torch.Tensor,
    kv: list[tuple[torch.Tensor, torch.Tensor]],
    length: int,
    key_mask: torch.Tensor,
) -> torch.Tensor:
    """One decode step of a Qwen2/Llama stack without the HF module machinery: the same ops as
    the model's forward (RMSNorm, RoPE, GQA SDPA, SwiGLU) on preallocated KV buffers.
    tok [n], pos [n, 1], kv buffers [n, kv_heads, T, head_dim] filled up to `length`,
    key_mask [n, length + 1] bool. Returns the next-token logits [n, V]."""
    import torch.nn.functional as F

    n = tok.shape[0]
    x = base.embed_tokens(tok[:, None])
    cos, sin = base.rotary_emb(x, pos)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    mask = key_mask[:, None, None, :]
    for layer, (kbuf, vbuf) in zip(base.layers, kv):
        a, m = layer.self_attn, layer.mlp
        h = layer.input_layernorm(x)
        q = F.linear(h, a.q_proj.weight, a.q_proj.bias).view(n, 1, -1, a.head_dim).transpose(1, 2)
        k = F.linear(h, a.k_proj.weight, a.k_proj.bias).view(n, 1, -1, a.head_dim).transpose(1, 2)
        v = F.linear(h, a.v_proj.weight, a.v_proj.bias).view(n, 1, -1, a.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        kbuf[:, :, length] = k[:, :, 0]
        vbuf[:, :, length] = v[:, :, 0]
        keys, values = kbuf[:, :, : length + 1], vbuf[:, :, : length + 1]
        o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=a.scaling,
                                           enable_gqa=q.shape[1] != keys.shape[1])
        o = o.transpose(1, 2).reshape(n, 1, -1)
        x = x + F.linear(o, a.o_proj.weight, a.o_proj.bias)
        h = layer.post_attention_layernorm(x)
        gate = m.act_fn(F.linear(h, m.gate_proj.weight, m.gate_proj.bias))
        up = F.linear(h, m.up_proj.weight, m.up_proj.bias)
        x = x + F.linear(gate * up, m.down_proj.weight, m.down_proj.bias)  # Llama mlp_bias
    x = base.norm(x)
    return F.linear(x[:, -1], head.weight, head.bias)


@torch.inference_mode()
def decode_loop(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_ids: list[int],
    pad_id: int,
    sample: bool,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    return_logits: bool = False,
    compact: bool = True,
    fast: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Our own KV-cache decode of left-padded prompts: one prefill (attention mask + explicit
    position ids = cumsum(mask) - 1), then one forward per new token. Rows stop at their first
    EOS (later tokens are `pad_id`); with `compact`, finished rows are dropped from the batch and
    the cache, so the remaining forwards only compute the rows still running. With `fast` (and a
    plain Qwen2/Llama model), the decode steps run `_fast_step` on preallocated KV buffers
    instead of the HF forward (same ops; the prefill is always the HF forward).

    Returns (tokens [N, T] with T <= max_new_tokens, raw logits [N, T, V] or None; logits of
    the steps after a row finished are zeros)."""
    from transformers import DynamicCache

    n = prompt_ids.shape[0]
    device = prompt_ids.device
    mask = prompt_mask.long()
    pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    kw: dict[str, Any] = {"logits_to_keep": 1} if _supports_logits_to_keep(model) else {}
    # prefill each distinct prompt once (a GRPO group repeats its prompt G times)
    uniq, inverse = torch.unique(torch.cat([prompt_ids, mask], dim=1), dim=0, return_inverse=True)
    p = prompt_ids.shape[1]
    if uniq.shape[0] < n:
        u_mask = uniq[:, p:]
        u_pos = (u_mask.cumsum(dim=1) - 1).clamp(min=0)
        out = model(input_ids=uniq[:, :p], attention_mask=u_mask, position_ids=u_pos,
                    past_key_values=cache, use_cache=True, **kw)
        cache.batch_select_indices(inverse)
        logits = out.logits[:, -1, :][inverse]
    else:
        out = model(input_ids=prompt_ids, attention_mask=mask, position_ids=pos,
                    past_key_values=cache, use_cache=True, **kw)
        logits = out.logits[:, -1, :]
    next_pos = pos[:, -1:] + 1
    base = _fast_decoder(model) if fast else None
    kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    length = prompt_ids.shape[1]
    if base is not None:  # copy the prefill cache into buffers with room for the new tokens
        for layer in cache.layers:
            k, v = layer.keys, layer.values
            shape = (k.shape[0], k.shape[1], length + max_new_tokens, k.shape[3])
            kb, vb = k.new_empty(shape), v.new_empty(shape)
            kb[:, :, :length], vb[:, :, :length] = k, v
            kv.append((kb, vb))
        cache = None
    tokens = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=device)
    all_logits = (torch.zeros((n, max_new_tokens, logits.shape[-1]), dtype=logits.dtype,
                              device=device) if return_logits else None)
    eos_t = torch.tensor(eos_ids, dtype=torch.long, device=device)
    active = torch.arange(n, device=device)  # original row of each batch row
    finished = torch.zeros(n, dtype=torch.bool, device=device)  # per batch row
    steps = 0
    for t in range(max_new_tokens):
        if all_logits is not None:
            all_logits[active, t] = logits.masked_fill(finished[:, None], 0.0)
        if sample:
            tok = sample_tokens(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                generator=generator)
        else:
            tok = logits.argmax(dim=-1)
        tok = tok.masked_fill(finished, pad_id)
        tokens[active, t] = tok
        steps = t + 1
        finished = finished | torch.isin(tok, eos_t)
        n_done = int(finished.sum())
        if t == max_new_tokens - 1 or n_done == finished.numel():
            break
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        if compact and n_done >= max(1, finished.numel() // 16):  # drop finished rows
            keep = (~finished).nonzero().squeeze(1)
            if base is None:
                cache.batch_select_indices(keep)
            else:
                kv = [(kb[keep], vb[keep]) for kb, vb in kv]
            mask, tok, next_pos, active = mask[keep], tok[keep], next_pos[keep], active[keep]
            finished = finished[keep]
        if base is None:
            out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos,
                        past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1, :]
        else:
            logits = _fast_step(base, model.lm_head, tok, next_pos, kv, length, mask.bool())
            length += 1
        next_pos = next_pos + 1
    tokens = tokens[:, :steps]
    return tokens, None if all_logits is None else all_logits[:, :steps]


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
) -> Rollout:
    """Sample `num_generations` completions for each prompt.

    engine: "loop" is our own KV-cache decode loop (`decode_loop`, torch.Generator seeded from
    `generator_seed`, finished rows dropped from the batch); "hf" is ``model.generate`` (global
    RNG seeded from `generator_seed` and restored); "auto" = "hf" when `generate_kwargs` are
    given (they go to ``model.generate`` as they are, e.g. a ``logits_processor``), else "loop".
    Both engines sample from the same distribution but draw different random numbers.

    temperature == 0 (or do_sample=False) is greedy decoding. With `return_logits`, the
    generate-time logits [N, C, V] are attached as ``rollout.generation_logits`` (for tests).
    """
    if num_generations < 1 or max_completion_length < 1:
        raise ValueError("num_generations and max_completion_length must be >= 1")
    if not prompts:
        raise ValueError("no prompts")
    if engine not in ("auto", "loop", "hf"):
        raise ValueError(f"engine must be 'auto', 'loop' or 'hf', got {engine!r}")
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
    try:
        if engine == "loop":
            gen = None
            if sample and generator_seed is not None:
                gen = torch.Generator(device=device)
                gen.manual_seed(int(generator_seed))
            completion_ids, gen_logits = decode_loop(
                model, prompt_ids, prompt_mask, max_new_tokens=max_completion_length,
                eos_ids=eos_ids, pad_id=tokenizer.pad_token_id, sample=sample,
                temperature=temperature, top_k=top_k, top_p=top_p, generator=gen,
                return_logits=return_logits,
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
    )
    if gen_logits is not None:
        rollout.generation_logits = gen_logits[:, :keep]  # type: ignore[attr-defined]
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
    share_prompts: bool = False,
) -> torch.Tensor:
    """Logits [N, C, V] predicting each completion token (or the final hidden states [N, C, H]
    that the LM head turns into them, with `return_hidden`), from ONE forward over
    prompt + completion. Left padding is handled as generate does: attention mask plus
    position ids = cumsum(mask) - 1, so a padded row scores exactly like the unpadded sequence.
    The last completion token predicts nothing, so it is not fed.

    With `share_prompts`, rows with identical (prompt_ids, prompt_mask) -- a GRPO group -- run
    their prompt once: the unique prompts go through the model with a KV cache, the cache is
    gathered back to the N rows (differentiably) and the completions attend to it. Same values
    up to float rounding, gradients included; fewer FLOPs when G > 1."""
    c = completion_ids.shape[1]
    if share_prompts and c > 0:
        shared = _forward_shared_prompts(model, prompt_ids, prompt_mask, completion_ids,
                                         completion_mask, return_hidden)
        if shared is not None:
            return shared
    input_ids = torch.cat([prompt_ids, completion_ids[:, :-1]], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask[:, :-1]], dim=1).long()
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    if return_hidden:
        base = getattr(model, model.base_model_prefix, None) or model.get_decoder()
        out = base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False)
        return out.last_hidden_state[:, -c:, :]
    kwargs: dict[str, Any] = {}
    if _supports_logits_to_keep(model):
        kwargs["logits_to_keep"] = c
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=False, **kwargs)
    return out.logits[:, -c:, :]


def _forward_shared_prompts(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    return_hidden: bool,
) -> torch.Tensor | None:
    """forward_logits over unique prompts + a cache gathered to all rows; None when no two rows
    share a prompt (the caller then runs the plain forward)."""
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
    net = (getattr(model, model.base_model_prefix, None) or model.get_decoder()
           ) if return_hidden else model
    cache = DynamicCache(config=model.config)
    kw: dict[str, Any] = {}
    if not return_hidden and _supports_logits_to_keep(model):
        kw["logits_to_keep"] = 1
    out = net(input_ids=u_ids, attention_mask=u_mask, position_ids=u_pos,
              past_key_values=cache, use_cache=True, **kw)
    first = (out.last_hidden_state if return_hidden else out.logits)[:, -1:, :][inverse]
    c = completion_ids.shape[1]
    if c == 1:
        return first
    prompt_kv = [(layer.keys, layer.values) for layer in cache.layers]
    start = prompt_mask.long().sum(dim=1, keepdim=True)
    parts, order = [], []
    for idx, width in _length_buckets(completion_mask.long().sum(dim=1), c):
        order.append(idx)
        if width <= 1:  # only the first token (predicted by the prompt) is in this bucket
            parts.append(first.new_zeros((idx.numel(), c - 1, first.shape[-1])))
            continue
        w = width - 1  # the completion tokens fed: all but a row's last
        bucket_cache = DynamicCache(config=model.config)
        for li, (k, v) in enumerate(prompt_kv):
            rows = inverse[idx]
            bucket_cache.update(k[rows], v[rows], li)
        attention_mask = torch.cat([prompt_mask[idx], completion_mask[idx, :w]], dim=1).long()
        position_ids = start[idx] + torch.arange(w, device=start.device).unsqueeze(0)
        out = net(input_ids=completion_ids[idx, :w], attention_mask=attention_mask,
                  position_ids=position_ids, past_key_values=bucket_cache, use_cache=True)
        rest = out.last_hidden_state if return_hidden else out.logits
        parts.append(torch.nn.functional.pad(rest, (0, 0, 0, c - 1 - w)))
    rest = torch.cat(parts) if len(parts) > 1 else parts[0]
    if len(order) > 1:
        rest = rest[torch.argsort(torch.cat(order))]
    return torch.cat([first, rest], dim=1)


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
