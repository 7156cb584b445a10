"""Logits-input Triton GRPO kernel against the float64 torch reference.

Without CUDA the kernels run under the Triton interpreter (TRITON_INTERPRET=1, set below before
the kernel module is imported) on small fp32 inputs; with CUDA the same tests run on the GPU.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from reasoner_kernels import (  # noqa: E402
    LOG_RATIO_CLAMP,
    grpo_loss,
    logprobs,
    weighted_grpo_loss,
)
from reasoner_kernels.reference import grpo_loss_reference, selective_logp  # noqa: E402
from reasoner_kernels.tuning import LogitsLaunch, logits_launch  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
NEG_INF = float("-inf")
# Log-ratios (logp - old) well away from the clip bounds used below (log 0.8, log 1.28, log 3),
# including both sides of the +-LOG_RATIO_CLAMP clamp.
LOG_RATIOS = [-30.0, -3.0, -0.6, -0.1, 0.1, 0.6, 1.6, 3.0, 30.0]
# ref - logp, including both sides of the clamp.
REF_GAPS = [-30.0, -2.0, -0.3, 0.0, 0.4, 2.5, 30.0]


def make_case(n=24, v=300, temperature=0.7, seed=0, on_policy=False, with_ref=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g, dtype=torch.float64) * 2.0
    logits[1, 128:256] = NEG_INF  # a whole BLOCK_V=128 block of -inf
    logits[2, :128] = NEG_INF  # the first block -inf: the running max starts at -inf
    logits[3, ::7] = NEG_INF  # scattered -inf
    ids = torch.randint(0, v, (n,), generator=g)
    ids[1] = 5
    ids[2] = 200
    ids[3] = 1
    logp = selective_logp(logits, ids, temperature)
    lr = torch.tensor(LOG_RATIOS, dtype=torch.float64)[torch.arange(n) % len(LOG_RATIOS)]
    old = None if on_policy else logp - lr
    gaps = torch.tensor(REF_GAPS, dtype=torch.float64)[torch.randperm(n, generator=g) % 7]
    ref = logp + gaps if with_ref else None
    # |A| >= 0.05; the sign flips every len(LOG_RATIOS) rows so each log-ratio meets both signs.
    sign = 1.0 - 2.0 * ((torch.arange(n) // len(LOG_RATIOS)) % 2).double()
    adv = sign * (torch.rand(n, generator=g, dtype=torch.float64) + 0.05)
    adv[4] = 0.0
    mask = torch.ones(n, dtype=torch.bool)
    mask[[i for i in (0, 7, 13) if i < n]] = False
    return logits, ids, old, ref, adv, mask


def fp32(t):
    return None if t is None else t.float().to(DEV)


def run_both(case, upstream=(1.0, 0.3, 0.7), block_v=128, inplace=False, **kw):
    """(triton out, triton dlogits, reference out, reference dlogits) with random upstream grads."""
    logits, ids, old, ref, adv, mask = case
    n = ids.shape[0]
    g = torch.Generator().manual_seed(123)
    w_loss, w_logp, w_kl = (c * torch.rand(n, generator=g, dtype=torch.float64) for c in upstream)

    def objective(out):
        dt = out.loss.dtype
        obj = (out.loss * w_loss.to(out.loss.device, dt)).sum()
        obj = obj + (out.logp * w_logp.to(out.logp.device, dt)).sum()
        if out.kl is not None:
            obj = obj + (out.kl * w_kl.to(out.kl.device, dt)).sum()
        return obj

    leaf = logits.float().to(DEV).requires_grad_()
    x = leaf * 1.0  # a non-leaf buffer the in-place backward may overwrite
    out = grpo_loss(
        x,
        ids.to(DEV),
        fp32(old),
        fp32(ref),
        fp32(adv),
        mask.to(DEV),
        backend="triton",
        block_v=block_v,
        inplace_backward=inplace,
        **kw,
    )
    objective(out).backward()
    rl = logits.clone().requires_grad_()
    rout = grpo_loss_reference(rl, ids, old, ref, adv, mask, **kw)
    objective(rout).backward()
    return out, leaf.grad, rout, rl.grad, x


def close(a, b, rtol=2e-5, atol=2e-5):
    torch.testing.assert_close(
        a.double().cpu(), b.double().cpu(), rtol=rtol, atol=atol, equal_nan=True
    )


FLAGS = ("clipped_low", "clipped_high", "clipped_dual", "clipped_delta")


def check_outputs(out, rout):
    close(out.logp, rout.logp)
    close(out.loss, rout.loss, rtol=1e-4)
    if rout.kl is None:
        assert out.kl is None
    else:
        close(out.kl, rout.kl, rtol=1e-4)
    for f in FLAGS:
        assert torch.equal(getattr(out, f).cpu(), getattr(rout, f)), f
    assert out.logp.dtype == torch.float32


# (delta, dual_clip): TRL's two-sided cap alone, dual-clip PPO alone, and both (the dual bound
# below the cap, so each one binds somewhere).
CLIPS = {"delta": (2.5, None), "dual": (None, 3.0), "both": (3.0, 2.0)}


@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize(
    "kl_estimator,bias_kl", [("k1", False), ("k2", True), ("k3", False), ("k3", True)]
)
def test_matches_reference_each_kl_estimator_and_clip(kl_estimator, bias_kl, clip):
    case = make_case(seed=1)
    delta, dual_clip = CLIPS[clip]
    kw = dict(
        temperature=0.7,
        eps_low=0.2,
        eps_high=0.28,
        delta=delta,
        dual_clip=dual_clip,
        beta=0.05,
        kl_estimator=kl_estimator,
        use_bias_correction_kl=bias_kl,
        compute_entropy=True,
    )
    out, grad, rout, rgrad, _ = run_both(case, **kw)
    check_outputs(out, rout)
    close(out.entropy, token_entropy_ref(case[0], 0.7))
    close(grad, rgrad, rtol=1e-4, atol=1e-6)
    # Every branch of the loss is exercised: both clip sides, the bounds asked for, the clamp.
    assert rout.clipped_low.any() and rout.clipped_high.any()
    assert bool(rout.clipped_delta.any()) == (delta is not None)
    assert bool(rout.clipped_dual.any()) == (dual_clip is not None)
    assert (rout.logp - case[2]).abs().max() > LOG_RATIO_CLAMP


def trl_token_loss(logp, old, ref, adv, *, eps_low, eps_high, delta, beta, bias_kl):
    """TRL 1.16 GRPOTrainer._compute_loss, importance_sampling_level="token", loss_type
    grpo/bnpo/dr_grpo/dapo, written out (before the caller's masking and aggregation)."""
    coef_1 = torch.exp(logp - old)
    per_token_kl = torch.exp(ref - logp) - (ref - logp) - 1
    if bias_kl:
        per_token_kl = per_token_kl * coef_1
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    if delta is not None:
        coef_1 = torch.clamp(coef_1, max=delta)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv) + beta * per_token_kl
    is_low_clipped = (coef_1 < 1 - eps_low) & (adv < 0)
    is_high_clipped = (coef_1 > 1 + eps_high) & (adv > 0)
    return per_token_loss, per_token_kl, is_low_clipped, is_high_clipped


