"""The lean decoder: the same math as the Hugging Face modules of Qwen2, Llama, Mistral and Qwen3
without their machinery, for training, scoring and decoding (one decoder implementation for all
three).

`lean_decoder(model)` decides whether the lean path may stand in for a model's own forward
(`lean_refusal` says why not); the config switch ``model.lean_forward`` (auto: when
`lean_decoder` allows it; off: always the model's own forward) is applied by the callers
(`reasoner.models.forward`, `reasoner.rollout.decode`). `lean_forward` runs blocks of tokens
through the stack (autograd flows through it); `lean_step` is one decode step on preallocated KV
buffers.

Which architectures, and why not the others: the four in `LEAN_ARCHS` are one decoder (RMSNorm
before attention and MLP, RoPE on q and k, grouped-query attention, SwiGLU MLP, plain residuals);
Mistral adds a sliding window (exact here while the sequence fits in it, else the plain path) and
Qwen3 an RMSNorm over each head's q and k before RoPE. Gemma and Gemma2 scale the embeddings,
use (1 + w) norms, a GeLU MLP, and Gemma2 extra norms, soft-capping and alternating windows; Phi3
fuses q/k/v and gate/up into one projection each; GPT-2 has learned positions, LayerNorm and
Conv1D layers; GPT-NeoX parallel residuals, LayerNorm and partial rotary. Each would be a second
decoder, not a flag; they run their own (transformers) forward.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

LEAN_FORWARD_MODES = ("auto", "off")

# causal LM class -> (its transformers module, its RMSNorm class)
LEAN_ARCHS: dict[str, tuple[str, str]] = {
    "Qwen2ForCausalLM": ("transformers.models.qwen2.modeling_qwen2", "Qwen2RMSNorm"),
    "LlamaForCausalLM": ("transformers.models.llama.modeling_llama", "LlamaRMSNorm"),
    "MistralForCausalLM": ("transformers.models.mistral.modeling_mistral", "MistralRMSNorm"),
    "Qwen3ForCausalLM": ("transformers.models.qwen3.modeling_qwen3", "Qwen3RMSNorm"),
}
# the same decoders under a scalar ``score`` head (value models, reward models): the lean
# forward gives their final hidden states (`forward_logits(..., return_hidden=True)`)
LEAN_HIDDEN_ARCHS: dict[str, tuple[str, str]] = {
    name.replace("ForCausalLM", "ForSequenceClassification"): where
    for name, where in LEAN_ARCHS.items()}


def lean_allowed(mode: str) -> bool:
    """``model.lean_forward``: "auto" lets `lean_decoder` decide, "off" never takes the lean
    path (plain transformers)."""
    if mode not in LEAN_FORWARD_MODES:
        raise ValueError(f"lean_forward must be one of {', '.join(LEAN_FORWARD_MODES)}, got {mode!r}")
    return mode == "auto"


def _arch_classes(model: Any) -> tuple[type, type] | None:
    """(the causal LM class, its RMSNorm class) when `model` is exactly one of `LEAN_ARCHS`."""
    name = type(model).__name__
    where = LEAN_ARCHS.get(name) or LEAN_HIDDEN_ARCHS.get(name)
    if where is None:
        return None
    module_name, norm_name = where
    module = importlib.import_module(module_name)
    if getattr(module, name) is not type(model):  # a subclass or a look-alike of the same name
        return None
    return getattr(module, name), getattr(module, norm_name)


def lean_refusal(model: Any, width: int | None = None) -> str | None:
    """Why the lean forward (`lean_forward`, `lean_step`) may NOT stand in for `model`'s own
    forward, or None when it may: exactly a Hugging Face causal LM of `LEAN_ARCHS` (or the same
    decoder under a ``score`` head, `LEAN_HIDDEN_ARCHS`: its hidden states) whose weights are
    plain tensors. Refused:

    - any other class, including a peft wrapper; a projection that is not a plain Linear
      (adapter layers) or a norm that is not the model's own RMSNorm;
    - DeepSpeed ZeRO-3 parameters (`ds_id`) that are not all gathered, or forward hooks
      (ZeRO-3's, accelerate offload, user hooks) on a module whose forward it skips: the hooks
      gather / move weights or see activations;
    - while training: gradient checkpointing on, or attention dropout > 0;
    - sliding-window layers (Qwen2 / Qwen3 ``use_sliding_window``), or pretraining_tp != 1;
      Mistral's ``sliding_window`` only when the sequence may be wider than the window
      (`width`: the widest prompt + completion the caller runs; None = unknown).

    This is the one place that decides; keep it in step with what `lean_forward` computes."""
    classes = _arch_classes(model)
    if classes is None:
        return (f"{type(model).__name__} has no lean forward (it has: "
                f"{', '.join(n.removesuffix('ForCausalLM') for n in LEAN_ARCHS)})")
    norm_type = classes[1]
    cfg = model.config
    if getattr(cfg, "use_sliding_window", False) or any(
            t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
        return "sliding-window attention layers"
    if getattr(cfg, "pretraining_tp", 1) != 1:
        return "pretraining_tp != 1"
    window = getattr(cfg, "sliding_window", None) \
        if type(model).__name__.startswith("Mistral") else None
    if window is not None and (width is None or width > window):
        return (f"sequences of up to {width} tokens may pass the sliding window of {window}"
                if width is not None else f"a sliding window of {window} tokens")
    if model.training:
        checkpointing = getattr(model, "is_activation_checkpointing", None)
        if checkpointing is None:
            checkpointing = getattr(model, "is_gradient_checkpointing", False)
        if checkpointing:
            return "gradient checkpointing"
        if getattr(cfg, "attention_dropout", 0.0):
            return "attention dropout"
    base = model.model
    head = model.lm_head if type(model).__name__ in LEAN_ARCHS else model.score
    if type(head) is not torch.nn.Linear or not hasattr(base, "rotary_emb"):
        return "a replaced LM head or rotary embedding"
    if type(base.norm) is not norm_type:
        return "a replaced norm"
    # modules whose forward the lean path skips (the embedding, rotary embedding and activation
    # are called as modules: their hooks run, e.g. the input-grad hook that gradient
    # checkpointing puts on the embedding)
    bypassed = [model, base, head, base.layers, base.norm]
    for layer in base.layers:
        a, m = layer.self_attn, layer.mlp
        lins = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj)
        if any(type(lin) is not torch.nn.Linear for lin in lins):
            return "projections that are not plain Linear layers (adapters?)"
        norms = [layer.input_layernorm, layer.post_attention_layernorm]
        if hasattr(a, "q_norm") or hasattr(a, "k_norm"):  # Qwen3
            norms += [a.q_norm, a.k_norm]
        if any(type(norm) is not norm_type for norm in norms):
            return "a replaced norm"
        bypassed += [layer, a, m, *lins, *norms]
    for mod in bypassed:
        if mod._forward_hooks or mod._forward_pre_hooks or "_hf_hook" in mod.__dict__:
            return "forward hooks on its modules"
    # ZeRO-3 shards: only while every weight is gathered (and the hooks are off, checked above),
    # as in the trainer's rollout phase (engine.DeepSpeedEngine.generation)
    if any(hasattr(p, "ds_id") and getattr(getattr(p, "ds_status", None), "name", "") != "AVAILABLE"
           for p in model.parameters()):
        return "ZeRO-3 partitioned weights"
    return None


def lean_decoder(model: Any, width: int | None = None) -> Any | None:
    """The decoder stack when the lean forward may stand in for `model`'s own forward (see
    `lean_refusal`, which says why not); None otherwise, and the caller runs the model's
    modules."""
    return model.model if lean_refusal(model, width) is None else None


def forward_path(model: Any, allow_lean: bool, width: int | None = None) -> str:
    """What runs `model`'s forward, in words: "lean" or "transformers (why)"."""
    if not allow_lean:
        return "transformers (model.lean_forward=off)"
    why = lean_refusal(model, width)
    return "lean" if why is None else f"transformers ({why})"


