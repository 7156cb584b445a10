"""Ratings from pairwise comparisons: Bradley–Terry maximum likelihood with confidence
intervals, and Elo updates as an option.

Players are anything compared side by side: completions of one prompt, or whole policies and
checkpoints. A comparison is (i, j, s) with s the score of i: 1 a win, 0 a loss, 1/2 a tie (a
tie is half a win for each, as in Elo).

**Bradley–Terry.** P(i beats j) = sigmoid(theta_i - theta_j). `fit_bradley_terry` maximises
sum s log sigmoid(theta_i - theta_j) + (1 - s) log sigmoid(theta_j - theta_i) - prior/2 |theta|^2
by Newton's method, separately for each connected component of the comparison graph (players
never compared, directly or through others, have no common scale), each component centred to
mean 0. `prior` > 0 (a Gaussian prior of precision `prior`) keeps an undefeated player finite;
0 is the plain MLE. Standard errors come from the inverse of the Hessian (the observed Fisher
information, plus the prior) restricted to centred ratings; intervals are Wald intervals.

**Elo.** `elo_ratings` runs the sequential update R_i += K (s - E_i), E_i = 1 / (1 + 10^((R_j -
R_i) / 400)) in the order given; intervals by bootstrap (comparisons resampled with replacement,
the order shuffled).

Ratings are reported on the Elo scale, 1000 + 400 log10(e) theta, so both methods read alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

ELO_BASE = 1000.0
ELO_PER_LOGIT = 400.0 / math.log(10.0)  # Elo points per unit of theta
METHODS = ("bt", "elo")
MIN_BOOTSTRAP = 20  # resamples for an Elo interval (fewer: --bootstrap 0, none)


@dataclass
class Games:
    """Comparisons as arrays: player i vs player j, score s of i (1, 0 or 0.5)."""

    i: np.ndarray
    j: np.ndarray
    s: np.ndarray
    num_players: int

    def __post_init__(self) -> None:
        self.i = np.asarray(self.i, dtype=np.int64)
        self.j = np.asarray(self.j, dtype=np.int64)
        self.s = np.asarray(self.s, dtype=np.float64)
        if not (self.i.shape == self.j.shape == self.s.shape):
            raise ValueError("i, j and s must have the same length")
        if self.i.size and (min(self.i.min(), self.j.min()) < 0
                            or max(self.i.max(), self.j.max()) >= self.num_players):
            raise ValueError("player index out of range")
        if np.any(self.i == self.j):
            raise ValueError("a player cannot be compared with itself")
        if np.any((self.s < 0) | (self.s > 1)):
            raise ValueError("scores must be in [0, 1]")


@dataclass
class RatingFit:
    """Ratings of `num_players` players (theta in logits; rating on the Elo scale)."""

    theta: np.ndarray  # [n] centred per component
    se: np.ndarray  # [n] standard error of theta (NaN for a player with no games)
    rating: np.ndarray  # [n] Elo scale
    ci_low: np.ndarray  # [n] Elo scale
    ci_high: np.ndarray
    component: np.ndarray  # [n] connected component of each player
    method: str
    confidence: float
    iterations: int = 0


def _components(games: Games) -> np.ndarray:
    """Connected component id of each player (union-find over the games)."""
    parent = list(range(games.num_players))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(games.i.tolist(), games.j.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    roots = [find(x) for x in range(games.num_players)]
    ids: dict[int, int] = {}
    return np.array([ids.setdefault(r, len(ids)) for r in roots], dtype=np.int64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))),
                    np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _mle_exists(i: np.ndarray, j: np.ndarray, s: np.ndarray, n: int) -> bool:
    """Whether the plain MLE is finite: in the graph with an edge a -> b whenever a scored
    against b (a win or a tie), every player reaches every other (Zermelo / Ford's
    condition); otherwise some group never lost to the rest and its ratings run off."""
    edges: list[list[int]] = [[] for _ in range(n)]
    back: list[list[int]] = [[] for _ in range(n)]
    for a, b, x in zip(i.tolist(), j.tolist(), s.tolist()):
        if x > 0:
            edges[a].append(b)
            back[b].append(a)
        if x < 1:
            edges[b].append(a)
            back[a].append(b)

    def reach(adj: list[list[int]]) -> int:
        seen, stack = {0}, [0]
        while stack:
            for y in adj[stack.pop()]:
                if y not in seen:
                    seen.add(y)
                    stack.append(y)
        return len(seen)

    return reach(edges) == n and reach(back) == n


def _fit_component(i: np.ndarray, j: np.ndarray, s: np.ndarray, n: int, prior: float,
                   max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(theta [n] centred, covariance [n, n] of the centred theta, iterations) for one connected
    component (players 0..n-1)."""
    ones = np.ones((n, n)) / n  # curvature along the all-ones direction (the free shift)

    def objective(theta: np.ndarray) -> float:
        d = theta[i] - theta[j]
        return float(np.sum(s * _log_sigmoid(d) + (1 - s) * _log_sigmoid(-d))
                     - 0.5 * prior * np.sum(theta ** 2))

    def grad_hess(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _sigmoid(theta[i] - theta[j])
        r = s - p
        g = np.bincount(i, r, n) - np.bincount(j, r, n) - prior * theta
        w = p * (1 - p)
        h = np.zeros((n, n))
        np.add.at(h, (i, i), w)
        np.add.at(h, (j, j), w)
        np.add.at(h, (i, j), -w)
        np.add.at(h, (j, i), -w)
        return g, h + prior * np.eye(n)

    if prior == 0 and not _mle_exists(i, j, s, n):
        raise ValueError("the ratings diverge: some players won (or lost) every comparison "
                         "with the others; set a prior > 0 (e.g. 0.01) to keep them finite")
    theta = np.zeros(n)
    f = objective(theta)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        g, h = grad_hess(theta)
        step = np.linalg.solve(h + ones, g)
        t = 1.0
        while True:  # backtracking: never decrease the log-likelihood
            cand = theta + t * step
            fc = objective(cand)
            if fc >= f - 1e-12 or t < 1e-8:
                break
            t *= 0.5
        theta, f = cand - cand.mean(), fc
        if np.max(np.abs(t * step)) < tol:
            break
    _, h = grad_hess(theta)
    cov = np.linalg.inv(h + ones) - ones  # = the pseudo-inverse on centred vectors
    c = np.eye(n) - ones
    return theta, c @ cov @ c, it


def fit_bradley_terry(games: Games, *, prior: float = 0.01, confidence: float = 0.95,
                      max_iter: int = 100, tol: float = 1e-10) -> RatingFit:
    """Bradley–Terry ratings (MAP with a Gaussian prior of precision `prior`; 0 = MLE) and
    Wald intervals at `confidence`; see the module docstring."""
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    n = games.num_players
    comp = _components(games)
    theta, se = np.zeros(n), np.full(n, np.nan)
    iters = 0
    for c in range(int(comp.max()) + 1 if n else 0):
        members = np.flatnonzero(comp == c)
        if members.size == 1:
            continue  # a player alone: no games, no scale
        local = {int(p): k for k, p in enumerate(members)}
        sel = comp[games.i] == c
        li = np.array([local[int(x)] for x in games.i[sel]], dtype=np.int64)
        lj = np.array([local[int(x)] for x in games.j[sel]], dtype=np.int64)
        t, cov, it = _fit_component(li, lj, games.s[sel], members.size, prior, max_iter, tol)
        theta[members] = t
        se[members] = np.sqrt(np.clip(np.diag(cov), 0, None))
        iters = max(iters, it)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    rating = ELO_BASE + ELO_PER_LOGIT * theta
    half = z * ELO_PER_LOGIT * se
    return RatingFit(theta, se, rating, rating - half, rating + half, comp, "bt", confidence,
                     iters)


def elo_updates(games: Games, *, k_factor: float = 16.0, order: np.ndarray | None = None
                ) -> np.ndarray:
    """Elo ratings [n] after the sequential updates, in `order` (default: as given)."""
    r = np.full(games.num_players, ELO_BASE)
    idx = range(games.i.size) if order is None else order.tolist()
    gi, gj, gs = games.i.tolist(), games.j.tolist(), games.s.tolist()
    for g in idx:
        a, b, s = gi[g], gj[g], gs[g]
        e = 1.0 / (1.0 + 10.0 ** ((r[b] - r[a]) / 400.0))
        r[a] += k_factor * (s - e)
        r[b] -= k_factor * (s - e)
    return r


def elo_ratings(games: Games, *, k_factor: float = 16.0, bootstrap: int = 100,
                confidence: float = 0.95, seed: int = 0) -> RatingFit:
    """Elo ratings in the order given, with percentile intervals over `bootstrap` resamples
    (comparisons drawn with replacement, in a shuffled order); 0 = no intervals."""
    if k_factor <= 0:
        raise ValueError(f"k_factor must be > 0, got {k_factor}")
    r = elo_updates(games, k_factor=k_factor)
    n = games.num_players
    lo, hi, se = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    if bootstrap > 0 and games.i.size:
        rng = np.random.default_rng(seed)
        samples = np.stack([elo_updates(games, k_factor=k_factor,
                                        order=rng.integers(0, games.i.size, games.i.size))
                            for _ in range(bootstrap)])
        q = (1 - confidence) / 2
        lo, hi = np.quantile(samples, q, axis=0), np.quantile(samples, 1 - q, axis=0)
        se = samples.std(axis=0) / ELO_PER_LOGIT
    return RatingFit((r - ELO_BASE) / ELO_PER_LOGIT, se, r, lo, hi, _components(games), "elo",
                     confidence)


# ---------------------------------------------------------------------------------------------
# from preference records to ratings


@dataclass
class PlayerRating:
    """One row of ratings.json."""

    player: Any  # the compared thing: a completion, a policy name
    rating: float  # Elo scale
    ci_low: float
    ci_high: float
    theta: float  # logits (Bradley–Terry scale)
    theta_se: float
    games: int
    wins: float  # ties count one half
    prompt: Any = None  # with per-prompt players: the prompt


def games_from_records(records: Sequence[Any], *, per_prompt: bool
                       ) -> tuple[Games, list[tuple[Any, Any]]]:
    """The comparisons of preference records (`reasoner.preferences.formats`) as Games, and the
    players as (prompt or None, completion). With `per_prompt`, a completion of one prompt is a
    different player from the same text under another prompt; without, players are matched by
    their text (policy or checkpoint names)."""
    from reasoner.preferences.formats import _key

    index: dict[tuple[str, str], int] = {}
    players: list[tuple[Any, Any]] = []
    gi, gj, gs = [], [], []
    for rec in records:
        pk = _key(rec.prompt) if per_prompt else ""
        ids = []
        for c in rec.completions:
            key = (pk, _key(c))
            if key not in index:
                index[key] = len(players)
                players.append((rec.prompt if per_prompt else None, c))
            ids.append(index[key])
        for comp in rec.comparisons:
            gi.append(ids[comp.first])
            gj.append(ids[comp.second])
            gs.append(0.5 if comp.tie else 1.0)
    return Games(np.array(gi), np.array(gj), np.array(gs), len(players)), players


def player_table(fit: RatingFit, games: Games, players: list[tuple[Any, Any]]
                 ) -> list[PlayerRating]:
    """The players with their ratings, intervals and records, best first."""
    n = games.num_players
    count = np.bincount(games.i, minlength=n) + np.bincount(games.j, minlength=n)
    wins = np.bincount(games.i, games.s, n) + np.bincount(games.j, 1 - games.s, n)
    rows = [PlayerRating(players[k][1], float(fit.rating[k]), float(fit.ci_low[k]),
                         float(fit.ci_high[k]), float(fit.theta[k]), float(fit.se[k]),
                         int(count[k]), float(wins[k]), players[k][0]) for k in range(n)]
    return sorted(rows, key=lambda r: -r.rating)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def ratings_main(input_path: str, output_path: str, *, method: str = "bt", prior: float = 0.01,
                 k_factor: float = 16.0, bootstrap: int = 100, confidence: float = 0.95,
                 per_prompt: bool = False, seed: int = 0) -> dict[str, Any]:
    """`reasoner elo`: ratings of the players of a preference file, written as JSON."""
    import json

    from reasoner.preferences.formats import read_preferences

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not (math.isfinite(prior) and prior >= 0):
        raise ValueError(f"--prior must be a finite number >= 0, got {prior}")
    if not (math.isfinite(k_factor) and k_factor > 0):
        raise ValueError(f"--k-factor must be a finite number > 0, got {k_factor}")
    if bootstrap != 0 and bootstrap < MIN_BOOTSTRAP:
        raise ValueError(f"--bootstrap must be 0 (no intervals) or >= {MIN_BOOTSTRAP} (fewer "
                         f"resamples give no interval worth the name), got {bootstrap}")
    if Path(output_path).resolve() == Path(input_path).resolve():
        raise ValueError(f"--output is --input ({input_path!r}): the ratings would replace the "
                         "comparisons")
    if Path(output_path).is_dir():
        raise ValueError(f"--output {output_path!r} is a folder; give a file (ratings.json)")
    records = read_preferences(input_path)
    games, players = games_from_records(records, per_prompt=per_prompt)
    if method == "bt":
        fit = fit_bradley_terry(games, prior=prior, confidence=confidence)
    else:
        fit = elo_ratings(games, k_factor=k_factor, bootstrap=bootstrap, confidence=confidence,
                          seed=seed)
    table = player_table(fit, games, players)
    out = {
        "method": {"bt": "bradley_terry", "elo": "elo"}[method],
        "scale": "elo: 1000 + 400 * log10(e) * theta; P(i beats j) = sigmoid(theta_i - theta_j)",
        "confidence": confidence,
        "num_comparisons": int(games.i.size),
        "num_players": games.num_players,
        "num_components": int(fit.component.max()) + 1 if games.num_players else 0,
        **({"prior": prior} if method == "bt" else {"k_factor": k_factor,
                                                   "bootstrap": bootstrap}),
        "players": [{k: (_finite(v) if isinstance(v, float) else v)
                     for k, v in asdict(r).items() if not (k == "prompt" and not per_prompt)}
                    for r in table],
    }
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    Path(output_path).write_text(json.dumps(out, indent=1))
    return out