@pytest.mark.parametrize("bias_kl", [False, True])
@pytest.mark.parametrize("delta", [None, 1.6])
@pytest.mark.parametrize("on_policy", [False, True])
def test_equals_trl_formula_for_delta_and_bias_corrected_kl(delta, bias_kl, on_policy):
    """Within the log-ratio clamp, loss, kl, clip flags and dlogits equal TRL's formula."""
    g = torch.Generator().manual_seed(21)
    n, v, temp = 40, 130, 0.9
    logits = torch.randn(n, v, generator=g, dtype=torch.float64) * 2
    ids = torch.randint(0, v, (n,), generator=g)
    logp0 = selective_logp(logits, ids, temp)
    # log-ratios in [-1.5, 1.5]: both clip sides, and ratios past delta = 1.6 (log 0.47)
    old = None if on_policy else logp0 - (torch.rand(n, generator=g, dtype=torch.float64) * 3 - 1.5)
    ref = logp0 + torch.randn(n, generator=g, dtype=torch.float64)
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    mask = torch.rand(n, generator=g) > 0.15
    kw = dict(eps_low=0.2, eps_high=0.28, delta=delta, beta=0.07)

    x = logits.clone().requires_grad_()
    lp = selective_logp(x, ids, temp)
    trl_loss, trl_kl, trl_lo, trl_hi = trl_token_loss(
        lp, lp.detach() if old is None else old, ref, adv, bias_kl=bias_kl, **kw
    )
    (trl_loss * mask).sum().backward()
    rout = grpo_loss_reference(
        logits, ids, old, ref, adv, mask, temperature=temp, use_bias_correction_kl=bias_kl, **kw
    )
    close(rout.loss, torch.where(mask, trl_loss, 0.0), rtol=1e-12, atol=1e-12)
    close(rout.kl, torch.where(mask, trl_kl, 0.0), rtol=1e-12, atol=1e-12)
    assert torch.equal(rout.clipped_low, trl_lo & mask)
    assert torch.equal(rout.clipped_high, trl_hi & mask)
    if delta is not None and not on_policy:
        assert rout.clipped_delta.any()  # the cap binds somewhere
    out, grad, _, rgrad, _ = run_both(
        (logits, ids, old, ref, adv, mask), upstream=(1.0, 0.0, 0.0), temperature=temp,
        use_bias_correction_kl=bias_kl, **kw,
    )
    check_outputs(out, rout)
    g2 = torch.Generator().manual_seed(123)
    w_loss = torch.rand(n, generator=g2, dtype=torch.float64)  # run_both's upstream weights
    x2 = logits.clone().requires_grad_()
    lp2 = selective_logp(x2, ids, temp)
    trl2, *_ = trl_token_loss(
        lp2, lp2.detach() if old is None else old, ref, adv, bias_kl=bias_kl, **kw
    )
    (trl2 * mask * w_loss).sum().backward()
    close(grad, x2.grad, rtol=1e-4, atol=1e-6)
    close(rgrad, x2.grad, rtol=1e-10, atol=1e-12)


