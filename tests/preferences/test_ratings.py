"""Bradley–Terry ratings recover known ratings from simulated comparisons, their Wald intervals
cover the truth at the stated rate; Elo updates follow the formula and order players rightly;
`reasoner elo` ranks policies from a comparisons file."""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from reasoner.preferences.ratings import (
    ELO_PER_LOGIT,
    Games,
    elo_ratings,
    elo_updates,
    fit_bradley_terry,
    ratings_main,
)

TRUE = np.array([1.2, 0.5, 0.0, -0.4, -1.3])  # centred: sums to 0


def simulate(theta, n_games, rng):
    n = len(theta)
    i = rng.integers(0, n, n_games)
    j = (i + rng.integers(1, n, n_games)) % n
    p = 1 / (1 + np.exp(-(theta[i] - theta[j])))
    s = (rng.random(n_games) < p).astype(float)
    return Games(i, j, s, n)


def test_bradley_terry_recovers_known_ratings():
    rng = np.random.default_rng(0)
    fit = fit_bradley_terry(simulate(TRUE, 6000, rng), prior=0.0)
    assert abs(fit.theta.sum()) < 1e-9
    err = np.abs(fit.theta - TRUE)
    assert err.max() < 0.12, (fit.theta, TRUE)
    assert np.all(err < 3.5 * fit.se)
    assert np.all((fit.se > 0.02) & (fit.se < 0.1))
    assert list(np.argsort(-fit.rating)) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(fit.rating - 1000, ELO_PER_LOGIT * fit.theta)


def test_the_mle_is_a_stationary_point_of_the_likelihood():
    g = simulate(TRUE, 800, np.random.default_rng(1))
    fit = fit_bradley_terry(g, prior=0.0)
    p = 1 / (1 + np.exp(-(fit.theta[g.i] - fit.theta[g.j])))
    grad = np.bincount(g.i, g.s - p, 5) - np.bincount(g.j, g.s - p, 5)
    assert np.abs(grad).max() < 1e-8


def test_wald_intervals_cover_the_true_ratings_at_the_stated_rate():
    rng = np.random.default_rng(2)
    hits = total = 0
    for _ in range(200):
        fit = fit_bradley_terry(simulate(TRUE, 400, rng), prior=0.0,
                                confidence=0.9)
        true_rating = 1000 + ELO_PER_LOGIT * TRUE
        hits += int(np.sum((fit.ci_low <= true_rating) & (true_rating <= fit.ci_high)))
        total += len(TRUE)
    assert 0.86 <= hits / total <= 0.94, hits / total


def test_ties_undefeated_players_and_disconnected_players():
    tie = Games([0, 0, 1], [1, 1, 0], [0.5, 0.5, 0.5], 2)
    fit = fit_bradley_terry(tie, prior=0.0)
    assert fit.theta == pytest.approx([0.0, 0.0], abs=1e-9)
    undefeated = Games([0, 0, 1, 1, 1], [1, 2, 2, 2, 2], [1.0, 1.0, 1.0, 1.0, 0.0], 3)
    with pytest.raises(ValueError, match="set a prior"):
        fit_bradley_terry(undefeated, prior=0.0)
    capped = fit_bradley_terry(undefeated, prior=0.1)
    assert capped.theta[0] > capped.theta[1] > capped.theta[2] and np.all(np.isfinite(capped.se))
    # two groups never compared with each other: each centred on its own; a player alone gets
    # no interval
    split = Games([0, 0, 2, 2], [1, 1, 3, 3], [1.0, 0.0, 1.0, 1.0], 5)
    fit = fit_bradley_terry(split, prior=0.01)
    assert fit.component.tolist()[:4] == [0, 0, 1, 1] and len(set(fit.component)) == 3
    assert fit.theta[0] + fit.theta[1] == pytest.approx(0, abs=1e-9)
    assert fit.theta[2] + fit.theta[3] == pytest.approx(0, abs=1e-9)
    assert math.isnan(fit.se[4]) and fit.theta[4] == 0


