"""Reward functions with TRL's signature: ``f(prompts, completions, **columns) -> list[float | None]``.

They work as ``reward_funcs`` in TRL's GRPOTrainer unchanged, and the trainer here takes TRL's
functions the same way. ``completions`` are strings, or conversational lists of messages
(``[{"role": "assistant", "content": ...}]``), as TRL passes them. ``None`` means, as in TRL, that
the function does not apply to the record (missing or unparseable gold answer, no tests).

Reward functions are found by name in `REWARDS` (the one registry helper, `reasoner.registry`):
the built-ins below and the procedural tasks' own rewards, other packages' through the
entry-point group ``reasoner.rewards``, or any ``module:function`` path.

The math and code functions keep one verifier (a worker pool) per process, started on first use
and closed at exit. A reward that holds a model (``reward_model``, a trained reward model) is a
`ModelReward`: the trainer builds it from the config (`resolve_rewards` with a `RewardContext`),
the engine prepares its model like the KL reference (`prepare_rewards`), and its state (running
normalization) goes into checkpoints (`reward_states`).
"""

from __future__ import annotations

import atexit
import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from reasoner.data.templates import is_conversation, short_repr
from reasoner.registry import Registry
from reasoner.verifiers import registry
from reasoner.verifiers.base import Verdict
from reasoner.verifiers.format import soft_format_ok, strict_format_ok

RewardFunc = Callable[..., list[float | None]]

_VERIFIERS: dict[str, Any] = {}


def completion_text(completion: Any) -> str:
    """The text of one completion, plain or conversational."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, Sequence):
        return "".join(completion_text(m) for m in completion if _is_assistant(m))
    raise TypeError(f"unsupported completion type {type(completion).__name__}")


def _is_assistant(message: Any) -> bool:
    return not isinstance(message, dict) or message.get("role", "assistant") == "assistant"


def shared_verifier(name: str) -> Any:
    """One long-lived verifier per name per process (worker pools are costly to start)."""
    if name not in _VERIFIERS:
        _VERIFIERS[name] = registry.create(name)
    return _VERIFIERS[name]


@atexit.register
def close_shared_verifiers() -> None:
    while _VERIFIERS:
        _, v = _VERIFIERS.popitem()
        v.close()


def _to_reward(v: Verdict) -> float | None:
    return None if v.correct is None else float(v.reward)


def _column(columns: dict[str, Any], name: str, n: int) -> list[Any]:
    col = columns.get(name)
    if col is None:
        return [None] * n
    if len(col) != n:
        raise ValueError(f"column {name!r} has {len(col)} values for {n} completions")
    return list(col)


def _math_verdicts(completions: list[Any], columns: dict[str, Any]) -> list[Verdict]:
    answers = _column(columns, "answer", len(completions))
    records = [
        {"completion": completion_text(c), "answer": a} for c, a in zip(completions, answers)
    ]
    return list(shared_verifier("math").score(records))


def math_accuracy_reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 if the final answer equals the `answer` column (sympy equivalence), else 0.0."""
    return [_to_reward(v) for v in _math_verdicts(completions, columns)]


def _code_verdicts(completions: list[Any], columns: dict[str, Any]) -> list[Verdict]:
    n = len(completions)
    tests, test_list = _column(columns, "tests", n), _column(columns, "test_list", n)
    records = []
    for c, t, tl in zip(completions, tests, test_list):
        rec: dict[str, Any] = {"completion": completion_text(c)}
        if t is not None:
            rec["tests"] = t
        if tl is not None:
            rec["test_list"] = tl
        records.append(rec)
    return list(shared_verifier("code").score(records))


def code_pass_rate_reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """Fraction of the `tests` (stdin/stdout pairs) or `test_list` (assert lines) passed, sandboxed."""
    return [_to_reward(v) for v in _code_verdicts(completions, columns)]


# A reward function may say why it returned None: a `reasons` attribute with its signature that
# returns one reason per completion (the verifier's, e.g. "unparseable gold"); the trainer asks
# it about a sample when a step has samples it could not judge (`explain_unjudged`).


def math_accuracy_reasons(prompts: list[Any], completions: list[Any], **columns: Any) -> list[str]:
    """The math verifier's reason for each of `math_accuracy_reward`'s values."""
    return [str(v.reason) for v in _math_verdicts(completions, columns)]


def code_pass_rate_reasons(prompts: list[Any], completions: list[Any], **columns: Any) -> list[str]:
    """The code verifier's reason for each of `code_pass_rate_reward`'s values."""
    return [str(v.reason) for v in _code_verdicts(completions, columns)]


math_accuracy_reward.reasons = math_accuracy_reasons  # type: ignore[attr-defined]
code_pass_rate_reward.reasons = code_pass_rate_reasons  # type: ignore[attr-defined]


