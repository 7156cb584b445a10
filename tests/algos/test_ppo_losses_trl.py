"""PPO's policy and value losses, and their gradients, against TRL's PPO formulas written out
in float64 (TRL 1.12's trl/experimental/ppo/ppo_trainer.py, the training loop's micro-batch):

    ratio = exp(logp - old_logp)
    pg_loss = masked_mean(max(-A * ratio, -A * clamp(ratio, 1 - cliprange, 1 + cliprange)))
    v_clip = clamp(v, v_old - cliprange_value, v_old + cliprange_value)
    vf_loss = 0.5 * masked_mean(max((v - R)^2, (v_clip - R)^2))
    loss = pg_loss + vf_coef * vf_loss, divided by gradient_accumulation_steps per micro-batch
    pg_clipfrac = masked_mean(pg_losses2 > pg_losses), vf_clipfrac likewise

against our registered ``clipped`` policy loss (cliprange as its epsilon), `clipped_value_loss`
and the token weights of ``algo.loss_type`` (``dapo``: the mean over the tokens of the
mini-batch, TRL's with one micro-batch per mini-batch; ``bnpo``: the mean over each
micro-batch's tokens, averaged over the micro-batches, TRL's with gradient accumulation).
The masks are ours: TRL's value mask reaches one position past a completion that ends before
the batch's width (its ``padding_mask_p1``); tests/algos/test_ppo_vs_trl.py runs TRL's own
trainer on completions that fill the width, where the two agree."""

import dataclasses

import pytest
import torch
from reasoner_kernels import selective_logp

from reasoner.algos import PolicyLossInput, get_policy_loss
from reasoner.algos.aggregation import token_weights
from reasoner.algos.losses import clipped_value_loss
from reasoner.config import AlgoConfig

D = torch.float64
N, C, V = 8, 6, 13
CLIP, CLIP_V, VF_COEF, T = 0.2, 0.15, 0.1, 0.7


def masked_mean(x, m):
    return (x * m).sum() / m.sum()


def trl_micro_batch_loss(logits, ids, old, adv, vpred, old_v, ret, mask):
    """TRL's loop body for one micro-batch (masks as ours), float64."""
    m = mask.to(D)
    logp = selective_logp(logits, ids, T)
    ratio = torch.exp(logp - old)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1 - CLIP, 1 + CLIP)
    pg = masked_mean(torch.max(pg1, pg2), m)
    v_clip = torch.clamp(vpred, old_v - CLIP_V, old_v + CLIP_V)
    vf1, vf2 = (vpred - ret) ** 2, (v_clip - ret) ** 2
    vf = 0.5 * masked_mean(torch.max(vf1, vf2), m)
    return pg, vf, masked_mean((pg2 > pg1).to(D), m), masked_mean((vf2 > vf1).to(D), m)


def inputs(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, V, generator=g, dtype=D)
    ids = torch.randint(0, V, (N, C), generator=g)
    lengths = torch.tensor([6, 3, 1, 5, 2, 6, 4, 6])
    mask = (torch.arange(C)[None] < lengths[:, None]).long()
    lp = selective_logp(logits, ids, T)
    old = lp + 0.4 * torch.randn(N, C, generator=g, dtype=D)  # ratios around the clip range
    adv = torch.randn(N, C, generator=g, dtype=D)
    old_v = torch.randn(N, C, generator=g, dtype=D)
    vpred = old_v + 0.3 * torch.randn(N, C, generator=g, dtype=D)  # some outside +-CLIP_V
    ret = torch.randn(N, C, generator=g, dtype=D)
    return logits, ids, mask, old, adv, vpred, old_v, ret


@pytest.mark.parametrize("loss_type,micro", [("dapo", N), ("bnpo", 4), ("bnpo", 2)])
def test_ppo_loss_and_gradients_equal_trls_formulas(loss_type, micro):
    logits, ids, mask, old, adv, vpred, old_v, ret = inputs(0)
    ga = N // micro

    # TRL: each micro-batch's masked means, divided by gradient_accumulation_steps
    x1, v1 = logits.clone().requires_grad_(True), vpred.clone().requires_grad_(True)
    trl_loss, trl_pgc, trl_vfc = 0.0, [], []
    for k in range(ga):
        s = slice(k * micro, (k + 1) * micro)
        pg, vf, pgc, vfc = trl_micro_batch_loss(x1[s], ids[s], old[s], adv[s], v1[s], old_v[s],
                                                ret[s], mask[s])
        loss = (pg + VF_COEF * vf) / ga
        loss.backward()
        trl_loss += float(loss)
        trl_pgc.append(float(pgc))
        trl_vfc.append(float(vfc))

    # ours: per-token losses weighted by the loss type's token weights over the mini-batch
    x2, v2 = logits.clone().requires_grad_(True), vpred.clone().requires_grad_(True)
    cfg = dataclasses.replace(AlgoConfig(), epsilon=CLIP)  # what the PPO trainer passes
    w = token_weights(loss_type, mask, micro_batch_size=micro, max_completion_length=C).to(D)
    ours = 0.0
    flags = vflags = 0
    for k in range(ga):  # any micro-batch split gives the same sum
        s = slice(k * micro, (k + 1) * micro)
        out = get_policy_loss("clipped")(PolicyLossInput(
            ids=ids[s], advantages=adv[s], mask=mask[s], old_logp=old[s], ref_logp=None,
            temperature=T, backend="torch", logits=x2[s]), cfg)
        vl = clipped_value_loss(v2[s], old_v[s], ret[s], mask[s], CLIP_V)
        loss = (w[s] * out.loss).sum() + VF_COEF * (w[s] * vl.loss).sum()
        loss.backward()
        ours += float(loss)
        flags += int((out.clipped_low | out.clipped_high).sum())
        vflags += int(vl.clipped.sum())

    # (the token weights are float32: 1 / tokens rounds at 6e-8)
    assert ours == pytest.approx(trl_loss, rel=2e-7)
    assert torch.allclose(x2.grad, x1.grad, rtol=2e-7, atol=1e-12)
    assert torch.allclose(v2.grad, v1.grad, rtol=2e-7, atol=1e-12)
    assert x1.grad.abs().sum() > 0 and v1.grad.abs().sum() > 0
    # the clip fractions we report (over the batch's tokens) are TRL's averaged by tokens
    n_tok = int(mask.sum())
    assert 0 < flags < n_tok and 0 < vflags < n_tok  # both clips active on some tokens
    if ga == 1:
        assert flags / n_tok == pytest.approx(trl_pgc[0], abs=1e-12)
        assert vflags / n_tok == pytest.approx(trl_vfc[0], abs=1e-12)


def test_value_loss_without_clipping_is_half_the_squared_error_and_zero_on_padding():
    _, _, mask, _, _, vpred, old_v, ret = inputs(1)
    vpred = vpred.clone()
    vpred[mask == 0] = float("nan")  # padding may hold anything
    vl = clipped_value_loss(vpred, old_v, ret, mask, None)
    m = mask.bool()
    assert torch.equal(vl.loss[m], 0.5 * (vpred[m] - ret[m]) ** 2)
    assert (vl.loss[~m] == 0).all() and not vl.clipped.any()
