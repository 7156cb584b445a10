"""Format rewards for the R1 template: ``<think>...</think><answer>...</answer>``.

The R1-Zero prompt may end with ``<think>`` (so the completion starts inside the thought); both
rewards accept a completion with or without that leading tag.

strict: the whole completion is exactly one think block followed by exactly one answer block
        (whitespace around the blocks allowed, nothing else), the answer non-empty.
soft:   a think block followed by an answer block appears somewhere in the completion.
"""

from __future__ import annotations

import re

_STRICT = re.compile(
    r"^\s*(?:<think>)?(?P<think>(?:(?!<think>|</think>|<answer>|</answer>).)*)</think>\s*"
    r"<answer>(?P<answer>(?:(?!<think>|</think>|<answer>|</answer>).)*)</answer>\s*$",
    re.DOTALL,
)
_SOFT = re.compile(r"(?:<think>)?.*?</think>\s*<answer>.*?</answer>", re.DOTALL)


def strict_format_ok(completion: str) -> bool:
    m = _STRICT.match(completion)
    return bool(m) and m.group("answer").strip() != ""


def soft_format_ok(completion: str) -> bool:
    return _SOFT.search(completion) is not None
