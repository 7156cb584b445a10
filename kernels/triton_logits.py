"""Logits-input GRPO token loss in Triton: kernels, launchers and the autograd Functions.

Forward (`_logits_fwd_kernel`, one program per token row, the vocabulary in BLOCK_V chunks):
    reads   logits[row, :] once (bf16/fp16/fp32), ids/old/ref/adv/mask[row]
    keeps   per lane (no cross-warp reduction, so no barrier, inside the loop): running max m,
            s = sum exp(x - m) and w = sum exp(x - m) * (x - m) (x = logits / T, fp32), one exp
            per element; the lanes are merged once after the loop
    writes  logp, lse, loss, kl, clip flags [N, 4], entropy (optional) and the two per-token
            derivatives dloss/dlogp and dkl/dlogp that backward needs (fp32)
  fused forward+backward (GRAD): when the per-token loss weights w are known at forward time, the
    same program then re-reads its row (last block first: the most recently read bytes are the
    likeliest still in L2) and writes dlogits = w * dloss/dlogp / T * (onehot - softmax), into
    the logits buffer itself or a new one; backward only applies the upstream scalar gradient.
Backward (`_logits_bwd_kernel`, one program per row):
    reads   logits[row, :] once, lse[row], ids[row], coef[row] = dL/dlogp (fp32)
    writes  dlogits[row, v] = coef / T * (onehot(id)[v] - softmax(x)[v]), possibly INTO the logits
            buffer (each element is read, then overwritten by the same program); a row with
            coef == 0 (masked) gets zeros without being read
Vocabulary loops are tl.range(..., num_stages): with 1 stage (the default) the loop has no
barrier, each thread keeping two 16-byte loads in flight; 2-3 stages (a launch-table choice)
double-buffer through shared memory with cp.async, which Triton does for a loop without tl.dot
only when asked, at the price of a barrier per iteration.

Rows are addressed as (row // T_INNER) * stride_b + (row % T_INNER) * stride_t with int64 offsets,
so a [B, T, V] view such as `logits[:, :-1]` is used without a copy and N * V may exceed 2^31.
The grid is 1D with one program per row (CUDA allows 2^31 - 1 programs on grid axis 0).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .reference import KL_ESTIMATORS, LOG_RATIO_CLAMP
from .tuning import LogitsLaunch, logits_launch

KL_CODE = {name: i + 1 for i, name in enumerate(KL_ESTIMATORS)}  # k1 -> 1, k2 -> 2, k3 -> 3
MAX_ROWS = 2**31 - 1


@triton.jit
def token_loss(
    logp,
    old,
    ref,
    adv,
    valid,
    lo,
    hi,
    delta,
    dual,
    beta,
    HAS_DELTA: tl.constexpr,
    HAS_DUAL: tl.constexpr,
    HAS_REF: tl.constexpr,
    KL: tl.constexpr,
    BIAS_KL: tl.constexpr,
    CLAMP: tl.constexpr,
):
    """The clipped-ratio + KL loss of one token (or a vector of tokens) from its log-prob.

    Returns (loss, kl, clipped_low, clipped_high, clipped_dual, clipped_delta, dloss/dlogp,
    dkl/dlogp), all zeroed where `valid` is false. The derivatives are those torch autograd gives
    the reference: a clamp passes the gradient at its bounds, and a tie in a min splits it.
    """
    x = logp - old
    log_ratio = tl.minimum(tl.maximum(x, -CLAMP), CLAMP)
    ratio = tl.exp(log_ratio)
    dratio = tl.where((x >= -CLAMP) & (x <= CLAMP), ratio, 0.0)  # d ratio / d logp
    clipped = tl.minimum(tl.maximum(ratio, lo), hi)
    dclipped = tl.where((ratio >= lo) & (ratio <= hi), dratio, 0.0)
    if HAS_DELTA:  # TRL's two-sided clip: the unclipped term's ratio is capped at delta
        capped = tl.minimum(ratio, delta)
        dcapped = tl.where(ratio <= delta, dratio, 0.0)
    else:
        capped = ratio
        dcapped = dratio
    t1 = capped * adv
    t2 = clipped * adv
    pg = -tl.minimum(t1, t2)
    dpg = -tl.where(t1 < t2, adv * dcapped, tl.where(t1 > t2, adv * dclipped,
                                                     0.5 * adv * (dcapped + dclipped)))
    clip_lo = (capped < lo) & (adv < 0)
    clip_hi = (capped > hi) & (adv > 0)
    if HAS_DELTA:
        capped_flag = (ratio > delta) & (t1 < t2)
    else:
        capped_flag = tl.full(pg.shape, 0, tl.int1)
    if HAS_DUAL:
        bound = -dual * adv
        take = (adv < 0) & (pg > bound)
        pg = tl.where(take, bound, pg)
        dpg = tl.where(take, 0.0, dpg)
    else:
        take = tl.full(pg.shape, 0, tl.int1)
    kl = tl.zeros_like(pg)
    dkl = tl.zeros_like(pg)
    if HAS_REF:
        y = ref - logp
        d = tl.minimum(tl.maximum(y, -CLAMP), CLAMP)
        if KL == 1:
            kl = -d
            dkl = tl.full(d.shape, 1.0, tl.float32)
        elif KL == 2:
            kl = 0.5 * d * d
            dkl = -d
        else:
            ed = tl.exp(d)
            kl = ed - d - 1.0
            dkl = 1.0 - ed
        dkl = tl.where((y >= -CLAMP) & (y <= CLAMP), dkl, 0.0)
        if BIAS_KL:  # TRL's use_bias_correction_kl: kl * ratio, the ratio with its gradient
            dkl = dkl * ratio + kl * dratio
            kl = kl * ratio
    loss = pg + beta * kl
    dloss = dpg + beta * dkl
    loss = tl.where(valid, loss, 0.0)
    kl = tl.where(valid, kl, 0.0)
    dloss = tl.where(valid, dloss, 0.0)
    dkl = tl.where(valid, dkl, 0.0)
    return (loss, kl, clip_lo & valid, clip_hi & valid, take & valid, capped_flag & valid,
            dloss, dkl)


@triton.jit
def store_flags(flags_ptr, tok, c_lo, c_hi, c_dual, c_delta, m):
    """flags is int8 [N, 4] (low, high, dual, delta): int64 token offsets, no N * k products."""
    p = flags_ptr + tok * 4
    tl.store(p, c_lo.to(tl.int8), mask=m)
    tl.store(p + 1, c_hi.to(tl.int8), mask=m)
    tl.store(p + 2, c_dual.to(tl.int8), mask=m)
    tl.store(p + 3, c_delta.to(tl.int8), mask=m)


@triton.jit
def _row_stats(
    row_ptr, V, temperature, ENTROPY: tl.constexpr, BLOCK_V: tl.constexpr, NUM_STAGES: tl.constexpr
):
    """Reads one row of logits once; returns (max, sum exp(x - max), sum exp(x - max)(x - max))
    of x = row / T. Each lane keeps its own running stats: a new maximum re-bases that lane only,
    so the loop has one exp per element and no cross-warp reduction (no barrier)."""
    m = tl.full((BLOCK_V,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK_V,), tl.float32)
    w = tl.zeros((BLOCK_V,), tl.float32)
    for start in tl.range(0, V, BLOCK_V, num_stages=NUM_STAGES):
        offs = start + tl.arange(0, BLOCK_V)
        x = tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
        x = x / temperature
        hi = tl.maximum(m, x)
        # gap = min - max <= 0, with max replaced by 0 while it is -inf: never NaN, and e = 0
        # exactly when the smaller side is -inf
        gap = tl.minimum(m, x) - tl.where(hi == float("-inf"), 0.0, hi)
        e = tl.exp(gap)
        grow = x > m
        if ENTROPY:
            # new max: w <- e * (w + (m - x) * s);  else: w <- w + e * (x - m). The selects keep
            # 0 * -inf (an empty lane, a -inf logit) out of the products.
            w = tl.where(grow, e * (w + tl.where(grow & (s > 0.0), gap, 0.0) * s),
                         w + e * tl.where(e > 0.0, gap, 0.0))
        s = tl.where(grow, s * e + 1.0, s + e)
        m = hi
    mx = tl.max(m, axis=0)
    mx = tl.where(mx == float("-inf"), 0.0, mx)  # an all -inf row: shift by 0, no NaN
    a = tl.exp(m - mx)
    s_row = tl.sum(s * a, axis=0)
    w_row = tl.full((), 0.0, tl.float32)
    if ENTROPY:
        w_row = tl.sum(a * (w + tl.where(s > 0.0, m - mx, 0.0) * s), axis=0)
    return mx, s_row, w_row


@triton.jit
def _row_grad(
    row_ptr,
    grow_ptr,
    tok,
    lse,
    coef,
    V,
    temperature,
    REVERSE: tl.constexpr,
    BLOCK_V: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    """Writes grow[v] = coef / T * (onehot(tok)[v] - exp(row[v] / T - lse)) for one row; zeros
    without reading the row when coef == 0 (exactly 0 for masked rows, even with NaN logits).
    REVERSE walks the row last block first. grow may alias row (each block is read, then written
    by this program)."""
    n_blocks = tl.cdiv(V, BLOCK_V)
    if coef == 0.0:
        zero = tl.zeros((BLOCK_V,), tl.float32).to(grow_ptr.dtype.element_ty)
        for i in range(0, n_blocks):
            offs = i * BLOCK_V + tl.arange(0, BLOCK_V)
            tl.store(grow_ptr + offs, zero, mask=offs < V)
    else:
        g = coef / temperature
        for i in tl.range(0, n_blocks, num_stages=NUM_STAGES):
            if REVERSE:
                blk = n_blocks - 1 - i
            else:
                blk = i
            offs = blk * BLOCK_V + tl.arange(0, BLOCK_V)
            in_v = offs < V
            x = tl.load(row_ptr + offs, mask=in_v, other=float("-inf")).to(tl.float32)
            p = tl.exp(x / temperature - lse)
            d = g * (tl.where(offs == tok, 1.0, 0.0) - p)
            tl.store(grow_ptr + offs, d.to(grow_ptr.dtype.element_ty), mask=in_v)


@triton.jit
def _logits_fwd_kernel(
    logits_ptr,
    ids_ptr,
    old_ptr,
    ref_ptr,
    adv_ptr,
    mask_ptr,
    wt_ptr,
    logp_ptr,
    lse_ptr,
    ent_ptr,
    loss_ptr,
    kl_ptr,
    flags_ptr,
    dloss_ptr,
    dkl_ptr,
    dlogits_ptr,
    V,
    T_INNER,
    stride_b,
    stride_t,
    gstride_b,
    gstride_t,
    temperature,
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
    GRAD: tl.constexpr,
    BLOCK_V: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    bi = row // T_INNER
    ti = row % T_INNER
    row_ptr = logits_ptr + bi * stride_b + ti * stride_t
    # The target logit is read before the row pass: in the fused in-place mode a warp that is
    # through the row's reductions (barriers) may already be overwriting the row with dlogits.
    tok = tl.load(ids_ptr + row).to(tl.int64)
    x_tok = tl.load(row_ptr + tok).to(tl.float32) / temperature
    mx, s, w = _row_stats(row_ptr, V, temperature, ENTROPY, BLOCK_V, NUM_STAGES)
    log_s = tl.log(s)
    lse = mx + log_s
    logp = x_tok - lse
    tl.store(logp_ptr + row, logp)
    tl.store(lse_ptr + row, lse)
    if ENTROPY:
        tl.store(ent_ptr + row, log_s - w / s)
    if LOSS:
        valid = tl.load(mask_ptr + row) != 0
        adv = tl.load(adv_ptr + row).to(tl.float32)
        if HAS_OLD:
            old = tl.load(old_ptr + row).to(tl.float32)
        else:
            old = logp
        if HAS_REF:
            ref = tl.load(ref_ptr + row).to(tl.float32)
        else:
            ref = logp
        loss, kl, c_lo, c_hi, c_dual, c_delta, dloss, dkl = token_loss(
            logp, old, ref, adv, valid, lo, hi, delta, dual, beta, HAS_DELTA, HAS_DUAL, HAS_REF,
            KL, BIAS_KL, CLAMP,
        )
        tl.store(loss_ptr + row, loss)
        tl.store(kl_ptr + row, kl)
        store_flags(flags_ptr, row, c_lo, c_hi, c_dual, c_delta, True)
        if GRAD:
            coef = tl.load(wt_ptr + row).to(tl.float32) * dloss
            grow_ptr = dlogits_ptr + bi * gstride_b + ti * gstride_t
            _row_grad(row_ptr, grow_ptr, tok, lse, coef, V, temperature, True, BLOCK_V,
                      NUM_STAGES)
        else:
            tl.store(dloss_ptr + row, dloss)
            tl.store(dkl_ptr + row, dkl)


@triton.jit
def _logits_bwd_kernel(
    logits_ptr,
    dlogits_ptr,
    ids_ptr,
    lse_ptr,
    coef_ptr,
    V,
    T_INNER,
    stride_b,
    stride_t,
    gstride_b,
    gstride_t,
    temperature,
    BLOCK_V: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    bi = row // T_INNER
    ti = row % T_INNER
    row_ptr = logits_ptr + bi * stride_b + ti * stride_t
    grow_ptr = dlogits_ptr + bi * gstride_b + ti * gstride_t
    coef = tl.load(coef_ptr + row)
    lse = tl.load(lse_ptr + row)
    tok = tl.load(ids_ptr + row).to(tl.int64)
    _row_grad(row_ptr, grow_ptr, tok, lse, coef, V, temperature, False, BLOCK_V, NUM_STAGES)


# ---------------------------------------------------------------------------------------------
# Launchers


@dataclass(frozen=True)
class LossConfig:
    """Loss hyperparameters as the kernels see them (validated by the public API)."""

    temperature: float = 1.0
    eps_low: float = 0.2
    eps_high: float = 0.2
    delta: float | None = None
    dual_clip: float | None = None
    beta: float = 0.0
    kl_estimator: str = "k3"
    use_bias_correction_kl: bool = False
    compute_entropy: bool = False


@dataclass
class RawOutputs:
    """Flat [N] outputs of a forward launch (loss fields are None for the log-prob-only pass)."""

    logp: torch.Tensor
    lse: torch.Tensor
    entropy: torch.Tensor | None
    loss: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    flags: torch.Tensor | None = None  # bool [N, 4]: clipped_low, _high, _dual, _delta
    dloss: torch.Tensor | None = None
    dkl: torch.Tensor | None = None
    grad: torch.Tensor | None = None  # dlogits of the fused forward+backward mode


def device_guard(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Launch on the tensor's device (a cuda:1 tensor must not run on cuda:0's stream)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def row_layout(logits: torch.Tensor) -> tuple[int, int, int, int]:
    """(N, T_INNER, stride_b, stride_t) addressing the rows of a [N, V] or [B, T, V] tensor."""
    if logits.dim() == 2:
        return logits.shape[0], max(logits.shape[0], 1), 0, logits.stride(0)
    if logits.dim() == 3:
        b, t, _ = logits.shape
        return b * t, max(t, 1), logits.stride(0), logits.stride(1)
    raise ValueError(f"logits must be [N, V] or [B, T, V], got shape {tuple(logits.shape)}")


def check_disjoint_rows(logits: torch.Tensor) -> None:
    """An in-place write needs every element at its own address: refuse overlapping rows (an
    expand() or as_strided view), whose programs would race on the same memory."""
    dims = sorted(
        ((st, n) for st, n in zip(logits.stride(), logits.shape) if n > 1), key=lambda d: d[0]
    )
    span = 1
    for st, n in dims:
        if st < span:
            raise ValueError(
                f"in-place gradients need logits whose rows do not overlap in memory, got shape "
                f"{tuple(logits.shape)} with strides {tuple(logits.stride())} (an expand() or "
                "as_strided view?): pass a tensor with its own storage, or do not ask for in place"
            )
        span = st * n


def clip_bounds(cfg: LossConfig) -> tuple[float, float, float, float]:
    """(lo, hi, delta, dual_clip) as kernel floats (delta / dual_clip unused when None)."""
    delta = 0.0 if cfg.delta is None else float(cfg.delta)
    dual = 0.0 if cfg.dual_clip is None else float(cfg.dual_clip)
    return 1.0 - cfg.eps_low, 1.0 + cfg.eps_high, delta, dual


def loss_constexprs(cfg: LossConfig, has_old: bool, has_ref: bool) -> dict:
    """The loss branches as kernel constexprs (shared by the logits and fused-linear kernels)."""
    return dict(
        HAS_OLD=has_old,
        HAS_DELTA=cfg.delta is not None,
        HAS_DUAL=cfg.dual_clip is not None,
        HAS_REF=has_ref,
        KL=KL_CODE[cfg.kl_estimator],
        BIAS_KL=cfg.use_bias_correction_kl,
        CLAMP=LOG_RATIO_CLAMP,
    )


def _launch(logits: torch.Tensor, block_v: int | None) -> LogitsLaunch:
    return logits_launch(logits.shape[-1], logits.dtype, block_v)


def logits_forward(
    logits: torch.Tensor,
    ids: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor | None,
    mask: torch.Tensor | None,
    cfg: LossConfig,
    with_loss: bool,
    *,
    weights: torch.Tensor | None = None,
    inplace: bool = False,
    block_v: int | None = None,
) -> RawOutputs:
    """Launch the forward kernel. logits [N, V] / [B, T, V] with unit last stride; the rest flat
    [N]. With `weights` (flat fp32 [N]) the fused forward+backward mode also writes
    dlogits = d sum(weights * loss) / d logits into `out.grad`: the logits buffer itself when
    `inplace`, else a new one."""
    V = logits.shape[-1]
    N, t_inner, sb, st = row_layout(logits)
    if N > MAX_ROWS:
        raise ValueError(f"at most {MAX_ROWS} token rows per call, got {N}")
    if weights is not None and not with_loss:
        raise ValueError("weights (the fused forward+backward mode) need the loss")
    dev = logits.device
    f32 = dict(device=dev, dtype=torch.float32)
    logp, lse = torch.empty(N, **f32), torch.empty(N, **f32)
    out = RawOutputs(logp, lse, torch.empty(N, **f32) if cfg.compute_entropy else None)
    flags = torch.empty(N if with_loss else 1, 4, device=dev, dtype=torch.int8)
    if with_loss:
        out.loss, out.kl = torch.empty(N, **f32), torch.empty(N, **f32)
        if weights is None:
            out.dloss, out.dkl = torch.empty(N, **f32), torch.empty(N, **f32)
        out.flags = flags.view(torch.bool)
    if weights is not None:
        if inplace:
            check_disjoint_rows(logits)
        out.grad = logits if inplace else torch.empty(logits.shape, dtype=logits.dtype, device=dev)
    if N == 0:
        return out

    def ptr(t: torch.Tensor | None) -> torch.Tensor:
        return logp if t is None else t  # a placeholder pointer the kernel never touches

    grad = logits if out.grad is None else out.grad
    _, _, gsb, gst = row_layout(grad)
    launch = _launch(logits, block_v)
    with device_guard(logits):
        _logits_fwd_kernel[(N,)](
            logits, ids, ptr(old_logp), ptr(ref_logp), ptr(advantages), ptr(mask), ptr(weights),
            logp, lse, ptr(out.entropy), ptr(out.loss), ptr(out.kl), flags, ptr(out.dloss),
            ptr(out.dkl), grad,
            V, t_inner, sb, st, gsb, gst,
            float(cfg.temperature), *clip_bounds(cfg), float(cfg.beta),
            LOSS=with_loss, **loss_constexprs(cfg, old_logp is not None, ref_logp is not None),
            ENTROPY=cfg.compute_entropy, GRAD=weights is not None,
            BLOCK_V=launch.block_v, NUM_STAGES=launch.num_stages, num_warps=launch.num_warps,
        )  # fmt: skip
    if weights is not None and inplace:
        torch.autograd.graph.increment_version(logits)  # the buffer now holds dlogits
    return out


def logits_backward(
    logits: torch.Tensor,
    ids: torch.Tensor,
    lse: torch.Tensor,
    coef: torch.Tensor,
    cfg: LossConfig,
    *,
    inplace: bool = False,
    block_v: int | None = None,
) -> torch.Tensor:
    """dlogits for dL/dlogp = coef [N]; written into `logits` itself when `inplace` (its version
    counter is bumped, so another autograd node that saved it fails instead of reading
    gradients)."""
    V = logits.shape[-1]
    N, t_inner, sb, st = row_layout(logits)
    if inplace:
        check_disjoint_rows(logits)
        grad = logits
    else:
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    if N == 0:
        return grad
    _, _, gsb, gst = row_layout(grad)
    launch = _launch(logits, block_v)
    with device_guard(logits):
        _logits_bwd_kernel[(N,)](
            logits, grad, ids, lse, coef, V, t_inner, sb, st, gsb, gst, float(cfg.temperature),
            BLOCK_V=launch.block_v, NUM_STAGES=launch.num_stages, num_warps=launch.num_warps,
        )  # fmt: skip
    if inplace:
        torch.autograd.graph.increment_version(logits)
    return grad


def combine_coef(
    g_loss: torch.Tensor | None,
    g_logp: torch.Tensor | None,
    g_kl: torch.Tensor | None,
    dloss: torch.Tensor,
    dkl: torch.Tensor,
) -> torch.Tensor:
    """dL/dlogp per token from the upstream gradients of (loss, logp, kl) (flat fp32 [N])."""
    coef = torch.zeros_like(dloss)
    if g_loss is not None:
        coef = coef + g_loss.reshape(-1).float() * dloss
    if g_kl is not None:
        coef = coef + g_kl.reshape(-1).float() * dkl
    if g_logp is not None:
        coef = coef + g_logp.reshape(-1).float()
    return coef.contiguous()


class GRPOLogitsFunction(torch.autograd.Function):
    """(logits, ids, old, ref, adv, mask) -> (loss, logp, kl, flags, entropy), flat [N] outputs.

    Saves logits (no copy), ids and three fp32 [N] vectors. With `inplace` the gradient is
    written into the saved logits buffer and returned as the logits' gradient.
    old/ref/advantages/mask are constants (no gradient).
    """

    @staticmethod
    def forward(ctx, logits, ids, old_logp, ref_logp, advantages, mask, cfg, inplace, block_v):
        if inplace:
            check_disjoint_rows(logits)  # refuse before any work, not in backward
        out = logits_forward(
            logits, ids, old_logp, ref_logp, advantages, mask, cfg, True, block_v=block_v
        )
        ctx.save_for_backward(logits, ids, out.lse, out.dloss, out.dkl)
        ctx.cfg, ctx.inplace, ctx.block_v = cfg, inplace, block_v
        entropy = out.entropy if out.entropy is not None else torch.empty(0, device=logits.device)
        ctx.mark_non_differentiable(out.flags, entropy)
        return out.loss, out.logp, out.kl, out.flags, entropy

    @staticmethod
    def backward(ctx, g_loss, g_logp, g_kl, _g_flags, _g_entropy):
        logits, ids, lse, dloss, dkl = ctx.saved_tensors
        coef = combine_coef(g_loss, g_logp, g_kl, dloss, dkl)
        grad = logits_backward(
            logits, ids, lse, coef, ctx.cfg, inplace=ctx.inplace, block_v=ctx.block_v
        )
        return grad, None, None, None, None, None, None, None, None


class WeightedGRPOLogitsFunction(torch.autograd.Function):
    """The fused forward+backward mode: (logits, ..., weights) -> (sum(weights * loss), loss,
    logp, kl, flags, entropy). Forward computes dlogits of the weighted sum (into the logits
    buffer when `inplace`); backward multiplies it by the upstream scalar gradient, in place,
    only when that is not exactly 1. Only the weighted sum is differentiable."""

    @staticmethod
    def forward(ctx, logits, ids, old_logp, ref_logp, advantages, mask, weights, cfg, inplace,
                block_v):  # fmt: skip
        out = logits_forward(
            logits, ids, old_logp, ref_logp, advantages, mask, cfg, True,
            weights=weights, inplace=inplace, block_v=block_v,
        )  # fmt: skip
        total = (out.loss * weights).sum()
        ctx.grad = out.grad  # not save_for_backward: in place, its version was just bumped
        entropy = out.entropy if out.entropy is not None else torch.empty(0, device=logits.device)
        ctx.mark_non_differentiable(out.loss, out.logp, out.kl, out.flags, entropy)
        return total, out.loss, out.logp, out.kl, out.flags, entropy

    @staticmethod
    def backward(ctx, g_total, *_unused):
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            raise RuntimeError(
                "the fused forward+backward GRPO loss was already backpropagated: its gradient "
                "is computed once, in forward (retain_graph cannot reuse it)"
            )
        if not bool(g_total == 1):  # one scalar sync; skips a pass over N x V when it is 1
            grad.mul_(g_total.to(grad.dtype))
        return grad, None, None, None, None, None, None, None, None, None