def format_reward_strict(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 if the completion is exactly <think>...</think><answer>...</answer>, else 0.0."""
    return [1.0 if strict_format_ok(completion_text(c)) else 0.0 for c in completions]


def format_reward_soft(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
    """1.0 if a think block followed by an answer block appears anywhere, else 0.0."""
    return [1.0 if soft_format_ok(completion_text(c)) else 0.0 for c in completions]


REWARDS: Registry[RewardFunc] = Registry("reward function", "reasoner.rewards", {
    "math_accuracy": "reasoner.verifiers.rewards:math_accuracy_reward",
    "code_pass_rate": "reasoner.verifiers.rewards:code_pass_rate_reward",
    "format_strict": "reasoner.verifiers.rewards:format_reward_strict",
    "format_soft": "reasoner.verifiers.rewards:format_reward_soft",
    "integer_exact": "reasoner.tasks.arithmetic:integer_exact_reward",
    "countdown": "reasoner.tasks.countdown:countdown_reward",
    "reward_model": "reasoner.models.reward:RewardModelReward",
})


def register_reward(name: str, func: RewardFunc) -> None:
    """Register `func` under `name` so the config can name it (``rewards.names``)."""
    REWARDS.register(name, func)


def get_reward(name: str) -> RewardFunc:
    """A reward function by registered name, entry point, or ``module:function`` path (for a
    `ModelReward`, its class: `resolve_rewards` builds it)."""
    fn = REWARDS.get(name)
    if not callable(fn):
        raise TypeError(f"reward function {name!r} is not callable")
    return fn


@dataclass
class RewardContext:
    """What a `ModelReward` is built from: the run's config, the policy's device, and (under
    ZeRO-3) the DeepSpeed config its weights load sharded with."""

    cfg: Any
    device: Any
    zero3_config: dict[str, Any] | None = None

    @contextlib.contextmanager
    def loading(self) -> Iterator[None]:
        """Inside: from_pretrained loads each rank's shard only (under ZeRO-3)."""
        if self.zero3_config is None:
            yield
            return
        from reasoner.models.loading import zero3_loading

        with zero3_loading(self.zero3_config):
            yield


class ModelReward(ABC):
    """A reward function that holds a model: built by the trainer (`from_context`), its model
    prepared by the engine like the KL reference (`prepare`: sharded under ZeRO-3), called with
    TRL's signature, with a state for checkpoints."""

    @classmethod
    @abstractmethod
    def from_context(cls, ctx: RewardContext) -> ModelReward:
        """Load the model the config names."""

    def prepare(self, engine: Any) -> None:  # noqa: B027 - optional
        """Once the trainer's engine exists: place the model as the engine places frozen models."""

    @abstractmethod
    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any
                 ) -> list[float | None]: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional
        """Restore `state_dict`'s contents."""


# ---------------------------------------------------------------------------------------------
# a trainer's reward: several functions, weights, TRL's meaning of None


@dataclass
class WeightedReward:
    """One reward function of a run, with its name (for metrics) and weight."""

    name: str
    func: RewardFunc
    weight: float = 1.0


def holds_model(fn: Any) -> bool:
    """Whether a registered reward is a `ModelReward` class (built by a trainer from its
    context), not a plain function."""
    return isinstance(fn, type) and issubclass(fn, ModelReward)


def resolve_rewards(names: Sequence[str], weights: Sequence[float] | None = None, *,
                    context: RewardContext | None = None) -> list[WeightedReward]:
    """Reward functions by name (or ``module:function``) with their weights (default 1.0); a
    `ModelReward` is built from `context` (the trainer's)."""
    ws = [1.0] * len(names) if weights is None else list(weights)
    if len(ws) != len(names):
        raise ValueError(f"{len(ws)} weights for {len(names)} reward functions")
    out = []
    for n, w in zip(names, ws):
        fn = get_reward(n)
        if holds_model(fn):
            if context is None:
                raise ValueError(f"reward {n!r} holds a model: it is built by a trainer")
            fn = fn.from_context(context)
        out.append(WeightedReward(n, fn, float(w)))
    return out


def prepare_rewards(funcs: Sequence[WeightedReward], engine: Any) -> None:
    """Let every `ModelReward` place its model as `engine` places frozen models."""
    for f in funcs:
        if isinstance(f.func, ModelReward):
            f.func.prepare(engine)


def reward_states(funcs: Sequence[WeightedReward]) -> dict[str, Any]:
    """The checkpoint state of the rewards that have one, by name."""
    return {f.name: f.func.state_dict() for f in funcs
            if isinstance(f.func, ModelReward) and f.func.state_dict()}


def load_reward_states(funcs: Sequence[WeightedReward], states: dict[str, Any]) -> None:
    for f in funcs:
        if isinstance(f.func, ModelReward) and f.name in states:
            f.func.load_state_dict(states[f.name])