def test_elo_update_formula_and_recovered_order():
    g = Games([0, 1], [1, 0], [1.0, 0.5], 2)
    r = elo_updates(g, k_factor=32)
    e1 = 0.5  # equal ratings
    a = 1000 + 32 * (1 - e1)
    b = 1000 - 32 * (1 - e1)
    e2 = 1 / (1 + 10 ** ((a - b) / 400))  # player 1 (at b) vs player 0 (at a), a tie
    assert r[1] == pytest.approx(b + 32 * (0.5 - e2))
    assert r[0] == pytest.approx(a - 32 * (0.5 - e2))
    fit = elo_ratings(simulate(TRUE, 6000, np.random.default_rng(3)), k_factor=8,
                      bootstrap=30)
    assert list(np.argsort(-fit.rating)) == [0, 1, 2, 3, 4]
    assert np.all(fit.ci_low < fit.ci_high)
    # Elo's scale is Bradley–Terry's: the spread of ratings is the true one, roughly
    spread = (fit.rating[0] - fit.rating[-1]) / ELO_PER_LOGIT
    assert 1.8 < spread < 3.2


def test_reasoner_elo_ranks_policies_from_comparisons(tmp_path):
    rng = np.random.default_rng(4)
    names = ["ckpt-300", "ckpt-200", "ckpt-100"]
    theta = {"ckpt-300": 1.0, "ckpt-200": 0.0, "ckpt-100": -1.0}
    lines = []
    for k in range(600):
        a, b = rng.choice(names, 2, replace=False)
        p = 1 / (1 + math.exp(-(theta[a] - theta[b])))
        lines.append({"prompt": f"q{k % 7}", "a": str(a), "b": str(b),
                      "winner": "a" if rng.random() < p else "b"})
    inp = tmp_path / "comparisons.jsonl"
    inp.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "ratings.json"
    r = subprocess.run([sys.executable, "-m", "reasoner", "elo", "--input", str(inp), "--output",
                        str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["method"] == "bradley_terry" and data["num_comparisons"] == 600
    assert [p["player"] for p in data["players"]] == names
    top = data["players"][0]
    assert top["ci_low"] < top["rating"] < top["ci_high"] and top["games"] > 300
    assert "prompt" not in top
    # per prompt: completions of each prompt are separate players
    r = subprocess.run([sys.executable, "-m", "reasoner", "elo", "--input", str(inp), "--output",
                        str(out), "--per-prompt", "--method", "elo", "--bootstrap", "20"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["num_players"] == 21 and data["num_components"] == 7
    assert {p["prompt"] for p in data["players"]} == {f"q{k}" for k in range(7)}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "a": "x", "b": "y", "winner": "draw"}\n')
    r = subprocess.run([sys.executable, "-m", "reasoner", "elo", "--input", str(bad), "--output",
                        str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and f"{bad}:1: winner must be one of" in r.stderr


def test_ratings_refuse_nonsense_options_and_never_overwrite_the_input(tmp_path):
    inp = tmp_path / "c.jsonl"
    inp.write_text(json.dumps({"prompt": "p", "a": "m1", "b": "m2", "winner": "a"}) + "\n")
    data = inp.read_text()
    out = str(tmp_path / "r.json")
    for kwargs, message in (
            ({"prior": float("nan")}, "--prior must be a finite number >= 0"),
            ({"prior": float("inf")}, "--prior must be a finite number >= 0"),
            ({"method": "elo", "k_factor": float("nan")}, "--k-factor must be a finite number"),
            ({"method": "elo", "bootstrap": 5}, "--bootstrap must be 0 (no intervals) or >= 20"),
            ({"method": "elo", "bootstrap": -1}, "--bootstrap must be 0")):
        with pytest.raises(ValueError, match=re.escape(message)):
            ratings_main(str(inp), out, **kwargs)
    with pytest.raises(ValueError, match="--output is --input"):
        ratings_main(str(inp), str(inp))
    assert inp.read_text() == data
    with pytest.raises(ValueError, match="is a folder"):
        ratings_main(str(inp), str(tmp_path))
    assert ratings_main(str(inp), out, method="elo", bootstrap=0)["num_players"] == 2


def test_disconnected_players_are_pointed_out(tmp_path):
    from typer.testing import CliRunner

    from reasoner.cli import app

    inp = tmp_path / "c.jsonl"
    inp.write_text("".join(json.dumps({"prompt": "p", "a": a, "b": b, "winner": "a"}) + "\n"
                           for a, b in [("m1", "m2"), ("m3", "m4")]))
    res = CliRunner().invoke(app, ["elo", "--input", str(inp), "--output",
                                   str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "the players form 2 groups with no comparison linking them" in res.output


def test_a_large_group_is_fitted_without_the_dense_hessian_to_the_same_ratings(monkeypatch):
    """Above DENSE_SOLVE_PLAYERS the Newton steps are solved by conjugate gradients through the
    games: the same ratings as the dense solve (on a group small enough for both). Above
    max_dense_players: memory linear in players and games, and no intervals rather than wrong
    ones."""
    import tracemalloc

    from reasoner.preferences import ratings

    rng = np.random.default_rng(5)
    theta = rng.normal(0, 1, 300)
    theta -= theta.mean()
    g = simulate(theta, 6000, rng)
    for prior in (0.0, 0.05):
        dense = fit_bradley_terry(g, prior=prior)
        with monkeypatch.context() as m:
            m.setattr(ratings, "DENSE_SOLVE_PLAYERS", 10)
            cg = fit_bradley_terry(g, prior=prior)  # CG steps, dense intervals
            sparse = fit_bradley_terry(g, prior=prior, max_dense_players=100)
        np.testing.assert_allclose(cg.theta, dense.theta, atol=1e-8)
        np.testing.assert_allclose(cg.se, dense.se, rtol=1e-6)
        np.testing.assert_allclose(sparse.theta, dense.theta, atol=1e-8)
        assert dense.no_intervals == 0 and np.all(np.isfinite(dense.se))
        assert sparse.no_intervals == 300 and np.all(np.isnan(sparse.se))
        assert np.all(np.isnan(sparse.ci_low)) and np.all(np.isfinite(sparse.rating))
    # a chain (the worst-conditioned graph): still the dense answer
    n = 200
    chain = Games(np.arange(n - 1).repeat(3), np.arange(1, n).repeat(3),
                  np.tile([1.0, 0.0, 1.0], n - 1), n)
    exact = fit_bradley_terry(chain, prior=0.0).theta
    monkeypatch.setattr(ratings, "DENSE_SOLVE_PLAYERS", 10)
    np.testing.assert_allclose(fit_bradley_terry(chain, prior=0.0).theta, exact, atol=1e-7)
    # 20000 linked players: the dense path would hold two 3.2 GB arrays
    n = 20000
    big = simulate(rng.normal(0, 1, n), 100_000, rng)
    tracemalloc.start()
    fit = fit_bradley_terry(big, prior=0.01)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100e6, peak
    sizes = np.bincount(fit.component)
    assert sizes.max() > 19_900 and fit.no_intervals == sizes.max()  # the rest played nobody
    p = 1 / (1 + np.exp(-(fit.theta[big.i] - fit.theta[big.j])))
    grad = np.bincount(big.i, big.s - p, n) - np.bincount(big.j, big.s - p, n) - 0.01 * fit.theta
    assert np.abs(grad).max() < 1e-6  # the MAP's stationary point


def test_many_small_groups_are_fitted_each_on_its_own():
    """Per-prompt players: one group per prompt, each centred and fitted alone (as one fit of
    that group's games would)."""
    rng = np.random.default_rng(6)
    gi, gj, gs, alone = [], [], [], []
    for c in range(300):
        base = 4 * c
        g = simulate(TRUE[:4] if c % 2 else TRUE[1:], 12, rng)
        gi += (g.i + base).tolist()
        gj += (g.j + base).tolist()
        gs += g.s.tolist()
        alone.append(fit_bradley_terry(g, prior=0.1).theta)
    fit = fit_bradley_terry(Games(gi, gj, gs, 1200), prior=0.1)
    np.testing.assert_allclose(fit.theta, np.concatenate(alone), atol=1e-9)
    assert fit.component.max() == 299


def test_reasoner_elo_says_which_players_have_no_interval(tmp_path, monkeypatch):
    from reasoner.preferences import ratings

    monkeypatch.setattr(ratings, "MAX_DENSE_PLAYERS", 3)
    lines = [{"prompt": "q", "a": f"p{k}", "b": f"p{(k + 1) % 5}", "winner": w}
             for k in range(5) for w in ("a", "b")]
    lines += [{"prompt": "q", "a": "x", "b": "y", "winner": "a"},
              {"prompt": "q", "a": "y", "b": "x", "winner": "a"}]
    inp = tmp_path / "c.jsonl"
    inp.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = ratings_main(str(inp), str(tmp_path / "r.json"))
    assert out["players_without_intervals"] == 5 and "more than 3" in out["why_no_intervals"]
    rows = {r["player"]: r for r in json.loads((tmp_path / "r.json").read_text())["players"]}
    assert rows["p0"]["ci_low"] is None and rows["p0"]["rating"] == pytest.approx(1000)
    assert rows["x"]["ci_low"] < rows["x"]["rating"] < rows["x"]["ci_high"]
