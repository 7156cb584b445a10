"""Format rewards for the R1 template: ``<think>...</think><answer>...</answer>``.

The R1-Zero prompt may end with ``<think>`` (so the completion starts inside the thought); both
rewards accept a completion with or without that leading tag.

strict: the whole completion is exactly one think block followed by exactly one answer block
        (whitespace around the blocks allowed, nothing else), the answer non-empty.
soft:   a think block followed by an answer block appears somewhere in the completion: a
        ``</think>``, then only whitespace, then ``<answer>``, and a ``</answer>`` after it.

"Whitespace" is what `str.isspace` calls so. The tags are `reasoner.data.templates`'. Both checks
run in the trainer's process on untrusted text, so they are scans with `str.find` (no regex that
could backtrack), linear in the completion's length: no length cap is needed.
"""

from __future__ import annotations

import re

from reasoner.data.templates import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    TAG_TOKENS,
    THINK_CLOSE,
    THINK_OPEN,
)

_SPACE = re.compile(r"\s*")  # one greedy run from a given position: linear


def _skip_space(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # \s* always matches


def _has_tag(text: str, start: int, end: int) -> bool:
    """Does any tag occur wholly inside text[start:end]? (A tag can't straddle `end` where a tag
    starts: '<' is the first character of every tag and appears nowhere else in one.)"""
    return any(text.find(tag, start, end) >= 0 for tag in TAG_TOKENS)


def strict_format_ok(completion: str) -> bool:
    """``[ws][<think>]THINK</think>[ws]<answer>ANSWER</answer>[ws]``, THINK and ANSWER free of
    any tag, ANSWER not blank."""
    pos = _skip_space(completion, 0)
    if completion.startswith(THINK_OPEN, pos):
        pos += len(THINK_OPEN)
    think_end = completion.find(THINK_CLOSE, pos)
    if think_end < 0 or _has_tag(completion, pos, think_end):
        return False
    pos = _skip_space(completion, think_end + len(THINK_CLOSE))
    if not completion.startswith(ANSWER_OPEN, pos):
        return False
    start = pos + len(ANSWER_OPEN)
    end = completion.find(ANSWER_CLOSE, start)
    if end < 0 or _has_tag(completion, start, end):
        return False
    tail = end + len(ANSWER_CLOSE)
    if _skip_space(completion, tail) != len(completion):
        return False
    return completion[start:end].strip() != ""


def soft_format_ok(completion: str) -> bool:
    """Some ``</think>`` is followed by whitespace, ``<answer>``, and later ``</answer>``."""
    pos = 0
    while True:
        close = completion.find(THINK_CLOSE, pos)
        if close < 0:
            return False
        pos = close + len(THINK_CLOSE)  # tags don't overlap themselves: the next starts later
        at = _skip_space(completion, pos)
        if completion.startswith(ANSWER_OPEN, at):
            # the first such pair is the best: any later one has less text after it
            return completion.find(ANSWER_CLOSE, at + len(ANSWER_OPEN)) >= 0