def token_entropy_ref(logits, temperature):
    from reasoner_kernels.reference import token_entropy

    return token_entropy(logits, temperature)


def test_temperature_one_no_dual_clip_no_ref_v_multiple_of_block():
    case = make_case(v=256, temperature=1.0, seed=2, with_ref=False)
    out, grad, rout, rgrad, _ = run_both(case, temperature=1.0, eps_low=0.2)
    check_outputs(out, rout)
    assert out.kl is None and out.entropy is None and not out.clipped_dual.any()
    close(grad, rgrad, rtol=1e-4, atol=1e-6)


def test_on_policy_ratio_is_one_and_gradient_is_minus_advantage():
    case = make_case(seed=3, on_policy=True, temperature=1.3)
    out, grad, rout, rgrad, _ = run_both(case, upstream=(1.0, 0.0, 0.0), temperature=1.3)
    check_outputs(out, rout)
    close(grad, rgrad, rtol=1e-4, atol=1e-6)
    logits, ids, _, _, adv, mask = case
    # loss = -A exactly where unmasked; d loss / d logp = -A, d logp / d logits = (onehot - p)/T
    close(out.loss, torch.where(mask, -adv, torch.zeros_like(adv)))
    p = torch.softmax(logits / 1.3, -1)
    onehot = torch.nn.functional.one_hot(ids, logits.shape[-1]).double()
    g = torch.Generator().manual_seed(123)
    w_loss = torch.rand(ids.shape[0], generator=g, dtype=torch.float64)
    expect = (-adv * w_loss * mask)[:, None] * (onehot - p) / 1.3
    close(grad, expect, rtol=1e-4, atol=1e-6)


def test_block_size_does_not_change_results():
    case = make_case(v=300, seed=4)
    kw = dict(temperature=0.9, delta=2.0, dual_clip=1.5, beta=0.1, compute_entropy=True)
    a, ga, *_ = run_both(case, block_v=64, **kw)
    b, gb, *_ = run_both(case, block_v=512, **kw)
    close(a.loss, b.loss, rtol=1e-5)
    close(a.entropy, b.entropy)
    close(ga, gb, rtol=1e-5, atol=1e-7)


def test_inplace_backward_equals_out_of_place_and_reuses_the_buffer():
    case = make_case(seed=5)
    kw = dict(temperature=0.8, eps_high=0.28, dual_clip=3.0, beta=0.04, kl_estimator="k3")
    a, ga, _, rgrad, xa = run_both(case, inplace=False, **kw)
    b, gb, _, _, xb = run_both(case, inplace=True, **kw)
    assert torch.equal(ga, gb)
    close(gb, rgrad, rtol=1e-4, atol=1e-6)
    # In place: the logits buffer now holds dlogits; out of place: it is untouched.
    assert torch.equal(xb.detach(), gb)
    close(xa.detach(), case[0].float())


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")
def test_masked_rows_give_exact_zero_loss_and_gradient_even_with_nan_logits():
    logits, ids, old, ref, adv, mask = make_case(seed=6)
    logits[0] = float("nan")  # row 0 is masked
    out, grad, *_ = run_both((logits, ids, old, ref, adv, mask), upstream=(1.0, 0.0, 1.0), beta=0.1)
    masked = ~mask
    assert torch.all(out.loss.cpu()[masked] == 0) and torch.all(out.kl.cpu()[masked] == 0)
    assert torch.all(grad.cpu()[masked] == 0)
    assert torch.isfinite(out.loss).all() and torch.isfinite(grad).all()
    assert not out.clipped_low.cpu()[masked].any() and not out.clipped_high.cpu()[masked].any()


