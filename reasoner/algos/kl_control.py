"""The coefficient of the KL penalty in the reward: fixed, or the adaptive controller of Ziegler
et al. (2019, "Fine-Tuning Language Models from Human Preferences"), as TRL <= 0.11 had it:

    e = clip(KL / target - 1, -0.2, 0.2),    coef <- coef * (1 + e * n / horizon)

after each step, KL the mean over the step's completions of their sequence KL (the per-token
estimate summed over the completion), n the number of completions. A KL above the target raises
the coefficient, below lowers it, by at most 0.2 * n / horizon per step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

PROPORTIONAL_CLIP = 0.2


@dataclass
class KLController:
    """The current coefficient and, when adaptive, how it moves."""

    value: float
    adaptive: bool = False
    target: float = 6.0
    horizon: int = 10000

    def update(self, current_kl: float, n_completions: int) -> None:
        """One step's update from its mean sequence KL (a no-op for a fixed coefficient)."""
        if not self.adaptive:
            return
        err = min(max(current_kl / self.target - 1.0, -PROPORTIONAL_CLIP), PROPORTIONAL_CLIP)
        self.value *= 1.0 + err * n_completions / self.horizon

    def state(self) -> dict[str, Any]:
        return asdict(self)

    def load_state(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


def kl_controller(cfg: Any) -> KLController:
    """The controller the ``algo`` section describes (kl_coef, adap_kl_ctrl, kl_target,
    kl_horizon)."""
    return KLController(value=cfg.kl_coef, adaptive=cfg.adap_kl_ctrl, target=cfg.kl_target,
                        horizon=cfg.kl_horizon)
