"""GPU-only kernel tests: bf16 at realistic shapes against the float64 reference (both logits
modes and fused linear), fp16, partial tiles (N = 2000, V = 32001), the in-place and fused modes'
memory, `fused_linear_logprobs`, a frozen lm_head, the cuBLAS fp32-output dweight path, a grid
of more than a million rows and N * V > 2^31 element offsets.

Skipped without CUDA (and under TRITON_INTERPRET=1, which would take hours at these shapes).
Run: pytest -q -m gpu tests/test_kernels_gpu.py
"""

import os

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") == "1",
        reason="real kernels only (TRITON_INTERPRET=1 is set)",
    ),
]

triton = pytest.importorskip("triton")

from reasoner_kernels import (  # noqa: E402
    fused_linear_grpo_loss,
    fused_linear_logprobs,
    grpo_loss,
    logprobs,
    weighted_grpo_loss,
)
from reasoner_kernels.reference import (  # noqa: E402
    fused_linear_grpo_loss_reference,
    grpo_loss_reference,
    selective_logp,
)

DEV = "cuda"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def token_inputs(logp64: torch.Tensor, seed: int):
    g = torch.Generator(device=DEV).manual_seed(seed)
    shape = logp64.shape
    old = (logp64 + 0.3 * torch.randn(shape, device=DEV, generator=g, dtype=torch.float64)).float()
    ref = (logp64 + 0.3 * torch.randn(shape, device=DEV, generator=g, dtype=torch.float64)).float()
    adv = torch.randn(shape[0], 1, device=DEV, generator=g)
    mask = torch.rand(shape, device=DEV, generator=g) > 0.1
    return old, ref, adv, mask


def test_bf16_logits_kernel_matches_float64_reference_at_realistic_shape():
    B, T, V = 4, 1024, 32000
    g = torch.Generator(device=DEV).manual_seed(0)
    logits = (torch.randn(B, T, V, device=DEV, generator=g) * 3).bfloat16()
    ids = torch.randint(0, V, (B, T), device=DEV, generator=g)
    logits64 = logits.double().requires_grad_()
    old, ref, adv, mask = token_inputs(selective_logp(logits64.detach(), ids, 0.9), 1)
    kw = dict(
        temperature=0.9, eps_low=0.2, eps_high=0.28, delta=2.0, dual_clip=3.0, beta=0.04,
        use_bias_correction_kl=True, compute_entropy=True,
    )
    rout = grpo_loss_reference(logits64, ids, old.double(), ref.double(), adv.double(), mask, **kw)
    (rout.loss.sum() / mask.sum()).backward()
    for inplace in (False, True):
        x = logits.clone().requires_grad_()
        y = x * 1  # non-leaf buffer for the in-place backward
        out = grpo_loss(y, ids, old, ref, adv, mask, inplace_backward=inplace, **kw)
        (out.loss.sum() / mask.sum()).backward()
        torch.testing.assert_close(out.logp.double(), rout.logp, rtol=0, atol=1e-4)
        torch.testing.assert_close(out.entropy.double(), rout.entropy, rtol=0, atol=1e-4)
        assert rel_err(out.loss, rout.loss) < 1e-4
        assert x.grad.dtype == torch.bfloat16
        assert rel_err(x.grad, logits64.grad) < 1e-2  # bf16 output rounding
    lp = logprobs(logits, ids, 0.9, compute_entropy=True)
    torch.testing.assert_close(lp.logp.double(), rout.logp, rtol=0, atol=1e-4)
    torch.testing.assert_close(lp.entropy.double(), rout.entropy, rtol=0, atol=1e-4)


