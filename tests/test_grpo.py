"""GRPO arithmetic: rewards -> advantages, loss normalisation (also under gradient accumulation),
KL estimators, the clipped region's gradient, masking. Numbers are hand-computed."""

import math

import pytest
import torch
from reasoner_kernels import selective_logp

from reasoner import grpo

D = torch.float64


def test_combine_rewards_weights_and_none_skip():
    acc = [1.0, 0.0, None, 1.0]
    fmt = [1.0, 1.0, 1.0, None]
    r, valid = grpo.combine_rewards([acc, fmt], [1.0, 0.5])
    assert valid.tolist() == [True, True, False, False]
    assert r[:2].tolist() == [1.5, 0.5]
    assert math.isnan(r[2]) and math.isnan(r[3])
    # a None from a zero-weight function does not skip the sample
    r, valid = grpo.combine_rewards([acc, fmt], [1.0, 0.0])
    assert valid.tolist() == [True, True, False, True]
    assert r[3].item() == 1.0
    with pytest.raises(ValueError, match="2 reward lists for 1 weights"):
        grpo.combine_rewards([acc, fmt], [1.0])


def test_group_advantages_group_scale():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0], dtype=D)
    a = grpo.group_advantages(r, torch.ones(8, dtype=torch.bool), 4, "group")
    std = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]
    want = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4)] * 2
    assert a.advantages[:4].tolist() == pytest.approx([want[0], want[1], want[1], want[0]], abs=1e-12)
    assert a.advantages[4:].tolist() == [0.0] * 4
    assert a.group_mean.tolist() == [0.5, 2.0]
    assert a.zero_std.tolist() == [False, True]


def test_group_advantages_batch_and_none_scale():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=D)
    v = torch.ones(4, dtype=torch.bool)
    a = grpo.group_advantages(r, v, 2, "batch")
    bstd = 0.5  # unbiased std of [1, 0, 1, 1]
    assert a.advantages.tolist() == pytest.approx(
        [0.5 / (bstd + 1e-4), -0.5 / (bstd + 1e-4), 0.0, 0.0], abs=1e-12)
    a = grpo.group_advantages(r, v, 2, "none")  # dr_grpo: mean only
    assert a.advantages.tolist() == [0.5, -0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo.group_advantages(r, v, 2, "std")


def test_skipped_samples_leave_the_group_statistics_and_get_zero_advantage():
    r = torch.tensor([1.0, float("nan"), 0.0, 0.0, 1.0, float("nan"), float("nan"), float("nan")],
                     dtype=D)
    v = ~torch.isnan(r)
    a = grpo.group_advantages(r, v, 4, "group")
    mean, std = 1 / 3, math.sqrt(1 / 3)
    assert a.group_mean[0].item() == pytest.approx(mean)
    assert a.group_std[0].item() == pytest.approx(std)
    assert a.advantages[:4].tolist() == pytest.approx(
        [(1 - mean) / (std + 1e-4), 0.0, -mean / (std + 1e-4), -mean / (std + 1e-4)])
    # one valid member: no spread, no signal
    assert a.advantages[4:].tolist() == [0.0] * 4
    assert a.zero_std.tolist() == [False, True]


def test_overlong_penalty():
    lengths = torch.tensor([5, 6, 8, 10, 12])
    p = grpo.overlong_penalty(lengths, max_completion_length=10, buffer_len=4, factor=2.0)
    assert p.tolist() == [0.0, 0.0, -1.0, -2.0, -2.0]


MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.long)
L = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0], [9.0] * 4, [5.0, 7.0, 9.0, 9.0]],
                 dtype=D)
EXPECTED = {
    # mean per sequence (2, 4, 6) over the 3 sequences with tokens
    "grpo": (2.0 + 4.0 + 6.0) / 3,
    # all active tokens / their count: (1+2+3+4+5+7) / 6
    "bnpo": 22.0 / 6,
    "dapo": 22.0 / 6,
    # sum / (4 sequences * max_completion_length 5)
    "dr_grpo": 22.0 / 20,
}


@pytest.mark.parametrize("loss_type", list(EXPECTED))
def test_token_weights_hand_values(loss_type):
    w = grpo.token_weights(loss_type, MASK, max_completion_length=5).to(D)
    assert (w * L).sum().item() == pytest.approx(EXPECTED[loss_type], abs=1e-6)
    assert (w[MASK == 0] == 0).all()


