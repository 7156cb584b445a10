"""Policy losses: the clipped surrogate through the kernels' torch path, KL estimators, the
clipped region's gradient, dual clip, masking; TRL's formula as the oracle."""

import pytest
import torch
from reasoner_kernels import selective_logp

from reasoner.algos import POLICY_LOSSES, PolicyLossInput, get_policy_loss
from reasoner.config import AlgoConfig

D = torch.float64
T = 0.7


def _setup(seed=0, n=6, c=5, v=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, v, generator=g, dtype=D)
    ids = torch.randint(0, v, (n, c), generator=g)
    mask = (torch.arange(c)[None, :] < torch.tensor([5, 3, 1, 4, 2, 5])[:n, None]).long()
    adv = torch.randn(n, generator=g, dtype=D)
    ref = selective_logp(logits + 0.3 * torch.randn(n, c, v, generator=g, dtype=D), ids)
    old = selective_logp(logits + 0.2 * torch.randn(n, c, v, generator=g, dtype=D), ids)
    return logits, ids, mask, adv, ref, old


def loss(logits, ids, old, ref, adv, mask, *, backend="torch", **algo):
    cfg = AlgoConfig(**{"epsilon": 0.2, "epsilon_high": 0.28, "dual_clip": 3.0, "beta": 0.04,
                        "use_bias_correction_kl": False, **algo})
    return get_policy_loss("clipped")(
        PolicyLossInput(ids, adv, mask, old, ref, T, backend, logits=logits), cfg)


@pytest.mark.parametrize("bias_correction", [False, True])
@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_kl_estimators_values_and_gradient(est, bias_correction):
    logits, ids, mask, _, ref, _ = _setup(1)
    x = logits.clone().requires_grad_(True)
    zero_adv = torch.zeros(6, 1, dtype=D)
    out = loss(x, ids, None, ref, zero_adv, mask, beta=0.5, kl_estimator=est,
               use_bias_correction_kl=bias_correction)
    logp = selective_logp(logits, ids, T)
    d = ref - logp
    kl = {"k1": -d, "k2": 0.5 * d * d, "k3": torch.exp(d) - d - 1}[est]
    want = kl * mask
    torch.testing.assert_close(out.kl, want, rtol=0, atol=1e-12)  # on-policy: ratio 1
    torch.testing.assert_close(out.loss, 0.5 * want, rtol=0, atol=1e-12)  # A = 0: only KL
    out.loss.sum().backward()
    # d loss / d logp per token, by hand; the bias correction's ratio r = exp(logp - old) is 1
    # on-policy but carries a gradient: d(kl * r) / d logp = d kl / d logp + kl
    dkl = {"k1": torch.ones_like(d), "k2": -d, "k3": 1 - torch.exp(d)}[est]
    dl = (dkl + (kl if bias_correction else 0.0)) * 0.5 * mask
    y = logits.clone().requires_grad_(True)
    (selective_logp(y, ids, T) * dl).sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=1e-12)


def test_kl_in_reward_takes_the_kl_term_out_of_the_loss():
    logits, ids, mask, adv, ref, old = _setup(6)
    a = loss(logits, ids, old, ref, adv[:, None], mask, beta=0.5, kl_in_reward=True)
    b = loss(logits, ids, old, None, adv[:, None], mask, beta=0.0)
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)


def test_clipped_tokens_have_zero_policy_gradient_but_keep_kl_gradient():
    logits, ids, _, _, ref, _ = _setup(2, n=1, c=3)
    mask = torch.ones(1, 3, dtype=torch.long)
    logp = selective_logp(logits, ids, T)
    # token 0: ratio e^0.5 > 1.28 with A > 0 -> clipped; token 1: ratio 1 -> not; token 2: masked
    old = logp.clone()
    old[0, 0] -= 0.5
    mask[0, 2] = 0
    adv = torch.tensor([[1.0]], dtype=D)
    x = logits.clone().requires_grad_(True)
    out = loss(x, ids, old, None, adv, mask, beta=0.0)
    assert out.clipped_high.tolist() == [[True, False, False]]
    out.loss.sum().backward()
    assert x.grad[0, 0].abs().max() == 0  # clipped: no policy gradient
    assert x.grad[0, 1].abs().max() > 0
    assert x.grad[0, 2].abs().max() == 0  # masked
    # with beta, the clipped token still gets the KL gradient (and only it)
    x = logits.clone().requires_grad_(True)
    out = loss(x, ids, old, ref, adv, mask, beta=0.5)
    out.loss.sum().backward()
    y = logits.clone().requires_grad_(True)
    lp = selective_logp(y, ids, T)
    d = ref - lp
    (0.5 * (torch.exp(d) - d - 1))[0, 0].backward()
    torch.testing.assert_close(x.grad[0, 0], y.grad[0, 0], rtol=0, atol=1e-12)


