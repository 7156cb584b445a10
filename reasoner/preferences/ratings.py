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
information, plus the prior) restricted to centred ratings; intervals are Wald intervals. In a
group of more than `DENSE_SOLVE_PLAYERS` players the Newton steps are solved by conjugate
gradients through the games (memory linear in players and comparisons); a group of more than
`MAX_DENSE_PLAYERS` gets no intervals: the diagonal of a large inverse Hessian costs n^2 memory
and n^3 time.

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
# the largest connected group fitted with its dense n x n Hessian (two n x n float64 arrays:
# 1 GB at 8000) and given Wald intervals; larger groups: conjugate-gradient Newton, no intervals
MAX_DENSE_PLAYERS = 8000
DENSE_SOLVE_PLAYERS = 500  # Newton steps by a dense solve up to this many players, else CG


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
    no_intervals: int = 0  # players of groups too large for the dense covariance (bt)


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


def _newton_step_cg(hess_vec, g: np.ndarray, diag: np.ndarray, max_iter: int,
                    rtol: float = 1e-10) -> np.ndarray:
    """x with hess_vec(x) = g, by conjugate gradients preconditioned by the diagonal (started
    at 0, so even a truncated solve is an ascent direction of the concave objective)."""
    x = np.zeros_like(g)
    r = g.copy()
    z = r / diag
    d = z.copy()
    rz = float(r @ z)
    stop = rtol * float(np.linalg.norm(g))
    for _ in range(max_iter):
        if float(np.linalg.norm(r)) <= stop:
            break
        hd = hess_vec(d)
        alpha = rz / float(d @ hd)
        x += alpha * d
        r -= alpha * hd
        z = r / diag
        rz, rz_old = float(r @ z), rz
        d = z + (rz / rz_old) * d
    return x


def _fit_component(i: np.ndarray, j: np.ndarray, s: np.ndarray, n: int, prior: float,
                   max_iter: int, tol: float, dense: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(theta [n] centred, standard errors [n] of the centred theta, iterations) for one
    connected component (players 0..n-1).

    The negative Hessian is H = L_w + prior I (L_w the comparison graph's Laplacian weighted by
    p(1 - p)); H + 11'/n is invertible (the ones direction is the free shift, fixed by centring).
    Newton steps are dense solves up to `DENSE_SOLVE_PLAYERS` players, above it conjugate
    gradients with H applied through the games (O(n + games) memory and time per product).
    `dense`: the standard errors from the diagonal of C (H + 11'/n)^-1 C (C the centring), one
    n x n inverse at the optimum; otherwise none (NaN): the diagonal of the inverse of a large
    sparse H has no cheap exact form."""

    def objective(theta: np.ndarray) -> float:
        d = theta[i] - theta[j]
        return float(np.sum(s * _log_sigmoid(d) + (1 - s) * _log_sigmoid(-d))
                     - 0.5 * prior * np.sum(theta ** 2))

    def grad_weights(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = _sigmoid(theta[i] - theta[j])
        r = s - p
        return np.bincount(i, r, n) - np.bincount(j, r, n) - prior * theta, p * (1 - p)

    def dense_hessian(w: np.ndarray) -> np.ndarray:
        """H + 11'/n as one n x n array."""
        h = np.bincount(np.concatenate([i * n + j, j * n + i]), np.concatenate([-w, -w]),
                        n * n).reshape(n, n)
        h[np.diag_indices(n)] += np.bincount(i, w, n) + np.bincount(j, w, n) + prior
        h += 1.0 / n
        return h

    if prior == 0 and not _mle_exists(i, j, s, n):
        raise ValueError("the ratings diverge: some players won (or lost) every comparison "
                         "with the others; set a prior > 0 (e.g. 0.01) to keep them finite")
    theta = np.zeros(n)
    f = objective(theta)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        g, w = grad_weights(theta)
        if n <= DENSE_SOLVE_PLAYERS:
            step = np.linalg.solve(dense_hessian(w), g)
        else:
            def hess_vec(v: np.ndarray, w: np.ndarray = w) -> np.ndarray:
                wd = w * (v[i] - v[j])
                return np.bincount(i, wd, n) - np.bincount(j, wd, n) + prior * v + v.mean()

            diag = np.bincount(i, w, n) + np.bincount(j, w, n) + prior + 1.0 / n
            step = _newton_step_cg(hess_vec, g, diag, max_iter=max(100, 2 * n))
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
    if not dense:
        return theta, np.full(n, np.nan), it
    m = np.linalg.inv(dense_hessian(grad_weights(theta)[1]))
    # diag(C M C) for symmetric M: M_kk - 2 mean_k(M) + mean(M) (the 11'/n part centres to 0)
    row = m.mean(axis=1)
    var = np.diagonal(m) - 2 * row + row.mean()
    return theta, np.sqrt(np.clip(var, 0, None)), it


def fit_bradley_terry(games: Games, *, prior: float = 0.01, confidence: float = 0.95,
                      max_iter: int = 100, tol: float = 1e-10,
                      max_dense_players: int | None = None) -> RatingFit:
    """Bradley–Terry ratings (MAP with a Gaussian prior of precision `prior`; 0 = MLE) and
    Wald intervals at `confidence`; see the module docstring. A connected group of more than
    `max_dense_players` (default `MAX_DENSE_PLAYERS`) players gets no intervals (NaN;
    `RatingFit.no_intervals` counts such players)."""
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    if max_dense_players is None:
        max_dense_players = MAX_DENSE_PLAYERS
    n = games.num_players
    comp = _components(games)
    theta, se = np.zeros(n), np.full(n, np.nan)
    iters, no_intervals = 0, 0
    # players and games grouped by component in one sort each (not one scan per component:
    # per-prompt players make as many components as prompts)
    num_comp = int(comp.max()) + 1 if n else 0
    by_player = np.argsort(comp, kind="stable")
    player_starts = np.searchsorted(comp[by_player], np.arange(num_comp + 1))
    game_comp = comp[games.i]
    by_game = np.argsort(game_comp, kind="stable")
    game_starts = np.searchsorted(game_comp[by_game], np.arange(num_comp + 1))
    local = np.zeros(n, dtype=np.int64)
    for c in range(num_comp):
        members = by_player[player_starts[c]:player_starts[c + 1]]
        if members.size == 1:
            continue  # a player alone: no games, no scale
        local[members] = np.arange(members.size)
        sel = by_game[game_starts[c]:game_starts[c + 1]]
        dense = members.size <= max_dense_players
        t, sd, it = _fit_component(local[games.i[sel]], local[games.j[sel]], games.s[sel],
                                   members.size, prior, max_iter, tol, dense)
        theta[members] = t
        se[members] = sd
        no_intervals += 0 if dense else members.size
        iters = max(iters, it)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    rating = ELO_BASE + ELO_PER_LOGIT * theta
    half = z * ELO_PER_LOGIT * se
    return RatingFit(theta, se, rating, rating - half, rating + half, comp, "bt", confidence,
                     iters, no_intervals)


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
        **({"players_without_intervals": fit.no_intervals,
            "why_no_intervals": f"groups of more than {MAX_DENSE_PLAYERS} linked players are "
                                "fitted without the n x n covariance"} if fit.no_intervals else {}),
        **({"prior": prior} if method == "bt" else {"k_factor": k_factor,
                                                   "bootstrap": bootstrap}),
        "players": [{k: (_finite(v) if isinstance(v, float) else v)
                     for k, v in asdict(r).items() if not (k == "prompt" and not per_prompt)}
                    for r in table],
    }
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    Path(output_path).write_text(json.dumps(out, indent=1))
    return out