def test_dapo_global_token_count_across_ranks():
    w = grpo.token_weights("dapo", MASK, 5, global_num_tokens=12)
    assert (w.to(D) * L).sum().item() == pytest.approx(22.0 / 12)


def _setup(seed=0, n=6, c=5, v=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, v, generator=g, dtype=D)
    ids = torch.randint(0, v, (n, c), generator=g)
    mask = (torch.arange(c)[None, :] < torch.tensor([5, 3, 1, 4, 2, 5])[:, None]).long()
    adv = torch.randn(n, generator=g, dtype=D)
    ref = selective_logp(logits + 0.3 * torch.randn(n, c, v, generator=g, dtype=D), ids)
    old = selective_logp(logits + 0.2 * torch.randn(n, c, v, generator=g, dtype=D), ids)
    return logits, ids, mask, adv, ref, old


def _loss_kw(beta=0.04, est="k3"):
    return dict(temperature=0.7, eps_low=0.2, eps_high=0.28, delta=3.0, beta=beta,
                kl_estimator=est, compute_entropy=False, backend="torch")


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_gradient_accumulation_one_vs_two_micro_batches(loss_type):
    logits, ids, mask, adv, ref, old = _setup()
    w = grpo.token_weights(loss_type, mask, 5).to(D)

    def grad(splits):
        x = logits.clone().requires_grad_(True)
        total = 0.0
        for s in splits:
            out = grpo.token_loss(x[s], ids[s], old[s], ref[s], adv[s][:, None], mask[s], **_loss_kw())
            loss = (out.loss * w[s]).sum()
            loss.backward()
            total += loss.item()
        return x.grad, total

    g1, l1 = grad([slice(0, 6)])
    g2, l2 = grad([slice(0, 3), slice(3, 6)])
    g3, l3 = grad([slice(0, 1), slice(1, 4), slice(4, 6)])
    assert l1 == pytest.approx(l2, abs=1e-12) and l1 == pytest.approx(l3, abs=1e-12)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-12)
    torch.testing.assert_close(g1, g3, rtol=0, atol=1e-12)
    assert g1.abs().sum() > 0


def test_naive_per_micro_batch_mean_would_differ():
    """The reason for global weights: a per-micro-batch token mean is not the batch token mean."""
    logits, ids, mask, adv, ref, old = _setup()
    out = grpo.token_loss(logits, ids, old, ref, adv[:, None], mask, **_loss_kw())
    glob = (out.loss * grpo.token_weights("dapo", mask, 5).to(D)).sum()
    naive = sum((out.loss[s].sum() / mask[s].sum()) / 2 for s in (slice(0, 3), slice(3, 6)))
    assert abs(glob.item() - naive.item()) > 1e-3


@pytest.mark.parametrize("est", ["k1", "k2", "k3"])
def test_kl_estimators_values_and_gradient(est):
    logits, ids, mask, _, ref, _ = _setup(1)
    x = logits.clone().requires_grad_(True)
    zero_adv = torch.zeros(6, 1, dtype=D)
    out = grpo.token_loss(x, ids, None, ref, zero_adv, mask, **_loss_kw(beta=0.5, est=est))
    logp = selective_logp(logits, ids, 0.7)
    d = ref - logp
    want = {"k1": -d, "k2": 0.5 * d * d, "k3": torch.exp(d) - d - 1}[est] * mask
    torch.testing.assert_close(out.kl, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.loss, 0.5 * want, rtol=0, atol=1e-12)  # A = 0: only KL
    out.loss.sum().backward()
    # d loss / d logp per token, by hand
    dl = {"k1": torch.ones_like(d), "k2": -d, "k3": 1 - torch.exp(d)}[est] * 0.5 * mask
    y = logits.clone().requires_grad_(True)
    (selective_logp(y, ids, 0.7) * dl).sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=1e-12)