def test_three_dim_non_contiguous_view_is_read_without_copy():
    g = torch.Generator().manual_seed(7)
    B, T, V = 3, 5, 200
    full = torch.randn(B, T + 1, V, generator=g, dtype=torch.float64)
    ids = torch.randint(0, V, (B, T), generator=g)
    adv = torch.randn(B, 1, generator=g, dtype=torch.float64)  # per sequence, broadcast
    mask = torch.rand(B, T, generator=g) > 0.2
    old = selective_logp(full[:, :-1], ids) + 0.3 * torch.randn(
        B, T, generator=g, dtype=torch.float64
    )
    leaf = full.float().to(DEV).requires_grad_()
    x = leaf[:, :-1]  # strides (T+1)*V, V, 1: not reshapeable to [N, V] without a copy
    assert not x.is_contiguous()
    out = grpo_loss(
        x, ids.to(DEV), fp32(old), None, fp32(adv), mask.to(DEV), backend="triton", block_v=64
    )
    out.loss.sum().backward()
    rl = full.clone().requires_grad_()
    rout = grpo_loss_reference(rl[:, :-1], ids, old, None, adv, mask)
    rout.loss.sum().backward()
    assert out.loss.shape == (B, T)
    check_outputs(out, rout)
    close(leaf.grad, rl.grad, rtol=1e-4, atol=1e-6)


def test_logprobs_no_grad_pass_with_entropy():
    logits, ids, *_ = make_case(seed=8)
    lp = logprobs(logits.float().to(DEV), ids.to(DEV), 0.6, True, backend="triton", block_v=128)
    close(lp.logp, selective_logp(logits, ids, 0.6))
    close(lp.entropy, token_entropy_ref(logits, 0.6))
    assert lp.logp.requires_grad is False
    plain = logprobs(logits.float().to(DEV), ids.to(DEV), 0.6, backend="triton")
    assert plain.entropy is None
    close(plain.logp, lp.logp, rtol=1e-6, atol=1e-6)


def test_gradcheck_reference_and_triton_gradients_against_it():
    torch.manual_seed(9)
    n, v = 4, 7
    logits = torch.randn(n, v, dtype=torch.float64)
    ids = torch.randint(0, v, (n,))
    base = selective_logp(logits, ids)
    old = base - torch.tensor([0.5, -0.6, 0.1, 2.0], dtype=torch.float64)
    ref = base + torch.tensor([0.3, -0.2, 0.5, 0.0], dtype=torch.float64)
    adv = torch.tensor([1.0, -0.7, 0.4, -1.2], dtype=torch.float64)
    mask = torch.tensor([True, True, False, True])
    for est in ("k1", "k2", "k3"):
        kw = dict(temperature=0.8, eps_low=0.2, eps_high=0.3, delta=1.5, dual_clip=1.7, beta=0.2,
                  kl_estimator=est, use_bias_correction_kl=est == "k3")

        def f(x, kw=kw):
            out = grpo_loss_reference(x, ids, old, ref, adv, mask, **kw)
            return out.loss, out.logp, out.kl

        assert torch.autograd.gradcheck(f, (logits.clone().requires_grad_(),))
        rl = logits.clone().requires_grad_()
        sum(o.sum() for o in f(rl)).backward()
        tl_ = logits.float().to(DEV).requires_grad_()
        out = grpo_loss(
            tl_, ids.to(DEV), fp32(old), fp32(ref), fp32(adv), mask.to(DEV), backend="triton", **kw
        )
        (out.loss.sum() + out.logp.sum() + out.kl.sum()).backward()
        close(tl_.grad, rl.grad, rtol=1e-4, atol=1e-6)


def test_extreme_log_ratios_are_clamped_and_stay_finite():
    logits, ids, _, _, _, mask = make_case(n=6, seed=10)
    logp = selective_logp(logits, ids)
    old = logp - torch.tensor([80.0, -80.0, 25.0, -25.0, 500.0, -500.0], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0, -2.0, 2.0, -1e3, 1e3], dtype=torch.float64)
    mask = torch.ones(6, dtype=torch.bool)
    out, grad, rout, rgrad, _ = run_both(
        (logits, ids, old, None, adv, mask), upstream=(1.0, 0.0, 0.0), temperature=1.0
    )
    check_outputs(out, rout)
    assert torch.isfinite(out.loss).all() and torch.isfinite(grad).all()
    # The clamp binds on every row: the ratio is exp(+-20) and no gradient flows through it.
    assert torch.all(grad == 0)
    close(out.loss[:2], torch.tensor([-1.2, 0.8]))  # clipped high (A > 0), clipped low (A < 0)
    close(out.loss[2], 2 * torch.exp(torch.tensor(LOG_RATIO_CLAMP)), rtol=1e-5)  # A < 0, no dual


