"""The prompt templates, and the answer format they ask for.

`render_prompt` turns a question into the text the model continues:

- ``r1_zero``: the DeepSeek-R1-Zero template; the prompt ends in ``<think>``.
- ``r1_short``: ``"{question}\\n<think>"``, for the tiny character-level model (every prompt
  character costs a token).
- ``chat``: the tokenizer's chat template with ``add_generation_prompt=True``.
- ``plain``: the question unchanged.

The R1 templates ask for ``<think>reasoning</think><answer>final answer</answer>``; the tags
(`TAG_TOKENS`) and the reading of the final answer (`extract_answer`: the last answer block)
live here, once.
"""

from __future__ import annotations

import re
from typing import Any

TEMPLATES = ("r1_zero", "r1_short", "chat", "plain")

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAG_TOKENS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
ANSWER_BLOCK = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)

R1_ZERO_SYSTEM = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process in the mind and then "
    "provides the User with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>."
)


def extract_answer(completion: str) -> str | None:
    """The text inside the last ``<answer>...</answer>`` block, stripped; None if there is none."""
    found = ANSWER_BLOCK.findall(completion)
    return found[-1].strip() if found else None


def render_prompt(
    question: str,
    *,
    template: str = "r1_zero",
    tokenizer: Any = None,
    system_prompt: str | None = None,
) -> str:
    """The prompt text for `question` under `template` (see the module docstring)."""
    if template == "r1_zero":
        system = R1_ZERO_SYSTEM if system_prompt is None else system_prompt
        return f"{system} User: {question}\nAssistant: <think>"
    if template == "r1_short":
        prefix = "" if system_prompt is None else system_prompt + "\n"
        return f"{prefix}{question}\n<think>"
    if template == "plain":
        prefix = "" if system_prompt is None else system_prompt + "\n"
        return prefix + question
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat' needs a tokenizer with a chat_template, and this "
                             "tokenizer has none: use the r1_zero or plain template, or a "
                             "model whose tokenizer has one")
        messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown prompt template {template!r}; choose one of {TEMPLATES}")
