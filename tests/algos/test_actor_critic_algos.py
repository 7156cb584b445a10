"""GAE, RLOO, REINFORCE++, TRL's whitening, explained variance and the KL controllers: numbers
worked out by hand, and plain per-row recursions as oracles."""

import math
import random

import pytest
import torch

from reasoner.algos import AdvantageInput, get_adv_estimator, get_policy_loss
from reasoner.algos.advantages import (
    discounted_returns,
    explained_variance,
    gae,
    masked_var,
    masked_whiten,
    with_score_at_last_token,
)
from reasoner.algos.kl_control import KLController, kl_controller
from reasoner.algos.losses import PolicyLossInput
from reasoner.config import AlgoConfig

D = torch.float64
NAN = float("nan")


def test_gae_by_hand_with_padding_a_truncated_row_a_dropped_row_and_one_token():
    """gamma 0.9, lambda 0.5. Padding holds garbage that must not leak in; the state after a
    row's last token is terminal whether it ended with EOS or was cut at the width."""
    rewards = torch.tensor([[0.0, 0.0, 1.0, 7.0],     # EOS at t=2, then padding
                            [0.0, 0.0, 0.0, 1.0],     # truncated: fills the width
                            [5.0, 5.0, 5.0, 5.0],     # dropped: no mask at all
                            [-2.0, 3.0, 3.0, 3.0]], dtype=D)  # one token
    values = torch.tensor([[0.5, 0.6, 0.8, 9.0],
                           [0.2, 0.4, 0.6, 0.8],
                           [1.0, 1.0, 1.0, 1.0],
                           [0.5, 9.0, 9.0, 9.0]], dtype=D)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
    adv, ret = gae(rewards, values, mask, 0.9, 0.5)
    # row 0: d2 = 1 - 0.8 = 0.2;  d1 = 0.9*0.8 - 0.6 = 0.12; d0 = 0.9*0.6 - 0.5 = 0.04
    #        A2 = 0.2, A1 = 0.12 + 0.45*0.2 = 0.21, A0 = 0.04 + 0.45*0.21 = 0.1345
    # row 1: d3 = 1 - 0.8 = 0.2 (no bootstrap past the width), d2 = 0.12, d1 = 0.9*0.6 - 0.4 =
    #        0.14, d0 = 0.9*0.4 - 0.2 = 0.16: A = 0.2, 0.21, 0.2345, 0.16 + 0.45*0.2345
    # row 3: A0 = -2 - 0.5
    want = [[0.1345, 0.21, 0.2, 0.0],
            [0.16 + 0.45 * 0.2345, 0.2345, 0.21, 0.2],
            [0.0] * 4,
            [-2.5, 0.0, 0.0, 0.0]]
    assert adv.tolist() == [pytest.approx(r, abs=1e-12) for r in want]
    want_ret = [[0.6345, 0.81, 1.0, 0.0],
                [0.16 + 0.45 * 0.2345 + 0.2, 0.6345, 0.81, 1.0],
                [0.0] * 4,
                [-2.0, 0.0, 0.0, 0.0]]
    assert ret.tolist() == [pytest.approx(r, abs=1e-12) for r in want_ret]


def _gae_row(r, v, gamma, lam):
    """The textbook recursion on one row's real tokens (python floats)."""
    n = len(r)
    adv = [0.0] * n
    a = 0.0
    for t in reversed(range(n)):
        nv = v[t + 1] if t + 1 < n else 0.0
        a = r[t] + gamma * nv - v[t] + gamma * lam * a
        adv[t] = a
    return adv


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 1.0), (0.8, 0.0), (1.0, 1.0)])
def test_gae_equals_the_per_row_recursion_on_random_masks(gamma, lam):
    g = torch.Generator().manual_seed(0)
    n, c = 7, 9
    lengths = [9, 4, 1, 0, 6, 9, 2]
    mask = (torch.arange(c)[None] < torch.tensor(lengths)[:, None]).long()
    r = torch.randn(n, c, generator=g, dtype=D)
    v = torch.randn(n, c, generator=g, dtype=D)
    adv, ret = gae(r, v, mask, gamma, lam)
    for i, L in enumerate(lengths):
        want = _gae_row(r[i, :L].tolist(), v[i, :L].tolist(), gamma, lam)
        assert adv[i, :L].tolist() == pytest.approx(want, abs=1e-12)
        assert (adv[i, L:] == 0).all() and (ret[i, L:] == 0).all()
        assert ret[i, :L].tolist() == pytest.approx((adv[i, :L] + v[i, :L]).tolist(), abs=1e-12)
    # lambda = 1: the advantages are the discounted returns minus the values
    if lam == 1.0:
        assert torch.allclose(adv, (discounted_returns(r, mask, gamma) - v) * mask, atol=1e-12)