def test_auto_backend_on_cpu_is_the_reference_and_errors_are_clear():
    logits, ids, old, ref, adv, mask = make_case(n=6, v=300, seed=11)
    out = grpo_loss(logits, ids, old, ref, adv, mask, beta=0.1)
    rout = grpo_loss_reference(logits, ids, old, ref, adv, mask, beta=0.1)
    if DEV == "cpu":
        assert torch.equal(out.loss, rout.loss) and out.loss.dtype == torch.float64
    with pytest.raises(ValueError, match="kl_estimator"):
        grpo_loss(logits, ids, old, ref, adv, mask, kl_estimator="k4")
    with pytest.raises(ValueError, match="delta"):
        grpo_loss(logits, ids, old, ref, adv, mask, delta=1.0)
    with pytest.raises(ValueError, match="dual_clip"):
        grpo_loss(logits, ids, old, ref, adv, mask, dual_clip=0.9)
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logits, ids, old, None, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="backend"):
        grpo_loss(logits, ids, old, ref, adv, mask, backend="cuda")
    x = logits.float().to(DEV)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 300\)"):
        grpo_loss(
            x, (ids + 300).to(DEV), fp32(old), None, fp32(adv), mask.to(DEV), backend="triton"
        )
    with pytest.raises(ValueError, match="old_logp must have the token shape"):
        grpo_loss(x, ids.to(DEV), fp32(old[:2]), None, fp32(adv), mask.to(DEV), backend="triton")


