"""Advantage estimators and reward shaping: hand-computed numbers, and TRL's formula as an
oracle."""

import math

import pytest
import torch

from reasoner.algos import ADV_ESTIMATORS, AdvantageInput, get_adv_estimator
from reasoner.algos.advantages import group_stats
from reasoner.algos.shaping import overlong_penalty, sequence_kl
from reasoner.config import AlgoConfig

D = torch.float64


def grpo_adv(rewards, valid, g, scale):
    return get_adv_estimator("grpo")(AdvantageInput(rewards, valid, g),
                                     AlgoConfig(scale_rewards=scale))


def test_group_advantages_group_scale():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0], dtype=D)
    v = torch.ones(8, dtype=torch.bool)
    a = grpo_adv(r, v, 4, "group")
    std = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]
    want = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4)]
    assert a[:4].tolist() == pytest.approx([want[0], want[1], want[1], want[0]], abs=1e-12)
    assert a[4:].tolist() == [0.0] * 4
    st = group_stats(r, v, 4)
    assert st.mean.tolist() == [0.5, 2.0]
    assert st.zero_std.tolist() == [False, True]


def test_group_advantages_batch_and_none_scale():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=D)
    v = torch.ones(4, dtype=torch.bool)
    bstd = 0.5  # unbiased std of [1, 0, 1, 1]
    assert grpo_adv(r, v, 2, "batch").tolist() == pytest.approx(
        [0.5 / (bstd + 1e-4), -0.5 / (bstd + 1e-4), 0.0, 0.0], abs=1e-12)
    assert grpo_adv(r, v, 2, "none").tolist() == [0.5, -0.5, 0.0, 0.0]  # dr_grpo: mean only
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo_adv(r, v, 2, "std")


def test_dropped_samples_leave_the_group_statistics():
    r = torch.tensor([1.0, float("nan"), 0.0, 0.0, 1.0, float("nan"), float("nan"), float("nan")],
                     dtype=D)
    v = ~torch.isnan(r)
    a = grpo_adv(r, v, 4, "group")
    mean, std = 1 / 3, math.sqrt(1 / 3)
    st = group_stats(r, v, 4)
    assert st.mean[0].item() == pytest.approx(mean)
    assert st.std[0].item() == pytest.approx(std)
    assert a[[0, 2, 3]].tolist() == pytest.approx(
        [(1 - mean) / (std + 1e-4), -mean / (std + 1e-4), -mean / (std + 1e-4)])
    # one valid member: no spread, no signal (the trainer zeroes dropped rows' advantages)
    assert a[4].item() == 0.0
    assert st.zero_std.tolist() == [False, True]


def trl_advantages(rewards, g, scale):
    """TRL 1.16 GRPOTrainer._generate_and_score_completions ("sum_then_normalize"), in float64:
    NaN rewards are unscorable, nanmean / nanstd baselines, advantage 0 where NaN."""
    def nanstd(x, dim=None):
        m = torch.nanmean(x, dim=dim, keepdim=dim is not None)
        var = torch.nanmean((x - m) ** 2, dim=dim)
        n = (~torch.isnan(x)).sum(dim=dim) if dim is not None else (~torch.isnan(x)).sum()
        return torch.sqrt(var * n / (n - 1))

    mean = torch.nanmean(rewards.view(-1, g), dim=1).repeat_interleave(g)
    if scale in ("group", "none"):
        std = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g)
    else:
        std = nanstd(rewards).expand_as(rewards)
    adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    return torch.nan_to_num(adv, nan=0.0)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_estimator_equals_trls_formula(scale):
    g = torch.Generator().manual_seed(0)
    r = torch.randint(0, 4, (24,), generator=g).to(D) / 3
    r[[3, 10, 11]] = float("nan")  # unscorable samples
    v = ~torch.isnan(r)
    ours = torch.where(v, grpo_adv(r, v, 6, scale), torch.zeros_like(r))
    torch.testing.assert_close(ours, trl_advantages(r, 6, scale), rtol=0, atol=1e-12)


def test_overlong_penalty():
    lengths = torch.tensor([5, 6, 8, 10, 12])
    p = overlong_penalty(lengths, max_completion_length=10, buffer_len=4, factor=2.0)
    assert p.tolist() == [0.0, 0.0, -1.0, -2.0, -2.0]


def test_sequence_kl_for_kl_in_reward():
    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0]])
    mask = torch.tensor([[1, 1, 0]])
    assert sequence_kl(logp, ref, mask, "k1").item() == pytest.approx(0.5)  # -(-0.5) + 0
    k3 = math.exp(-0.5) + 0.5 - 1
    assert sequence_kl(logp, ref, mask, "k3").item() == pytest.approx(k3)


def test_estimators_are_registered_by_name():
    assert "grpo" in ADV_ESTIMATORS.names()
    assert get_adv_estimator("reasoner.algos.advantages:grpo") is get_adv_estimator("grpo")