def test_bf16_fused_linear_matches_float64_reference_at_realistic_shape():
    N, H, V = 2048, 1024, 32000
    g = torch.Generator(device=DEV).manual_seed(2)
    hidden = torch.randn(N, H, device=DEV, generator=g).bfloat16()
    weight = (torch.randn(V, H, device=DEV, generator=g) / H**0.5).bfloat16()
    bias = (0.1 * torch.randn(V, device=DEV, generator=g)).bfloat16()
    ids = torch.randint(0, V, (N,), device=DEV, generator=g)
    r = [t.double().requires_grad_() for t in (hidden, weight, bias)]
    logp64 = selective_logp(r[0].detach() @ r[1].detach().t() + r[2].detach(), ids, 0.7)
    old, ref, adv, mask = token_inputs(logp64[None], 3)
    old, ref, mask = old[0], ref[0], mask[0]
    adv = adv.expand(1, N)[0]
    kw = dict(temperature=0.7, eps_high=0.28, beta=0.04, compute_entropy=True)
    rout = fused_linear_grpo_loss_reference(
        r[0], r[1], ids, old.double(), ref.double(), adv.double(), mask, bias=r[2], **kw
    )
    (rout.loss.sum() / mask.sum()).backward()
    t = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    out = fused_linear_grpo_loss(
        t[0], t[1], ids, old, ref, adv, mask, bias=t[2], chunk_size=768, **kw
    )  # 3 backward chunks
    (out.loss.sum() / mask.sum()).backward()
    torch.testing.assert_close(out.logp.double(), rout.logp, rtol=0, atol=2e-3)
    torch.testing.assert_close(out.entropy.double(), rout.entropy, rtol=0, atol=2e-3)
    assert rel_err(out.loss, rout.loss) < 5e-3
    for a, b in zip(t, r):
        assert a.grad.dtype == torch.bfloat16
        assert rel_err(a.grad, b.grad) < 2e-2


def test_inplace_backward_allocates_no_second_logits_buffer():
    N, V = 8192, 32000
    logits_bytes = N * V * 2
    g = torch.Generator(device=DEV).manual_seed(4)
    ids = torch.randint(0, V, (N,), device=DEV, generator=g)
    adv = torch.randn(N, device=DEV, generator=g)
    mask = torch.ones(N, device=DEV, dtype=torch.bool)
    peaks = {}
    for inplace in (True, False):
        leaf = torch.randn(N, V, device=DEV, generator=g).bfloat16().requires_grad_()
        x = leaf.view(N, V)  # a view: backward hands the gradient to the leaf without a copy
        out = grpo_loss(x, ids, None, None, adv, mask, inplace_backward=inplace)
        loss = out.loss.sum()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        (grad,) = torch.autograd.grad(loss, leaf)
        torch.cuda.synchronize()
        peaks[inplace] = torch.cuda.max_memory_allocated() - base
        if inplace:
            assert grad.data_ptr() == leaf.data_ptr()
        del leaf, x, out, loss, grad
    assert peaks[True] < 0.05 * logits_bytes, peaks
    assert peaks[False] >= logits_bytes, peaks  # the measurement does see a second buffer


def test_more_than_a_million_rows_in_one_grid():
    N, V = (1 << 20) + 7, 16
    g = torch.Generator(device=DEV).manual_seed(5)
    logits = torch.randn(N, V, device=DEV, generator=g).requires_grad_()
    ids = torch.randint(0, V, (N,), device=DEV, generator=g)
    adv = torch.randn(N, device=DEV, generator=g)
    mask = torch.rand(N, device=DEV, generator=g) > 0.5
    out = grpo_loss(logits, ids, None, None, adv, mask)
    out.loss.sum().backward()
    x64 = logits.detach().double().requires_grad_()
    rout = grpo_loss_reference(x64, ids, None, None, adv.double(), mask)
    rout.loss.sum().backward()
    torch.testing.assert_close(out.logp.double(), rout.logp, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.loss.double(), rout.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits.grad.double(), x64.grad, rtol=1e-4, atol=1e-6)


