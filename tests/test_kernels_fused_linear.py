"""Fused-linear Triton GRPO kernel (hidden + lm_head weight in, no N x V logits) against the
float64 torch reference. Interpreter on CPU (TRITON_INTERPRET=1), real kernels with CUDA."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from reasoner_kernels import fused_linear_grpo_loss, fused_linear_logprobs  # noqa: E402
from reasoner_kernels.reference import (  # noqa: E402
    fused_linear_grpo_loss_reference,
    selective_logp,
    token_entropy,
)
from reasoner_kernels.triton_fused_linear import chunk_rows, matmul  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
BLOCKS = (16, 32, 16)  # tiny tiles so the shapes below span several tiles in every dimension
LOG_RATIOS = [-30.0, -3.0, -0.6, -0.1, 0.1, 0.6, 1.6, 3.0, 30.0]
# Without the +-30 past the clamp: a bias-corrected KL times a ratio of e^20 gives weight
# gradients ~1e8 whose fp32 sums cancel far below the tolerance.
MILD_LOG_RATIOS = [-2.0, -3.0, -0.6, -0.1, 0.1, 0.6, 1.6, 3.0, 2.0]


def make_case(n=37, h=40, v=100, temperature=0.7, seed=0, bias=True, log_ratios=LOG_RATIOS):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64) * 0.3
    b = torch.randn(v, generator=g, dtype=torch.float64) if bias else None
    if bias:
        b[32:64] = float("-inf")  # a whole BLOCK_V tile of -inf logits
    ids = torch.randint(0, v, (n,), generator=g)
    ids[(ids >= 32) & (ids < 64)] = 3
    logits = hidden @ weight.t() + (b if bias else 0)
    logp = selective_logp(logits, ids, temperature)
    old = logp - torch.tensor(log_ratios, dtype=torch.float64)[torch.arange(n) % 9]
    ref = logp + torch.randn(n, generator=g, dtype=torch.float64)
    sign = 1.0 - 2.0 * ((torch.arange(n) // 9) % 2).double()
    adv = sign * (torch.rand(n, generator=g, dtype=torch.float64) + 0.05)
    mask = torch.ones(n, dtype=torch.bool)
    mask[[i for i in (0, 5, 20) if i < n]] = False
    return hidden, weight, b, ids, old, ref, adv, mask


def dev32(t):
    return None if t is None else t.float().to(DEV)


def close(a, b, rtol=1e-4, atol=1e-5):
    torch.testing.assert_close(a.double().cpu(), b.double().cpu(), rtol=rtol, atol=atol)


def run_both(case, *, needs=(True, True, True), num_splits=None, chunk_size=None, **kw):
    hidden, weight, b, ids, old, ref, adv, mask = case
    n = ids.shape[0]
    g = torch.Generator().manual_seed(5)
    w_loss, w_logp, w_kl = (torch.rand(n, generator=g, dtype=torch.float64) for _ in range(3))

    def objective(out):
        dt = out.loss.dtype
        obj = (out.loss * w_loss.to(out.loss.device, dt)).sum()
        obj = obj + 0.3 * (out.logp * w_logp.to(out.loss.device, dt)).sum()
        return obj + 0.5 * (out.kl * w_kl.to(out.loss.device, dt)).sum()

    ins = [
        None if t is None else dev32(t).requires_grad_(r)
        for t, r in zip((hidden, weight, b), needs)
    ]
    if num_splits is None:
        out = fused_linear_grpo_loss(
            ins[0],
            ins[1],
            ids.to(DEV),
            dev32(old),
            dev32(ref),
            dev32(adv),
            mask.to(DEV),
            bias=ins[2],
            backend="triton",
            blocks=BLOCKS,
            chunk_size=chunk_size,
            **kw,
        )
    else:
        out = _with_splits(ins, case, num_splits, chunk_size, kw)
    objective(out).backward()
    rins = [
        None if t is None else t.clone().requires_grad_(r)
        for t, r in zip((hidden, weight, b), needs)
    ]
    rout = fused_linear_grpo_loss_reference(
        rins[0], rins[1], ids, old, ref, adv, mask, bias=rins[2], **kw
    )
    objective(rout).backward()
    return out, ins, rout, rins


def _with_splits(ins, case, num_splits, chunk_size, kw):
    """Call the autograd Function directly to force a number of vocabulary splits."""
    from reasoner_kernels.api import _flat_tokens, _loss_config, _unflatten
    from reasoner_kernels.triton_fused_linear import FusedLinearConfig, FusedLinearGRPOFunction
    from reasoner_kernels.triton_logits import LossConfig

    _, _, _, ids, old, ref, adv, mask = case
    kw = dict(kw)
    ent = kw.pop("compute_entropy", False)
    lk = _loss_config(
        kw.pop("temperature", 1.0),
        kw.pop("eps_low", 0.2),
        kw.pop("eps_high", None),
        kw.pop("delta", None),
        kw.pop("dual_clip", None),
        kw.pop("beta", 0.0),
        kw.pop("kl_estimator", "k3"),
        kw.pop("use_bias_correction_kl", False),
        ref,
    )
    cfg = FusedLinearConfig(
        LossConfig(compute_entropy=ent, **lk), chunk_size=chunk_size, blocks=BLOCKS,
        num_splits=num_splits,
    )
    o, r, a, m = _flat_tokens(ids.shape, dev32(old), dev32(ref), dev32(adv), mask.to(DEV))
    outs = FusedLinearGRPOFunction.apply(ins[0], ins[1], ins[2], ids.to(DEV), o, r, a, m, cfg)
    return _unflatten(*outs, ids.shape, True, ent)


def check(out, ins, rout, rins):
    close(out.logp, rout.logp, atol=2e-5)
    close(out.loss, rout.loss)
    close(out.kl, rout.kl)
    for f in ("clipped_low", "clipped_high", "clipped_dual", "clipped_delta"):
        assert torch.equal(getattr(out, f).cpu(), getattr(rout, f)), f
    for name, a, b in zip(("dhidden", "dweight", "dbias"), ins, rins):
        if b is not None and b.requires_grad:
            assert a.grad is not None, name
            close(a.grad, b.grad, atol=2e-5)
        elif a is not None:
            assert a.grad is None, name


@pytest.mark.parametrize(
    "kl_estimator,bias_kl,delta,dual_clip",
    [("k1", False, None, 3.0), ("k2", True, 2.5, None), ("k3", True, 3.0, 2.0)],
)
def test_matches_reference_with_bias_and_inf_tile(kl_estimator, bias_kl, delta, dual_clip):
    case = make_case(seed=1, log_ratios=MILD_LOG_RATIOS if bias_kl else LOG_RATIOS)
    kw = dict(
        temperature=0.7,
        eps_low=0.2,
        eps_high=0.28,
        delta=delta,
        dual_clip=dual_clip,
        beta=0.1,
        kl_estimator=kl_estimator,
        use_bias_correction_kl=bias_kl,
        compute_entropy=True,
    )
    out, ins, rout, rins = run_both(case, chunk_size=16, **kw)  # 3 backward chunks
    check(out, ins, rout, rins)
    close(out.entropy, rout.entropy)
    assert rout.clipped_low.any() and rout.clipped_high.any()
    assert bool(rout.clipped_dual.any()) == (dual_clip is not None)
    assert bool(rout.clipped_delta.any()) == (delta is not None)


def test_vocabulary_splits_are_merged_exactly():
    case = make_case(seed=2, v=150, temperature=1.3)
    kw = dict(temperature=1.3, beta=0.05, compute_entropy=True)
    out, ins, rout, rins = run_both(case, num_splits=3, **kw)  # ranges of 64, 64, 22 tokens
    check(out, ins, rout, rins)
    close(out.entropy, rout.entropy)


def test_no_bias_frozen_weight_gives_only_dhidden():
    case = make_case(seed=3, bias=False, n=20, h=33, v=70)
    out, ins, rout, rins = run_both(case, needs=(True, False, False), temperature=1.0)
    check(out, ins, rout, rins)
    assert ins[1].grad is None


def test_frozen_hidden_gives_dweight_and_dbias():
    case = make_case(seed=4, n=20, log_ratios=MILD_LOG_RATIOS)
    out, ins, rout, rins = run_both(
        case, needs=(False, True, True), dual_clip=2.0, use_bias_correction_kl=True, chunk_size=7
    )
    check(out, ins, rout, rins)


def test_three_dim_hidden_and_logprobs_pass():
    hidden, weight, b, ids, *_ = make_case(seed=6, n=24)
    h3 = hidden.reshape(4, 6, -1)
    lp = fused_linear_logprobs(
        dev32(h3),
        dev32(weight),
        ids.reshape(4, 6).to(DEV),
        0.8,
        True,
        bias=dev32(b),
        backend="triton",
        blocks=BLOCKS,
    )
    logits = h3 @ weight.t() + b
    assert lp.logp.shape == (4, 6)
    close(lp.logp, selective_logp(logits, ids.reshape(4, 6), 0.8), atol=2e-5)
    close(lp.entropy, token_entropy(logits, 0.8))


def test_gradcheck_reference_and_triton_against_it():
    torch.manual_seed(7)
    n, h, v = 3, 16, 20  # tl.dot needs tiles >= 16
    hidden = torch.randn(n, h, dtype=torch.float64)
    weight = torch.randn(v, h, dtype=torch.float64) * 0.5
    bias = torch.randn(v, dtype=torch.float64)
    ids = torch.randint(0, v, (n,))
    base = selective_logp(hidden @ weight.t() + bias, ids)
    old = base - torch.tensor([0.5, -0.6, 0.1], dtype=torch.float64)
    ref = base + torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    adv = torch.tensor([1.0, -0.7, 0.4], dtype=torch.float64)
    mask = torch.tensor([True, True, False])
    kw = dict(
        temperature=0.8, eps_high=0.3, delta=1.5, beta=0.2, kl_estimator="k3",
        use_bias_correction_kl=True,
    )

    def f(x, w, bb):
        out = fused_linear_grpo_loss_reference(x, w, ids, old, ref, adv, mask, bias=bb, **kw)
        return out.loss, out.logp

    args = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    assert torch.autograd.gradcheck(f, tuple(args))
    sum(o.sum() for o in f(*args)).backward()
    targs = [dev32(t).requires_grad_() for t in (hidden, weight, bias)]
    out = fused_linear_grpo_loss(
        targs[0],
        targs[1],
        ids.to(DEV),
        dev32(old),
        dev32(ref),
        dev32(adv),
        mask.to(DEV),
        bias=targs[2],
        backend="triton",
        blocks=BLOCKS,
        **kw,
    )
    (out.loss.sum() + out.logp.sum()).backward()
    for a, b in zip(targs, args):
        close(a.grad, b.grad, atol=2e-5)


def test_matmul_kernel_accumulates_with_transposed_strides():
    g = torch.Generator().manual_seed(8)
    a = torch.randn(37, 50, generator=g).to(DEV)
    b = torch.randn(37, 21, generator=g).to(DEV)
    c = torch.randn(50, 21, generator=g).to(DEV)
    expect = c.double() + a.double().t() @ b.double()
    matmul(a.t(), b, c, True, BLOCKS)
    close(c, expect)
    matmul(a.t(), b, c, False, BLOCKS)
    close(c, a.double().t() @ b.double())


def test_chunk_rows_and_validation():
    assert chunk_rows(16384, 151936, 2, None) == 3533  # ~1 GiB of bf16 dlogits
    assert chunk_rows(100, 151936, 2, None) == 100
    assert chunk_rows(100000, 151936 * 64, 2, None) == 1024  # never below 1024 rows
    assert chunk_rows(10, 7, 4, 3) == 3
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_rows(10, 7, 4, 0)
    hidden, weight, b, ids, old, ref, adv, mask = make_case(n=6, seed=9)
    with pytest.raises(ValueError, match="weight must be"):
        fused_linear_grpo_loss(hidden, weight[:, :5], ids, old, ref, adv, mask)
    with pytest.raises(ValueError, match="share a dtype"):
        fused_linear_grpo_loss(hidden, weight.float(), ids, old, ref, adv, mask)
    # auto on CPU tensors is the reference
    out = fused_linear_grpo_loss(hidden, weight, ids, old, ref, adv, mask, bias=b)
    rout = fused_linear_grpo_loss_reference(hidden, weight, ids, old, ref, adv, mask, bias=b)
    if DEV == "cpu":
        assert torch.equal(out.loss, rout.loss)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(dtype):
    hidden, weight, b, ids, old, ref, adv, mask = make_case(n=20, h=32, v=70, seed=10)
    t = [x.to(dtype).to(DEV).requires_grad_() for x in (hidden, weight, b)]
    out = fused_linear_grpo_loss(
        t[0],
        t[1],
        ids.to(DEV),
        dev32(old),
        dev32(ref),
        dev32(adv),
        mask.to(DEV),
        bias=t[2],
        beta=0.1,
        backend="triton",
        blocks=BLOCKS,
        chunk_size=8,
    )
    out.loss.sum().backward()
    r = [x.to(dtype).double().requires_grad_() for x in (hidden, weight, b)]
    rout = fused_linear_grpo_loss_reference(
        r[0], r[1], ids, old, ref, adv, mask, bias=r[2], beta=0.1
    )
    rout.loss.sum().backward()
    close(out.logp, rout.logp, atol=2e-5)
    for a, e in zip(t, r):
        assert a.grad.dtype == dtype
        err = (a.grad.double().cpu() - e.grad).norm() / e.grad.norm()
        assert err < 2e-2, err  # dlogits is rounded to the input dtype before the GEMMs


@pytest.mark.parametrize("n,h,v,splits", [(41, 24, 97, None), (19, 48, 161, 2)])
def test_partial_tiles_odd_rows_hidden_and_vocabulary(n, h, v, splits):
    """No dimension a multiple of its tile (16 x 32 x 16 here; the GPU test runs N = 2000,
    V = 32001 at the real tiles), with and without vocabulary splits."""
    case = make_case(n=n, h=h, v=v, seed=11, log_ratios=MILD_LOG_RATIOS)
    kw = dict(temperature=0.9, delta=2.0, beta=0.05, use_bias_correction_kl=True,
              compute_entropy=True)  # fmt: skip
    out, ins, rout, rins = run_both(case, num_splits=splits, chunk_size=16, **kw)
    check(out, ins, rout, rins)
    close(out.entropy, rout.entropy)


def test_dweight_accumulation_paths():
    """fp32 operands go through torch.addmm, 16-bit ones (on the CPU) through the Triton GEMM;
    the first chunk ignores the buffer's old contents, NaN included, later ones add to it."""
    from reasoner_kernels.triton_fused_linear import accumulate_dweight

    g = torch.Generator().manual_seed(12)
    d = torch.randn(37, 50, generator=g).to(DEV)
    h = torch.randn(37, 21, generator=g).to(DEV)
    for dtype in (torch.float32, torch.bfloat16):
        dd, hh = d.to(dtype), h.to(dtype)
        expect = dd.double().t() @ hh.double()
        dw = torch.full((50, 21), float("nan"), device=DEV)
        path = accumulate_dweight(dw, dd, hh, first=True)
        close(dw, expect, rtol=1e-4, atol=1e-4)
        accumulate_dweight(dw, dd, hh, first=False)
        close(dw, 2 * expect, rtol=1e-4, atol=1e-4)
        if DEV == "cpu":
            assert path == ("torch fp32" if dtype == torch.float32 else "triton")
