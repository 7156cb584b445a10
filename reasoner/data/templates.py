"""The prompt templates, and the answer format they ask for.

`render_prompt` turns a question into the text the model continues:

- ``r1_zero``: the DeepSeek-R1-Zero template; the prompt ends in ``<think>``.
- ``r1_short``: ``"{question}\\n<think>"``, for the tiny character-level model (every prompt
  character costs a token).
- ``chat``: the tokenizer's chat template with ``add_generation_prompt=True``; a question that is
  a conversation (TRL's conversational prompt, a list of messages) goes through it as it is.
- ``plain``: the question unchanged.

The R1 templates ask for ``<think>reasoning</think><answer>final answer</answer>``; the tags
(`TAG_TOKENS`) and the reading of the answer blocks (`answer_blocks`, and `extract_answer`: the
last one) live here, once; the math verifier and the format rewards use them.

Completions are untrusted text, read in the trainer's own process: the blocks are found with
`str.find` in one left-to-right pass, linear in the text's length whatever it holds (a regex
``<answer>(.*?)</answer>`` rescans to the end from every unclosed ``<answer>``: quadratic; a 64 KB
run of ``<answer>`` took 4 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

TEMPLATES = ("r1_zero", "r1_short", "chat", "plain")

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAG_TOKENS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

R1_ZERO_SYSTEM = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process in the mind and then "
    "provides the User with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>."
)


def block_spans(text: str, open_tag: str = ANSWER_OPEN, close_tag: str = ANSWER_CLOSE
                ) -> Iterator[tuple[int, int]]:
    """(start, end) of each block's body, ``text[start:end]``, left to right: a block runs from an
    opening tag to the first closing tag after it, and the next block is looked for after that
    closing tag (exactly the blocks ``re.findall(open + "(.*?)" + close, re.DOTALL)`` finds).
    Linear: every character is passed over once; an opening tag with no closing tag after it
    ends the scan (no later one can have one either)."""
    pos = 0
    while True:
        start = text.find(open_tag, pos)
        if start < 0:
            return
        start += len(open_tag)
        end = text.find(close_tag, start)
        if end < 0:
            return
        yield start, end
        pos = end + len(close_tag)


def answer_blocks(completion: str) -> list[str]:
    """The bodies of every ``<answer>...</answer>`` block, in order, unstripped."""
    return [completion[a:b] for a, b in block_spans(completion)]


def extract_answer(completion: str) -> str | None:
    """The text inside the last ``<answer>...</answer>`` block, stripped; None if there is none."""
    last: tuple[int, int] | None = None
    for span in block_spans(completion):
        last = span
    return None if last is None else completion[last[0] : last[1]].strip()


def is_conversation(x: Any) -> bool:
    """Whether `x` (a row's question, a preference record's prompt or completion) is a
    conversation, TRL's conversational format: a non-empty list of ``{"role": ...,
    "content": ...}`` messages."""
    return (isinstance(x, (list, tuple)) and len(x) > 0
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in x))


def render_prompt(
    question: Any,
    *,
    template: str = "r1_zero",
    tokenizer: Any = None,
    system_prompt: str | None = None,
) -> str:
    """The prompt text for `question` under `template` (see the module docstring). A question
    that is a conversation (a list of messages, `is_conversation`) goes through the chat
    template as it is (the system prompt first, unless it has its own); the other templates
    refuse it (they would show the list's repr to the model)."""
    if isinstance(question, (list, tuple)):
        if not is_conversation(question):
            raise ValueError(f"the question is a list but not a conversation (a list of "
                             f"{{'role': ..., 'content': ...}} messages): {short_repr(question)}")
        if template != "chat":
            raise ValueError(f"the question is a conversation (a list of messages), which "
                             f"template {template!r} can't show; use the chat template "
                             "(data.template=chat, reasoner eval: --template chat)")
    elif not isinstance(question, str):
        question = str(question)
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
        if isinstance(question, str):
            messages = [{"role": "user", "content": question}]
        else:
            messages = [dict(m) for m in question]
        if system_prompt is not None and messages[0].get("role") != "system":
            messages.insert(0, {"role": "system", "content": system_prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown prompt template {template!r}; choose one of {TEMPLATES}")


def short_repr(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
