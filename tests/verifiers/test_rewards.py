"""Reward functions: TRL's signature, conversational completions, None for can't-judge, format."""

import math
import re

import pytest
import torch

from reasoner.config import ConfigError
from reasoner.verifiers import registry, rewards
from reasoner.verifiers.base import Verdict
from reasoner.verifiers.format import soft_format_ok, strict_format_ok


@pytest.mark.parametrize(
    "text, strict, soft",
    [
        ("<think>a</think><answer>5</answer>", True, True),
        ("a</think><answer>5</answer>", True, True),  # prompt ended with <think>
        ("<think>\nstep\n</think>\n<answer> 5 </answer>\n", True, True),
        ("<think>a</think><answer></answer>", False, True),  # empty answer
        ("<think>a</think><answer>5</answer> trailing", False, True),
        ("preamble <think>a</think><answer>5</answer>", False, True),
        ("<think>a</think><answer>5</answer><answer>6</answer>", False, True),
        ("<think>a<think>b</think><answer>5</answer>", False, True),
        ("<answer>5</answer>", False, False),
        ("<think>a</think>", False, False),
        ("", False, False),
    ],
)
def test_format_rules(text, strict, soft):
    assert strict_format_ok(text) is strict
    assert soft_format_ok(text) is soft


def test_format_reward_signature_and_conversational_input():
    completions = [
        "x</think><answer>1</answer>",
        [{"role": "assistant", "content": "<think>y</think><answer>2</answer>"}],
        [{"role": "assistant", "content": "no tags"}],
    ]
    assert rewards.format_reward_strict(["p"] * 3, completions) == [1.0, 1.0, 0.0]
    assert rewards.get_reward("format_soft") is rewards.format_reward_soft


class GoldFake:
    def __init__(self, **_):
        self.seen = []

    def score(self, records):
        self.seen.extend(records)
        for r in records:
            if r.get("answer") is None and "tests" not in r and "test_list" not in r:
                yield Verdict(0.0, None, "no gold")
            else:
                yield Verdict(0.5, False, "partial")

    def close(self):
        pass


def test_math_and_code_rewards_pass_columns_and_map_unjudged_to_none(monkeypatch):
    fake = GoldFake()
    monkeypatch.setattr(rewards, "_VERIFIERS", {"math": fake, "code": fake})
    out = rewards.math_accuracy_reward(["p", "q"], ["c1", [{"role": "assistant", "content": "c2"}]],
                                       answer=["1", None])
    assert out == [0.5, None]
    assert fake.seen[:2] == [{"completion": "c1", "answer": "1"}, {"completion": "c2", "answer": None}]
    out = rewards.code_pass_rate_reward(["p"], ["code"], tests=[[{"input": "", "output": "1"}]],
                                        extra_column=[7])
    assert out == [0.5]
    assert fake.seen[2] == {"completion": "code", "tests": [{"input": "", "output": "1"}]}


def test_column_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="column 'answer' has 1 values for 2 completions"):
        rewards.math_accuracy_reward(["p", "q"], ["a", "b"], answer=["1"])


def test_unknown_reward_lists_available():
    with pytest.raises(KeyError, match="format_strict"):
        rewards.get_reward("nope")
    assert "math" in registry.available() and "code" in registry.available()


def test_none_means_does_not_apply_and_the_others_are_summed():
    """TRL's rule: a function's None leaves the sample to the other functions; only a sample for
    which every function returned None is dropped."""
    acc = [1.0, 0.0, None, 1.0, None]
    fmt = [1.0, 1.0, 1.0, None, None]
    c = rewards.combine_rewards([acc, fmt], [1.0, 0.5])
    assert c.valid.tolist() == [True, True, True, True, False]
    assert c.total[:4].tolist() == [1.5, 0.5, 0.5, 1.0]
    assert math.isnan(c.total[4])
    assert c.unscorable.tolist() == [False] * 4 + [True]
    with pytest.raises(ValueError, match="2 reward lists for 1 weights"):
        rewards.combine_rewards([acc, fmt], [1.0])


