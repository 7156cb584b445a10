"""Reward functions: TRL's signature, conversational completions, None for can't-judge, format."""

import pytest

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