def test_score_goes_on_the_last_token_of_valid_rows():
    tok = torch.tensor([[-0.1, -0.2, -0.3], [-1.0, -1.0, -1.0], [-0.5, 9.0, 9.0]], dtype=D)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]])
    valid = torch.tensor([True, False, True])
    out = with_score_at_last_token(tok, torch.tensor([2.0, 5.0, 1.0], dtype=D), mask, valid)
    assert out.tolist() == [[-0.1, 1.8, 0.0], [-1.0, -1.0, -1.0], [0.5, 0.0, 0.0]]


def test_rloo_leave_one_out_baseline_with_dropped_samples():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, NAN, 1.0, 2.0, 5.0, NAN, NAN, NAN], dtype=D)
    v = ~torch.isnan(r)
    adv = get_adv_estimator("rloo")(AdvantageInput(r, v, 4), AlgoConfig())
    # group 0: r_i - mean of the other three; group 1: valid {3, 1, 2}: 3 - 1.5, 1 - 2.5, 2 - 2
    # group 2: one valid completion, no baseline: 0
    assert adv.tolist() == pytest.approx([1 - 1 / 3, -2 / 3, -2 / 3, 1 - 1 / 3,
                                          1.5, 0.0, -1.5, 0.0, 0.0, 0.0, 0.0, 0.0], abs=1e-12)
    # = G/(G-1) times the group-mean baseline's advantage
    grpo = get_adv_estimator("grpo")(AdvantageInput(r[:4], v[:4], 4),
                                     AlgoConfig(scale_rewards="none"))
    assert adv[:4].tolist() == pytest.approx((4 / 3 * grpo).tolist(), abs=1e-12)


def test_reinforce_plus_plus_whitens_per_token_returns_with_the_kl_penalty():
    beta = 0.1
    kl = torch.tensor([[0.5, 1.0, 0.0], [2.0, 0.0, 0.0], [0.3, 0.3, 0.3]], dtype=D)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    score = torch.tensor([1.0, 0.0, 2.0], dtype=D)
    valid = torch.tensor([True, True, False])
    tok = -beta * kl * mask
    batch = AdvantageInput(score + tok.sum(1), valid, 1, mask, tok)
    adv = get_adv_estimator("reinforce_plus_plus")(batch, AlgoConfig(gamma=1.0))
    # returns-to-go: row 0: [1 - 0.05 - 0.1, 1 - 0.1] = [0.85, 0.9]; row 1: [0 - 0.2]
    g = torch.tensor([0.85, 0.9, -0.2], dtype=D)
    want = (g - g.mean()) / torch.sqrt(g.var() + 1e-8)  # unbiased var, TRL's whiten
    assert adv[0, :2].tolist() == pytest.approx(want[:2].tolist(), abs=1e-12)
    assert adv[1, 0].item() == pytest.approx(want[2].item(), abs=1e-12)
    assert adv[0, 2] == 0 and (adv[1, 1:] == 0).all() and (adv[2] == 0).all()


def test_masked_whiten_is_trls_and_shift_mean_keeps_the_mean():
    g = torch.Generator().manual_seed(1)
    x = 3 + 2 * torch.randn(5, 6, generator=g, dtype=D)
    m = torch.rand(5, 6, generator=g) < 0.7
    sel = x[m]
    mean, var = sel.mean(), sel.var()  # torch's var is unbiased, as TRL's masked_var
    assert float(masked_var(x, m)) == pytest.approx(float(var), rel=1e-12)
    w = masked_whiten(x, m)
    assert w[m].tolist() == pytest.approx(((sel - mean) / torch.sqrt(var + 1e-8)).tolist(),
                                          abs=1e-12)
    kept = masked_whiten(x, m, shift_mean=False)
    assert float(kept[m].mean()) == pytest.approx(float(mean), abs=1e-12)
    assert float(kept[m].std()) == pytest.approx(1.0, abs=1e-6)
    one = torch.zeros_like(m)
    one[2, 3] = True
    with pytest.raises(ValueError, match="at least two completion tokens"):
        masked_var(x, one)


