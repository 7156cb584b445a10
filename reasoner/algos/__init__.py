"""Algorithms as small registered functions that know nothing of engines or ranks:

- advantage estimators (`advantages`): rewards -> advantages; ``algo.adv_estimator``;
- policy losses (`losses`): a micro-batch -> per-token losses; ``algo.policy_loss``;
- aggregation modes (`aggregation`): per-token losses -> the step's loss, as token weights;
  ``algo.loss_type`` (TRL's names);
- value losses (`losses.clipped_value_loss`) and GAE (`advantages.gae`) for a critic;
- the KL coefficient's controllers (`kl_control`): fixed, or adaptive (Ziegler et al.);
- reward shaping (`shaping`): the overlong penalty and the KL penalty in the reward.

Add a variant by registering a function (``@register_adv_est("my_est")``), through the
entry-point groups ``reasoner.advantage_estimators`` / ``reasoner.policy_losses``, or by naming
its ``module:function`` path in the config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from reasoner_kernels import GRPOTokenOutput

from reasoner.algos.advantages import AdvantageInput
from reasoner.algos.losses import PolicyLossInput, WeightedTokenOutput
from reasoner.registry import Registry

AdvantageEstimator = Callable[[AdvantageInput, Any], torch.Tensor]
PolicyLoss = Callable[[PolicyLossInput, Any], GRPOTokenOutput]

ADV_ESTIMATORS: Registry[AdvantageEstimator] = Registry(
    "advantage estimator", "reasoner.advantage_estimators",
    {"grpo": "reasoner.algos.advantages:grpo", "rloo": "reasoner.algos.advantages:rloo",
     "reinforce_plus_plus": "reasoner.algos.advantages:reinforce_plus_plus"})
POLICY_LOSSES: Registry[PolicyLoss] = Registry(
    "policy loss", "reasoner.policy_losses", {"clipped": "reasoner.algos.losses:clipped",
                                              "vanilla": "reasoner.algos.losses:vanilla"})


def register_adv_est(name: str) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
    """Decorator: register an advantage estimator under `name` (``algo.adv_estimator``)."""
    return ADV_ESTIMATORS.register(name)


def register_policy_loss(name: str) -> Callable[[PolicyLoss], PolicyLoss]:
    """Decorator: register a policy loss under `name` (``algo.policy_loss``)."""
    return POLICY_LOSSES.register(name)


def get_adv_estimator(name: str) -> AdvantageEstimator:
    return ADV_ESTIMATORS.get(name)


def get_policy_loss(name: str) -> PolicyLoss:
    return POLICY_LOSSES.get(name)


__all__ = ["ADV_ESTIMATORS", "POLICY_LOSSES", "AdvantageEstimator", "AdvantageInput",
           "PolicyLoss", "PolicyLossInput", "WeightedTokenOutput", "get_adv_estimator", "get_policy_loss",
           "register_adv_est", "register_policy_loss"]
