"""Sampling and the decode loop: G completions per prompt as one `Rollout` of padded tensors
(`generate`), our own KV-cache decode loop (`decode`), top-k / top-p sampling (`sampling`)."""

from reasoner.rollout.decode import decode_loop
from reasoner.rollout.generate import (
    ENGINES,
    Rollout,
    completion_masks,
    eos_token_ids,
    generate_rollouts,
)
from reasoner.rollout.sampling import filter_logits, sample_tokens

__all__ = ["ENGINES", "Rollout", "completion_masks", "decode_loop", "eos_token_ids",
           "filter_logits", "generate_rollouts", "sample_tokens"]
