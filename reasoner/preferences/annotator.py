"""A synthetic annotator: a hidden, stated preference over completions, with Bradley–Terry noise.

For tests and demos of the RLHF pipeline without people and without downloads. The annotator
scores a completion of a task's row with a hidden utility in [0, 1]:

    u = correct_weight * correct
        + format_weight * well_formed
        + brevity_weight * well_formed * max(0, 1 - len(completion) / length_scale)

(`correct`: the task's accuracy reward is 1; `well_formed`: exactly one think block then one
non-empty answer block; the length in characters). With the default weights 0.6 / 0.2 / 0.2 the
order is the stated one: a correct answer beats a wrong one (0.6 > 0.2 + 0.2), then a
well-formed completion beats a malformed one, then a shorter well-formed completion beats a
longer one.

It ranks K completions by sorting u / T + Gumbel noise (T = `noise_temperature`): the
Plackett–Luce model, whose pairwise marginals are exactly Bradley–Terry,

    P(a ranked above b) = sigmoid((u_a - u_b) / T),

because the difference of two independent Gumbel variables is logistic. So the best any model
of the annotator can do on a pair is to pick the higher utility, and its expected pairwise
accuracy is known in closed form: the mean over pairs of sigmoid(|u_a - u_b| / T)
(`bayes_accuracy`; 1/2 for a pair of equal utility).

What the RLHF demo reads (issue #14): `SyntheticAnnotator.utilities` (the "true" preference
score in [0, 1] of a policy's samples; `true_score` is its mean), `win_rate` (the expected
probability that one policy's sample is preferred to another's) and `bayes_accuracy`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reasoner.verifiers.format import strict_format_ok
from reasoner.verifiers.rewards import completion_text


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass
class SyntheticAnnotator:
    """The hidden preference (see the module docstring) and its noise temperature."""

    noise_temperature: float = 0.05
    correct_weight: float = 0.6
    format_weight: float = 0.2
    brevity_weight: float = 0.2
    length_scale: int = 64  # characters; a well-formed completion this long gets no brevity

    def __post_init__(self) -> None:
        if not self.noise_temperature > 0:
            raise ValueError(f"noise_temperature must be > 0, got {self.noise_temperature}")
        ws = (self.correct_weight, self.format_weight, self.brevity_weight)
        if min(ws) < 0 or abs(sum(ws) - 1.0) > 1e-9:
            raise ValueError(f"the weights must be >= 0 and sum to 1 (utilities in [0, 1]), got "
                             f"{ws}")
        if self.correct_weight <= self.format_weight + self.brevity_weight:
            raise ValueError("correct_weight must exceed format_weight + brevity_weight (a "
                             "correct answer beats a wrong one whatever its form)")
        if self.length_scale < 1:
            raise ValueError(f"length_scale must be >= 1, got {self.length_scale}")

    # ------------------------------------------------------------------ the hidden utility

    def utility(self, completion: Any, correct: bool) -> float:
        """u in [0, 1] of one completion whose answer is `correct` or not."""
        text = completion_text(completion)
        formed = strict_format_ok(text)
        brevity = max(0.0, 1.0 - len(text) / self.length_scale)
        return (self.correct_weight * float(correct) + self.format_weight * float(formed)
                + self.brevity_weight * float(formed) * brevity)

    def utilities(self, task: Any, prompts: Sequence[Any], completions: Sequence[Any],
                  rows: Sequence[dict[str, Any]]) -> list[float]:
        """The utility of each completion of `task`'s rows (one row per completion); the
        task's accuracy reward says what is correct (None, an unjudgeable answer, is wrong)."""
        from reasoner.verifiers.rewards import get_reward

        reward = get_reward(task.accuracy_reward)
        keys = sorted({k for r in rows for k in r})
        verdicts = reward(list(prompts), list(completions),
                          **{k: [r.get(k) for r in rows] for k in keys})
        return [self.utility(c, v is not None and v >= 1.0)
                for c, v in zip(completions, verdicts)]

    def true_score(self, task: Any, prompts: Sequence[Any], completions: Sequence[Any],
                   rows: Sequence[dict[str, Any]]) -> float:
        """The mean hidden utility of a policy's samples, in [0, 1]."""
        u = self.utilities(task, prompts, completions, rows)
        return sum(u) / len(u) if u else float("nan")

    # ------------------------------------------------------------------ the noisy judgement

    def prob_prefers(self, u_a: float, u_b: float) -> float:
        """P(the annotator prefers a to b) = sigmoid((u_a - u_b) / T)."""
        return sigmoid((u_a - u_b) / self.noise_temperature)

    def win_rate(self, u_a: Sequence[float], u_b: Sequence[float]) -> float:
        """Expected P(a sample of A is preferred to a sample of B), over all pairs (a, b)."""
        if not u_a or not u_b:
            raise ValueError("win_rate needs utilities on both sides")
        return sum(self.prob_prefers(a, b) for a in u_a for b in u_b) / (len(u_a) * len(u_b))

    def rank(self, utilities: Sequence[float], rng: random.Random) -> list[int]:
        """Indices best first: sorted by u / T + Gumbel noise (Plackett–Luce)."""
        keys = [u / self.noise_temperature - math.log(-math.log(_open_unit(rng)))
                for u in utilities]
        return sorted(range(len(utilities)), key=lambda k: -keys[k])

    def compare(self, u_a: float, u_b: float, rng: random.Random) -> str:
        """One noisy side-by-side judgement: "a" or "b"."""
        return "a" if rng.random() < self.prob_prefers(u_a, u_b) else "b"

    def is_correct(self, u: float) -> bool:
        """Whether a utility of this annotator's is a correct answer's: the correctness term
        alone outweighs form and brevity together, so u >= correct_weight says it."""
        return u >= self.correct_weight - 1e-9

    def judge_accuracy(self, records: Sequence[Any], verifier_accuracy: float | None) -> float:
        """The expected pairwise accuracy, on the annotator's own labels of `records` (their
        non-tie comparisons, with utilities), of a judge that knows every completion's form and
        length exactly and tells a correct answer from a wrong one with probability
        `verifier_accuracy`, independently per completion (None: a judge that never checks the
        answer, ranking by form and length alone). 1.0 is the Bayes-optimal accuracy: this says
        how well a reward model must check answers to come within a given distance of it."""
        if verifier_accuracy is not None and not 0.0 <= verifier_accuracy <= 1.0:
            raise ValueError(f"verifier_accuracy must be in [0, 1], got {verifier_accuracy}")
        a = verifier_accuracy
        total, n = 0.0, 0
        for rec in records:
            if rec.utilities is None:
                continue
            u = rec.utilities
            correct = [self.is_correct(x) for x in u]
            rest = [x - self.correct_weight * c for x, c in zip(u, correct)]  # form + brevity
            for c in rec.comparisons:
                if c.tie:
                    continue
                hi, lo = (c.first, c.second) if u[c.first] >= u[c.second] else (c.second,
                                                                               c.first)
                p = sigmoid((u[hi] - u[lo]) / rec.noise_temperature)
                if a is None:
                    outcomes = [(1.0, rest[hi], rest[lo])]
                else:  # each side judged right (its true verdict) or flipped
                    outcomes = [(ph * pl, rest[hi] + self.correct_weight * jh,
                                 rest[lo] + self.correct_weight * jl)
                                for jh, ph in ((correct[hi], a), (not correct[hi], 1 - a))
                                for jl, pl in ((correct[lo], a), (not correct[lo], 1 - a))]
                total += sum(w * (0.5 if abs(sh - sl) < 1e-9 else p if sh > sl else 1 - p)
                             for w, sh, sl in outcomes)  # equal up to rounding: a coin flip
                n += 1
        return total / n if n else float("nan")

    def bayes_accuracy(self, pairs: Sequence[tuple[float, float]]) -> float:
        """The Bayes-optimal expected pairwise accuracy on pairs of utilities: the mean of
        sigmoid(|u_a - u_b| / T)."""
        if not pairs:
            return float("nan")
        return sum(sigmoid(abs(a - b) / self.noise_temperature) for a, b in pairs) / len(pairs)


def _open_unit(rng: random.Random) -> float:
    """A uniform draw in (0, 1)."""
    x = rng.random()
    while x == 0.0:
        x = rng.random()
    return x


def bayes_accuracy_of_records(records: Sequence[Any]) -> float | None:
    """The closed-form Bayes-optimal pairwise accuracy over the non-tie comparisons of
    preference records that carry the annotator's utilities (None when none does)."""
    total, n = 0.0, 0
    for rec in records:
        if rec.utilities is None:
            continue
        for c in rec.comparisons:
            if c.tie:
                continue
            d = abs(rec.utilities[c.first] - rec.utilities[c.second])
            total += sigmoid(d / rec.noise_temperature)
            n += 1
    return total / n if n else None
