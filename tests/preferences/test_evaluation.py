"""Held-out metrics of a reward model: where it loses against the annotator's Bayes-optimal
accuracy, by how sure the annotator is of each pair."""

import math

import pytest

from reasoner.preferences.evaluation import CONFIDENCE_EDGES, pairwise_metrics
from reasoner.preferences.formats import Comparison, PreferenceRecord


def _sig(x):
    return 1 / (1 + math.exp(-x))


def _record(utilities, scores_order, t=0.05):
    """A ranking of len(utilities) completions best first by utility (pairs i < j: i won)."""
    k = len(utilities)
    comps = [Comparison(i, j) for i in range(k) for j in range(i + 1, k)]
    return PreferenceRecord(prompt="p", completions=[f"c{i}" for i in range(k)],
                            comparisons=comps, source="t:1", format="rankings",
                            utilities=list(utilities), noise_temperature=t), scores_order


def test_the_gap_to_bayes_is_split_by_the_annotators_confidence():
    # pair confidences p = sigmoid(du / 0.05): du 0.9 -> near certain, du 0.1 -> 0.88 (uncertain),
    # du 0.0 -> 1/2 (near-equal)
    recs = [
        # a correct answer (0.9) vs a wrong one (0.0): the model gets it wrong
        _record([0.9, 0.0], [0.0, 1.0]),
        # the same kind of pair, right
        _record([0.9, 0.0], [2.0, 1.0]),
        # du = 0.1: right
        _record([0.5, 0.4], [1.0, 0.0]),
        # equal utilities: wrong (by the label's orientation)
        _record([0.3, 0.3], [0.0, 1.0]),
    ]
    out = pairwise_metrics([r for r, _ in recs], [s for _, s in recs])
    groups = out["by_annotator_confidence"]
    assert [g["confidence"] for g in groups] == [list(CONFIDENCE_EDGES[k:k + 2])
                                                for k in range(len(CONFIDENCE_EDGES) - 1)]
    near_equal, uncertain, clear, certain = groups
    p_certain, p_uncertain = _sig(0.9 / 0.05), _sig(0.1 / 0.05)
    assert p_uncertain == pytest.approx(0.8808, abs=1e-4)
    assert near_equal["pairs"] == 1 and near_equal["accuracy"] == 0.0
    assert near_equal["bayes_accuracy"] == 0.5
    assert uncertain["pairs"] == 1 and uncertain["accuracy"] == 1.0
    assert uncertain["bayes_accuracy"] == pytest.approx(p_uncertain)
    assert clear == {"confidence": [0.9, 0.99], "pairs": 0, "accuracy": None,
                     "bayes_accuracy": None, "gap_points": 0.0}
    assert certain["pairs"] == 2 and certain["accuracy"] == 0.5
    assert certain["bayes_accuracy"] == pytest.approx(p_certain)
    # each group's share of the gap, in points of the whole accuracy
    assert certain["gap_points"] == pytest.approx(100 * (2 * p_certain - 1) / 4)
    assert uncertain["gap_points"] == pytest.approx(100 * (p_uncertain - 1) / 4)
    assert near_equal["gap_points"] == pytest.approx(100 * 0.5 / 4)
    assert sum(g["gap_points"] for g in groups) == pytest.approx(
        100 * out["accuracy_gap_to_bayes"])
    assert out["accuracy"] == 0.5


def test_without_utilities_there_are_no_groups():
    rec = PreferenceRecord(prompt="p", completions=["a", "b"], comparisons=[Comparison(0, 1)],
                           source="t:1", format="pairs")
    out = pairwise_metrics([rec], [[1.0, 0.0]])
    assert out["accuracy"] == 1.0
    assert "by_annotator_confidence" not in out and "bayes_accuracy" not in out
