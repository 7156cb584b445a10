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
    """The decoder stack when the lean forward (`_fast_forward`, `_fast_step`) may stand in for
    `model`'s own forward: exactly a Hugging Face Qwen2/Llama causal LM of full attention whose
    weights are plain tensors. None otherwise, and the caller runs the model's modules:

    - any other class, including a peft wrapper; a projection that is not a plain Linear
      (adapter layers) or a norm that is not the model's own RMSNorm;
    - DeepSpeed ZeRO-3 parameters (`ds_id`) that are not all gathered, or forward hooks
      (ZeRO-3's, accelerate offload, user hooks) on a module whose forward it skips: the hooks
      gather / move weights or see activations;
    - while training: gradient checkpointing on, or attention dropout > 0;
    - sliding-window attention, or pretraining_tp != 1.

    This is the one place that decides; keep it in step with what `_fast_forward` computes."""
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    if type(model) not in (Qwen2ForCausalLM, LlamaForCausalLM):
        return None
    cfg = model.config
    if getattr(cfg, "use_sliding_window", False) or getattr(cfg, "pretraining_tp", 1) != 1:
        return None
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
        return None
    if model.training:
        checkpointing = getattr(model, "is_activation_checkpointing", None)
        if checkpointing is None:
            checkpointing = getattr(model, "is_gradient_checkpointing", False)
        if checkpointing or getattr(cfg, "attention_dropout", 0.0):
            return None
    base = model.model
    head = model.lm_head
    if type(head) is not torch.nn.Linear or not hasattr(base, "rotary_emb"):
        return None
    norm_types = (LlamaRMSNorm, Qwen2RMSNorm)
    if type(base.norm) not in norm_types:
        return None
    # modules whose forward the lean path skips (the embedding, rotary embedding and activation
    # are called as modules: their hooks run, e.g. the input-grad hook that gradient
    # checkpointing puts on the embedding)
    bypassed = [model, base, head, base.layers, base.norm]
    for layer in base.layers:
        a, m = layer.self_attn, layer.mlp
        lins = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj)
        if any(type(lin) is not torch.nn.Linear for lin in lins):
            return None
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        if any(type(norm) not in norm_types for norm in norms):
            return None
        bypassed += [layer, a, m, *lins, *norms]
    for mod in bypassed:
        if mod._forward_hooks or mod._forward_pre_hooks or "_hf_hook" in mod.__dict__:
            return None
    # ZeRO-3 shards: only while every weight is gathered (and the hooks are off, checked above),
    # as in the trainer's rollout phase (engine.DeepSpeedEngine.generation)
    if any(hasattr(p, "ds_id") and getattr(getattr(p, "ds_status", None), "name", "") != "AVAILABLE"
           for p in model.parameters()):
        return None
    return base


# The lean decoder math, shared by the decode step (`_fast_step`) and the scoring / training
# forward (`_fast_forward`). Tokens are rows of a 2-D matrix x [T, H]; only attention sees the
# [rows, heads, tokens, head_dim] layout.


def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Qwen2RMSNorm / LlamaRMSNorm: w * (x * rsqrt(mean(x^2) + eps)), normalised in float32
    (or x's dtype when wider: HF's module uses float32 even for float64 input) and cast back to
    x's dtype before the weight. Returns (y, x_hat, rsqrt, x_hat in x's dtype)."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    r = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    xh = xf * r
    xc = xh.to(x.dtype)
    return w * xc, xh, r, xc


