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


@dataclass
class Extraction:
    """The final answer found in a completion. source: "boxed", "answer_tag", "gsm8k" or None."""

    answer: str | None
    source: str | None = None
    ambiguous: bool = False
    candidates: list[str] = field(default_factory=list)


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_GSM8K_RE = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def _match_brace(s: str, open_at: int) -> int:
    """Index of the '}' closing the '{' at `open_at` (escaped braces \\{ \\} don't count), or -1."""
    depth = 0
    i = open_at
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _boxes(text: str) -> list[str]:
    """Contents of the top-level boxes, in order; unclosed boxes are skipped."""
    out: list[str] = []
    pos = 0
    while True:
        m = _BOX_RE.search(text, pos)
        if m is None:
            return out
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _match_brace(text, i)
            if end < 0:  # unclosed (truncated completion): not an answer
                pos = i + 1
                continue
            out.append(text[i + 1 : end])
            pos = end + 1
        else:  # "\boxed 5": up to the next whitespace or '$'
            m2 = re.match(r"[^\s$]+", text[i:])
            if m2 is None or m.group(0) != "\\boxed":
                pos = i
                continue
            out.append(m2.group(0))
            pos = i + m2.end()


def _unbox(s: str) -> str:
    """\\boxed{\\boxed{5}} -> 5 (boxes that span the whole answer are unwrapped)."""
    while True:
        t = s.strip()
        m = _BOX_RE.match(t)
        if m is None:
            return t
        i = m.end()
        while i < len(t) and t[i] in " \t":
            i += 1
        if i < len(t) and t[i] == "{" and _match_brace(t, i) == len(t) - 1:
            s = t[i + 1 : -1]
        else:
            return t


def _strip_answer(s: str) -> str:
    s = _unbox(s).strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            s = s[len(a) : len(s) - len(b)].strip()
    s = _unbox(s)
    return s.rstrip(" .").strip()


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
    tags = _ANSWER_TAG_RE.findall(text)
    if tags:
        ans = _strip_answer(tags[-1])
        return Extraction(ans or None, "answer_tag", candidates=[t.strip() for t in tags])
    lines = _GSM8K_RE.findall(text)
    if lines:
        ans = _strip_answer(lines[-1])
        return Extraction(ans or None, "gsm8k", candidates=lines)
    return Extraction(None)


def extract_answer(text: str) -> str | None:
    """The final answer string of a completion, or None (ambiguous boxes also give None)."""
    ex = find_answer(text)
    return None if ex.ambiguous else ex.answer


_SOLUTION_MARKERS = ("\\boxed", "\\fbox", "<answer>", "####")


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

