"""Reward functions for the tests, importable as ``toy_rewards:<name>`` (tests/ is on the path of
the test process and of the subprocesses the tests start)."""


def digit_reward(prompts, completions, **columns):
    """Fraction of digit characters; None when the row's answer is "skip" (for the skip test).
    A random model already varies on it, so the tiny runs really update the weights."""
    answers = columns.get("answer") or [None] * len(completions)
    return [None if a == "skip" else sum(ch.isdigit() for ch in c) / max(len(c), 1)
            for c, a in zip(completions, answers)]
