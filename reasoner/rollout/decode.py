"""Our own KV-cache decode loop (the rollout engine "loop")."""

from __future__ import annotations

from typing import Any

import torch

from reasoner.models.forward import cache_kwargs, lm_head_logits, supports_logits_to_keep
from reasoner.models.lean import lean_decoder, lean_forward, lean_step
from reasoner.rollout.sampling import sample_tokens


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
    allow_lean: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Our own KV-cache decode of left-padded prompts: one prefill (attention mask + explicit
    position ids = cumsum(mask) - 1), then one forward per new token. Rows stop at their first
    EOS (later tokens are `pad_id`); with `compact`, finished rows are dropped from the batch and
    the cache, so the remaining forwards only compute the rows still running. With `allow_lean`
    (``model.lean_forward: auto``) and a plain Qwen2/Llama/Mistral/Qwen3 model
    (`lean_decoder`), the prefill runs `lean_forward` and the decode steps `lean_step` on
    preallocated KV buffers instead of the HF forward (same ops).

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
    base = lean_decoder(model, length + max_new_tokens) if allow_lean else None
    kv: list[tuple[torch.Tensor, torch.Tensor]] = []
    cache = None
    if base is not None:  # lean prefill; its K/V go to buffers with room for the new tokens
        prompt_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        hidden = lean_forward(base, [(u_ids, u_pos, u_mask.bool(), None)], kv_out=prompt_kv,
                              keep=[1])
        logits = lm_head_logits(model, hidden[0][:, -1, :])[inverse]
        for k, v in prompt_kv:
            shape = (n, k.shape[1], length + max_new_tokens, k.shape[3])
            kb, vb = k.new_empty(shape), v.new_empty(shape)
            kb[:, :, :length], vb[:, :, :length] = k[inverse], v[inverse]
            kv.append((kb, vb))
    else:
        cache = DynamicCache(config=model.config)
        kw: dict[str, Any] = {"logits_to_keep": 1} if supports_logits_to_keep(model) else {}
        out = model(input_ids=u_ids, attention_mask=u_mask, position_ids=u_pos,
                    **cache_kwargs(model, cache), **kw)
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
                        **cache_kwargs(model, cache))
            logits = out.logits[:, -1, :]
        else:
            logits = lean_step(base, model.lm_head, tok, next_pos, kv, length, mask.bool())
            length += 1
        next_pos = next_pos + 1
    tokens = tokens[:, :steps]
    return tokens, None if all_logits is None else all_logits[:, :steps]
