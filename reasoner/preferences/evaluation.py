"""Held-out evaluation of a reward model on preference records: pairwise accuracy, mean margin,
loss, calibration (predicted vs observed win rate, ECE) and, for the synthetic annotator's data,
its closed-form Bayes-optimal accuracy beside the model's.

For a judged pair with reward difference d = r_winner - r_loser, the model's Bradley–Terry
prediction that the observed winner wins is sigmoid(d). Accuracy is TRL's: the fraction of pairs
with d > 0. Calibration orients each pair by the model's predicted winner: predicted win rate
q = sigmoid(|d|) in [1/2, 1], observed 1 if that side won (1/2 when d = 0); pairs are binned by
q, and ECE = sum over bins of (pairs in bin / pairs) * |mean q - observed rate|. Ties are
counted and left out of these numbers.

Where the records carry the annotator's utilities, `by_annotator_confidence` says where the
model loses against the Bayes-optimal accuracy: the pairs are grouped by how sure the annotator
is of them, p = sigmoid(|u_a - u_b| / T) (the Bayes-optimal accuracy of that pair), in
`CONFIDENCE_EDGES`; per group the pairs, the model's accuracy, the Bayes-optimal accuracy and
`gap_points`, the group's share of the whole gap in accuracy points (the groups' shares add up
to 100 x accuracy_gap_to_bayes when every record carries utilities). A model that misses pairs the annotator is near certain of has
not learned a part of the preference (for the arithmetic annotator: checking the answer), which
a single accuracy figure hides.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reasoner.preferences.annotator import bayes_accuracy_of_records, sigmoid
from reasoner.preferences.formats import PreferenceRecord

# groups of pairs by the annotator's confidence p = sigmoid(|u_a - u_b| / T): near-equal, uncertain,
# clear, near certain
CONFIDENCE_EDGES = (0.5, 0.6, 0.9, 0.99, 1.0)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def pairwise_metrics(records: Sequence[PreferenceRecord], scores: Sequence[Sequence[float]], *,
                     bins: int = 10, center_rewards_coefficient: float | None = None
                     ) -> dict[str, Any]:
    """Metrics of the scores of each record's completions (`scores[k][i]` for completion i of
    record k); see the module docstring."""
    if len(records) != len(scores):
        raise ValueError(f"{len(scores)} score lists for {len(records)} records")
    if bins < 1:
        raise ValueError("bins must be >= 1")
    n = ties = 0
    correct = margin = loss = 0.0
    oracle, oracle_n = 0.0, 0
    groups = [[0, 0.0, 0.0] for _ in CONFIDENCE_EDGES[1:]]  # pairs, model right, Bayes
    counts, pred, obs = [0] * bins, [0.0] * bins, [0.0] * bins
    for rec, s in zip(records, scores):
        if len(s) != len(rec.completions):
            raise ValueError(f"{rec.source}: {len(s)} scores for {len(rec.completions)} "
                             "completions")
        for c in rec.comparisons:
            if c.tie:
                ties += 1
                continue
            d = float(s[c.first]) - float(s[c.second])
            n += 1
            correct += d > 0
            margin += d
            loss -= _log_sigmoid(d - (c.margin or 0.0))
            if center_rewards_coefficient is not None:
                loss += center_rewards_coefficient * (float(s[c.first]) + float(s[c.second])) ** 2
            q = sigmoid(abs(d))
            b = min(int((q - 0.5) * 2 * bins), bins - 1)
            counts[b] += 1
            pred[b] += q
            obs[b] += 1.0 if d > 0 else (0.5 if d == 0 else 0.0)
            if rec.utilities is not None:
                du = rec.utilities[c.first] - rec.utilities[c.second]
                oracle += 1.0 if du > 0 else (0.5 if du == 0 else 0.0)
                oracle_n += 1
                p = sigmoid(abs(du) / rec.noise_temperature)
                g = groups[min(bisect.bisect_right(CONFIDENCE_EDGES, p) - 1, len(groups) - 1)]
                g[0] += 1
                g[1] += d > 0
                g[2] += p
    table = [{"bin": [0.5 + b / (2 * bins), 0.5 + (b + 1) / (2 * bins)], "count": counts[b],
              "predicted": pred[b] / counts[b] if counts[b] else None,
              "observed": obs[b] / counts[b] if counts[b] else None} for b in range(bins)]
    ece = sum(counts[b] / n * abs(pred[b] / counts[b] - obs[b] / counts[b])
              for b in range(bins) if counts[b]) if n else float("nan")
    out: dict[str, Any] = {
        "accuracy": correct / n if n else float("nan"),
        "mean_margin": margin / n if n else float("nan"),
        "loss": loss / n if n else float("nan"),
        "ece": ece,
        "num_pairs": n,
        "num_ties": ties,
        "num_records": len(records),
        "calibration": table,
    }
    bayes = bayes_accuracy_of_records(records)
    if bayes is not None:
        out["bayes_accuracy"] = bayes
        out["accuracy_gap_to_bayes"] = bayes - out["accuracy"]
        # the hidden utility as a predictor of these very labels (its realised accuracy)
        out["annotator_utility_accuracy"] = oracle / oracle_n if oracle_n else float("nan")
        out["by_annotator_confidence"] = [
            {"confidence": [CONFIDENCE_EDGES[k], CONFIDENCE_EDGES[k + 1]], "pairs": g[0],
             "accuracy": g[1] / g[0] if g[0] else None,
             "bayes_accuracy": g[2] / g[0] if g[0] else None,
             "gap_points": 100 * (g[2] - g[1]) / oracle_n if oracle_n else None}
            for k, g in enumerate(groups)]
    return out


def evaluate_reward_model(model: Any, tokenizer: Any, records: Sequence[PreferenceRecord], *,
                          batch_size: int = 64, device: Any = "cpu", bins: int = 10
                          ) -> dict[str, Any]:
    """`pairwise_metrics` of a loaded reward model (`reasoner.models.reward.load_reward_model`)
    on preference records: every completion encoded as the reward model was trained
    (`encode_sequence`) and scored in batches of `batch_size`."""
    from reasoner.models.reward import encode_sequence, score_sequences

    seqs = [encode_sequence(tokenizer, r.prompt, c) for r in records for c in r.completions]
    flat = score_sequences(model, seqs, tokenizer.pad_token_id, batch_size=batch_size,
                           device=device) if seqs else []
    scores, k = [], 0
    for r in records:
        scores.append(flat[k:k + len(r.completions)])
        k += len(r.completions)
    return pairwise_metrics(records, scores, bins=bins)


def plot_calibration(metrics: dict[str, Any], path: str | Path) -> Path:
    """A reliability diagram: observed vs predicted win rate per bin, the diagonal, and the
    pairs per bin."""
    from reasoner.metrics import pyplot, save_figure

    plt = pyplot()
    rows = [r for r in metrics["calibration"] if r["count"]]
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5, 6), sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0.5, 1], [0.5, 1], color="gray", linestyle="--", label="perfect calibration")
    ax.plot([r["predicted"] for r in rows], [r["observed"] for r in rows], marker="o",
            label=f"reward model (ECE {metrics['ece']:.3f})")
    ax.set_ylabel("observed win rate")
    ax.set_title(f"calibration: accuracy {metrics['accuracy']:.3f} on {metrics['num_pairs']} "
                 "pairs")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    width = 0.5 / len(metrics["calibration"])
    hx.bar([r["bin"][0] + width / 2 for r in metrics["calibration"]],
           [r["count"] for r in metrics["calibration"]], width=width * 0.9)
    hx.set_xlabel("predicted win rate of the predicted winner, sigmoid(|r_a - r_b|)")
    hx.set_ylabel("pairs")
    return save_figure(fig, path)
