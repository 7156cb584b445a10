"""Reading the README's sections, code blocks and commands, for the tests that follow it
literally (tests/ is on sys.path: `from readme_blocks import ...`)."""

import re
import shlex
import textwrap
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def section(heading: str) -> str:
    """The text of the README section ``## heading``, up to the next ``## ``."""
    text = README.read_text()
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def blocks(text: str, lang: str) -> list[str]:
    """The fenced ```lang blocks of `text`, dedented."""
    return [textwrap.dedent(b) for b in re.findall(rf"```{lang}\n(.*?)```", text, re.S)]


def commands(block: str) -> list[list[str]]:
    """The shell commands of a bash block (continuation lines joined, comments dropped)."""
    lines = block.replace("\\\n", " ").splitlines()
    return [cmd for cmd in (shlex.split(line, comments=True) for line in lines) if cmd]
