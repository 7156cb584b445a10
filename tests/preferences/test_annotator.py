"""The synthetic annotator: its stated order, Bradley–Terry marginals of its rankings, and its
closed-form Bayes-optimal accuracy against simulation."""

import math
import random

import pytest

from reasoner.preferences.annotator import SyntheticAnnotator, bayes_accuracy_of_records, sigmoid
from reasoner.preferences.formats import Comparison, PreferenceRecord
from reasoner.tasks import get_task


def test_the_stated_preference_order():
    ann = SyntheticAnnotator()
    short_ok = "2+3=5</think><answer>5</answer>"
    long_ok = "2+3=1+4=2+3=5 let me check again</think><answer>5</answer>"
    wrong_ok = "2+3=6</think><answer>6</answer>"
    right_malformed = "5 <answer>5</answer>"
    task = get_task("arithmetic")
    rows = [{"question": "2+3", "answer": "5"}] * 4
    u = dict(zip(["short", "long", "wrong", "malformed"], ann.utilities(
        task, ["p"] * 4, [short_ok, long_ok, wrong_ok, right_malformed], rows)))
    # a correct answer beats a wrong one whatever its form, then well-formed beats malformed,
    # then shorter beats longer
    assert u["malformed"] > u["wrong"]
    assert u["short"] > u["long"] > u["malformed"]
    assert all(0 <= v <= 1 for v in u.values())
    assert u["short"] == pytest.approx(0.6 + 0.2 + 0.2 * (1 - len(short_ok) / 64))
    assert u["malformed"] == pytest.approx(0.6)
    assert ann.true_score(task, ["p"] * 4, [short_ok, long_ok, wrong_ok, right_malformed],
                          rows) == pytest.approx(sum(u.values()) / 4)
    with pytest.raises(ValueError, match="correct_weight must exceed"):
        SyntheticAnnotator(correct_weight=0.4, format_weight=0.4, brevity_weight=0.2)
    with pytest.raises(ValueError, match="noise_temperature must be > 0"):
        SyntheticAnnotator(noise_temperature=0)


def test_rankings_have_bradley_terry_pairwise_marginals():
    ann = SyntheticAnnotator(noise_temperature=0.1)
    u = [0.9, 0.8, 0.5, 0.45]
    rng = random.Random(0)
    n = 20000
    above = [[0] * 4 for _ in range(4)]
    for _ in range(n):
        order = ann.rank(u, rng)
        pos = {k: r for r, k in enumerate(order)}
        for a in range(4):
            for b in range(4):
                above[a][b] += pos[a] < pos[b]
    for a, b in [(0, 1), (0, 3), (1, 2), (2, 3)]:
        want = ann.prob_prefers(u[a], u[b])
        assert above[a][b] / n == pytest.approx(want, abs=4 * math.sqrt(want * (1 - want) / n))


def test_bayes_accuracy_closed_form_matches_simulated_labels():
    ann = SyntheticAnnotator(noise_temperature=0.05)
    rng = random.Random(1)
    utilities = [[rng.choice([0.0, 0.2, 0.6, 0.8, 0.9]) + rng.random() * 0.1 for _ in range(4)]
                 for _ in range(400)]
    records, hits, n = [], 0.0, 0
    for u in utilities:
        order = ann.rank(u, rng)
        comps = [Comparison(order[a], order[b]) for a in range(4) for b in range(a + 1, 4)]
        records.append(PreferenceRecord("p", ["a", "b", "c", "d"], comps, "x", "rankings", u,
                                        0.05))
        for c in comps:  # the Bayes predictor: the higher utility wins
            hits += 1.0 if u[c.first] > u[c.second] else 0.0
            n += 1
    closed = bayes_accuracy_of_records(records)
    pairs = [(u[a], u[b]) for u in utilities for a in range(4) for b in range(a + 1, 4)]
    assert closed == pytest.approx(ann.bayes_accuracy(pairs))
    assert closed == pytest.approx(hits / n, abs=0.02)
    assert 0.5 < closed < 1
    # equal utilities: a coin flip
    assert ann.bayes_accuracy([(0.3, 0.3)]) == 0.5
    assert ann.bayes_accuracy([(1.0, 0.0)]) == pytest.approx(sigmoid(20))
    assert ann.win_rate([1.0], [0.0, 1.0]) == pytest.approx((sigmoid(20) + 0.5) / 2)


def test_judge_accuracy_says_how_well_answers_must_be_checked():
    ann = SyntheticAnnotator(noise_temperature=0.05)
    ok = "2+3=5</think><answer>5</answer>"
    task = get_task("arithmetic")
    texts = [ok, "2+3=6</think><answer>6</answer>", "2+3=60</think><answer>60</answer>",
             "5 <answer>5</answer>"]  # correct, wrong, wrong and longer, correct malformed
    u = ann.utilities(task, ["p"] * 4, texts, [{"question": "2+3", "answer": "5"}] * 4)
    assert [ann.is_correct(x) for x in u] == [True, False, False, True]
    rec = PreferenceRecord("p", texts, [Comparison(0, 1), Comparison(1, 2), Comparison(3, 1)],
                           "x", "rankings", u, 0.05)
    p01, p12, p31 = (sigmoid((u[a] - u[b]) / 0.05) for a, b in [(0, 1), (1, 2), (3, 1)])
    # never checking the answer: 0 and 1 have the same form and length (a coin flip), the
    # shorter 1 beats 2, and the malformed correct 3 loses to the well-formed wrong 1
    assert ann.judge_accuracy([rec], None) == pytest.approx((0.5 + p12 + (1 - p31)) / 3)
    # checking every answer right is the Bayes-optimal accuracy
    assert ann.judge_accuracy([rec], 1.0) == pytest.approx(bayes_accuracy_of_records([rec]))
    # checking each answer right with probability a: against a simulation of the flips
    a, rng, n = 0.8, random.Random(0), 20000
    hits = 0.0
    for _ in range(n):
        judged = [c if rng.random() < a else not c for c in (ann.is_correct(x) for x in u)]
        s = [x - 0.6 * ann.is_correct(x) + 0.6 * j for x, j in zip(u, judged)]
        for c, p in [((0, 1), p01), ((1, 2), p12), ((3, 1), p31)]:
            d = s[c[0]] - s[c[1]]
            hits += 0.5 if abs(d) < 1e-9 else (p if d > 0 else 1 - p)
    assert ann.judge_accuracy([rec], a) == pytest.approx(hits / (3 * n), abs=0.005)
    assert (ann.judge_accuracy([rec], None) < ann.judge_accuracy([rec], 0.8)
            < ann.judge_accuracy([rec], 1.0))
    # ties in the ranking are left out, as in the Bayes-optimal accuracy
    tied = PreferenceRecord("p", texts[:2], [Comparison(0, 1, tie=True)], "x", "rankings",
                            u[:2], 0.05)
    assert math.isnan(ann.judge_accuracy([tied], 1.0))
    with pytest.raises(ValueError, match="verifier_accuracy"):
        ann.judge_accuracy([rec], 1.5)