def test_element_offsets_beyond_int32():
    V = 32768
    N = (1 << 31) // V + 64  # N * V > 2^31: the last rows need 64-bit offsets
    assert N * V > 2**31
    g = torch.Generator(device=DEV).manual_seed(6)
    logits = torch.empty(N, V, device=DEV, dtype=torch.bfloat16)
    logits.normal_(generator=g)
    ids = torch.randint(0, V, (N,), device=DEV, generator=g)
    adv = torch.ones(N, device=DEV)
    mask = torch.ones(N, device=DEV, dtype=torch.bool)
    lp = logprobs(logits, ids)
    tail = slice(N - 128, N)
    expect = selective_logp(logits[tail].double(), ids[tail])
    torch.testing.assert_close(lp.logp[tail].double(), expect, rtol=0, atol=1e-4)
    tail_x = logits[tail].double().requires_grad_()  # saved: the buffer will hold dlogits
    leaf = logits.requires_grad_()
    out = grpo_loss(leaf.view(N, V), ids, None, None, adv, mask, inplace_backward=True)
    (grad,) = torch.autograd.grad(out.loss.sum(), leaf)
    assert grad.data_ptr() == leaf.data_ptr()
    rout = grpo_loss_reference(tail_x, ids[tail], None, None, adv[tail].double(), mask[tail])
    rout.loss.sum().backward()
    torch.testing.assert_close(grad[tail].double(), tail_x.grad, rtol=1e-2, atol=1e-4)


def test_bf16_fused_forward_backward_matches_float64_and_the_two_pass_path():
    B, T, V = 4, 1024, 32000
    g = torch.Generator(device=DEV).manual_seed(10)
    logits = (torch.randn(B, T, V, device=DEV, generator=g) * 3).bfloat16()
    ids = torch.randint(0, V, (B, T), device=DEV, generator=g)
    logits64 = logits.double().requires_grad_()
    old, ref, adv, mask = token_inputs(selective_logp(logits64.detach(), ids, 0.9), 11)
    weights = mask.float() / mask.sum(1, keepdim=True).clamp(min=1) / B  # TRL "grpo"
    kw = dict(temperature=0.9, eps_high=0.28, delta=2.0, beta=0.04, use_bias_correction_kl=True)
    rout = grpo_loss_reference(logits64, ids, old.double(), ref.double(), adv.double(), mask, **kw)
    (rout.loss * weights.double()).sum().backward()
    grads = {}
    for inplace in (False, True):
        x = logits.clone().requires_grad_()
        out = weighted_grpo_loss(x * 1, ids, old, ref, adv, mask, weights, inplace=inplace, **kw)
        (2.0 * out.loss).backward()  # an upstream scalar != 1 is applied in backward
        assert rel_err(out.loss, (rout.loss * weights.double()).sum()) < 1e-4
        torch.testing.assert_close(out.tokens.logp.double(), rout.logp, rtol=0, atol=1e-4)
        assert rel_err(x.grad, 2 * logits64.grad) < 1e-2
        grads[inplace] = x.grad
    assert torch.equal(grads[False], grads[True])
    y = logits.clone().requires_grad_()
    two = grpo_loss(y, ids, old, ref, adv, mask, **kw)
    (2.0 * (two.loss * weights).sum()).backward()
    assert rel_err(grads[True], y.grad) < 1e-2


