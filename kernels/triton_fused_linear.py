"""Fused-linear GRPO token loss in Triton: hidden [N, H] @ weight[V, H].T (+ bias) -> loss,
without ever storing the N x V logits.

Forward, two launches:
  1. `_fl_fwd_kernel`, grid = (token blocks x vocabulary splits). A program owns BLOCK_N tokens
     and one contiguous range of the vocabulary; for each BLOCK_V slice of it, it computes the
     logits tile with tl.dot over H in BLOCK_K steps (fp32 accumulator), adds the bias, divides
     by T and folds the tile into online per-row stats (max m, sum exp s, entropy sum w and the
     sampled token's logit). Reads hidden[block, :] and weight[range, :]; writes 4 fp32 per
     (split, token). Splitting the vocabulary keeps the GPU busy when N / BLOCK_N is small.
  2. `_fl_epilogue_kernel`, grid = token blocks: merges the splits' stats into lse, logp and
     entropy, then applies the same per-token loss as the logits-input kernel (`token_loss`).
Backward, per chunk of `chunk_size` token rows (a chunk_size x V dlogits buffer is the only
logits-sized memory; its default is ~1 GiB, at least 1024 rows):
  1. `_fl_dlogits_kernel` recomputes each logits tile (tl.dot) and writes
     dlogits = coef / T * (onehot - softmax) for the chunk, in the input dtype. Row tiles are the
     fastest grid index: the programs in flight share a few weight tiles (read from HBM once per
     chunk) and the chunk's hidden rows (reused from L2), instead of reading the whole weight
     once per row tile.
  2. cuBLAS: dhidden[chunk] = dlogits @ weight (fp32 accumulation, written once), and
     dweight (fp32 buffer, accumulated over chunks) += dlogits.T @ hidden[chunk] with fp32
     output (`torch.addmm(..., out_dtype=torch.float32)`); dbias += column sums of dlogits
     (fp32). Where cuBLAS cannot write fp32 from 16-bit operands (and under the interpreter)
     `_matmul_kernel`, a grouped-order Triton GEMM with an fp32 accumulator, does dweight.
FLOPs: 2NHV forward + 6NHV backward (recompute, dhidden, dweight) = 8NHV.
Launch parameters come from the static table in tuning.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .triton_logits import (
    MAX_ROWS,
    LossConfig,
    RawOutputs,
    clip_bounds,
    combine_coef,
    device_guard,
    loss_constexprs,
    store_flags,
    token_loss,
)
from .tuning import FusedLinearLaunch, fused_linear_launch

GEMM_BLOCKS = (128, 128, 64)  # BLOCK_M, BLOCK_N, BLOCK_K of the Triton fallback GEMM
GEMM_GROUP = 8  # row tiles per group in the Triton GEMM's launch order
CHUNK_BYTES = 1 << 30  # backward dlogits chunk budget; >= 1024 rows so dweight RMW stays cheap


@triton.jit
def _logits_tile(
    h_ptr,
    w_ptr,
    b_ptr,
    n64,
    row_mask,
    v_offs,
    v_mask,
    H,
    stride_hn,
    stride_hk,
    stride_wv,
    stride_wk,
    HAS_BIAS: tl.constexpr,
    DOT_PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Reads hidden rows n64 [BLOCK_N] and weight rows v_offs [BLOCK_V] over H in BLOCK_K steps;
    returns the fp32 logits tile hidden @ weight.T (+ bias) [BLOCK_N, BLOCK_V]. Used by the
    forward and by the backward's recompute, so both see the same logits."""
    v64 = v_offs.to(tl.int64)
    acc = tl.zeros((BLOCK_N, BLOCK_V), tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_mask = k < H
        ht = tl.load(
            h_ptr + n64[:, None] * stride_hn + k[None, :] * stride_hk,
            mask=row_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        wt = tl.load(
            w_ptr + v64[None, :] * stride_wv + k[:, None] * stride_wk,
            mask=v_mask[None, :] & k_mask[:, None],
            other=0.0,
        )
        if UPCAST:  # the interpreter's bf16 tl.dot is wrong; fp32 there
            ht, wt = ht.to(tl.float32), wt.to(tl.float32)
        acc = tl.dot(ht, wt, acc, input_precision=DOT_PREC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + v_offs, mask=v_mask, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _fl_fwd_kernel(
    h_ptr,
    w_ptr,
    b_ptr,
    ids_ptr,
    part_ptr,
    N,
    V,
    H,
    stride_hn,
    stride_hk,
    stride_wv,
    stride_wk,
    v_per_split,
    num_splits,
    temperature,
    HAS_BIAS: tl.constexpr,
    ENTROPY: tl.constexpr,
    DOT_PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    split = pid % num_splits
    nb = pid // num_splits
    n_offs = nb * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = n_offs < N
    n64 = n_offs.to(tl.int64)
    tok = tl.load(ids_ptr + n64, mask=n_mask, other=-1).to(tl.int32)
    m = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK_N,), tl.float32)
    w = tl.zeros((BLOCK_N,), tl.float32)
    tgt = tl.zeros((BLOCK_N,), tl.float32)
    v_lo = split * v_per_split
    v_hi = tl.minimum(V, v_lo + v_per_split)
    for v0 in range(v_lo, v_hi, BLOCK_V):
        v_offs = v0 + tl.arange(0, BLOCK_V)
        v_mask = v_offs < v_hi
        acc = _logits_tile(h_ptr, w_ptr, b_ptr, n64, n_mask, v_offs, v_mask, H, stride_hn,
                           stride_hk, stride_wv, stride_wk, HAS_BIAS, DOT_PREC, UPCAST,
                           BLOCK_N, BLOCK_V, BLOCK_K)
        x = tl.where(v_mask[None, :], acc / temperature, float("-inf"))
        m_new = tl.maximum(m, tl.max(x, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_safe)
        e = tl.exp(x - m_safe[:, None])
        if ENTROPY:
            xm = tl.where(e > 0.0, x - m_safe[:, None], 0.0)
            shift = (tl.where(s > 0.0, m, m_safe) - m_safe) * s
            w = alpha * (w + shift) + tl.sum(e * xm, axis=1)
        s = s * alpha + tl.sum(e, axis=1)
        m = m_new
        tgt += tl.sum(tl.where(v_offs[None, :] == tok[:, None], x, 0.0), axis=1)
    # part is fp32 [num_splits, N, 4] (m, s, w, target logit); int64 offsets throughout
    p = part_ptr + (split.to(tl.int64) * N + n64) * 4
    tl.store(p, m, mask=n_mask)
    tl.store(p + 1, s, mask=n_mask)
    tl.store(p + 2, w, mask=n_mask)
    tl.store(p + 3, tgt, mask=n_mask)


@triton.jit
def _fl_epilogue_kernel(
    part_ptr,
    old_ptr,
    ref_ptr,
    adv_ptr,
    mask_ptr,
    logp_ptr,
    lse_ptr,
    ent_ptr,
    loss_ptr,
    kl_ptr,
    flags_ptr,
    dloss_ptr,
    dkl_ptr,
    N,
    num_splits,
    lo,
    hi,
    delta,
    dual,
    beta,
    LOSS: tl.constexpr,
    HAS_OLD: tl.constexpr,
    HAS_DELTA: tl.constexpr,
    HAS_DUAL: tl.constexpr,
    HAS_REF: tl.constexpr,
    KL: tl.constexpr,
    BIAS_KL: tl.constexpr,
    ENTROPY: tl.constexpr,
    CLAMP: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    nm = n < N
    mx = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    split = tl.full((), 0, tl.int64)  # int64, so split * N cannot overflow
    for _ in range(0, num_splits):
        mx = tl.maximum(mx, tl.load(part_ptr + (split * N + n) * 4, mask=nm, other=float("-inf")))
        split += 1
    mx = tl.where(mx == float("-inf"), 0.0, mx)
    s = tl.zeros((BLOCK_N,), tl.float32)
    w = tl.zeros((BLOCK_N,), tl.float32)
    tgt = tl.zeros((BLOCK_N,), tl.float32)
    split = tl.full((), 0, tl.int64)
    for _ in range(0, num_splits):
        p = part_ptr + (split * N + n) * 4
        mi = tl.load(p, mask=nm, other=float("-inf"))
        si = tl.load(p + 1, mask=nm, other=0.0)
        a = tl.exp(mi - mx)
        s += si * a
        if ENTROPY:
            wi = tl.load(p + 2, mask=nm, other=0.0)
            w += a * (wi + (tl.where(si > 0.0, mi, mx) - mx) * si)
        tgt += tl.load(p + 3, mask=nm, other=0.0)
        split += 1
    s = tl.where(nm, s, 1.0)  # lanes past N: keep them finite
    log_s = tl.log(s)
    lse = mx + log_s
    logp = tgt - lse
    tl.store(logp_ptr + n, logp, mask=nm)
    tl.store(lse_ptr + n, lse, mask=nm)
    if ENTROPY:
        tl.store(ent_ptr + n, log_s - w / s, mask=nm)
    if LOSS:
        valid = tl.load(mask_ptr + n, mask=nm, other=0) != 0
        adv = tl.load(adv_ptr + n, mask=nm, other=0.0)
        if HAS_OLD:
            old = tl.load(old_ptr + n, mask=nm, other=0.0)
        else:
            old = logp
        if HAS_REF:
            ref = tl.load(ref_ptr + n, mask=nm, other=0.0)
        else:
            ref = logp
        loss, kl, c_lo, c_hi, c_dual, c_delta, dloss, dkl = token_loss(
            logp, old, ref, adv, valid, lo, hi, delta, dual, beta, HAS_DELTA, HAS_DUAL, HAS_REF,
            KL, BIAS_KL, CLAMP,
        )
        tl.store(loss_ptr + n, loss, mask=nm)
        tl.store(kl_ptr + n, kl, mask=nm)
        tl.store(dloss_ptr + n, dloss, mask=nm)
        tl.store(dkl_ptr + n, dkl, mask=nm)
        store_flags(flags_ptr, n, c_lo, c_hi, c_dual, c_delta, nm)


@triton.jit
def _fl_dlogits_kernel(
    h_ptr,
    w_ptr,
    b_ptr,
    ids_ptr,
    lse_ptr,
    coef_ptr,
    dl_ptr,
    n_start,
    n_rows,
    n_row_tiles,
    V,
    H,
    stride_hn,
    stride_hk,
    stride_wv,
    stride_wk,
    stride_dl,
    temperature,
    HAS_BIAS: tl.constexpr,
    DOT_PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # 1D grid, row tiles fastest: consecutive programs share a weight tile (no 65535 axis limit)
    pid = tl.program_id(0)
    r = (pid % n_row_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)  # row within the chunk
    r_mask = r < n_rows
    n64 = n_start + r.to(tl.int64)
    v_offs = (pid // n_row_tiles) * BLOCK_V + tl.arange(0, BLOCK_V)
    v_mask = v_offs < V
    v64 = v_offs.to(tl.int64)
    acc = _logits_tile(h_ptr, w_ptr, b_ptr, n64, r_mask, v_offs, v_mask, H, stride_hn, stride_hk,
                       stride_wv, stride_wk, HAS_BIAS, DOT_PREC, UPCAST, BLOCK_N, BLOCK_V, BLOCK_K)
    x = acc / temperature
    lse = tl.load(lse_ptr + n64, mask=r_mask, other=0.0)
    coef = tl.load(coef_ptr + n64, mask=r_mask, other=0.0)
    tok = tl.load(ids_ptr + n64, mask=r_mask, other=-1).to(tl.int32)
    prob = tl.exp(x - lse[:, None])
    d = (coef / temperature)[:, None] * (tl.where(v_offs[None, :] == tok[:, None], 1.0, 0.0) - prob)
    d = tl.where(coef[:, None] == 0.0, 0.0, d)
    tl.store(
        dl_ptr + r.to(tl.int64)[:, None] * stride_dl + v64[None, :],
        d.to(dl_ptr.dtype.element_ty),
        mask=r_mask[:, None] & v_mask[None, :],
    )


@triton.jit
def _matmul_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    ACCUMULATE: tl.constexpr,
    DOT_PREC: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """c[M, N] (+)= a[M, K] @ b[K, N] with an fp32 accumulator (strided, int64 offsets).
    1D grid in grouped order: GROUP_M row tiles sweep each column tile together, so the programs
    in flight share their a and b tiles in L2."""
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m
    # int64 tile bases, int32 in-tile offsets (contiguity stays visible to the vectorizer)
    om = tl.arange(0, BLOCK_M)
    on = tl.arange(0, BLOCK_N)
    ok = tl.arange(0, BLOCK_K)
    m0 = pid_m.to(tl.int64) * BLOCK_M
    n0 = pid_n.to(tl.int64) * BLOCK_N
    a_ptrs = a_ptr + m0 * stride_am + om[:, None] * stride_am + ok[None, :] * stride_ak
    b_ptrs = b_ptr + n0 * stride_bn + ok[:, None] * stride_bk + on[None, :] * stride_bn
    m_ok = (m0 + om) < M
    n_ok = (n0 + on) < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + ok) < K
        a = tl.load(a_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if UPCAST:
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PREC)
        a_ptrs += BLOCK_K * stride_ak.to(tl.int64)
        b_ptrs += BLOCK_K * stride_bk.to(tl.int64)
    c_ptrs = c_ptr + m0 * stride_cm + n0 * stride_cn + om[:, None] * stride_cm + on[None, :] * stride_cn
    c_mask = m_ok[:, None] & n_ok[None, :]
    if ACCUMULATE:
        acc += tl.load(c_ptrs, mask=c_mask, other=0.0).to(tl.float32)
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)


# ---------------------------------------------------------------------------------------------
# Launchers


@dataclass(frozen=True)
class FusedLinearConfig:
    """Loss hyperparameters plus launch overrides (validated by the public API)."""

    loss: LossConfig
    chunk_size: int | None = None  # backward rows per dlogits chunk (default: ~1 GiB chunk)
    blocks: tuple[int, int, int] | None = None  # (BLOCK_N, BLOCK_V, BLOCK_K) override
    num_splits: int | None = None  # vocabulary splits of the forward (default: fill the GPU)


def _dot_precision(x: torch.Tensor) -> str:
    """tl.dot input precision: fp32 inputs follow torch's TF32 switch; bf16/fp16 take the default
    (tensor cores, fp32 accumulation)."""
    if x.dtype != torch.float32:
        return "tf32"  # only affects fp32 operands
    if not x.is_cuda:
        return "ieee"  # the interpreter
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _upcast(x: torch.Tensor) -> bool:
    """Feed tl.dot fp32 instead of bf16 under the interpreter, whose bf16 dot is wrong."""
    return x.dtype == torch.bfloat16 and not x.is_cuda


def _launch_kw(x: torch.Tensor, launch: FusedLinearLaunch) -> dict:
    if not x.is_cuda:
        return {}
    return dict(num_warps=launch.num_warps, num_stages=launch.num_stages)


def _launch(hidden: torch.Tensor, weight: torch.Tensor, cfg: FusedLinearConfig) -> FusedLinearLaunch:
    return fused_linear_launch(weight.shape[0], weight.shape[1], hidden.dtype, cfg.blocks)


def _num_splits(N: int, V: int, bn: int, bv: int, x: torch.Tensor, override: int | None) -> int:
    v_blocks = triton.cdiv(V, bv)
    if override is not None:
        return max(1, min(override, v_blocks))
    if not x.is_cuda:
        return 1
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    return max(1, min(triton.cdiv(2 * sms, triton.cdiv(N, bn)), v_blocks))


def vocab_split(N: int, V: int, bn: int, bv: int, x: torch.Tensor, override: int | None):
    """(vocabulary entries per split, number of splits). Each split starts on a BLOCK_V
    boundary: v_per_split is a multiple of bv, so tiles never straddle two splits."""
    splits = _num_splits(N, V, bn, bv, x, override)
    v_per_split = triton.cdiv(triton.cdiv(V, splits), bv) * bv
    if v_per_split % bv:
        raise RuntimeError(f"vocabulary split {v_per_split} is not a multiple of BLOCK_V {bv}")
    return v_per_split, triton.cdiv(V, v_per_split)


def fused_linear_forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    ids: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor | None,
    mask: torch.Tensor | None,
    cfg: FusedLinearConfig,
    with_loss: bool,
) -> RawOutputs:
    """Launch the forward kernels. hidden [N, H], weight [V, H], the token tensors flat [N]."""
    N, H = hidden.shape
    V = weight.shape[0]
    if N > MAX_ROWS:
        raise ValueError(f"at most {MAX_ROWS} token rows per call, got {N}")
    lc = cfg.loss
    launch = _launch(hidden, weight, cfg)
    bn, bv, bk = launch.block_n, launch.block_v, launch.block_k
    f32 = dict(device=hidden.device, dtype=torch.float32)
    logp, lse = torch.empty(N, **f32), torch.empty(N, **f32)
    ent = torch.empty(N, **f32) if lc.compute_entropy else logp
    out = RawOutputs(logp, lse, ent if lc.compute_entropy else None)
    flags = torch.empty(N if with_loss else 1, 4, device=hidden.device, dtype=torch.int8)
    if with_loss:
        out.loss, out.kl, out.dloss, out.dkl = (torch.empty(N, **f32) for _ in range(4))
    out.flags = flags.view(torch.bool) if with_loss else None
    if N == 0:
        return out
    v_per_split, splits = vocab_split(N, V, bn, bv, hidden, cfg.num_splits)
    part = torch.empty(splits, N, 4, **f32)
    dummy = logp
    with device_guard(hidden):
        _fl_fwd_kernel[(splits * triton.cdiv(N, bn),)](
            hidden, weight, bias if bias is not None else weight, ids, part,
            N, V, H, hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
            v_per_split, splits, float(lc.temperature),
            HAS_BIAS=bias is not None, ENTROPY=lc.compute_entropy,
            DOT_PREC=_dot_precision(hidden), UPCAST=_upcast(hidden),
            BLOCK_N=bn, BLOCK_V=bv, BLOCK_K=bk, **_launch_kw(hidden, launch),
        )  # fmt: skip
        block = 256
        _fl_epilogue_kernel[(triton.cdiv(N, block),)](
            part,
            old_logp if old_logp is not None else dummy,
            ref_logp if ref_logp is not None else dummy,
            advantages if with_loss else dummy,
            mask if with_loss else dummy,
            logp, lse, ent,
            out.loss if with_loss else dummy,
            out.kl if with_loss else dummy,
            flags,
            out.dloss if with_loss else dummy,
            out.dkl if with_loss else dummy,
            N, splits, *clip_bounds(lc), float(lc.beta),
            LOSS=with_loss, **loss_constexprs(lc, old_logp is not None, ref_logp is not None),
            ENTROPY=lc.compute_entropy, BLOCK_N=block,
        )  # fmt: skip
    return out


def matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    accumulate: bool,
    blocks: tuple[int, int, int] = GEMM_BLOCKS,
) -> None:
    """c (+)= a @ b in Triton with an fp32 accumulator; any strides."""
    M, K = a.shape
    N = b.shape[1]
    bm, bn, bk = blocks
    kw = dict(num_warps=8, num_stages=2 if a.dtype == torch.float32 else 3) if a.is_cuda else {}
    with device_guard(a):
        _matmul_kernel[(triton.cdiv(M, bm) * triton.cdiv(N, bn),)](
            a, b, c, M, N, K,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
            ACCUMULATE=accumulate, DOT_PREC=_dot_precision(a), UPCAST=_upcast(a),
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=GEMM_GROUP, **kw,
        )  # fmt: skip


_FP32_OUT_GEMM: dict[tuple[str, torch.dtype], bool] = {}


def cublas_fp32_out(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch can write an fp32 GEMM result from `dtype` operands with cuBLAS on `device`
    (`torch.addmm(..., out_dtype=torch.float32)`, torch >= 2.8 on CUDA), accumulating into its
    input; probed once per device and dtype on a small product against an fp32 one."""
    key = (str(device), dtype)
    if key not in _FP32_OUT_GEMM:
        ok = False
        if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
            try:
                g = torch.Generator(device=device).manual_seed(0)
                a = torch.randn(96, 40, device=device, generator=g).to(dtype)
                b = torch.randn(40, 72, device=device, generator=g).to(dtype)
                c = torch.randn(96, 72, device=device, generator=g)
                expect = c + a.float() @ b.float()
                torch.addmm(c, a, b, out_dtype=torch.float32, out=c)
                ok = c.dtype == torch.float32 and torch.allclose(c, expect, rtol=1e-3, atol=1e-3)
            except (RuntimeError, TypeError):
                ok = False
        _FP32_OUT_GEMM[key] = ok
    return _FP32_OUT_GEMM[key]


def accumulate_dweight(dw32: torch.Tensor, d: torch.Tensor, h: torch.Tensor, first: bool) -> str:
    """dw32 (fp32 [V, H]) = (0 if first else dw32) + d.T @ h; returns the path taken."""
    beta = 0 if first else 1  # beta = 0 ignores the uninitialised buffer (NaN included)
    if d.dtype == torch.float32:
        torch.addmm(dw32, d.t(), h, beta=beta, out=dw32)  # TF32 as torch's switch says
        return "torch fp32"
    if d.is_cuda and cublas_fp32_out(d.device, d.dtype):
        torch.addmm(dw32, d.t(), h, beta=beta, out_dtype=torch.float32, out=dw32)
        return "cublas fp32-out"
    matmul(d.t(), h, dw32, not first)
    return "triton"


def chunk_rows(N: int, V: int, itemsize: int, override: int | None) -> int:
    if override is not None:
        if override < 1:
            raise ValueError(f"chunk_size must be >= 1, got {override}")
        return min(override, max(N, 1))
    return max(1, min(N, max(1024, CHUNK_BYTES // max(V * itemsize, 1))))


def fused_linear_backward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    ids: torch.Tensor,
    lse: torch.Tensor,
    coef: torch.Tensor,
    cfg: FusedLinearConfig,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(dhidden, dweight, dbias) for dL/dlogp = coef [N]; only those flagged in `needs`."""
    N, H = hidden.shape
    V = weight.shape[0]
    need_h, need_w, need_b = needs
    need_b = need_b and bias is not None
    launch = _launch(hidden, weight, cfg)
    bn, bv, bk = launch.block_n, launch.block_v, launch.block_k
    dh = torch.empty_like(hidden, memory_format=torch.contiguous_format) if need_h else None
    dw32 = torch.zeros(V, H, device=weight.device, dtype=torch.float32) if need_w else None
    db32 = torch.zeros(V, device=weight.device, dtype=torch.float32) if need_b else None
    if N == 0 or not (need_h or need_w or need_b):
        return dh, _cast(dw32, weight), _cast(db32, bias)
    C = chunk_rows(N, V, hidden.element_size(), cfg.chunk_size)
    dl = torch.empty(C, V, device=hidden.device, dtype=hidden.dtype)
    with device_guard(hidden):
        for c0 in range(0, N, C):
            rows = min(C, N - c0)
            n_row_tiles = triton.cdiv(rows, bn)
            _fl_dlogits_kernel[(n_row_tiles * triton.cdiv(V, bv),)](
                hidden, weight, bias if bias is not None else weight, ids, lse, coef, dl,
                c0, rows, n_row_tiles, V, H,
                hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1),
                dl.stride(0), float(cfg.loss.temperature),
                HAS_BIAS=bias is not None, DOT_PREC=_dot_precision(hidden),
                UPCAST=_upcast(hidden), BLOCK_N=bn, BLOCK_V=bv, BLOCK_K=bk,
                **_launch_kw(hidden, launch),
            )  # fmt: skip
            d = dl[:rows]
            if need_h:
                torch.mm(d, weight, out=dh[c0 : c0 + rows])
            if need_w:
                accumulate_dweight(dw32, d, hidden[c0 : c0 + rows], first=c0 == 0)
            if need_b:
                db32 += d.sum(0, dtype=torch.float32)
    return dh, _cast(dw32, weight), _cast(db32, bias)


def _cast(g: torch.Tensor | None, like: torch.Tensor | None) -> torch.Tensor | None:
    if g is None or like is None:
        return None
    return g if g.dtype == like.dtype else g.to(like.dtype)


class FusedLinearGRPOFunction(torch.autograd.Function):
    """(hidden [N, H], weight [V, H], bias, ids, old, ref, adv, mask) -> flat [N] outputs.

    Saves hidden, weight and bias by reference (no copies) plus three fp32 [N] vectors; backward
    reads the weight from that saved argument, so under ZeRO-3 it must still be gathered then
    (DeepSpeed's module hooks do that when this is called inside the module's forward).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, old_logp, ref_logp, advantages, mask, cfg):
        out = fused_linear_forward(
            hidden, weight, bias, ids, old_logp, ref_logp, advantages, mask, cfg, True
        )
        ctx.save_for_backward(hidden, weight, bias, ids, out.lse, out.dloss, out.dkl)
        ctx.cfg = cfg
        entropy = out.entropy if out.entropy is not None else torch.empty(0, device=hidden.device)
        ctx.mark_non_differentiable(out.flags, entropy)
        return out.loss, out.logp, out.kl, out.flags, entropy

    @staticmethod
    def backward(ctx, g_loss, g_logp, g_kl, _g_flags, _g_entropy):
        hidden, weight, bias, ids, lse, dloss, dkl = ctx.saved_tensors
        coef = combine_coef(g_loss, g_logp, g_kl, dloss, dkl)
        dh, dw, db = fused_linear_backward(
            hidden, weight, bias, ids, lse, coef, ctx.cfg, tuple(ctx.needs_input_grad[:3])
        )
        return dh, dw, db, None, None, None, None, None, None