def test_launch_table_defaults_and_overrides(monkeypatch):
    assert logits_launch(151936, torch.bfloat16).block_v == 4096
    assert logits_launch(300, torch.float32).block_v == 512
    assert logits_launch(16, torch.float32).block_v == 16
    assert logits_launch(300, torch.float32, 128).block_v == 128
    with pytest.raises(ValueError, match="power of two"):
        logits_launch(300, torch.float32, 100)
    from reasoner_kernels import tuning

    entry = LogitsLaunch(block_v=64, num_warps=2, num_stages=1)
    monkeypatch.setitem(tuning.LOGITS_TABLE, (300, "fp32"), entry)
    assert logits_launch(300, torch.float32) == entry  # a table entry wins over the default
    assert logits_launch(300, torch.bfloat16).block_v == 512  # keyed on the dtype too
    # the table entry is what the kernel launches with: same results as an explicit block_v
    case = make_case(n=9, v=300, seed=30)
    a, ga, *_ = run_both(case, block_v=None, temperature=0.7, beta=0.1)
    monkeypatch.delitem(tuning.LOGITS_TABLE, (300, "fp32"))
    b, gb, *_ = run_both(case, block_v=None, temperature=0.7, beta=0.1)
    close(a.loss, b.loss, rtol=1e-6)
    close(ga, gb, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_are_upcast_and_gradients_come_back_in_their_dtype(dtype):
    logits, ids, old, ref, adv, mask = make_case(n=10, seed=12)
    x16 = logits.to(dtype)
    leaf = x16.to(DEV).requires_grad_()
    out = grpo_loss(
        leaf * 1,
        ids.to(DEV),
        fp32(old),
        fp32(ref),
        fp32(adv),
        mask.to(DEV),
        beta=0.1,
        compute_entropy=True,
        backend="triton",
        block_v=128,
    )
    out.loss.sum().backward()
    x64 = x16.detach().double().requires_grad_()  # the same rounded values, in float64
    rout = grpo_loss_reference(x64, ids, old, ref, adv, mask, beta=0.1, compute_entropy=True)
    rout.loss.sum().backward()
    assert out.logp.dtype == torch.float32 and leaf.grad.dtype == dtype
    close(out.logp, rout.logp)  # fp32 math on the same inputs
    close(out.entropy, rout.entropy)
    close(leaf.grad, x64.grad, rtol=1e-2, atol=1e-3)  # one rounding to the half dtype


# ---------------------------------------------------------------------------------------------
# Fused forward+backward mode (weighted_grpo_loss), in-place hazards, partial tiles


def run_weighted(case, weights, *, inplace, block_v=128, scale=1.0, dtype=torch.float32, **kw):
    """(output, logits leaf's gradient, the buffer handed to the kernel) of scale * weighted loss."""
    logits, ids, old, ref, adv, mask = case
    leaf = logits.to(dtype).to(DEV).requires_grad_()
    x = leaf * 1  # a non-leaf buffer the in-place mode may overwrite
    out = weighted_grpo_loss(
        x, ids.to(DEV), fp32(old), fp32(ref), fp32(adv), mask.to(DEV), weights.to(DEV),
        backend="triton", block_v=block_v, inplace=inplace, **kw,
    )  # fmt: skip
    (scale * out.loss).backward()
    return out, leaf.grad, x


FUSED_KW = dict(temperature=0.8, eps_high=0.28, delta=2.0, dual_clip=1.5, beta=0.05,
                use_bias_correction_kl=True, compute_entropy=True)  # fmt: skip


@pytest.mark.parametrize("inplace", [False, True])
def test_fused_forward_backward_equals_two_pass_and_float64(inplace):
    case = make_case(n=30, v=300, seed=40)
    logits, ids, old, ref, adv, mask = case
    g = torch.Generator().manual_seed(41)
    weights = torch.rand(30, generator=g, dtype=torch.float64) / 30  # e.g. mask / normaliser
    out, grad, x = run_weighted(case, weights, inplace=inplace, scale=0.37, **FUSED_KW)
    # float64 reference: the same weighted sum through autograd
    rl = logits.clone().requires_grad_()
    rout = grpo_loss_reference(rl, ids, old, ref, adv, mask, **FUSED_KW)
    (0.37 * (rout.loss * weights).sum()).backward()
    close(out.loss, (rout.loss * weights).sum().detach(), rtol=1e-5)
    check_outputs(out.tokens, rout)
    close(out.tokens.entropy, rout.entropy)
    close(grad, rl.grad, rtol=1e-4, atol=1e-7)
    assert not out.tokens.loss.requires_grad and not out.tokens.logp.requires_grad
    # the two-pass path with the same weights as its upstream gradient
    leaf = logits.float().to(DEV).requires_grad_()
    two = grpo_loss(
        leaf * 1, ids.to(DEV), fp32(old), fp32(ref), fp32(adv), mask.to(DEV), backend="triton",
        block_v=128, **FUSED_KW,
    )  # fmt: skip
    (0.37 * (two.loss * weights.float().to(DEV)).sum()).backward()
    close(grad, leaf.grad, rtol=1e-5, atol=1e-8)
    if inplace:  # the buffer handed in now holds the gradient (scaled by 0.37 in backward)
        assert torch.equal(x.detach(), grad)
    else:
        close(x.detach(), logits.float())


def test_fused_mode_upstream_one_skips_scaling_and_backward_runs_once():
    case = make_case(n=12, v=220, seed=42)
    weights = torch.full((12,), 0.25, dtype=torch.float64)
    out, grad, _ = run_weighted(case, weights, inplace=False, temperature=1.1)
    rl = case[0].clone().requires_grad_()
    rout = grpo_loss_reference(rl, *case[1:], temperature=1.1)
    (rout.loss * 0.25).sum().backward()
    close(grad, rl.grad, rtol=1e-4, atol=1e-7)
    x = case[0].float().to(DEV).requires_grad_()
    again = weighted_grpo_loss(
        x, case[1].to(DEV), fp32(case[2]), None, fp32(case[4]), case[5].to(DEV),
        weights.to(DEV), backend="triton",
    )  # fmt: skip
    again.loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already backpropagated"):
        again.loss.backward()


def test_fused_mode_weights_broadcast_per_sequence_on_a_strided_view():
    g = torch.Generator().manual_seed(43)
    B, T, V = 3, 7, 257  # V = 2 * 128 + 1: a one-element last block
    full = torch.randn(B, T + 1, V, generator=g, dtype=torch.float64)
    ids = torch.randint(0, V, (B, T), generator=g)
    adv = torch.randn(B, 1, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.3
    w = 1.0 / mask.sum(1, keepdim=True).clamp(min=1).double() / B  # TRL "grpo" aggregation
    old = selective_logp(full[:, :-1], ids) + 0.2 * torch.randn(B, T, generator=g).double()
    for inplace in (False, True):
        leaf = full.float().to(DEV).requires_grad_()
        x = leaf * 1
        out = weighted_grpo_loss(
            x[:, :-1], ids.to(DEV), fp32(old), None, fp32(adv), mask.to(DEV), fp32(w),
            backend="triton", block_v=128, inplace=inplace,
        )  # fmt: skip
        out.loss.backward()
        rl = full.clone().requires_grad_()
        rout = grpo_loss_reference(rl[:, :-1], ids, old, None, adv, mask)
        expect = ((rout.loss * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
        expect.backward()
        close(out.loss, expect.detach(), rtol=1e-5)
        close(leaf.grad, rl.grad, rtol=1e-4, atol=1e-7)
        assert torch.all(leaf.grad[:, -1] == 0)  # the sliced-off position: untouched


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_fused_mode_masked_rows_get_exact_zeros_even_with_nan_logits():
    logits, ids, old, ref, adv, mask = make_case(n=14, seed=44)
    logits[0] = float("nan")  # row 0 is masked
    weights = torch.ones(14, dtype=torch.float64)
    for inplace in (False, True):
        out, grad, _ = run_weighted(
            (logits, ids, old, ref, adv, mask), weights, inplace=inplace, beta=0.1
        )
        assert torch.all(grad.cpu()[~mask] == 0) and torch.isfinite(grad).all()
        assert torch.isfinite(out.loss)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_mode_half_precision(dtype):
    case = make_case(n=10, seed=45)
    logits, ids, old, ref, adv, mask = case
    weights = torch.full((10,), 0.1, dtype=torch.float64)
    out, grad, _ = run_weighted(case, weights, inplace=True, dtype=dtype, beta=0.1)
    x64 = logits.to(dtype).double().requires_grad_()
    rout = grpo_loss_reference(x64, ids, old, ref, adv, mask, beta=0.1)
    ((rout.loss * weights).sum()).backward()
    assert grad.dtype == dtype
    close(out.tokens.logp, rout.logp)
    close(grad, x64.grad, rtol=1e-2, atol=1e-3)  # one rounding to the half dtype


def test_weighted_loss_torch_backend_is_the_reference():
    logits, ids, old, ref, adv, mask = make_case(n=8, seed=46)
    w = torch.rand(8, dtype=torch.float64)
    out = weighted_grpo_loss(logits, ids, old, ref, adv, mask, w, beta=0.1, backend="torch")
    rout = grpo_loss_reference(logits, ids, old, ref, adv, mask, beta=0.1)
    assert torch.equal(out.loss, (rout.loss * w).sum())
    assert torch.equal(out.tokens.kl, rout.kl) and not out.tokens.loss.requires_grad
    with pytest.raises(ValueError, match="weights must broadcast"):
        weighted_grpo_loss(logits, ids, old, ref, adv, mask, w[:3], backend="torch")


@pytest.mark.parametrize("fused", [False, True])
def test_inplace_bumps_the_version_so_a_node_that_saved_the_logits_fails(fused):
    """Another autograd node that saved the logits must not silently read gradients."""
    _, ids, old, ref, adv, mask = make_case(n=8, v=210, seed=47)
    logits = torch.randn(8, 210, generator=torch.Generator().manual_seed(47), dtype=torch.float64)
    leaf = logits.float().to(DEV).requires_grad_()
    x = leaf * 1
    other = (x * x).sum()  # MulBackward saved x, before the kernel overwrites it
    args = (x, ids.to(DEV), fp32(old), None, fp32(adv), mask.to(DEV))
    if fused:
        loss = weighted_grpo_loss(*args, torch.ones(8, device=DEV), backend="triton",
                                  inplace=True).loss  # fmt: skip
    else:
        loss = grpo_loss(*args, backend="triton", inplace_backward=True).loss.sum()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss + other).backward()
    # out of place, the same graph backpropagates
    leaf2 = logits.float().to(DEV).requires_grad_()
    x2 = leaf2 * 1
    other2 = (x2 * x2).sum()
    args2 = (x2,) + args[1:]
    if fused:
        loss2 = weighted_grpo_loss(*args2, torch.ones(8, device=DEV), backend="triton").loss
    else:
        loss2 = grpo_loss(*args2, backend="triton").loss.sum()
    (loss2 + other2).backward()
    rl = logits.clone().requires_grad_()
    rout = grpo_loss_reference(rl, ids, old, None, adv, mask)
    (rout.loss.sum() + (rl * rl).sum()).backward()
    close(leaf2.grad, rl.grad, rtol=1e-4, atol=1e-6)


def test_inplace_refuses_overlapping_rows_but_reading_them_is_fine():
    logits, ids, old, _, adv, mask = make_case(n=6, v=210, seed=48)
    row = logits[:1].float().to(DEV)
    expanded = row.expand(6, 210)  # six rows, one address range: in place they would race
    args = (ids.to(DEV), fp32(old), None, fp32(adv), mask.to(DEV))
    with pytest.raises(ValueError, match="rows do not overlap"):
        grpo_loss(expanded, *args, backend="triton", inplace_backward=True)
    with pytest.raises(ValueError, match="rows do not overlap"):
        weighted_grpo_loss(expanded, *args, torch.ones(6, device=DEV), backend="triton",
                           inplace=True)  # fmt: skip
    strided = torch.as_strided(logits.float().to(DEV).reshape(-1), (6, 210), (100, 1))
    with pytest.raises(ValueError, match="rows do not overlap"):
        grpo_loss(strided, *args, backend="triton", inplace_backward=True)
    out = grpo_loss(expanded, *args, backend="triton", block_v=64)  # read-only: allowed
    rout = grpo_loss_reference(expanded.cpu().double(), ids, old, None, adv, mask)
    close(out.loss, rout.loss, rtol=1e-4)


@pytest.mark.parametrize("n,v,block_v", [(37, 257, 128), (13, 1000, 256), (5, 201, 64)])
def test_partial_tiles_odd_rows_and_vocabulary(n, v, block_v):
    """Odd row counts and a vocabulary that is no multiple of the block (the GPU test runs the
    same at N = 2000, V = 32001): both modes equal float64."""
    case = make_case(n=n, v=v, seed=49, temperature=0.9)
    kw = dict(temperature=0.9, delta=2.5, beta=0.04, compute_entropy=True)
    out, grad, rout, rgrad, _ = run_both(case, block_v=block_v, **kw)
    check_outputs(out, rout)
    close(grad, rgrad, rtol=1e-4, atol=1e-6)
    weights = torch.linspace(0.1, 1.0, n, dtype=torch.float64)
    wout, wgrad, _ = run_weighted(case, weights, inplace=True, block_v=block_v, **kw)
    rl = case[0].clone().requires_grad_()
    (grpo_loss_reference(rl, *case[1:], **kw).loss * weights).sum().backward()
    close(wgrad, rl.grad, rtol=1e-4, atol=1e-6)
    close(wout.tokens.entropy, rout.entropy)


@pytest.mark.parametrize("delta,bias_kl", [(None, False), (1.6, True)])
def test_equals_real_trl_1_16_compute_loss(delta, bias_kl):
    """Where TRL 1.16 is installed: its GRPOTrainer._compute_loss (bnpo), run on the same
    log-probs through a stub trainer, gives our loss, gradient and KL / clip metrics."""
    trl = pytest.importorskip("trl")
    if not trl.__version__.startswith("1.16."):
        pytest.skip(f"written against TRL 1.16's _compute_loss, found {trl.__version__}")
    from collections import defaultdict
    from types import SimpleNamespace

    from trl.trainer.grpo_trainer import GRPOTrainer

    g = torch.Generator().manual_seed(50)
    B, T, V, temp = 3, 9, 140, 0.9
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    ids = torch.randint(0, V, (B, T), generator=g)
    logp0 = selective_logp(logits, ids, temp)
    old = logp0 - (torch.rand(B, T, generator=g, dtype=torch.float64) * 3 - 1.5)
    ref = logp0 + torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, generator=g) > 0.2).long()
    kw = dict(eps_low=0.2, eps_high=0.28, delta=delta, beta=0.07)

    x = logits.clone().requires_grad_()
    lp = selective_logp(x, ids, temp)
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (lp, torch.zeros_like(lp), None),
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=kw["beta"], loss_type="bnpo",
        epsilon_low=kw["eps_low"], epsilon_high=kw["eps_high"], use_vllm=False,
        args=SimpleNamespace(use_bias_correction_kl=bias_kl, delta=delta),
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False, max_completion_length=T,
        accelerator=SimpleNamespace(num_processes=1, sync_gradients=True,
                                    gather=lambda t: t, gather_for_metrics=lambda t: t,
                                    reduce=lambda t, reduction="sum": t),
        _metrics=defaultdict(lambda: defaultdict(list)),
    )  # fmt: skip
    inputs = dict(
        prompt_ids=torch.zeros(B, 1, dtype=torch.long), prompt_mask=torch.ones(B, 1),
        completion_ids=ids, completion_mask=mask, advantages=adv,
        old_per_token_logps=old, ref_per_token_logps=ref,
    )  # fmt: skip
    trl_loss = GRPOTrainer._compute_loss(stub, None, inputs)
    trl_loss.backward()
    m = stub._metrics["train"]

    leaf = logits.float().to(DEV).requires_grad_()
    out = grpo_loss(
        leaf * 1, ids.to(DEV), fp32(old), fp32(ref), fp32(adv[:, None]), mask.bool().to(DEV),
        temperature=temp, use_bias_correction_kl=bias_kl, backend="triton", block_v=64, **kw,
    )  # fmt: skip
    mk = mask.bool().to(DEV)
    ours = out.loss.sum() / mk.sum()
    ours.backward()
    close(ours, trl_loss.detach(), rtol=1e-5, atol=1e-7)
    close(leaf.grad, x.grad, rtol=1e-4, atol=1e-7)
    close(torch.tensor(m["kl"][0]), out.kl.sum() / mk.sum(), rtol=1e-5, atol=1e-7)
    close(torch.tensor(m["clip_ratio/low_mean"][0]), out.clipped_low.sum() / mk.sum())
    close(torch.tensor(m["clip_ratio/high_mean"][0]), out.clipped_high.sum() / mk.sum())
    assert m["clip_ratio/low_mean"][0] > 0 and m["clip_ratio/high_mean"][0] > 0
    assert bool(out.clipped_delta.any()) == (delta is not None)  # the cap binds somewhere