def run_rewards(rewards_cfg: Any, task: Any, *, context: RewardContext | None = None
                ) -> tuple[list[WeightedReward], str | None]:
    """A run's reward functions and the name of the one logged as accuracy
    (`accuracy_reward_name`), from the ``rewards`` config section (names, reward_weights,
    accuracy_reward) and the task (None for a dataset): the configured functions, else the
    task's own with its weights. The same for training and evaluation; `context` builds a
    reward that holds a model (`resolve_rewards`)."""
    if rewards_cfg.names:
        funcs = resolve_rewards(rewards_cfg.names, rewards_cfg.reward_weights, context=context)
    elif task is not None:
        funcs = resolve_rewards([n for n, _ in task.reward_funcs],
                                [w for _, w in task.reward_funcs], context=context)
    else:
        raise ValueError("rewards.names must be set when the rows do not come from a task")
    if not funcs:
        raise ValueError("no reward functions")
    return funcs, accuracy_reward_name(rewards_cfg.accuracy_reward, task, funcs)


NO_ACCURACY = "none"  # rewards.accuracy_reward: log no accuracy


def accuracy_reward_name(configured: str | None, task: Any,
                         funcs: Sequence[WeightedReward]) -> str | None:
    """The reward whose value is logged as accuracy (a sample is right at >= 1): the configured
    one; else the task's accuracy reward, whether or not the run trains on it (training on a
    reward model still logs how often the answers are right, `accuracy_monitor`); else, for a
    dataset, the first function, unless it holds a model (a learned score is not a verdict:
    no accuracy then). Configured "none": no accuracy (a costly verifier, say unit tests in a
    sandbox, that the run would otherwise call each step for the logs only)."""
    if configured == NO_ACCURACY:
        return None
    if configured:
        return configured
    if task is not None:
        return task.accuracy_reward
    return None if isinstance(funcs[0].func, ModelReward) else funcs[0].name


def accuracy_monitor(funcs: Sequence[WeightedReward],
                     accuracy: str | None) -> WeightedReward | None:
    """The accuracy reward as a function scored beside the run's rewards for the logs only
    (weight 0, never in the reward), when it is not one of them; None when it is, or when
    there is no accuracy reward."""
    if accuracy is None or accuracy in [f.name for f in funcs]:
        return None
    fn = get_reward(accuracy)
    if holds_model(fn):
        raise ValueError(f"the accuracy reward {accuracy!r} holds a model: a learned score is "
                         "not a verdict; name a rule-based reward (or one of rewards.names)")
    return WeightedReward(accuracy, fn, 0.0)


def trl_inputs(prompts: list[Any], completions: list[Any], rows: list[dict[str, Any]]
               ) -> tuple[list[Any], list[Any]]:
    """The prompts and completions as TRL gives them to reward functions: for a row whose
    question is a conversation (a list of messages), the prompt is that list and the completion
    ``[{"role": "assistant", "content": text}]``; otherwise the rendered prompt and the text."""
    if not any(is_conversation(r.get("question")) for r in rows):
        return prompts, completions
    ps, cs = list(prompts), list(completions)
    for i, r in enumerate(rows):
        if is_conversation(r.get("question")):
            ps[i] = list(r["question"])
            if isinstance(cs[i], str):
                cs[i] = [{"role": "assistant", "content": cs[i]}]
    return ps, cs


def score_completions(funcs: Sequence[WeightedReward], prompts: list[Any], completions: list[Any],
                      rows: list[dict[str, Any]]) -> list[list[float | None]]:
    """Call each function TRL's way (the rows' columns as keyword lists; a conversational
    row's prompt and completion as messages, `trl_inputs`); one list of N values per function
    (None: the function does not apply to that sample)."""
    from reasoner.config import ConfigError

    prompts, completions = trl_inputs(prompts, completions, rows)
    keys = sorted({k for r in rows for k in r})
    columns = {k: [r.get(k) for r in rows] for k in keys}
    n = len(completions)
    out = []
    for f in funcs:
        try:
            got = f.func(prompts, completions, **columns)
        except Exception as e:
            e.add_note(f"raised by reward function {f.name!r}{defined_at(f.func)} (rewards.names), "
                       f"called with {n} completions and the columns {', '.join(keys)}")
            raise
        who = f"rewards.names: reward function {f.name!r}{defined_at(f.func)}"
        vals = None if isinstance(got, (str, bytes, dict)) else _as_list(got)
        if vals is None or len(vals) != n:
            what = (short_repr(got) if vals is None else f"{len(vals)} values")
            raise ConfigError(f"{who} returned {what} for {n} completions; it must return a list "
                              "with one value (a number, or None: can't judge) per completion")
        row: list[float | None] = []
        for i, v in enumerate(vals):
            value = reward_value(v)
            if value is NOT_A_REWARD:
                raise ConfigError(f"{who} returned {short_repr(v)} for completion {i}; expected a "
                                  "number or None")
            row.append(value)
        out.append(row)
    return out