# The lean decoder math, shared by the decode step (`lean_step`) and the scoring / training
# forward (`lean_forward`). Tokens are rows of a 2-D matrix x [T, H]; only attention sees the
# [rows, heads, tokens, head_dim] layout.


def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The architectures' RMSNorm: w * (x * rsqrt(mean(x^2) + eps)), normalised in float32
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
    layer: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
    q_rows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A decoder layer's input norm, q/k/v projections and RoPE: x [T, H] -> q [T, heads, d],
    k and v [T, kv_heads, d]. cos, sin [T, 1, d] from `_rope` (its sin carries rotate_half's
    sign, so rotate_half(q) * sin_hf == roll(q, d / 2) * sin). `q_rows`: queries only for
    these rows (q [len(q_rows), heads, d]; keys and values for all)."""
    import torch.nn.functional as F

    a = layer.self_attn
    t, d = x.shape[0], a.head_dim
    h = _norm(layer.input_layernorm, x)
    hq, qcos, qsin = (h, cos, sin) if q_rows is None else (h[q_rows], cos[q_rows], sin[q_rows])
    q = F.linear(hq, a.q_proj.weight, a.q_proj.bias).view(hq.shape[0], -1, d)
    k = F.linear(h, a.k_proj.weight, a.k_proj.bias).view(t, -1, d)
    v = F.linear(h, a.v_proj.weight, a.v_proj.bias).view(t, -1, d)
    if hasattr(a, "q_norm"):  # Qwen3: an RMSNorm over each head's q and k, before RoPE
        q, k = _norm(a.q_norm, q), _norm(a.k_norm, k)
    q = q * qcos + q.roll(d // 2, dims=-1) * qsin
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


# Pack the real tokens (drop padding from every projection, norm and MLP) when at least this
# fraction of a forward's tokens is padding; below it the scatter / gather around attention
# costs about what it saves.
PACK_MIN_PADDING = 0.05


def _packing(blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]
             ) -> torch.Tensor | None:
    """The flat indices of the blocks' real tokens (a block's own columns of its key mask)
    when packing them pays (`PACK_MIN_PADDING`), else None."""
    real = torch.cat([b[2][:, b[2].shape[1] - b[0].shape[1]:].reshape(-1) for b in blocks])
    n_pad = real.numel() - int(real.sum())
    if n_pad == 0 or n_pad < PACK_MIN_PADDING * real.numel():
        return None
    return real.nonzero().squeeze(1)


def _unpack(z: torch.Tensor, keep: torch.Tensor, total: int) -> torch.Tensor:
    """Packed rows z [T', ...] back to their places among `total` rows, zeros at padding."""
    return z.new_zeros((total, *z.shape[1:])).index_copy(0, keep, z)


def lean_forward(
    base: Any,
    blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]],
    kv_out: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    keep: list[int] | None = None,
) -> list[torch.Tensor]:
    """The decoder stack's forward without the HF module machinery (`_layer_qkv`, `_attend`,
    `_layer_out`, as `lean_step`; autograd flows through them) over several blocks of tokens
    at once: the blocks' tokens are packed into one matrix, so every projection, norm and MLP
    runs once per layer for all of them; only attention runs per block. Padding tokens (False
    in a block's own columns of its key mask) are left out of that matrix when they are at least
    `PACK_MIN_PADDING` of the tokens: only attention sees them, as zero queries, keys and
    values that no real token attends to.

    blocks[b] = (ids [n, t], pos [n, t], key_mask [n, p + t] bool, rows [n] or None). With rows,
    the block's keys are prefixed by block 0's keys and values of rows `rows` (block 0 is then
    a prompt block of width p, e.g. each distinct prompt once, and this block continues it);
    without, p = 0. `keep[b]`: only block b's last keep[b] columns' hidden states are wanted
    (the last layer then runs its queries, attention output and MLP for those tokens only;
    None: every column). Returns the final-normed hidden states [n, keep[b], H] of each block
    (zeros at padding when packed: nothing reads them); `kv_out`, if given, receives each
    layer's (k, v) [n, kv_heads, t, d] of block 0 (a prefill's cache)."""
    ids = torch.cat([b[0].reshape(-1) for b in blocks])
    pos = torch.cat([b[1].reshape(-1) for b in blocks])
    total = ids.numel()
    packed = _packing(blocks)
    if packed is not None:
        ids, pos = ids[packed], pos[packed]
    x = base.embed_tokens(ids)
    cos, sin = _rope(base, x, pos)
    shapes = [tuple(b[0].shape) for b in blocks]
    sizes = [n * t for n, t in shapes]
    outs_t = [t if keep is None else min(keep[i], t) for i, (_, t) in enumerate(shapes)]
    masks = [_block_mask(b[2], b[0].shape[1]) for b in blocks]
    # the last layer's query rows (in x's rows) and their places among the wanted outputs
    q_rows, out_rows, n_out = _wanted_rows(shapes, outs_t, packed, total, x.device)
    last = len(base.layers) - 1
    for li, layer in enumerate(base.layers):
        sel = q_rows if li == last else None
        q, k, v = _layer_qkv(layer, x, cos, sin, sel)
        if packed is not None:
            k, v = (_unpack(z, packed, total) for z in (k, v))
        if sel is None:
            q_sizes, q_t = sizes, [t for _, t in shapes]
            if packed is not None:
                q = _unpack(q, packed, total)
        else:
            q_sizes, q_t = [n * t for (n, _), t in zip(shapes, outs_t)], outs_t
            if out_rows is not None:
                q = _unpack(q, out_rows, n_out)
        outs, first = [], None
        # split (not slices): its backward is one cat, where each slice's would be a zero fill
        for (n, t), tq, mask, (_, _, _, rows), qb, kb, vb in zip(
                shapes, q_t, masks, blocks, q.split(q_sizes), k.split(sizes), v.split(sizes)):
            qb = qb.view(n, tq, -1, qb.shape[-1]).transpose(1, 2)
            kb, vb = (z.view(n, t, -1, z.shape[-1]).transpose(1, 2) for z in (kb, vb))
            if first is None:
                first = (kb, vb)
                if kv_out is not None:
                    kv_out.append(first)
            if rows is not None:
                kb = torch.cat([first[0][rows], kb], dim=2)
                vb = torch.cat([first[1][rows], vb], dim=2)
            m = mask if tq == t else mask[:, :, t - tq:]
            outs.append(_attend(qb, kb, vb, m, layer.self_attn.scaling))
        o = torch.cat(outs) if len(outs) > 1 else outs[0]
        if sel is None:
            x = _layer_out(layer, x, o if packed is None else o.index_select(0, packed))
        else:
            o = o if out_rows is None else o.index_select(0, out_rows)
            x = _layer_out(layer, x[sel], o)
    x = _norm(base.norm, x)
    if out_rows is not None:
        x = _unpack(x, out_rows, n_out)
    return [z.view(n, t, -1) for z, (n, _), t in
            zip(x.split([n * t for (n, _), t in zip(shapes, outs_t)]), shapes, outs_t)]