def test_negative_advantage_low_and_dual_clip():
    logits, ids, _, _, _, _ = _setup(3, n=1, c=2)
    mask = torch.ones(1, 2, dtype=torch.long)
    logp = selective_logp(logits, ids, T)
    old = logp.clone()
    old[0, 0] += 0.5  # ratio e^-0.5 = 0.61 < 0.8 with A < 0: low clip
    old[0, 1] -= 2.0  # ratio e^2 = 7.4 > dual_clip=3 with A < 0: dual clip bound -c*A
    adv = torch.tensor([[-1.0]], dtype=D)
    x = logits.clone().requires_grad_(True)
    out = loss(x, ids, old, None, adv, mask, beta=0.0)
    assert out.clipped_low.tolist() == [[True, False]]
    assert out.clipped_dual.tolist() == [[False, True]]
    assert out.loss[0, 1].item() == pytest.approx(3.0)  # -dual_clip * A
    out.loss.sum().backward()
    assert x.grad.abs().max() == 0  # both regions are flat


def test_masking_ignores_non_finite_values_in_masked_tokens():
    logits, ids, mask, adv, ref, old = _setup(4)
    old = old.clone()
    old[mask == 0] = float("nan")
    x = logits.clone().requires_grad_(True)
    out = loss(x, ids, old, ref, adv[:, None], mask)
    total = (out.loss * mask / mask.sum()).sum()
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(x.grad).all()
    assert (out.loss[mask == 0] == 0).all()
    assert x.grad[mask == 0].abs().max() == 0


def test_on_cpu_auto_is_the_kernels_reference_exactly():
    import reasoner_kernels

    logits, ids, mask, adv, ref, old = _setup(5)
    out = loss(logits, ids, old, ref, adv[:, None], mask, backend="auto", delta=1.5,
               use_bias_correction_kl=True)
    want = reasoner_kernels.grpo_loss_reference(
        logits, ids, old, ref, adv[:, None], mask, temperature=T, eps_low=0.2, eps_high=0.28,
        delta=1.5, dual_clip=3.0, beta=0.04, kl_estimator="k3", use_bias_correction_kl=True,
        compute_entropy=True)
    assert torch.equal(out.loss, want.loss) and torch.equal(out.kl, want.kl)
    assert torch.equal(out.entropy, want.entropy)


def test_fused_linear_input_gives_the_logits_inputs_loss():
    g = torch.Generator().manual_seed(7)
    hidden = torch.randn(3, 4, 8, generator=g, dtype=D)
    weight = torch.randn(11, 8, generator=g, dtype=D)
    ids = torch.randint(0, 11, (3, 4), generator=g)
    mask = torch.ones(3, 4, dtype=torch.long)
    adv = torch.randn(3, 1, generator=g, dtype=D)
    cfg = AlgoConfig(epsilon_high=0.28)
    a = get_policy_loss("clipped")(PolicyLossInput(ids, adv, mask, None, None, T, "torch",
                                                   hidden=hidden, weight=weight), cfg)
    b = get_policy_loss("clipped")(PolicyLossInput(ids, adv, mask, None, None, T, "torch",
                                                   logits=hidden @ weight.t()), cfg)
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=1e-12)
    assert a.loss.shape == (3, 4)
    with pytest.raises(ValueError, match="needs logits, or hidden states"):
        get_policy_loss("clipped")(PolicyLossInput(ids, adv, mask, None, None, T, "torch"), cfg)