class _RMSNorm(torch.autograd.Function):
    """`_rms_norm` as one autograd node with a hand-written backward (fewer, fused ops than
    autograd's six nodes)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        y, xh, r, xc = _rms_norm(x, w, eps)
        ctx.save_for_backward(xh, r, xc, w)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        xh, r, xc, w = ctx.saved_tensors
        gw = None
        if ctx.needs_input_grad[1]:
            gw = (g * xc).reshape(-1, g.shape[-1]).sum(0).to(w.dtype)
        gxh = (g * w).to(xc.dtype).to(xh.dtype)
        dot = (gxh * xh).mean(-1, keepdim=True)
        gx = gxh.addcmul_(xh, dot, value=-1.0).mul_(r)  # r * (gxh - xh * dot), in place
        return gx.to(xc.dtype), gw, None


def _norm(norm: Any, x: torch.Tensor) -> torch.Tensor:
    w = norm.weight
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        return _RMSNorm.apply(x, w, norm.variance_epsilon)
    return _rms_norm(x, w, norm.variance_epsilon)[0]  # (no autograd node when decoding)


def _layer_qkv(
    layer: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A decoder layer's input norm, q/k/v projections and RoPE: x [T, H] -> q [T, heads, d],
    k and v [T, kv_heads, d]. cos, sin [T, 1, d] from `_rope` (its sin carries rotate_half's
    sign, so rotate_half(q) * sin_hf == roll(q, d / 2) * sin)."""
    import torch.nn.functional as F

    a = layer.self_attn
    t, d = x.shape[0], a.head_dim
    h = _norm(layer.input_layernorm, x)
    q = F.linear(h, a.q_proj.weight, a.q_proj.bias).view(t, -1, d)
    k = F.linear(h, a.k_proj.weight, a.k_proj.bias).view(t, -1, d)
    v = F.linear(h, a.v_proj.weight, a.v_proj.bias).view(t, -1, d)
    q = q * cos + q.roll(d // 2, dims=-1) * sin
    k = k * cos + k.roll(d // 2, dims=-1) * sin
    return q, k, v


def _layer_out(layer: Any, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """The rest of a decoder layer after attention, o [T, heads * d]: o_proj into the residual,
    post-attention norm, SwiGLU MLP into the residual (Llama's mlp_bias included)."""
    import torch.nn.functional as F

    a, m = layer.self_attn, layer.mlp
    x = x + F.linear(o, a.o_proj.weight, a.o_proj.bias)
    h = _norm(layer.post_attention_layernorm, x)
    gate = m.act_fn(F.linear(h, m.gate_proj.weight, m.gate_proj.bias))
    up = F.linear(h, m.up_proj.weight, m.up_proj.bias)
    return x + F.linear(gate * up, m.down_proj.weight, m.down_proj.bias)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
            scale: float) -> torch.Tensor:
    """Attention of q [n, heads, t, d] over k, v [n, kv_heads, L, d]; returns [n * t,
    heads * d], token-major. mask: bool [n, 1, t, L] (SDPA, GQA inside it, no repeated K/V),
    or for a decode step (t == 1) an additive float mask [n, 1, 1, L] (0 / -inf): the same
    math as two small matmuls, which beat SDPA's kernel at one query per row on a CPU (the
    heads sharing a K/V head are the rows of one [g, d] @ [d, L] product)."""
    import torch.nn.functional as F

    n, hq, t, d = q.shape
    kvh = k.shape[1]
    if mask.is_floating_point():
        s = torch.matmul(q.view(n, kvh, hq // kvh, d), k.transpose(-1, -2))
        s = s.mul_(scale).add_(mask).softmax(dim=-1)
        return torch.matmul(s, v).view(n, hq * d)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                       enable_gqa=hq != kvh)
    return o.transpose(1, 2).reshape(n * t, -1)


def _rope(base: Any, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, 1, d] for positions pos [T] from the model's own rotary embedding; sin's
    first half negated (rotate_half's sign, exact), for `_layer_qkv`."""
    cos, sin = base.rotary_emb(x[None], pos[None])
    h = sin.shape[-1] // 2
    sin = torch.cat([-sin[..., :h], sin[..., h:]], dim=-1)
    return cos[0].unsqueeze(1), sin[0].unsqueeze(1)


def _block_mask(key_mask: torch.Tensor, t: int) -> torch.Tensor:
    """[n, 1, t, p + t] bool: token i of a block of t tokens attends to the existing keys
    (key_mask [n, p + t]: p prefix keys then the block's own) up to its own position, and
    always to itself (so a padding token's row is never empty; no real token sees a pad key)."""
    p = key_mask.shape[1] - t
    ar = torch.arange(t, device=key_mask.device)
    causal = ar[None, :] <= ar[:, None]
    mask = key_mask[:, None, :] & torch.cat([causal.new_ones((t, p)), causal], dim=1)
    mask[:, ar, p + ar] = True
    return mask[:, None]


def _fast_forward(
    base: Any,
    blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]],
    kv_out: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> list[torch.Tensor]:
    """The decoder stack's forward without the HF module machinery (`_layer_qkv`, `_attend`,
    `_layer_out`, as `_fast_step`; autograd flows through them) over several blocks of tokens
    at once: the blocks' tokens are packed into one matrix, so every projection, norm and MLP
    runs once per layer for all of them; only attention runs per block.

    blocks[b] = (ids [n, t], pos [n, t], key_mask [n, p + t] bool, rows [n] or None). With rows,
    the block's keys are prefixed by block 0's keys and values of rows `rows` (block 0 is then
    a prompt block of width p, e.g. each distinct prompt once, and this block continues it);
    without, p = 0. Returns the final-normed hidden states [n, t, H] of each block; `kv_out`,
    if given, receives each layer's (k, v) [n, kv_heads, t, d] of block 0 (a prefill's cache)."""
    ids = torch.cat([b[0].reshape(-1) for b in blocks])
    pos = torch.cat([b[1].reshape(-1) for b in blocks])
    x = base.embed_tokens(ids)
    cos, sin = _rope(base, x, pos)
    shapes = [tuple(b[0].shape) for b in blocks]
    sizes = [n * t for n, t in shapes]
    masks = [_block_mask(b[2], b[0].shape[1]) for b in blocks]
    for layer in base.layers:
        q, k, v = _layer_qkv(layer, x, cos, sin)
        outs, first = [], None
        # split (not slices): its backward is one cat, where each slice's would be a zero fill
        for (n, t), mask, (_, _, _, rows), qb, kb, vb in zip(
                shapes, masks, blocks, q.split(sizes), k.split(sizes), v.split(sizes)):
            qb, kb, vb = (z.view(n, t, -1, z.shape[-1]).transpose(1, 2) for z in (qb, kb, vb))
            if first is None:
                first = (kb, vb)
                if kv_out is not None:
                    kv_out.append(first)
            if rows is not None:
                kb = torch.cat([first[0][rows], kb], dim=2)
                vb = torch.cat([first[1][rows], vb], dim=2)
            outs.append(_attend(qb, kb, vb, mask, layer.self_attn.scaling))
        x = _layer_out(layer, x, torch.cat(outs) if len(outs) > 1 else outs[0])
    x = _norm(base.norm, x)
    return [z.view(n, t, -1) for z, (n, t) in zip(x.split(sizes), shapes)]


def _fast_step(
    base: Any,
    head: torch.nn.Linear,
    tok: torch.Tensor,
    pos: torch.Tensor,
    kv: list[tuple[torch.Tensor, torch.Tensor]],
    length: int,
    key_mask: torch.Tensor,
) -> torch.Tensor:
    """One decode step of a Qwen2/Llama stack without the HF module machinery: the layer math
    of `_fast_forward` on preallocated KV buffers (attention as matmuls, see `_attend`).
    tok [n], pos [n, 1], kv buffers [n, kv_heads, T, head_dim] filled up to `length`,
    key_mask [n, length + 1] bool. Returns the next-token logits [n, V]."""
    import torch.nn.functional as F

    x = base.embed_tokens(tok)
    cos, sin = _rope(base, x, pos[:, 0])
    mask = x.new_zeros(key_mask.shape).masked_fill_(~key_mask, float("-inf"))[:, None, None]
    for layer, (kbuf, vbuf) in zip(base.layers, kv):
        q, k, v = _layer_qkv(layer, x, cos, sin)
        kbuf[:, :, length] = k
        vbuf[:, :, length] = v
        keys, values = kbuf[:, :, : length + 1], vbuf[:, :, : length + 1]
        x = _layer_out(layer, x, _attend(q[:, :, None], keys, values, mask,
                                         layer.self_attn.scaling))
    x = _norm(base.norm, x)
    return F.linear(x, head.weight, head.bias)


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
    plain Qwen2/Llama model, see `_fast_decoder`), the prefill runs `_fast_forward` and the
    decode steps `_fast_step` on preallocated KV buffers instead of the HF forward (same ops).

    Returns (tokens [N, T] with T <= max_new_tokens, raw logits [N, T, V] or None; logits of
    the steps after a row finished are zeros)."""
    from transformers import DynamicCache

    n = prompt_ids.shape[0]
    device = prompt_ids.device
    mask = prompt_mask.long()
    pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
    # prefill each distinct prompt once (a GRPO group repeats its prompt G times)
    uniq, inverse = torch.unique(torch.cat([prompt_ids, mask], dim=1), dim=0, return_inverse=True)
    p = length = prompt_ids.shape[1]
    u_ids, u_mask = uniq[:, :p], uniq[:, p:]
    u_pos = (u_mask.cumsum(dim=1) - 1).clamp(min=0)
    next_pos = pos[:, -1:] + 1
    base = _fast_decoder(model) if fast else None
    kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    cache = None
    if base is not None:  # lean prefill; its K/V go to buffers with room for the new tokens
        prompt_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        hidden = _fast_forward(base, [(u_ids, u_pos, u_mask.bool(), None)], kv_out=prompt_kv)
        logits = _head(model, hidden[0][:, -1, :])[inverse]
        for k, v in prompt_kv:
            shape = (n, k.shape[1], length + max_new_tokens, k.shape[3])
            kb, vb = k.new_empty(shape), v.new_empty(shape)
            kb[:, :, :length], vb[:, :, :length] = k[inverse], v[inverse]
            kv.append((kb, vb))
    else:
        cache = DynamicCache(config=model.config)
        kw: dict[str, Any] = {"logits_to_keep": 1} if _supports_logits_to_keep(model) else {}
        out = model(input_ids=u_ids, attention_mask=u_mask, position_ids=u_pos,
                    past_key_values=cache, use_cache=True, **kw)
        cache.batch_select_indices(inverse)
        logits = out.logits[:, -1, :][inverse]
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
    up to float rounding, gradients included; fewer FLOPs when G > 1.

    For a plain Qwen2/Llama model (`_fast_decoder`), the forward runs `_fast_forward`, the same
    ops as the model's forward without its module machinery; other models (peft, ZeRO-3,
    gradient checkpointing, ...) run their own forward."""
    c = completion_ids.shape[1]
    lean = _fast_decoder(model)
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
        hidden = _fast_forward(lean, blocks)[0][:, -c:]
        return hidden if return_hidden else _head(model, hidden)
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


def _head(model: Any, hidden: torch.Tensor) -> torch.Tensor:
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
    lean `_fast_forward` may run (see `_fast_decoder`), else None (the model's own forward)."""
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
        hidden = _fast_forward(base, blocks)
        first = hidden[0][:, -1:, :][inverse]
        rest_parts = iter(hidden[1:])
    else:
        net = (getattr(model, model.base_model_prefix, None) or model.get_decoder()
               ) if return_hidden else model
        cache = DynamicCache(config=model.config)
        kw: dict[str, Any] = {}
        if not return_hidden and _supports_logits_to_keep(model):
            kw["logits_to_keep"] = 1
        out = net(input_ids=u_ids, attention_mask=u_mask, position_ids=u_pos,
                  past_key_values=cache, use_cache=True, **kw)
        first = (out.last_hidden_state if return_hidden else out.logits)[:, -1:, :][inverse]
        prompt_kv = [(layer.keys, layer.values) for layer in cache.layers]
        hf_parts = []
        for idx, w, key_mask, position_ids in buckets:
            rows = inverse[idx]
            bucket_cache = DynamicCache(config=model.config)
            for li, (k, v) in enumerate(prompt_kv):
                bucket_cache.update(k[rows], v[rows], li)
            out = net(input_ids=completion_ids[idx, :w], attention_mask=key_mask,
                      position_ids=position_ids, past_key_values=bucket_cache, use_cache=True)
            hf_parts.append(out.last_hidden_state if return_hidden else out.logits)
        rest_parts = iter(hf_parts)
    if plan:  # completion positions 1.. from the buckets, padded to c - 1, in row order
        parts = [torch.nn.functional.pad(next(rest_parts), (0, 0, 0, c - 1 - w)) if w >= 1
                 else first.new_zeros((idx.numel(), c - 1, first.shape[-1])) for idx, w in plan]
        rest = torch.cat(parts) if len(parts) > 1 else parts[0]
        if len(plan) > 1:
            rest = rest[torch.argsort(torch.cat([idx for idx, _ in plan]))]
        first = torch.cat([first, rest], dim=1)
    return _head(model, first) if base is not None and not return_hidden else first


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