def _wanted_rows(shapes: list[tuple[int, int]], outs_t: list[int], packed: torch.Tensor | None,
                 total: int, device: torch.device
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """For the last layer: the rows of the (packed) token matrix whose outputs are wanted (each
    block's last outs_t columns; None: all of them), where the last layer's rows go among the
    wanted outputs (None: one for one) and how many wanted outputs there are."""
    n_out = sum(n * t for (n, _), t in zip(shapes, outs_t))
    if n_out == total:
        return None, packed, n_out
    flat, start = [], 0
    for (n, t), tk in zip(shapes, outs_t):
        cols = torch.arange(t - tk, t, device=device)
        flat.append((start + torch.arange(n, device=device)[:, None] * t + cols).reshape(-1))
        start += n * t
    want = torch.cat(flat)  # wanted tokens, in the unpacked order
    if packed is None:
        return want, None, n_out
    where = torch.full((total,), -1, dtype=torch.long, device=device)
    where[packed] = torch.arange(packed.numel(), device=device)
    in_packed = where[want]
    real = in_packed >= 0
    return in_packed[real], real.nonzero().squeeze(1), n_out


def lean_step(
    base: Any,
    head: torch.nn.Linear,
    tok: torch.Tensor,
    pos: torch.Tensor,
    kv: list[tuple[torch.Tensor, torch.Tensor]],
    length: int,
    key_mask: torch.Tensor,
) -> torch.Tensor:
    """One decode step of a `LEAN_ARCHS` stack without the HF module machinery: the layer math
    of `lean_forward` on preallocated KV buffers (attention as matmuls, see `_attend`).
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