def test_fused_inplace_mode_allocates_no_second_logits_buffer():
    N, V = 8192, 32000
    logits_bytes = N * V * 2
    g = torch.Generator(device=DEV).manual_seed(12)
    ids = torch.randint(0, V, (N,), device=DEV, generator=g)
    adv = torch.randn(N, device=DEV, generator=g)
    mask = torch.ones(N, device=DEV, dtype=torch.bool)
    w = torch.full((N,), 1.0 / N, device=DEV)
    peaks = {}
    for inplace in (True, False):
        leaf = torch.randn(N, V, device=DEV, generator=g).bfloat16().requires_grad_()
        x = leaf.view(N, V)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = weighted_grpo_loss(x, ids, None, None, adv, mask, w, inplace=inplace)
        (grad,) = torch.autograd.grad(out.loss, leaf)
        torch.cuda.synchronize()
        peaks[inplace] = torch.cuda.max_memory_allocated() - base
        if inplace:
            assert grad.data_ptr() == leaf.data_ptr()
        del leaf, x, out, grad
    assert peaks[True] < 0.05 * logits_bytes, peaks
    assert peaks[False] >= logits_bytes, peaks


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_partial_tiles_n2000_v32001_both_logits_modes(dtype):
    N, V = 2000, 32001  # no multiple of any block: masked vocabulary tail, odd rows
    g = torch.Generator(device=DEV).manual_seed(13)
    logits = (torch.randn(N, V, device=DEV, generator=g) * 2).to(dtype)
    ids = torch.randint(0, V, (N,), device=DEV, generator=g)
    ids[:4] = torch.tensor([0, V - 1, V - 2, 31999], device=DEV)  # both ends of the vocabulary
    x64 = logits.double().requires_grad_()
    old, ref, adv, mask = token_inputs(selective_logp(x64.detach(), ids)[None], 14)
    old, ref, adv, mask = old[0], ref[0], adv.expand(1, N)[0], mask[0]
    kw = dict(dual_clip=3.0, beta=0.04, compute_entropy=True)
    rout = grpo_loss_reference(x64, ids, old.double(), ref.double(), adv.double(), mask, **kw)
    rout.loss.sum().backward()
    x = logits.clone().requires_grad_()
    out = grpo_loss(x * 1, ids, old, ref, adv, mask, inplace_backward=True, **kw)
    out.loss.sum().backward()
    torch.testing.assert_close(out.logp.double(), rout.logp, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.entropy.double(), rout.entropy, rtol=0, atol=1e-4)
    assert rel_err(out.loss, rout.loss) < 1e-4 and rel_err(x.grad, x64.grad) < 1e-2
    assert x.grad.dtype == dtype
    xw = logits.clone().requires_grad_()
    wout = weighted_grpo_loss(xw * 1, ids, old, ref, adv, mask, torch.ones(N, device=DEV),
                              inplace=True, **kw)  # fmt: skip
    wout.loss.backward()
    assert rel_err(xw.grad, x64.grad) < 1e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_linear_partial_tiles_fp16_logprobs_and_frozen_lm_head(dtype):
    N, H, V = 2000, 1024, 32001
    g = torch.Generator(device=DEV).manual_seed(15)
    hidden = torch.randn(N, H, device=DEV, generator=g).to(dtype)
    weight = (torch.randn(V, H, device=DEV, generator=g) / H**0.5).to(dtype)
    ids = torch.randint(0, V, (N,), device=DEV, generator=g)
    h64 = hidden.double().requires_grad_()
    w64 = weight.double()
    logits64 = h64 @ w64.t()
    logp64 = selective_logp(logits64.detach(), ids, 0.8)
    old, ref, adv, mask = token_inputs(logp64[None], 16)
    old, ref, adv, mask = old[0], ref[0], adv.expand(1, N)[0], mask[0]
    lp = fused_linear_logprobs(hidden, weight, ids, 0.8, compute_entropy=True)
    torch.testing.assert_close(lp.logp.double(), logp64, rtol=0, atol=3e-3)
    kw = dict(temperature=0.8, delta=2.0, beta=0.04, use_bias_correction_kl=True)
    rout = fused_linear_grpo_loss_reference(
        h64, w64, ids, old.double(), ref.double(), adv.double(), mask, **kw
    )
    rout.loss.sum().backward()
    h = hidden.clone().requires_grad_()
    frozen = weight.clone()  # requires_grad False: a frozen lm_head (e.g. LoRA training)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fused_linear_grpo_loss(h, frozen, ids, old, ref, adv, mask, chunk_size=768, **kw)
    out.loss.sum().backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert frozen.grad is None and h.grad.dtype == dtype
    assert rel_err(out.loss, rout.loss) < 5e-3
    assert rel_err(h.grad, h64.grad) < 2e-2
    assert peak < V * H * 4, peak  # no fp32 dweight buffer for a frozen weight


def test_dweight_uses_cublas_with_fp32_output():
    from reasoner_kernels.triton_fused_linear import accumulate_dweight, cublas_fp32_out

    assert cublas_fp32_out(torch.device(DEV), torch.bfloat16), "torch.addmm(out_dtype=fp32)"
    g = torch.Generator(device=DEV).manual_seed(17)
    d = torch.randn(3000, 4096, device=DEV, generator=g).bfloat16()
    h = torch.randn(3000, 512, device=DEV, generator=g).bfloat16()
    dw = torch.full((4096, 512), float("nan"), device=DEV)
    assert accumulate_dweight(dw, d, h, first=True) == "cublas fp32-out"
    accumulate_dweight(dw, d, h, first=False)
    expect = 2 * (d.double().t() @ h.double())
    assert rel_err(dw, expect) < 1e-5  # fp32 accumulation, no bf16 rounding of the partials
