"""Finding the program in a completion: one linear pass over its lines, no regex backtracking.

The program is the last closed fenced block tagged ``python``, ``py`` or ``python3``; when no block
is tagged, the last bare (untagged) block; blocks tagged with another language are never used; an
unclosed (truncated) block is ignored. ``\\r\\n`` line ends count as ``\\n``. A fence is a line
that is (after optional spaces or tabs) three backticks, optionally followed by a language word and
more text (an opening fence), or by nothing but spaces (a closing fence).

Inside a python or bare block, a closing-fence line that sits inside an unterminated triple-quoted
string is part of the program, not its end (``s = '''\\n```\\n'''``). This is tracked with a small
lexer that only knows what matters for that question (string prefixes and quotes, escapes, ``#``
comments); each line is read once. If such a block never closes, it is cut at its first closing
fence instead, as plain Markdown would, and string tracking is off for the rest of the
completion, so that the whole scan stays linear.

Callers cap the completion's length first (``MAX_COMPLETION_CHARS``).
"""

from __future__ import annotations

import textwrap

from reasoner.verifiers.base import MAX_COMPLETION_CHARS

__all__ = ["MAX_COMPLETION_CHARS", "PYTHON_TAGS", "extract_program"]
PYTHON_TAGS = frozenset({"python", "py", "python3"})
_LANG_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+.-")


def _fence(line: str) -> tuple[str, str] | None:
    """("open", lang) / ("close", "") for a fence line, else None. A line of just the backticks
    is both; the caller decides by context."""
    s = line.lstrip(" \t")
    if not s.startswith("```"):
        return None
    rest = s[3:]
    if rest.strip(" \t") == "":
        return ("close", "")
    rest = rest.lstrip(" \t")
    n = 0
    while n < len(rest) and rest[n] in _LANG_CHARS:
        n += 1
    if "`" in rest[n:]:
        return None
    return ("open", rest[:n].lower())


class _StringState:
    """Is the text so far inside a triple-quoted string? Fed one line at a time."""

    __slots__ = ("quote",)

    def __init__(self) -> None:
        self.quote: str | None = None  # '"""' or "'''" while inside one

    def feed(self, line: str) -> None:
        i, n = 0, len(line)
        # The next closing quote (j) and backslash (k) at or after i, as last found; -1: none
        # left in the line; -2: not looked for yet. Each is looked for again only once i has
        # passed it: looking from every escape (or every string) would rescan the rest of the
        # line each time, quadratic in its length.
        j = k = -2
        while i < n:
            if self.quote is not None:
                if j == -2 or 0 <= j < i:
                    j = line.find(self.quote, i)
                if k == -2 or 0 <= k < i:
                    k = line.find("\\", i)
                if k != -1 and (j == -1 or k < j):
                    i = k + 2  # an escaped character, maybe a quote
                    continue
                if j == -1:
                    return
                i = j + 3
                self.quote = None
                j = -2
                continue
            c = line[i]
            if c == "#":
                return
            if c in "'\"":
                if line.startswith(c * 3, i):
                    self.quote = c * 3
                    i += 3
                    continue
                # a one-line string: to its closing quote or the end of the line
                i += 1
                while i < n and line[i] != c:
                    i += 2 if line[i] == "\\" else 1
                i += 1
                continue
            i += 1


def extract_program(completion: str) -> str | None:
    """The program of a completion (rules above), dedented; None when there is none."""
    lines = completion.replace("\r\n", "\n").split("\n")
    tagged: tuple[int, int] | None = None  # (first body line, end line) of the last block
    bare: tuple[int, int] | None = None
    track = True  # string tracking, until it first fails
    i, n = 0, len(lines)
    while i < n:
        f = _fence(lines[i])
        if f is None:
            i += 1
            continue
        lang = f[1]
        python = lang in PYTHON_TAGS or lang == ""
        state = _StringState() if (python and track) else None
        start, first_close, j = i + 1, -1, i + 1
        end = -1
        while j < n:
            g = _fence(lines[j])
            if g is not None and g[0] == "close":
                if state is None or state.quote is None:
                    end = j
                    break
                if first_close < 0:
                    first_close = j
            if state is not None:
                state.feed(lines[j])
            j += 1
        if end < 0 and first_close >= 0:  # a string that never ends: Markdown's reading
            end, track = first_close, False
        if end < 0:
            break  # unclosed: the rest of the completion is inside it
        if lang in PYTHON_TAGS:
            tagged = (start, end)
        elif lang == "":
            bare = (start, end)
        i = end + 1
    block = tagged or bare
    if block is None:
        return None
    body = lines[block[0] : block[1]]
    return textwrap.dedent("\n".join(body) + "\n") if body else ""