def _as_list(values: Any) -> list[Any] | None:
    try:
        return list(values)
    except TypeError:  # not iterable (a float, None, a 0-d tensor)
        return None


NOT_A_REWARD = object()


def reward_value(v: Any) -> Any:
    """A reward function's value as a float (None stays None): a Python, numpy or one-element
    torch number, as TRL takes them; `NOT_A_REWARD` for anything else (a string, a bool, a
    list)."""
    import numbers

    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        return float(v.item()) if v.numel() == 1 and v.dtype != torch.bool else NOT_A_REWARD
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return float(v)
    return NOT_A_REWARD


def defined_at(func: Any) -> str:
    """`` (file:line)`` where a reward function is defined, for messages ('' if unknown)."""
    import functools

    while isinstance(func, functools.partial):
        func = func.func
    code = getattr(func, "__code__", None)
    if code is None:  # a callable object: its class's __call__
        code = getattr(vars(type(func)).get("__call__"), "__code__", None)
    return "" if code is None else f" ({code.co_filename}:{code.co_firstlineno})"


GOLD_COLUMNS = ("answer", "tests", "test_list")  # what an example of an unjudged sample shows


def explain_unjudged(funcs: Sequence[WeightedReward], per_func: Sequence[Sequence[float | None]],
                     prompts: list[Any], completions: list[Any], rows: list[dict[str, Any]]
                     ) -> str:
    """Why samples got no reward, one clause per function that returned None: how many, the
    reason the function gives for the first of them (its `reasons` attribute, when it has one)
    and that sample's gold columns, e.g. ``math_accuracy returned None for 32 of 32 (unparseable
    gold; answer='Janet sells 16 - 3 - 4 = 9...')``."""
    parts = []
    for f, vals in zip(funcs, per_func):
        nones = [i for i, v in enumerate(vals) if v is None]
        if not nones:
            continue
        i = nones[0]
        why = []
        explain = getattr(f.func, "reasons", None)
        if callable(explain):
            cols = {k: [v] for k, v in rows[i].items()}
            p, c = trl_inputs([prompts[i]], [completions[i]], [rows[i]])
            try:
                why.append(str(explain(p, c, **cols)[0]))
            except Exception as e:  # noqa: BLE001 - an explanation must not hide the error
                why.append(f"its reasons() failed: {e!r}")
        gold = [f"{k}={short_repr(rows[i][k])}" for k in GOLD_COLUMNS if k in rows[i]]
        why.append(", ".join(gold) if gold else
                   f"the row has none of the columns {', '.join(GOLD_COLUMNS)} (columns: "
                   f"{', '.join(sorted(rows[i]))}; see data.column_map)")
        parts.append(f"{f.name} returned None for {len(nones)} of {len(vals)} ("
                     + "; ".join(why) + ")")
    return "; ".join(parts)


@dataclass
class CombinedRewards:
    """The weighted sum of several functions' rewards for N completions."""

    total: torch.Tensor  # [N] float64; NaN where the sample is dropped
    valid: torch.Tensor  # [N] bool: the sample has a reward
    unscorable: torch.Tensor  # [N] bool: every function returned None
    non_finite: torch.Tensor  # [N] bool: some function returned NaN or +-inf


def combine_rewards(per_func: Sequence[Sequence[float | None]],
                    weights: Sequence[float]) -> CombinedRewards:
    """TRL's rule: a function's None means it does not apply to that sample, and the others'
    weighted values are summed; a sample for which EVERY function returned None is dropped. A
    non-finite value (NaN, +-inf) from any function drops that sample too (counted apart), not
    the step."""
    if len(per_func) != len(weights):
        raise ValueError(f"{len(per_func)} reward lists for {len(weights)} weights")
    n = len(per_func[0]) if per_func else 0
    total = torch.zeros(n, dtype=torch.float64)
    applied = torch.zeros(n, dtype=torch.bool)
    non_finite = torch.zeros(n, dtype=torch.bool)
    for values, w in zip(per_func, weights):
        if len(values) != n:
            raise ValueError(f"reward function returned {len(values)} values for {n} completions")
        for i, v in enumerate(values):
            if v is None:
                continue
            applied[i] = True
            if not math.isfinite(v):
                non_finite[i] = True
            else:
                total[i] += w * v
    valid = applied & ~non_finite
    total[~valid] = float("nan")
    return CombinedRewards(total=total, valid=valid, unscorable=~applied, non_finite=non_finite)