def test_clipped_tokens_have_zero_policy_gradient_but_keep_kl_gradient():
    logits, ids, _, _, ref, _ = _setup(2, n=1, c=3)
    mask = torch.ones(1, 3, dtype=torch.long)
    logp = selective_logp(logits, ids, 0.7)
    # token 0: ratio e^0.5 > 1.28 with A > 0 -> clipped; token 1: ratio 1 -> not; token 2: masked
    old = logp.clone()
    old[0, 0] -= 0.5
    mask[0, 2] = 0
    adv = torch.tensor([[1.0]], dtype=D)
    kw = _loss_kw(beta=0.0)
    x = logits.clone().requires_grad_(True)
    out = grpo.token_loss(x, ids, old, None, adv, mask, **kw)
    assert out.clipped_high.tolist() == [[True, False, False]]
    out.loss.sum().backward()
    assert x.grad[0, 0].abs().max() == 0  # clipped: no policy gradient
    assert x.grad[0, 1].abs().max() > 0
    assert x.grad[0, 2].abs().max() == 0  # masked
    # with beta, the clipped token still gets the KL gradient (and only it)
    x = logits.clone().requires_grad_(True)
    out = grpo.token_loss(x, ids, old, ref, adv, mask, **_loss_kw(beta=0.5))
    out.loss.sum().backward()
    y = logits.clone().requires_grad_(True)
    lp = selective_logp(y, ids, 0.7)
    d = ref - lp
    (0.5 * (torch.exp(d) - d - 1))[0, 0].backward()
    torch.testing.assert_close(x.grad[0, 0], y.grad[0, 0], rtol=0, atol=1e-12)


def test_negative_advantage_low_and_dual_clip():
    logits, ids, _, _, _, _ = _setup(3, n=1, c=2)
    mask = torch.ones(1, 2, dtype=torch.long)
    logp = selective_logp(logits, ids, 0.7)
    old = logp.clone()
    old[0, 0] += 0.5  # ratio e^-0.5 = 0.61 < 0.8 with A < 0: low clip
    old[0, 1] -= 2.0  # ratio e^2 = 7.4 > delta=3 with A < 0: dual clip bound -delta*A
    adv = torch.tensor([[-1.0]], dtype=D)
    x = logits.clone().requires_grad_(True)
    out = grpo.token_loss(x, ids, old, None, adv, mask, **_loss_kw(beta=0.0))
    assert out.clipped_low.tolist() == [[True, False]]
    assert out.clipped_dual.tolist() == [[False, True]]
    assert out.loss[0, 1].item() == pytest.approx(3.0)  # -delta * A
    out.loss.sum().backward()
    assert x.grad.abs().max() == 0  # both regions are flat


def test_masking_ignores_non_finite_values_in_masked_tokens():
    logits, ids, mask, adv, ref, old = _setup(4)
    old = old.clone()
    old[mask == 0] = float("nan")
    x = logits.clone().requires_grad_(True)
    out = grpo.token_loss(x, ids, old, ref, adv[:, None], mask, **_loss_kw())
    loss = (out.loss * grpo.token_weights("grpo", mask, 5).to(D)).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert (out.loss[mask == 0] == 0).all()
    assert x.grad[mask == 0].abs().max() == 0


def test_sequence_kl_for_kl_in_reward():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0]])
    mask = torch.tensor([[1, 1, 0]])
    assert grpo.sequence_kl(logp, ref, mask, "k1").item() == pytest.approx(0.5)  # -(−0.5) + 0
    k3 = math.exp(-0.5) + 0.5 - 1
    assert grpo.sequence_kl(logp, ref, mask, "k3").item() == pytest.approx(k3)


def test_token_loss_on_cpu_is_the_reference_exactly():
    import reasoner_kernels

    logits, ids, mask, adv, ref, old = _setup(5)
    kw = _loss_kw()
    kw.update(backend="auto", compute_entropy=True)
    out = grpo.token_loss(logits, ids, old, ref, adv[:, None], mask, **kw)
    kw.pop("backend")
    want = reasoner_kernels.grpo_loss_reference(logits, ids, old, ref, adv[:, None], mask, **kw)
    assert torch.equal(out.loss, want.loss) and torch.equal(out.kl, want.kl)
    assert torch.equal(out.entropy, want.entropy)


def test_masked_mean():
    assert grpo.masked_mean(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 0, 1])) == 2.0
    assert grpo.masked_mean(torch.tensor([1.0]), torch.tensor([0])) == 0.0
