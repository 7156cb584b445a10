"""Sampling one token per row: top-k / top-p filtering as Hugging Face's warpers, and an exact
draw from the filtered softmax."""

from __future__ import annotations

import torch


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