def test_multi_task_recipe_trains_on_every_sample():
    """Each function returns None on the other task's samples (TRL's multi-task recipe): every
    sample keeps the reward of the function that applies."""
    math_r = [1.0, None, 0.0, None]
    code_r = [None, 0.5, None, 1.0]
    c = rewards.combine_rewards([math_r, code_r], [1.0, 1.0])
    assert c.valid.all() and c.total.tolist() == [1.0, 0.5, 0.0, 1.0]


def test_a_non_finite_reward_drops_only_that_sample():
    c = rewards.combine_rewards([[1.0, float("nan"), float("inf"), 0.0],
                                 [0.5, 0.5, 0.5, float("-inf")]], [1.0, 1.0])
    assert c.valid.tolist() == [True, False, False, False]
    assert c.non_finite.tolist() == [False, True, True, True]
    assert c.total[0].item() == 1.5 and torch.isnan(c.total[1:]).all()
    assert not c.unscorable.any()


def test_score_completions_passes_columns_and_checks_what_comes_back():
    rows = [{"question": "q1", "answer": "1"}, {"question": "q2", "answer": "2", "extra": 7}]
    seen = {}

    def f(prompts, completions, **columns):
        seen.update(columns)
        return [1, None]

    funcs = [rewards.WeightedReward("f", f, 2.0)]
    assert rewards.score_completions(funcs, ["p1", "p2"], ["c1", "c2"], rows) == [[1.0, None]]
    assert seen == {"answer": ["1", "2"], "extra": [None, 7], "question": ["q1", "q2"]}
    short = [rewards.WeightedReward("short", lambda p, c, **k: [1.0])]
    with pytest.raises(ConfigError, match="rewards.names: reward function 'short' .*"
                       r"test_rewards.py:\d+\) returned 1 values for 2 completions; it must "
                       "return a list with one value"):
        rewards.score_completions(short, ["p1", "p2"], ["c1", "c2"], rows)
    text = [rewards.WeightedReward("text", lambda p, c, **k: ["yes", 1.0])]
    with pytest.raises(ConfigError, match="reward function 'text' .* returned 'yes' for "
                       "completion 0; expected a number or None"):
        rewards.score_completions(text, ["p1", "p2"], ["c1", "c2"], rows)
    ws = rewards.resolve_rewards(["format_soft", "format_strict"], [1.0, 0.1])
    assert [(w.name, w.func, w.weight) for w in ws] == [
        ("format_soft", rewards.format_reward_soft, 1.0),
        ("format_strict", rewards.format_reward_strict, 0.1)]


def test_a_conversational_row_gets_messages_as_trl_gives_them():
    """A row whose question is a conversation: its reward functions get that list as the prompt
    and the completion as [{"role": "assistant", "content": text}] (a TRL reward function reads
    completion[0]["content"]); the built-in rewards read both shapes."""
    conv = [{"role": "user", "content": "3+4?"}]
    rows = [{"question": conv, "answer": "7"}, {"question": "plain", "answer": "7"}]
    seen = {}

    def trl_style(prompts, completions, **columns):
        seen["prompts"], seen["completions"] = prompts, completions
        return [float(c[0]["content"].endswith("7</answer>")) if isinstance(c, list) else 0.5
                for c in completions]

    funcs = [rewards.WeightedReward("trl", trl_style),
             rewards.WeightedReward("format_soft", rewards.get_reward("format_soft"))]
    done = "x</think><answer>7</answer>"
    assert rewards.score_completions(funcs, ["<|user|>3+4?", "plain\n<think>"], [done, done],
                                     rows) == [[1.0, 0.5], [1.0, 1.0]]
    assert seen == {"prompts": [conv, "plain\n<think>"],
                    "completions": [[{"role": "assistant", "content": done}], done]}