def trl_per_token_loss(logp, old, ref, adv, *, eps_low, eps_high, beta, delta=None,
                       use_bias_correction_kl=True):
    """TRL 1.16 GRPOTrainer._compute_loss's per-token loss (loss types grpo / bnpo / dr_grpo /
    dapo, importance_sampling_level="token"), written out in float64."""
    log_ratio = logp - old
    coef_1 = torch.exp(log_ratio)
    if beta != 0.0:
        per_token_kl = torch.exp(ref - logp) - (ref - logp) - 1
        if use_bias_correction_kl:
            per_token_kl = per_token_kl * coef_1
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    if delta is not None:  # two-sided clipping
        coef_1 = torch.clamp(coef_1, max=delta)
    per_token_loss1 = coef_1 * adv
    per_token_loss2 = coef_2 * adv
    per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    return per_token_loss


@pytest.mark.parametrize("bias_correction", [False, True])
@pytest.mark.parametrize("delta", [None, 1.5])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("eps_high", [0.2, 0.28])
def test_clipped_loss_and_gradient_equal_trls_formula(beta, eps_high, delta, bias_correction):
    logits, ids, mask, adv, ref, old = _setup(8)
    old = old - 0.6 * (torch.arange(5, dtype=D) % 2)  # ratios well above delta and the clip
    x = logits.clone().requires_grad_(True)
    out = loss(x, ids, old, ref, adv[:, None], mask, beta=beta, epsilon_high=eps_high,
               dual_clip=None, delta=delta, use_bias_correction_kl=bias_correction)
    (out.loss * mask).sum().backward()
    y = logits.clone().requires_grad_(True)
    logp = selective_logp(y, ids, T)
    want = trl_per_token_loss(logp, old, ref, adv[:, None], eps_low=0.2, eps_high=eps_high,
                              beta=beta, delta=delta, use_bias_correction_kl=bias_correction)
    (want * mask).sum().backward()
    torch.testing.assert_close(out.loss, (want * mask).detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=1e-12)
    if delta is not None:
        # for A > 0 the clip binds before delta; for A < 0 the capped term is the min
        capped = (torch.exp(logp - old) > delta) & (adv[:, None] < 0) & mask.bool()
        assert capped.any() and torch.equal(out.clipped_delta, capped)


def test_delta_caps_the_ratio_whatever_the_sign_of_the_advantage():
    """TRL's delta (INTELLECT-2) caps the ratio of the unclipped term whatever the sign of A: for
    A > 0 the clip at 1 + epsilon_high binds first, for A < 0 the loss is at most -delta * A
    where it was -r * A. The old dual clip (its own bound, A < 0 only) is algo.dual_clip."""
    logits, ids, _, _, _, _ = _setup(3, n=2, c=1)
    mask = torch.ones(2, 1, dtype=torch.long)
    old = selective_logp(logits, ids, T) - 2.0  # ratio e^2 = 7.4 on both rows
    adv = torch.tensor([[1.0], [-1.0]], dtype=D)
    capped = loss(logits, ids, old, None, adv, mask, beta=0.0, dual_clip=None, delta=1.5,
                  epsilon_high=0.2)
    dual = loss(logits, ids, old, None, adv, mask, beta=0.0, dual_clip=3.0, epsilon_high=0.2)
    # A > 0: -min(min(r, delta) A, clip(r) A) = -1.2 either way (clip binds first); A < 0:
    # -min(1.5 * -1, 1.2 * -1) = 1.5 with delta, the dual bound 3 * 1 with dual clip
    assert capped.loss[:, 0].tolist() == pytest.approx([-1.2, 1.5])
    assert dual.loss[:, 0].tolist() == pytest.approx([-1.2, 3.0])
    assert capped.clipped_delta[:, 0].tolist() == [False, True]
    assert dual.clipped_dual[:, 0].tolist() == [False, True]


def test_policy_losses_are_registered_by_name():
    assert "clipped" in POLICY_LOSSES.names()
    assert get_policy_loss("reasoner.algos.losses:clipped") is get_policy_loss("clipped")
