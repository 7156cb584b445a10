"""Launch parameters of the Triton kernels: a static table, no autotuning.

Autotuning would run under the interpreter too, and would time kernels inside the first training
step; instead each kernel looks its launch up here, keyed on the problem's shape and dtype:

    logits-input kernels   (V, dtype)       -> LogitsLaunch(block_v, num_warps, num_stages)
    fused-linear kernels   (V, H, dtype)    -> FusedLinearLaunch(block_n, block_v, block_k, ...)

A shape missing from the table gets the defaults below (reasoned from the H100/H200 limits, not
measured). Entries are filled from one short device sweep:

    python benchmarks/kernels.py --sweep            (prints the lines to paste below)

`dtype` is the tensor dtype's short name: "bf16", "fp16" or "fp32".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


@dataclass(frozen=True)
class LogitsLaunch:
    """One program per token row, looping over the vocabulary in block_v chunks."""

    block_v: int  # vocabulary elements per loop iteration (a power of two)
    num_warps: int
    num_stages: int  # software-pipelining depth of the vocabulary loops (tl.range)


@dataclass(frozen=True)
class FusedLinearLaunch:
    """Logit tiles [block_n tokens x block_v vocabulary], tl.dot over H in block_k steps."""

    block_n: int
    block_v: int
    block_k: int
    num_warps: int
    num_stages: int


# Measured entries: (V, dtype) -> LogitsLaunch. Empty until the first device sweep.
LOGITS_TABLE: dict[tuple[int, str], LogitsLaunch] = {}
# Measured entries: (V, H, dtype) -> FusedLinearLaunch. Empty until the first device sweep.
FUSED_LINEAR_TABLE: dict[tuple[int, int, str], FusedLinearLaunch] = {}


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def dtype_name(dtype: torch.dtype) -> str:
    return DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def logits_launch(V: int, dtype: torch.dtype, block_v: int | None = None) -> LogitsLaunch:
    """The table's entry for (V, dtype), else the default: 4096-wide blocks over 8 warps (two
    16-byte loads in flight per thread for 16-bit logits, four for fp32) and one stage: no
    barrier inside the loop, the bytes in flight coming from the several rows each SM runs at once.
    num_stages >= 2 double-buffers through shared memory with cp.async instead, at the price of a
    barrier per iteration; the sweep decides. `block_v` overrides the block width (tests)."""
    hit = LOGITS_TABLE.get((int(V), dtype_name(dtype)))
    if hit is None:
        bv = min(4096, next_pow2(V))
        hit = LogitsLaunch(bv, 8 if bv >= 2048 else 4, 1)
    if block_v is not None:
        if block_v < 1 or block_v & (block_v - 1):
            raise ValueError(f"block_v must be a power of two, got {block_v}")
        hit = LogitsLaunch(block_v, hit.num_warps, hit.num_stages)
    return hit


def fused_linear_launch(
    V: int, H: int, dtype: torch.dtype, blocks: tuple[int, int, int] | None = None
) -> FusedLinearLaunch:
    """The table's entry for (V, H, dtype), else the default: 128 x 128 logit tiles (the m64n128
    wgmma shape twice over) with 64-deep K steps and 3 stages for 16-bit operands (96 KB of shared
    memory), 64 x 128 x 32 and 2 stages for fp32. `blocks` overrides the tile (tests)."""
    hit = FUSED_LINEAR_TABLE.get((int(V), int(H), dtype_name(dtype)))
    if hit is None:
        if dtype == torch.float32:
            hit = FusedLinearLaunch(64, 128, 32, 8, 2)
        else:
            hit = FusedLinearLaunch(128, 128, 64, 8, 3)
    if blocks is not None:
        bn, bv, bk = blocks
        hit = FusedLinearLaunch(bn, bv, bk, hit.num_warps, hit.num_stages)
    return hit
