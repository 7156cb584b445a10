"""Untrusted text read in the trusted process is scanned in linear time (DESIGN: "never
regex-scanned ... without a bound on time and size").

Three kinds of check:
- a table of degenerate completions (what a collapsing RL policy emits) through every scanner that
  reads completion or gold text in the caller: each takes little CPU time at 200 KB, and 4x the
  text takes about 4x the time, not 16x (the code before this took seconds to minutes);
- the same verdicts as the regexes they replace: a seeded fuzz against those regexes as oracles
  (and the quadratic brace matcher), so only the speed changed;
- the old slow cases end to end: their verdicts through the rewards and `reasoner verify`.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from reasoner.data.templates import answer_blocks, extract_answer
from reasoner.tasks.arithmetic import integer_exact_reward
from reasoner.tasks.countdown import countdown_reward
from reasoner.verifiers.base import MAX_COMPLETION_CHARS, Reason
from reasoner.verifiers.code.program import extract_program
from reasoner.verifiers.format import soft_format_ok, strict_format_ok
from reasoner.verifiers.math import MathVerifier, find_answer, gold_answer
from reasoner.verifiers.math.values import too_large_text
from reasoner.verify_cli import verify_file

# ------------------------------------------------------------------ degenerate completions


def _rep(unit: str, n: int) -> str:
    return unit * max(1, n // len(unit))


# name -> text of about n characters
ADVERSARIAL: dict[str, Callable[[int], str]] = {
    "boxed{ x N": lambda n: _rep("\\boxed{", n),
    "nested boxes": lambda n: _rep("\\boxed{", n // 2) + "5" + "}" * (n // 14),
    "boxed{ then braces": lambda n: "\\boxed{" + _rep("{", n),
    "braces then boxed{": lambda n: _rep("{", n // 2) + "\\boxed{" + _rep("1", n // 2),
    "fbox{ x N": lambda n: _rep("\\fbox{", n),
    "bare boxes": lambda n: _rep("\\boxed 5 ", n),
    "escaped braces": lambda n: "\\boxed{" + _rep("\\{", n),
    "backslashes": lambda n: _rep("\\", n),
    "answer x N": lambda n: _rep("<answer>", n),
    "/answer x N": lambda n: _rep("</answer>", n),
    "think x N": lambda n: _rep("<think>", n),
    "/think x N": lambda n: _rep("</think>", n),
    "/think<answer> x N": lambda n: _rep("</think> <answer>", n),
    "blocks x N": lambda n: _rep("<answer>1</answer>", n),
    "whitespace": lambda n: _rep(" \n", n) + "x",
    "#### x N": lambda n: _rep("####", n),
    "#### lines": lambda n: _rep("####\n", n),
    "#### spaces": lambda n: "#### a" + " " * n + "b",
    "dollars": lambda n: _rep("$", n),
    "digits": lambda n: _rep("1", n),
    "answer digits": lambda n: "<answer>" + _rep("1", n) + "</answer>",
    "caret spaces": lambda n: "^" + " " * n + "{",
    "fence x N": lambda n: _rep("```python\n", n),
    "string escapes": lambda n: "```python\nx = '''" + _rep("\\x", n) + "\n```\n",
    "strings then escape": lambda n: "```python\n" + _rep("''' ''' ", n) + "\\\n```\n",
}

SCANNERS: dict[str, Callable[[str], Any]] = {
    "find_answer": find_answer,
    "gold_answer": gold_answer,
    "strict_format_ok": strict_format_ok,
    "soft_format_ok": soft_format_ok,
    "extract_answer": extract_answer,
    "too_large_text": lambda s: too_large_text(s, len(s)),
    "integer_exact": lambda s: integer_exact_reward([""], [s], answer=["5"]),
    "countdown": lambda s: countdown_reward([""], [s], numbers=[[1, 2]], target=[3]),
    "extract_program": extract_program,
}

N = 25_000  # the test reads 4N characters (100 KB)
MAX_SECONDS_4N = 1.0  # CPU seconds at 100 KB; the new code takes under 0.1 s, the old many


def _cpu_seconds(f: Callable[[str], Any], text: str, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()  # CPU time: not inflated by other processes on a shared machine
        f(text)
        best = min(best, time.process_time() - t)
    return best


@pytest.mark.parametrize("scanner", list(SCANNERS))
def test_every_scanner_is_linear_on_degenerate_completions(scanner: str) -> None:
    # One CPU-time bound at 100 KB, far from both sides: the linear scanners take under 0.1 s
    # there, the quadratic ones they replace took minutes (3 s already at 16 KB). No ratio of
    # two timings: that would make a loaded machine's noise part of the verdict.
    f = SCANNERS[scanner]
    slow = []
    for name, make in ADVERSARIAL.items():
        big = make(4 * N)
        t4 = _cpu_seconds(f, big)
        if t4 > MAX_SECONDS_4N:
            slow.append(f"{name}: {t4:.4f}s at {len(big)} chars")
    assert not slow, f"{scanner} is not linear on: " + "; ".join(slow)


# ------------------------------------------------------------------ same verdicts as before

# The regexes these scanners replace, kept here as the specification of their verdicts.
_OLD_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_OLD_STRICT = re.compile(
    r"^\s*(?:<think>)?(?P<think>(?:(?!<think>|</think>|<answer>|</answer>).)*)</think>\s*"
    r"<answer>(?P<answer>(?:(?!<think>|</think>|<answer>|</answer>).)*)</answer>\s*$",
    re.DOTALL,
)
_OLD_SOFT = re.compile(r"(?:<think>)?.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_OLD_GSM8K = re.compile(r"^[ \t]*####[ \t]*(.*?)[ \t]*$", re.MULTILINE)
_OLD_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _old_match_brace(s: str, at: int) -> int:
    depth, i = 0, at
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(s[i], 0)
        if depth == 0:
            return i
        i += 1
    return -1


def _old_boxes(text: str) -> list[str]:
    out, pos = [], 0
    while (m := _OLD_BOX.search(text, pos)) is not None:
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            end = _old_match_brace(text, i)
            if end < 0:
                pos = i + 1
                continue
            out.append(text[i + 1 : end])
            pos = end + 1
        else:
            m2 = re.match(r"[^\s$]+", text[i:])
            if m2 is None or m.group(0) != "\\boxed":
                pos = i
                continue
            out.append(m2.group(0))
            pos = i + m2.end()
    return out


def _old_unbox(s: str) -> str:
    while True:
        t = s.strip()
        m = _OLD_BOX.match(t)
        if m is None:
            return t
        i = m.end()
        while i < len(t) and t[i] in " \t":
            i += 1
        if not (i < len(t) and t[i] == "{" and _old_match_brace(t, i) == len(t) - 1):
            return t
        s = t[i + 1 : -1]


_TOKENS = ["\\boxed", "\\fbox", "\\boxedx", "\\boxed{", "{", "}", "\\{", "\\}", "\\", "\\\\", " ",
           "\t", "\n", " \n", "\u00a0", "$", "$$", "\\(", "\\)", "5", "x", ".", "ab", "<think>",
           "</think>", "<answer>", "</answer>", "####", "\n#### "]


def test_the_scanners_give_the_verdicts_of_the_regexes_they_replace() -> None:
    from reasoner.verifiers.math.extract import _boxes, _gsm8k_lines, _unbox

    rng = random.Random(0)
    for _ in range(6000):
        s = "".join(rng.choice(_TOKENS) for _ in range(rng.randint(0, 24)))
        found = _OLD_BLOCK.findall(s)
        assert answer_blocks(s) == found, s
        assert extract_answer(s) == (found[-1].strip() if found else None), s
        m = _OLD_STRICT.match(s)
        assert strict_format_ok(s) is (bool(m) and m.group("answer").strip() != ""), s
        assert soft_format_ok(s) is (_OLD_SOFT.search(s) is not None), s
        assert _gsm8k_lines(s) == _OLD_GSM8K.findall(s), s
        assert _boxes(s) == _old_boxes(s), s
        assert _unbox(s) == _old_unbox(s), s


def test_the_old_slow_cases_get_the_verdicts_they_should() -> None:
    k = 8000
    assert find_answer("\\boxed{" * k).answer is None  # all unclosed: no answer
    assert find_answer("<answer>" * k).answer is None
    assert extract_answer("<answer>" * k) is None
    # a block runs from the first opening tag to the first closing one (as findall read it)
    assert extract_answer("<answer>" * 3 + "7</answer>") == "<answer><answer>7"
    assert find_answer("\\boxed{" * k + "5" + "}" * k).answer == "5"  # unwrapped k times
    assert find_answer("{" * k + "\\boxed{" + "}" * (k + 1)).answer is None  # empty box
    ex = find_answer("#### a" + " " * 100_000 + "b")
    assert ex.source == "gsm8k" and ex.answer == "a" + " " * 100_000 + "b"
    assert not strict_format_ok(" \n" * 50_000 + "x")
    assert not soft_format_ok("<think>" * k)
    tail = "</think><answer>5</answer>"
    assert soft_format_ok("<think>" * k + tail) and not strict_format_ok("<think>" * k + tail)
    assert strict_format_ok("\n" * 50_000 + "<think>" + "a " * 50_000 + tail + "\n" * 50_000)
    assert too_large_text("^" + " " * 5000 + "{ 1234567", 10**6) is not None
    assert too_large_text("9" * 9999 + "!", 10**6) is not None
    assert too_large_text("9" * 9999, 10**6) is None


def test_integer_reward_reads_any_length_of_digits_the_way_int_does() -> None:
    big = "1" * 10_000  # int() refuses over 4300 digits: the reward used to raise here
    comps = [f"<answer>{big}</answer>", f"<answer>{big}0</answer>", "<answer>1" + big + "</answer>"]
    assert integer_exact_reward([""] * 3, comps, answer=[big] * 3) == [1.0, 0.0, 0.0]
    same = ["<answer>-007</answer>", "<answer>+7</answer>", "<answer>7</answer>",
            "<answer>\u0667</answer>", "<answer>1,2</answer>", "<answer>-0</answer>"]
    golds = ["-7", "7", "7", "7", "12", "0"]
    assert integer_exact_reward([""] * 6, same, answer=golds) == [1.0] * 6
    assert integer_exact_reward([""] * 2, ["<answer>7</answer>", "<answer>x</answer>"],
                                answer=["-7", "x"]) == [0.0, None]


# ------------------------------------------------------------------ end to end


def test_reasoner_verify_math_on_degenerate_completions(tmp_path) -> None:
    """The old slow cases through `reasoner verify --task math`: verdicts as they should be, and
    the caller's CPU time stays small (the old code took minutes on these)."""
    k = 25_000
    recs = [
        {"completion": "\\boxed{" * k, "answer": "5"},
        {"completion": "\\boxed{" * k + "5" + "}" * k, "answer": "5"},
        {"completion": "<answer>" * k, "answer": "5"},
        {"completion": "<think>" * k + "</think><answer>5</answer>", "answer": "5"},
        {"completion": "#### a" + " " * 200_000 + "b", "answer": "5"},
        {"completion": "$" * 200_000, "answer": "5"},
        {"completion": "so \\boxed{5}", "answer": "{" * k + "\\boxed{" * k},
        {"completion": "x" * (MAX_COMPLETION_CHARS + 1), "answer": "5"},
        {"completion": "\\boxed{5}", "answer": "\\boxed{" + "5" * (MAX_COMPLETION_CHARS) + "}"},
    ]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in recs))
    t = time.process_time()
    verify_file("math", inp, out, progress=False, workers=1)
    cpu = time.process_time() - t
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["reason"], r["correct"]) for r in rows] == [
        ("no answer", False),
        ("ok", True),
        ("no answer", False),
        ("ok", True),
        ("too large", False),  # a 200 KB final answer is over max_answer_chars
        ("no answer", False),
        ("unparseable gold", None),  # unclosed boxes: the gold is its text, over 10k chars
        ("too large", False),  # over MAX_COMPLETION_CHARS: not read at all
        ("unparseable gold", None),  # a gold over it: not read
    ]
    assert cpu < 10.0, f"the caller spent {cpu:.1f} s of CPU"


def test_math_verifier_caps_what_it_reads() -> None:
    v = MathVerifier(workers=1)
    try:
        big = v._prepare({"completion": "\\boxed{5}" + " " * MAX_COMPLETION_CHARS, "answer": "5"})
        assert big.reason == Reason.TOO_LARGE and "completion over" in big.detail["error"]
        gold = v._prepare({"completion": "\\boxed{5}", "answer": "5" * (MAX_COMPLETION_CHARS + 1)})
        assert gold.reason == Reason.UNPARSEABLE_GOLD and gold.correct is None
        assert "gold too large" in gold.detail["error"]
        # at the cap itself the text is read
        ok = v._prepare({"completion": "\\boxed{5}" + " " * (MAX_COMPLETION_CHARS - 9),
                         "answer": "5"})
        assert isinstance(ok, tuple) and ok[:2] == ("5", "5")
    finally:
        v.close()
