"""Which part of a completion (or of a worked-solution gold) is the final answer.

Runs in the calling process: plain string scanning in linear time, no sympy.

1. the last ``\\boxed{...}`` / ``\\boxed x`` / ``\\fbox{...}`` (nested braces; a box inside a
   box is unwrapped). Several boxes with DIFFERENT contents (after whitespace/``$``
   normalisation) make the text "ambiguous": it never pays. Repeating the SAME answer in
   several boxes is fine (models often restate their result).
2. else the last ``<answer>...</answer>`` block;
3. else the last GSM8K-style ``#### x`` line.
Nothing found, or an empty answer: no answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from reasoner.data.templates import ANSWER_OPEN, answer_blocks


@dataclass
class Extraction:
    """The final answer found in a completion. source: "boxed", "answer_tag", "gsm8k" or None."""

    answer: str | None
    source: str | None = None
    ambiguous: bool = False
    candidates: list[str] = field(default_factory=list)


_GSM8K_MARK = "####"
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BARE_BOX_ARG = re.compile(r"[^\s$]+")  # "\boxed 5": up to the next whitespace or '$'
_BRACE_TOKENS = re.compile(r"\\.|[{}]", re.DOTALL)  # an escaped character, or a brace


@dataclass
class _Head:
    """One ``\\boxed`` / ``\\fbox`` in a text: where its name starts and ends, and where its
    argument starts (after spaces and tabs)."""

    start: int
    end: int
    arg: int
    braced: bool  # the argument starts with '{'


def _heads(text: str) -> list[_Head]:
    out = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] in " \t":  # runs after two heads are disjoint: linear
            i += 1
        out.append(_Head(m.start(), m.end(), i, i < len(text) and text[i] == "{"))
    return out


def _closing_braces(text: str, opens: set[int]) -> dict[int, int]:
    """For each '{' at an index in `opens`, the index of the '}' that closes it (escaped braces
    \\{ \\} don't count; an unclosed one is left out). One pass over the text's braces with a
    stack, where scanning from each '{' to its match would be quadratic (``\\boxed{`` x N)."""
    out: dict[int, int] = {}
    if not opens:
        return out
    stack: list[int] = []
    for m in _BRACE_TOKENS.finditer(text):
        c = m.group()
        if c == "{":
            stack.append(m.start())
        elif c == "}" and stack:
            o = stack.pop()
            if o in opens:
                out[o] = m.start()
    return out


def _boxes(text: str) -> list[str]:
    """Contents of the top-level boxes, in order; unclosed boxes are skipped (and the text
    inside them is still searched). Linear in the text's length."""
    heads = _heads(text)
    closing = _closing_braces(text, {h.arg for h in heads if h.braced})
    out: list[str] = []
    pos = 0
    for h in heads:
        if h.start < pos:  # inside a box already read
            continue
        if h.braced:
            end = closing.get(h.arg, -1)
            if end < 0:  # unclosed (truncated completion): not an answer
                pos = h.arg + 1
                continue
            out.append(text[h.arg + 1 : end])
            pos = end + 1
            continue
        m = _BARE_BOX_ARG.match(text, h.arg)  # "\\boxed 5"
        if m is None or text[h.start : h.end] != "\\boxed":
            pos = h.arg
            continue
        out.append(m.group(0))
        pos = m.end()
    return out


def _unbox(s: str) -> str:
    """\\boxed{\\boxed{5}} -> 5 (boxes that span the whole answer are unwrapped). Each layer is
    peeled by moving two indices, with the braces matched once: linear however deep."""
    closing = _closing_braces(s, {h.arg for h in _heads(s) if h.braced})
    lo, hi = 0, len(s)
    while True:
        while lo < hi and s[lo].isspace():
            lo += 1
        while hi > lo and s[hi - 1].isspace():
            hi -= 1
        m = _BOX_RE.match(s, lo, hi)
        if m is None:
            return s[lo:hi]
        i = m.end()
        while i < hi and s[i] in " \t":
            i += 1
        if i < hi and s[i] == "{" and closing.get(i) == hi - 1:
            lo, hi = i + 1, hi - 1
        else:
            return s[lo:hi]


def _strip_answer(s: str) -> str:
    s = _unbox(s).strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            s = s[len(a) : len(s) - len(b)].strip()
    s = _unbox(s)
    return s.rstrip(" .").strip()


def _gsm8k_lines(text: str) -> list[str]:
    """For every line that starts with ``####`` (after spaces and tabs), the rest of it with
    spaces and tabs around it dropped; lines end at '\\n'. One pass over the lines."""
    if _GSM8K_MARK not in text:
        return []
    out = []
    for line in text.split("\n"):
        rest = line.lstrip(" \t")
        if rest.startswith(_GSM8K_MARK):
            out.append(rest[len(_GSM8K_MARK) :].strip(" \t"))
    return out


def _same_text(a: str) -> str:
    return re.sub(r"\s+|\$|\\[,;:! ]|\\left|\\right", "", a).replace("dfrac", "frac")


def find_answer(text: str) -> Extraction:
    """Locate the final answer (see the module docstring for the rules)."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    boxes = [_strip_answer(b) for b in _boxes(text)]
    boxes = [b for b in boxes if b]
    if boxes:
        distinct = list(dict.fromkeys(_same_text(b) for b in boxes))
        return Extraction(boxes[-1], "boxed", ambiguous=len(distinct) > 1, candidates=boxes)
    tags = answer_blocks(text)
    if tags:
        ans = _strip_answer(tags[-1])
        return Extraction(ans or None, "answer_tag", candidates=[t.strip() for t in tags])
    lines = _gsm8k_lines(text)
    if lines:
        ans = _strip_answer(lines[-1])
        return Extraction(ans or None, "gsm8k", candidates=lines)
    return Extraction(None)


def extract_answer(text: str) -> str | None:
    """The final answer string of a completion, or None (ambiguous boxes also give None)."""
    ex = find_answer(text)
    return None if ex.ambiguous else ex.answer


_SOLUTION_MARKERS = ("\\boxed", "\\fbox", ANSWER_OPEN, _GSM8K_MARK)


def gold_answer(gold: str) -> tuple[str | None, str | None]:
    """(the answer a gold stands for, None), or (None, why it can't be told).

    A gold that is a worked solution (GSM8K as published: reasoning ending in ``#### 46``; a
    MATH solution with a ``\\boxed{}``; an ``<answer>`` block) stands for its final answer,
    found by the same rules as a completion's. A gold with several DIFFERENT boxed answers is
    not read (which one is the answer? they are never summed or guessed at). Any other gold
    is the answer itself."""
    if not any(m in gold for m in _SOLUTION_MARKERS):
        return gold, None
    ex = find_answer(gold)
    if ex.source is None:  # e.g. an unclosed box: the gold is what it is
        return gold, None
    if ex.ambiguous:
        distinct = list(dict.fromkeys(_same_text(c) for c in ex.candidates))
        shown = ", ".join(c[:40] for c in ex.candidates[:5])
        return None, (
            f"the gold has {len(distinct)} different boxed answers ({shown}); "
            "give one final answer"
        )
    if ex.answer is None:
        return None, f"the gold's final answer ({ex.source}) is empty"
    return ex.answer, None

