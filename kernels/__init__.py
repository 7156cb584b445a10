"""Fused GRPO kernels (Triton) with pure-torch references. Installed as `reasoner_kernels`.

See kernels/README.md for the public API.
"""

from .api import (
    TokenLogProbs,
    WeightedGRPOOutput,
    fused_linear_grpo_loss,
    fused_linear_logprobs,
    grpo_loss,
    logprobs,
    weighted_grpo_loss,
)
from .reference import (
    KL_ESTIMATORS,
    LOG_RATIO_CLAMP,
    GRPOTokenOutput,
    fused_linear_grpo_loss_reference,
    grpo_loss_from_logp,
    grpo_loss_reference,
    kl_estimate,
    selective_logp,
    token_entropy,
)

__all__ = [
    "TokenLogProbs",
    "WeightedGRPOOutput",
    "weighted_grpo_loss",
    "fused_linear_grpo_loss",
    "fused_linear_logprobs",
    "grpo_loss",
    "logprobs",
    "KL_ESTIMATORS",
    "LOG_RATIO_CLAMP",
    "GRPOTokenOutput",
    "fused_linear_grpo_loss_reference",
    "grpo_loss_from_logp",
    "grpo_loss_reference",
    "kl_estimate",
    "selective_logp",
    "token_entropy",
]