def test_reward_values_are_taken_as_trl_takes_them_and_mistakes_name_the_function():
    """numpy and one-element torch numbers, a numpy array, a generator: read as floats (TRL
    takes them); a function that returns a scalar, too few values, strings or bools is a
    ConfigError naming it and where it is defined; one that raises keeps its traceback, with a
    note naming it."""
    import numpy as np

    rows = [{"question": "q1", "answer": "1"}, {"question": "q2", "answer": "2"}]

    def score(ret):
        funcs = [rewards.WeightedReward("mine", lambda p, c, **k: ret)]
        return rewards.score_completions(funcs, ["p1", "p2"], ["c1", "c2"], rows)[0]

    assert score([np.float32(0.5), np.int64(1)]) == [0.5, 1.0]
    assert score(np.array([0.25, 1.0])) == [0.25, 1.0]
    assert score(torch.tensor([0.5, 2.0])) == [0.5, 2.0]
    assert score([torch.tensor(3.0), None]) == [3.0, None]
    assert score(x for x in (1.0, 0.0)) == [1.0, 0.0]
    for ret, said in [(0.5, "returned 0.5 for 2 completions"),
                      (None, "returned None for 2 completions"),
                      ("10", "returned '10' for 2 completions"),
                      ([1.0, 1.0, 1.0], "returned 3 values for 2 completions"),
                      ([1.0, "1"], "returned '1' for completion 1; expected a number or None"),
                      ([np.bool_(True), 1.0], "returned np.True_ for completion 0"),
                      ([1.0, [1.0]], "returned [1.0] for completion 1")]:
        with pytest.raises(ConfigError, match=r"rewards.names: reward function 'mine' \(.*"
                           r"test_rewards.py:\d+\) " + re.escape(said)):
            score(ret)

    def broken(prompts, completions, answer, **columns):
        raise KeyError("gold")

    funcs = [rewards.WeightedReward("broken", broken)]
    with pytest.raises(KeyError) as err:
        rewards.score_completions(funcs, ["p1", "p2"], ["c1", "c2"], rows)
    line = broken.__code__.co_firstlineno
    assert err.value.__notes__ == [f"raised by reward function 'broken' ({__file__}:{line}) "
                                   "(rewards.names), called with 2 completions and the columns "
                                   "answer, question"]


class _Task:
    accuracy_reward = "integer_exact"


def test_the_accuracy_reward_is_the_tasks_even_when_the_run_does_not_train_on_it():
    fmt = rewards.WeightedReward("format_soft", rewards.get_reward("format_soft"))
    exact = rewards.WeightedReward("integer_exact", rewards.get_reward("integer_exact"))
    # configured wins; else the task's (one of the rewards or not); else the first for a dataset
    assert rewards.accuracy_reward_name("format_soft", _Task(), [fmt, exact]) == "format_soft"
    assert rewards.accuracy_reward_name(None, _Task(), [fmt, exact]) == "integer_exact"
    assert rewards.accuracy_reward_name(None, _Task(), [fmt]) == "integer_exact"
    assert rewards.accuracy_reward_name(None, None, [fmt, exact]) == "format_soft"
    assert rewards.accuracy_reward_name("none", _Task(), [fmt]) is None  # opted out
    # the task's accuracy is among the rewards: nothing more to score
    assert rewards.accuracy_monitor([fmt, exact], "integer_exact") is None
    assert rewards.accuracy_monitor([fmt], None) is None
    mon = rewards.accuracy_monitor([fmt], "integer_exact")
    assert mon.name == "integer_exact" and mon.weight == 0.0
    assert mon.func(["p", "p"], ["x</think><answer>7</answer>", "<answer>8</answer>"],
                    answer=["7", "7"]) == [1.0, 0.0]


class _Scorer(rewards.ModelReward):
    @classmethod
    def from_context(cls, ctx):
        return cls()

    def __call__(self, prompts, completions, **columns):
        return [0.0] * len(completions)


def test_a_learned_reward_is_never_an_accuracy():
    learned = rewards.WeightedReward("reward_model", _Scorer())
    # a dataset trained on a reward model alone logs no accuracy (a score >= 1 is no verdict)
    assert rewards.accuracy_reward_name(None, None, [learned]) is None
    fmt = rewards.WeightedReward("format_soft", rewards.get_reward("format_soft"))
    with pytest.raises(ValueError, match="holds a model: a learned score is not a verdict"):
        rewards.accuracy_monitor([fmt], "reward_model")
