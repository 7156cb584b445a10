"""Loss aggregation as token weights: hand values, TRL's per-micro-batch formulas as the oracle
(loss_type grpo, bnpo, dr_grpo, dapo), and any split of the forward giving the same gradient."""

import pytest
import torch
from reasoner_kernels import selective_logp

from reasoner.algos import PolicyLossInput, get_policy_loss
from reasoner.algos.aggregation import LOSS_TYPES, BatchTotals, token_weights
from reasoner.config import AlgoConfig

D = torch.float64
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.long)
L = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0], [9.0] * 4, [5.0, 7.0, 9.0, 9.0]],
                 dtype=D)
# row 2 has no loss token: a truncated completion masked out (it stays in the batch, as in TRL)
EXPECTED = {
    "grpo": (2.0 + 4.0 + 0.0 + 6.0) / 4,  # mean per sequence, over the 4 rows of the batch
    "dapo": 22.0 / 6,  # all active tokens / their count: (1+2+3+4+5+7) / 6
    "dr_grpo": 22.0 / 20,  # sum / (4 sequences * max_completion_length 5)
    # micro-batches of 2 rows: (1+2+3+4) / 4 and (5+7) / 2, averaged
    "bnpo": (10.0 / 4 + 12.0 / 2) / 2,
}


def weights(loss_type, mask=MASK, **kw):
    kw.setdefault("micro_batch_size", 2)
    return token_weights(loss_type, mask, max_completion_length=5, **kw).to(D)


@pytest.mark.parametrize("loss_type", list(EXPECTED))
def test_token_weights_hand_values(loss_type):
    w = weights(loss_type)
    assert (w * L).sum().item() == pytest.approx(EXPECTED[loss_type], abs=1e-6)
    assert (w[MASK == 0] == 0).all()


def test_a_dropped_sample_is_out_of_the_row_counts():
    rows = torch.tensor([True, True, False, True])  # row 2 dropped: not in the batch
    assert (weights("grpo", rows=rows) * L).sum().item() == pytest.approx(12.0 / 3)
    assert (weights("dr_grpo", rows=rows) * L).sum().item() == pytest.approx(22.0 / 15)


def test_totals_of_all_ranks():
    w = weights("dapo", totals=BatchTotals(tokens=12, rows=8, world_size=2))
    assert (w * L).sum().item() == pytest.approx(22.0 / 12)
    w = weights("grpo", totals=BatchTotals(tokens=12, rows=8, world_size=2))
    assert (w * L).sum().item() == pytest.approx(12.0 / 8)
    # bnpo: this rank's 2 micro-batches of the 2 * 2 of both ranks
    w = weights("bnpo", totals=BatchTotals(tokens=12, rows=8, world_size=2))
    assert (w * L).sum().item() == pytest.approx((10.0 / 4 + 12.0 / 2) / 4)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        weights("ppo")


def trl_loss(per_token_loss, mask, loss_type, micro_batch_size, max_completion_length):
    """TRL 1.16 GRPOTrainer._compute_loss's aggregation, micro-batch by micro-batch, summed over
    the gradient_accumulation_steps micro-batches of one optimizer step (one process,
    steps_per_generation = gradient_accumulation_steps), in float64."""
    n = per_token_loss.shape[0]
    ga = n // micro_batch_size
    num_items_in_batch = mask.sum()
    total = 0.0
    for k in range(ga):
        s = slice(k * micro_batch_size, (k + 1) * micro_batch_size)
        pl, m = per_token_loss[s], mask[s].to(D)
        if loss_type == "grpo":
            loss = ((pl * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean() / ga
        elif loss_type == "bnpo":
            loss = (pl * m).sum() / m.sum().clamp(min=1.0) / ga
        elif loss_type == "dr_grpo":
            loss = (pl * m).sum() / (pl.size(0) * max_completion_length) / ga
        else:  # dapo: num_items_in_batch spans the generation batch
            num_processes, steps_per_generation = 1, ga
            normalizer = num_items_in_batch.clamp(min=1.0) / num_processes
            normalizer = normalizer * ga / steps_per_generation
            loss = (pl * m).sum() / normalizer
        total = total + loss
    return total


@pytest.mark.parametrize("loss_type", list(LOSS_TYPES))
def test_aggregation_equals_trls_per_micro_batch_formula(loss_type):
    g = torch.Generator().manual_seed(1)
    n, c, mb = 12, 7, 4  # gradient_accumulation_steps = 3
    per_token = torch.randn(n, c, generator=g, dtype=D)
    lengths = torch.tensor([7, 3, 0, 5, 1, 7, 2, 0, 6, 4, 7, 3])  # 0: masked-out completions
    mask = (torch.arange(c)[None, :] < lengths[:, None]).long()
    w = token_weights(loss_type, mask, micro_batch_size=mb, max_completion_length=9).to(D)
    want = trl_loss(per_token, mask, loss_type, mb, 9)
    # float32 weights: equal to float32 rounding
    assert (w * per_token).sum().item() == pytest.approx(want.item(), rel=1e-6, abs=1e-9)


def _setup(seed=0, n=6, c=5, v=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, v, generator=g, dtype=D)
    ids = torch.randint(0, v, (n, c), generator=g)
    mask = (torch.arange(c)[None, :] < torch.tensor([5, 3, 1, 4, 2, 5])[:, None]).long()
    adv = torch.randn(n, generator=g, dtype=D)
    ref = selective_logp(logits + 0.3 * torch.randn(n, c, v, generator=g, dtype=D), ids)
    old = selective_logp(logits + 0.2 * torch.randn(n, c, v, generator=g, dtype=D), ids)
    return logits, ids, mask, adv, ref, old


@pytest.mark.parametrize("loss_type", list(LOSS_TYPES))
def test_gradient_accumulation_one_vs_two_micro_batches(loss_type):
    """The forward split into any micro-batches gives the full-batch loss and gradient."""
    logits, ids, mask, adv, ref, old = _setup()
    w = weights(loss_type, mask, micro_batch_size=3)
    cfg = AlgoConfig(epsilon=0.2, epsilon_high=0.28, dual_clip=3.0, beta=0.04)
    loss_fn = get_policy_loss("clipped")

    def grad(splits):
        x = logits.clone().requires_grad_(True)
        total = 0.0
        for s in splits:
            out = loss_fn(PolicyLossInput(ids[s], adv[s][:, None], mask[s], old[s], ref[s], 0.7,
                                          "torch", logits=x[s]), cfg)
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
    out = get_policy_loss("clipped")(
        PolicyLossInput(ids, adv[:, None], mask, old, ref, 0.7, "torch", logits=logits),
        AlgoConfig(beta=0.04))
    glob = (out.loss * weights("dapo", mask)).sum()
    naive = sum((out.loss[s].sum() / mask[s].sum()) / 2 for s in (slice(0, 3), slice(3, 6)))
    assert abs(glob.item() - naive.item()) > 1e-3
