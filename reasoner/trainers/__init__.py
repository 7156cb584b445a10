"""Trainers: the base loop (`base`) and one module per algorithm (`grpo`: GRPO, RLOO,
REINFORCE++; `ppo`: PPO and A2C with a critic; `reward`: reward models from preferences), the
policy update they share (`update`), supervised fine-tuning (`sft`).

An algorithm's trainer is found by ``algo.name`` in `ALGORITHMS` (the one registry helper):
the built-ins below, other packages' through the entry-point group ``reasoner.algorithms``, or
a ``module:Class`` path. A trainer class takes ``(cfg, resume=, deepspeed_config=, progress=,
overwrite=)`` (`BaseTrainer`'s) and has ``train()``.
"""

from __future__ import annotations

from typing import Any

from reasoner.registry import Registry

ALGORITHMS: Registry[Any] = Registry("algorithm", "reasoner.algorithms", {
    "grpo": "reasoner.trainers.grpo:GRPOTrainer",
    "rm": "reasoner.trainers.reward:RewardTrainer",
    "rloo": "reasoner.trainers.grpo:RLOOTrainer",
    "reinforce_plus_plus": "reasoner.trainers.grpo:ReinforcePlusPlusTrainer",
    "ppo": "reasoner.trainers.ppo:PPOTrainer",
    "a2c": "reasoner.trainers.ppo:A2CTrainer",
})
# the built-in algorithms that train a critic (their config is checked for it)
CRITIC_ALGORITHMS = ("ppo", "a2c")


def train(cfg: Any, *, resume: bool = False, deepspeed_config: str | None = None,
          progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Run the configured algorithm; returns a summary (steps, wall time, last metrics, final
    path). `overwrite`: replace an earlier run in the output directory (see `BaseTrainer`)."""
    from reasoner import distributed

    trainer = ALGORITHMS.get(cfg.algo.name)(cfg, resume=resume, deepspeed_config=deepspeed_config,
                                            progress=progress, overwrite=overwrite)
    try:
        summary = trainer.train()
    except BaseException:
        distributed.shutdown(synchronize=False)
        raise
    distributed.shutdown()
    return summary


__all__ = ["ALGORITHMS", "CRITIC_ALGORITHMS", "train"]