def test_explained_variance():
    t = torch.tensor([[1.0, 2.0, 3.0, 9.0]], dtype=D)
    m = torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(t, t, m) == 1.0
    assert explained_variance(torch.full_like(t, 2.0), t, m) == pytest.approx(0.0)
    assert explained_variance(t + 1.0, t, m) == pytest.approx(1.0)  # an offset costs nothing
    assert explained_variance(-t, t, m) == pytest.approx(1 - 4.0)  # Var(2t) / Var(t) = 4
    assert math.isnan(explained_variance(t, torch.ones_like(t), m))


def test_vanilla_policy_loss_has_no_clip_and_gives_minus_a_grad_log_pi():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 4, 7, generator=g, dtype=D, requires_grad=True)
    ids = torch.randint(0, 7, (3, 4), generator=g)
    adv = torch.randn(3, 4, generator=g, dtype=D)
    mask = torch.ones(3, 4)
    old = torch.log_softmax(logits.detach(), -1).gather(-1, ids[..., None]).squeeze(-1) - 2.0
    cfg = AlgoConfig()
    inp = PolicyLossInput(ids=ids, advantages=adv, mask=mask, old_logp=old, ref_logp=None,
                          temperature=1.0, backend="torch", logits=logits)
    out = get_policy_loss("vanilla")(inp, cfg)  # ratios e^2: far outside any clip range
    logp = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)
    assert torch.allclose(out.loss, -adv * torch.exp(logp - old), atol=1e-12)
    assert not (out.clipped_low | out.clipped_high).any()
    # on policy: the gradient of the loss is -A grad log pi
    inp.old_logp = None
    out = get_policy_loss("vanilla")(inp, cfg)
    (ga,) = torch.autograd.grad(out.loss.sum(), logits)
    (gb,) = torch.autograd.grad((-adv * logp).sum(), logits)
    assert torch.allclose(ga, gb, atol=1e-12)


def test_fixed_kl_coefficient_does_not_move():
    ctl = kl_controller(AlgoConfig(kl_coef=0.05))
    ctl.update(100.0, 512)
    assert ctl.value == 0.05 and not ctl.adaptive


def test_ziegler_update_rule_by_hand():
    ctl = KLController(value=0.2, adaptive=True, target=6.0, horizon=10000)
    ctl.update(9.0, 1000)  # error 9/6 - 1 = 0.5, clipped to 0.2: x (1 + 0.2 * 0.1)
    assert ctl.value == pytest.approx(0.2 * 1.02)
    ctl.update(5.7, 1000)  # error -0.05: x (1 - 0.005)
    assert ctl.value == pytest.approx(0.2 * 1.02 * 0.995)
    state = ctl.state()
    other = kl_controller(AlgoConfig(kl_coef=0.2, adap_kl_ctrl=True))
    other.load_state(state)
    assert other.value == ctl.value


@pytest.mark.parametrize("start", [0.01, 2.0])
def test_adaptive_controller_tracks_its_target_on_a_toy_problem(start):
    """A toy policy whose KL from the reference answers the coefficient as an entropy-regularised
    optimum does, KL = c / beta^2 (a Gaussian mean pulled by a linear reward), measured with
    noise. From far below or far above the right coefficient, the controller settles the KL at
    its target."""
    rnd = random.Random(0)
    c, target = 0.3, 6.0
    ctl = KLController(value=start, adaptive=True, target=target, horizon=2000)
    kls, coefs = [], []
    for _ in range(600):
        kl = c / ctl.value**2 * (1 + 0.1 * rnd.gauss(0.0, 1.0))
        kls.append(kl)
        coefs.append(ctl.value)
        ctl.update(kl, 256)
    beta_star = math.sqrt(c / target)
    assert ctl.value == pytest.approx(beta_star, rel=0.05)
    late = kls[-100:]
    assert sum(late) / len(late) == pytest.approx(target, rel=0.05)
    # it moved the right way from the start: up when the KL was too high, down when too low
    assert (coefs[10] > coefs[0]) == (start < beta_star)
