"""Reward functions for the tests, importable as ``toy_rewards:<name>`` (tests/ is on the path of
the test process and of the subprocesses the tests start)."""


def digit_reward(prompts, completions, **columns):
    """Fraction of digit characters; None when the row's answer is "skip" (for the skip test).
    A random model already varies on it, so the tiny runs really update the weights."""
    answers = columns.get("answer") or [None] * len(completions)
    return [None if a == "skip" else sum(ch.isdigit() for ch in c) / max(len(c), 1)
            for c, a in zip(completions, answers)]


def short_reward(prompts, completions, **columns):
    """A buggy reward: one value too few (for the user-error tests)."""
    return [1.0] * (len(completions) - 1)


def raising_reward(prompts, completions, **columns):
    """A buggy reward: raises (for the user-error tests)."""
    raise KeyError("gold")
