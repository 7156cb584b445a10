"""Math verifier: extraction, every equivalence rule (positive and negative), exactness,
limits (timeout, size, memory), the worker pool (order, kills, threads), a 200-record batch."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from reasoner.verifiers import registry
from reasoner.verifiers.base import Verdict
from reasoner.verifiers.math import (
    MathVerifier,
    check_answer,
    extract_answer,
    find_answer,
    gold_answer,
    normalize,
    verify_math,
)
from reasoner.verifiers.math.values import too_large_text
from reasoner.verifiers.math.worker import _parse_gold
from reasoner.verifiers.pool import TaskResult, worker_info

# ---------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{42}.", "42"),
        (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{1}{\sqrt{2}}"),
        (r"\boxed{\boxed{7}}", "7"),  # nested boxes are unwrapped
        (r"\boxed{ \{1, 2\} }", r"\{1, 2\}"),  # escaped braces don't close the box
        (r"\fbox{9}", "9"),
        (r"\boxed 5 is it", "5"),
        (r"first \boxed{3}, then again $\boxed{3}$.", "3"),  # identical repeats are fine
        (r"\boxed{$x = 2$}", "x = 2"),
        (r"<think>\boxed{4} hmm</think><answer>5</answer>", "4"),  # a box beats the tag
        ("<answer>1</answer> <answer> 12 </answer>", "12"),  # last tag
        ("text\n#### 1,234\n", "1,234"),
        ("#### 3\nmore\n#### 72.", "72"),  # last #### line, trailing period dropped
        (r"\boxed{7", None),  # unclosed box (truncated): nothing
        ("the answer is 7", None),
        (r"\boxed{}", None),
        ("<answer>  </answer>", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_different_boxes_are_ambiguous() -> None:
    ex = find_answer(r"maybe \boxed{3} or \boxed{4}")
    assert ex.ambiguous and ex.answer == "4" and ex.candidates == ["3", "4"]
    assert extract_answer(r"maybe \boxed{3} or \boxed{4}") is None
    # same answer spelled with different spacing / $ is not ambiguous
    assert not find_answer(r"\boxed{\frac12 } and \boxed{ \dfrac12}").ambiguous


def test_extraction_of_a_huge_completion_is_fast_enough_to_not_matter() -> None:
    text = "{" * 50_000 + r"\boxed{" + "1" * 100_000
    assert extract_answer(text) is None  # unclosed; linear scan, no catastrophic regex


# ---------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("1,000,000", "1000000"),
        ("1{,}000", "1000"),
        ("1,2", "1,2"),
        ("1, 000", "1, 000"),
        (r"30^\circ", "30"),
        (r"10\%", "10"),
        (r"\$18.00", "18.00"),
        (r"12 \text{ cm}^2", "12"),
        ("5 dollars", "5"),
        (r"\text{Monday}", "Monday"),
        (r"\left( 1, 2 \right)", "( 1, 2 )"),
        (r"\dfrac12", r"\frac{1}{2}"),
        (r"x = 1 \text{ or } x = 2", "x = 1, x = 2"),
        ("2,500 m²", "2500"),  # Unicode symbols are read as their LaTeX
        ("x⁻¹ ≠ ∞", r"x^{-1} \neq \infty"),
        ("3√2", r"3\sqrt{2}"),
        (r"\\left( 2, \\frac{\\pi}{6} \\right)", r"( 2, \frac{\pi}{6} )"),  # escaped twice
        (r"\begin{pmatrix}x\\y\end{pmatrix}", r"\begin{pmatrix}x\\y\end{pmatrix}"),  # a row break
    ],
)
def test_normalize(raw: str, norm: str) -> None:
    assert normalize(raw) == norm


# ---------------------------------------------------------------------------- equivalence

EQUIV = [
    # (rule, gold, answer, expected)
    ("integer", "42", "42", True),
    ("integer", "42", "43", False),
    ("integer", "-7", "- 7", True),
    ("decimal exact", r"\frac{1}{2}", "0.5", True),
    ("decimal exact", "5", "5.0", True),
    ("decimal exact", "0.3", "0.1+0.2", True),
    ("decimal exact", "1.5", r"\frac{3}{2}", True),
    ("fraction", r"\frac{3}{4}", r"\dfrac{6}{8}", True),
    ("fraction", r"\frac{3}{4}", "3/4", True),
    ("fraction", r"\frac{3}{4}", r"\frac{4}{3}", False),
    ("fraction", "-\\frac{1}{2}", r"\frac{-1}{2}", True),
    ("mixed number", "3.5", r"3\frac{1}{2}", True),
    ("radical", r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt2}", True),
    ("radical", r"2\sqrt{3}", r"\sqrt{12}", True),
    ("radical", r"2\sqrt{3}", r"3\sqrt{2}", False),
    ("radical", "2", r"\sqrt{4}", True),
    ("pi", r"\frac{\pi}{2}", r"0.5\pi", True),
    ("pi", r"\pi", r"2\pi", False),
    ("e", "e^2", r"e \cdot e", True),
    ("e", "e", "2", False),
    ("factorial", "120", "5!", True),
    ("factorial", "24", "5!", False),
    ("binomial", "10", r"\binom{5}{2}", True),
    ("binomial", r"\dbinom{6}{3}", "21", False),
    ("log", "3", r"\log_2 8", True),
    ("log", r"2\ln 2", r"\ln 4", True),
    ("log", r"\ln 3", r"\ln 4", False),
    ("log", r"\log 100", "2", True),
    ("complex", "3+4i", "4i+3", True),
    ("complex", "3+4i", "3-4i", False),
    ("complex", "-1", "i^2", True),
    ("complex", "-1", r"e^{i\pi}", True),
    ("list", "1, 2, 3", "3, 1, 2", True),
    ("list", "1, 2, 3", "1, 2", False),
    ("list", "2, 2", "2", False),  # bare lists are multisets
    ("list", "1,2", "2, 1", True),
    ("list vs thousands", "12", "1,2", False),
    ("thousands", "1000000", "1,000,000", True),
    ("thousands", "1,000", "1000", True),
    ("thousands", "1000", "1{,}000", True),
    ("thousands", "1000000", "1,000,001", False),
    ("set", r"\{1, 2\}", r"\{2, 1\}", True),
    ("set", r"\{1, 2\}", r"\{1, 3\}", False),
    ("set", r"\{1, 1, 2\}", r"\{1, 2\}", True),  # sets ignore duplicates
    ("set vs list", r"\{1, 2\}", "2, 1", True),
    ("plus-minus", r"\pm 2", "2, -2", True),
    ("plus-minus", "2, -2", r"x = \pm 2", True),
    ("plus-minus", r"\pm 2", "2", False),
    ("tuple", "(1, 2)", "(1,2)", True),
    ("tuple", "(1, 2)", "(2, 1)", False),
    ("tuple", "(3, 1)", "(2, 1)", False),  # not both "empty intervals"
    ("tuple", "(1, 2, 3)", "(1, 3, 2)", False),
    ("tuple", r"\left(\frac12, 3\right)", "(0.5, 3)", True),
    ("interval", "[1, 2)", "[1,2)", True),
    ("interval", "[1, 2)", "(1,2]", False),
    ("interval", "[1, 2)", "[1,2]", False),
    ("interval union", r"(-\infty, 1) \cup (2, \infty)", r"(2,\infty)\cup(-\infty,1)", True),
    ("interval union", r"(-\infty, 1) \cup (2, \infty)", r"(-\infty,1]\cup(2,\infty)", False),
    ("inequality", r"(3, \infty)", "x > 3", True),
    ("inequality", r"[3, \infty)", "x > 3", False),
    ("inequality", r"[3, \infty)", r"x \ge 3", True),
    ("inequality", r"1 < x \le 2", "(1, 2]", True),
    ("inequality", r"x \ge 3", r"3 \le x", True),
    ("inequality", r"(-\infty,1)\cup(2,\infty)", r"x<1 \text{ or } x>2", True),
    ("inequality", r"(3, \infty)", r"x \in (3, \infty)", True),
    ("matrix", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
     r"\begin{bmatrix}1&2\\3&4\end{bmatrix}", True),
    ("matrix", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
     r"\begin{pmatrix}1&3\\2&4\end{pmatrix}", False),
    ("matrix", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 1 & 2 \end{pmatrix}", False),
    ("assignment", "5", "x = 5", True),
    ("assignment", "x = 5", "5", True),
    ("assignment", "5", "x = 6", False),
    ("assignment", "y = 2x+1", "2x+1", True),
    ("assignment", "x = 2", "x = -2", False),
    ("equation", "2x + 4y = 6", "x + 2y = 3", True),
    ("equation", "y = 2x + 1", "2x - y + 1 = 0", True),
    ("equation", "y = 2x + 1", "y = 2x - 1", False),
    ("equation", "2x+4=0", "x=-2", True),
    ("equation", "x + y = 1", "x + z = 1", False),
    ("expression", "(x+1)^2", "x^2 + 2x + 1", True),
    ("expression", "(x+1)^2", "x^2 + 1", False),
    ("expression", "x^2-1", "(x-1)(x+1)", True),
    ("expression", r"\frac{x+1}{x}", r"1+\frac{1}{x}", True),
    ("expression", "1", r"\sin^2 x + \cos^2 x", True),
    ("expression", "x^2", "X^2", False),  # case matters
    ("units", "12", r"12 \text{ cm}", True),
    ("units", "12", r"12\text{ cm}^2", True),
    ("units", "5", r"5 \text{ dollars}", True),
    ("units", "72", "72 dollars", True),
    ("units", "12", r"13 \text{ cm}", False),
    ("degrees", "30", r"30^\circ", True),
    ("degrees", r"30^{\circ}", "30", True),
    ("degrees", "30", r"60^{\circ}", False),
    ("percent", "10", r"10\%", True),
    ("currency", "18", r"\$18.00", True),
    ("currency", r"\$1,000", "1000", True),
    ("text", r"\text{Monday}", r"\text{Monday}", True),
    ("text", r"\text{Monday}", "Monday", True),
    ("text", r"\text{Monday}", r"\text{Tuesday}", False),
    ("choice", "C", r"\text{(C)}", True),
    ("choice", r"\text{(C)}", "D", False),
    ("infinity", r"\infty", r"\infty", True),
    ("infinity", r"\infty", r"-\infty", False),
]


@pytest.mark.parametrize("rule, gold, answer, expected", EQUIV, ids=[f"{r}:{a}" for r, _, a, _ in EQUIV])
def test_equivalence(rule: str, gold: str, answer: str, expected: bool) -> None:
    correct, reason, detail = check_answer(gold, answer)
    assert correct is expected, (rule, gold, answer, reason, detail)
    assert reason == ("ok" if expected else "wrong")


EXACT = [
    # exact vs exact: no rounding anywhere
    (r"\frac{1}{2004!}", r"\frac{1}{2006!}", False),
    (r"\frac{1}{2004!}", r"\frac{1}{2004!}", True),
    ("1e-7", "2e-7", False),
    ("1e-7", "0.0000001", True),
    ("0.0000001", r"10^{-7}", True),
    (r"2\times 10^{-7}", "2e-7", True),
    ("1000000", "1000050", False),
    (r"10^{100}", r"10^{100}+1", False),
    (r"2^{100000}", r"2^{100000}+1", False),
    (r"10^{25}", r"\sqrt{10^{50}+1}", False),
    ("1", r"1+\frac{1}{10^{5000}}", False),
    ("0", "0.0000001", False),
    ("1", r"(1+\sqrt{2})^{2} - 2\sqrt{2} - 2", True),
    # decimal approximations of non-terminating values: relative tolerance 1e-6
    (r"\frac{1}{3}", "0.333", False),
    (r"\frac{1}{3}", "0.3333333", True),
    (r"\sqrt{2}", "1.41421356", True),
    (r"\frac{\pi}{4}", "0.785398163", True),
    (r"\frac{\pi}{4}", "0.7854", False),
    (r"\pi", "3.14", False),  # no pi ~ 3.14 fallback
    (r"\pi", "3.1416", False),  # 2.3e-6 relative
    (r"\pi", "3.14159", True),  # 8.4e-7 relative
    # a terminating exact value is never approximated
    (r"\frac{1}{8}", "0.1250001", False),
    ("0.333", r"\frac{1}{3}", False),
    # no percentage fallbacks
    ("10", "0.1", False),
    ("0.25", r"25\%", False),
    ("25", "0.25", False),
]


@pytest.mark.parametrize("gold, answer, expected", EXACT)
def test_exactness_and_tolerance(gold: str, answer: str, expected: bool) -> None:
    correct, reason, detail = check_answer(gold, answer)
    assert correct is expected, (gold, answer, reason, detail)


def test_unparseable_gold_and_answer() -> None:
    assert check_answer(r"\frac{", "1")[:2] == (None, "unparseable gold")
    assert check_answer("1", r"\frac{")[:2] == (False, "unparseable answer")
    assert check_answer("1", "(1,")[:2] == (False, "unparseable answer")
    # the same string is equal even when sympy can't read it
    assert check_answer(r"\frac{", r"\frac{")[:2] == (True, "ok")


def test_size_prescreen_in_process() -> None:
    for big in (r"9^{9^{9^{9}}}", r"10000000!", r"2^{2^{16}}!", r"\binom{10^{8}}{5 \cdot 10^{7}}"):
        correct, reason, _ = check_answer("3", big)
        assert (correct, reason) == (False, "too large"), big
    for big in ("9⁹⁹⁹⁹⁹⁹⁹", "9⁹⁹⁹⁹⁹⁹"):  # superscripts are powers too
        assert check_answer("3", big)[:2] == (False, "too large"), big
    assert too_large_text("9⁹⁹⁹⁹⁹⁹⁹", 1000) and not too_large_text("2³+5²", 1000)


def test_gold_parsed_once_per_process() -> None:
    _parse_gold.cache_clear()
    for ans in ("1/3", "0.5", "2"):
        check_answer(r"\frac{1}{3} + 0", ans)
    info = _parse_gold.cache_info()
    assert info.misses == 1 and info.hits == 2


# ---------------------------------------------------------------------------- the verifier


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(workers=2, timeout=2.0) as v:
        yield v


def test_registry_creates_math_verifier() -> None:
    v = registry.create("math", workers=1, timeout=3.0)
    try:
        assert isinstance(v, MathVerifier) and v.timeout == 3.0 and v.name == "math"
    finally:
        v.close()


def test_verdict_reasons(verifier: MathVerifier) -> None:
    recs = [
        {"completion": r"\boxed{3}", "answer": "3"},
        {"completion": r"\boxed{4}", "answer": "3"},
        {"completion": "no idea", "answer": "3"},
        {"completion": r"\boxed{3} \boxed{4}", "answer": "3"},
        {"completion": r"\boxed{3}", "answer": None},
        {"completion": r"\boxed{3}"},
        {"completion": r"\boxed{3}", "answer": r"\frac{"},
        {"completion": r"\boxed{\frac{}", "answer": "3"},
        {"completion": r"\boxed{(1,}", "answer": "3"},
        {"completion": r"\boxed{9^{9^{9^{9}}}}", "answer": "3"},
        {"completion": r"\boxed{10000000!}", "answer": "3"},
        {"completion": r"\boxed{" + "1" * 100_000 + "}", "answer": "3"},
    ]
    got = [(v.reward, v.correct, v.reason) for v in verifier.score(recs)]
    assert got == [
        (1.0, True, "ok"),
        (0.0, False, "wrong"),
        (0.0, False, "no answer"),
        (0.0, False, "ambiguous"),
        (0.0, None, "unparseable gold"),
        (0.0, None, "unparseable gold"),
        (0.0, None, "unparseable gold"),
        (0.0, False, "no answer"),  # "\boxed{\frac{}" never closes
        (0.0, False, "unparseable answer"),
        (0.0, False, "too large"),
        (0.0, False, "too large"),
        (0.0, False, "too large"),
    ]


def test_timeout_kills_the_check_and_the_batch_goes_on(verifier: MathVerifier) -> None:
    # sin(10^90000) needs ~90000-digit argument reduction: seconds of pure C/mpmath work,
    # which no signal could interrupt; the worker is killed at the 2 s deadline.
    before = verifier.pool.respawned
    recs = [
        {"completion": r"\boxed{\sin(10^{90000})}", "answer": "1"},
        {"completion": r"\boxed{2}", "answer": "2"},
    ]
    out = list(verifier.score(recs))
    assert [(v.correct, v.reason) for v in out] == [(False, "timeout"), (True, "ok")]
    assert "killed after 2s" in out[0].detail["error"]
    assert verifier.pool.respawned == before + 1
    assert verifier.score_one(r"\boxed{5}", "5").reason == "ok"  # replacement works


def test_worker_killed_mid_batch_is_replaced(verifier: MathVerifier) -> None:
    pool = verifier.pool
    killed: list[int] = []

    def killer() -> None:
        for _ in range(1000):
            running = pool.running()
            if 0 in running:
                time.sleep(0.1)
                os.kill(running[0], signal.SIGKILL)
                killed.append(running[0])
                return
            time.sleep(0.005)

    recs = [{"completion": r"\boxed{\sin(10^{90000})}", "answer": "1"}]
    recs += [{"completion": rf"\boxed{{{i}}}", "answer": str(i % 3)} for i in range(20)]
    t = threading.Thread(target=killer)
    t.start()
    out = list(verifier.score(recs))
    t.join()
    assert killed
    assert (out[0].correct, out[0].reason) == (False, "worker crashed")
    assert [v.correct for v in out[1:]] == [i % 3 == i for i in range(20)]
    assert killed[0] not in pool.pids() and len(pool.pids()) == 2


def test_memory_cap_in_workers_and_memory_errors_reported(verifier: MathVerifier) -> None:
    infos = verifier.pool.map(worker_info, [("torch",)] * 4)
    assert {i.value["rlimit_as"] - i.value["vm_at_cap"] for i in infos} == {1024 * 1024 * 1024}
    v = verifier._finish(TaskResult("error", error="MemoryError"), ("1", "2", 1e-6, 10))
    assert (v.correct, v.reason) == (False, "too large")


def test_workers_do_not_inherit_torch_and_work_from_a_thread() -> None:
    import torch  # noqa: F401 - the trainer process has torch loaded

    out: list[list[Verdict]] = []
    with MathVerifier(workers=1, timeout=5.0) as v:
        th = threading.Thread(
            target=lambda: out.append(list(v.score([{"completion": r"\boxed{0.5}", "answer": "1/2"}])))
        )
        th.start()
        th.join(60)
        info = v.pool.map(worker_info, [("torch",)])[0].value
    assert out and out[0][0].reason == "ok"
    assert info["imported"] == {"torch": False}


def test_batch_of_200_mixed_records_in_order(verifier: MathVerifier) -> None:
    kinds = [
        (lambda i: rf"\boxed{{{i}}}", lambda i: str(i), True, "ok"),
        (lambda i: rf"\boxed{{\frac{{{2 * i}}}{{2}}}}", lambda i: str(i), True, "ok"),
        (lambda i: rf"#### {i + 1}", lambda i: str(i), False, "wrong"),
        (lambda i: "no answer here", lambda i: str(i), False, "no answer"),
        (lambda i: rf"<answer>({i}, {i + 1})</answer>", lambda i: f"({i},{i + 1})", True, "ok"),
        (lambda i: rf"\boxed{{{i}}} \boxed{{{i + 1}}}", lambda i: str(i), False, "ambiguous"),
        (lambda i: rf"\boxed{{x = {i}}}", lambda i: str(i), True, "ok"),
        (lambda i: rf"\boxed{{{i}}}", lambda i: None, None, "unparseable gold"),
    ]
    recs, want = [], []
    for i in range(200):
        comp, gold, correct, reason = kinds[i % len(kinds)]
        recs.append({"completion": comp(i), "answer": gold(i), "id": i})
        want.append((correct, reason))
    out = list(verifier.score(iter(recs)))  # any iterable, consumed lazily
    assert [(v.correct, v.reason) for v in out] == want
    assert [v.reward for v in out] == [1.0 if c else 0.0 for c, _ in want]


def test_verify_math_convenience() -> None:
    v = verify_math(r"The answer is \boxed{\frac{\sqrt{3}}{2}}.", r"\frac{\sqrt3}{2}", timeout=10)
    assert (v.reward, v.correct, v.reason) == (1.0, True, "ok")


def test_gold_given_as_a_full_solution_uses_its_box(verifier: MathVerifier) -> None:
    recs = [
        {"completion": r"\boxed{\frac{1}{2}}", "answer": r"Thus $x = \boxed{0.5}$."},
        {"completion": r"\boxed{2}", "answer": r"Thus $x = \boxed{0.5}$."},
        {"completion": None, "answer": "1"},
        {"completion": r"\boxed{42}", "answer": 42},  # a non-string gold is read as text
    ]
    got = [(v.correct, v.reason) for v in verifier.score(recs)]
    assert got == [(True, "ok"), (False, "wrong"), (False, "no answer"), (True, "ok")]


def test_list_words() -> None:
    assert check_answer("1, 2, 3", "1, 2, and 3")[:2] == (True, "ok")
    assert check_answer("1, 2", r"x = 1 \text{ or } x = 2")[:2] == (True, "ok")


# ---------------------------------------------------------------------------- holes found by an
# outside run of Math-Verify's test suite (each case paid, or was skipped, before the fix)


@pytest.mark.parametrize(
    "gold, answer, expected",
    [
        # division by zero / indeterminate forms: undefined, equal to nothing
        ("6", r"\frac{1}{0}", (False, "wrong")),
        ("0", r"\frac{0}{0}", (False, "wrong")),
        ("x", r"\frac{x}{0}", (False, "wrong")),
        (r"\frac{7}{0}", r"\frac{1}{0}", (None, "unparseable gold")),
        (r"\frac{7}{0}", r"\frac{7}{0}", (None, "unparseable gold")),  # not even the same text
        # h:mm is a time of day, compared as one
        ("3:00", "5:00", (False, "wrong")),
        ("12:00", "1:00", (False, "wrong")),
        ("4:10", "2:05", (False, "wrong")),
        ("7:45", "07:45", (True, "ok")),
        ("7:45", "7:45:00", (False, "wrong")),  # h:mm:ss is another reading
        ("3:00", "3", (False, "wrong")),
        # ... and against a number or fraction it is the ratio it also spells
        ("9:16", r"\frac{9}{16}", (True, "ok")),
        ("3:4", r"\frac{3}{4}", (True, "ok")),
        (r"\infty", r"\infty", (True, "ok")),  # +-infinity stay values (limits, interval ends)
    ],
)
def test_undefined_values_and_times(gold: str, answer: str, expected: tuple) -> None:
    correct, reason, detail = check_answer(gold, answer)
    assert (correct, reason) == expected, detail
    if "0}" in answer and expected[1] == "wrong":
        assert "undefined" in detail["error"]
    if expected[1] == "unparseable gold":
        assert "undefined" in detail["error"]


@pytest.mark.parametrize(
    "gold, answer, expected",
    [
        ("25000", r"25,\!000", True),  # MATH's separator, either side
        (r"25,\!000", "25000", True),
        (r"1,\!234,\!567", r"1234567", True),
        (r"11,\! 222,\! 333", "11222333", True),  # with a space after \!
        (r"\$4,\!050.75", "4050.75", True),
        (r"(2,\!500, 3)", "(2500, 3)", True),  # one number inside a tuple too
        ("1{,}250{,}000", "1250000", True),
        (r"25,\!000", "25, 000", False),  # a plain comma and a space: a list
        ("28", "28 pct", True),  # % and its words are units, never /100
        ("28", r"28 \text{ percentage}", True),
        ("28", "28 percentage", True),
        ("0.28", "28 pct", False),
    ],
)
def test_digit_groups_and_percent_words(gold: str, answer: str, expected: bool) -> None:
    correct, reason, detail = check_answer(gold, answer)
    assert correct is expected, (reason, detail)


@pytest.mark.parametrize(
    "gold, answer, expected",
    [
        ("(a,b)=(5,1)", "(5,1)", True),  # a tuple of names on the left
        ("(a,b,c)=(5,1,2)", "(5, 1, 2)", True),
        ("(a,b)=(5,1)", "(1,5)", False),
        ("(1;-3;4)", "(1,-3,4)", True),  # ; separates tuple items
        ("(1;-3;4),(0;0;2)", "(0,0,2),(1,-3,4)", True),
        ("(1;-3;4)", "(1,4,-3)", False),
        ("(5,9)or(9,5)", "(9,5), (5,9)", True),  # "or" without spaces
        ("g(x)=3orG(x)=-3", r"g(x)=3 \text{ or } G(x)=-3", True),
        ("PQ=7", "7", True),  # a label on the left is dropped when the right side is a value
        ("|PQ|=2", "2", True),
        ("A_1:A_2=13:29", "13:29", True),
        (r"\frac{PM}{MQ}=\frac{2}{\sqrt{5}}", r"\frac{2\sqrt5}{5}", True),
        ("PQ=7", "8", False),
        ("2x+y=7", "7", False),  # an equation, not a label: x and y are unknowns
        ("PQ=x+1", "x+1", False),  # the right side is not a value: PQ = x + 1 is an equation
        (r"\begin{pmatrix}2 & 0 \\ 1 & 5\end{pmatrix}",
         r"\left[\begin{array}{cc}2 & 0 \\ 1 & 5\end{array}\right]", True),
        (r"\begin{pmatrix}2 & 0 \\ 1 & 5\end{pmatrix}",
         r"\left[\begin{array}{cc}2 & 0 \\ 1 & 6\end{array}\right]", False),
        ("y != 4", r"y \neq 4", True),  # not "y factorial equals 4"
        ("y!=4", r"y \ne 4", True),
        ("y != 4", r"y \neq 5", False),
        ("5!=120", "120", False),  # after a digit, "!" stays a factorial: the equation 120 = 120
    ],
)
def test_answers_that_were_not_read(gold: str, answer: str, expected: bool) -> None:
    correct, reason, detail = check_answer(gold, answer)
    assert correct is expected, (reason, detail)
    assert reason == ("ok" if expected else "wrong"), detail


def test_sum_recurrence_gold_is_read_with_indexed_terms() -> None:
    gold = r"G_n = \sum_{j=0}^{n-1} G_j G_{n-1-j}"
    # before: unparseable gold, "an inequality in 3 variables" (the = of j=0 was taken for one)
    assert check_answer(gold, r"G_n = \sum_{j=0}^{n-1} G_{n-1-j} G_j")[:2] == (True, "ok")
    assert check_answer(gold, r"G_n = \sum_{i=0}^{n-1} G_i G_{n-1-i}")[:2] == (True, "ok")
    assert check_answer(gold, r"G_n = \sum_{j=0}^{n-2} G_j G_{n-2-j}")[:2] == (False, "wrong")
    # read as constants, the terms would make the sum n G_j G_{n-1-j}
    assert check_answer(gold, r"G_n = n G_j G_{n-1-j}")[:2] == (False, "wrong")
    assert check_answer(r"\sum_{k=1}^{n} k", r"\frac{n(n+1)}{2}")[:2] == (True, "ok")


def test_gold_answer_of_a_worked_solution() -> None:
    gsm8k = "She sold 48/2 = <<48/2=24>>24 clips in May.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"
    assert gold_answer(gsm8k) == ("72", None)
    assert gold_answer(r"Adding, the total is $\boxed{\frac{3}{4}}$.") == (r"\frac{3}{4}", None)
    assert gold_answer("42") == ("42", None)  # not a solution: the answer itself
    assert gold_answer(r"\boxed{5} and again \boxed{5}") == ("5", None)
    answer, why = gold_answer(r"\boxed{1}\boxed{2}")
    assert answer is None and "2 different boxed answers" in (why or "")
    assert gold_answer("Work.\n####") == (None, "the gold's final answer (gsm8k) is empty")


def test_worked_solution_golds_are_graded_by_their_final_answer(verifier: MathVerifier) -> None:
    gsm8k = "Natalia sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"
    math_solution = (
        r"The sum is $10^4 = 10,\!000$, and half of it is $\boxed{5,\!000}$ dollars."
    )
    recs = [
        {"completion": r"... so \boxed{72}", "answer": gsm8k},
        {"completion": "<answer>73</answer>", "answer": gsm8k},
        {"completion": "#### 72", "answer": gsm8k},
        {"completion": r"\boxed{5000}", "answer": math_solution},
        {"completion": r"\boxed{10000}", "answer": math_solution},
        # several different boxes in a gold: never summed (1 + 2 = 3 paid before), not judged
        {"completion": r"\boxed{3}", "answer": r"\boxed{1}\boxed{2}"},
        {"completion": r"\boxed{1, 2}", "answer": r"\boxed{1}\boxed{2}"},
    ]
    out = list(verifier.score(recs))
    assert [(v.correct, v.reason) for v in out] == [
        (True, "ok"),
        (False, "wrong"),
        (True, "ok"),
        (True, "ok"),
        (False, "wrong"),
        (None, "unparseable gold"),
        (None, "unparseable gold"),
    ]
    assert "2 different boxed answers" in out[-1].detail["error"]


def test_math_reward_on_gsm8k_as_published() -> None:
    from reasoner.verifiers.rewards import math_accuracy_reward

    solution = "Each box holds 6, so 4 boxes hold 4*6 = <<4*6=24>>24.\nPlus 22 more: 46.\n#### 46"
    out = math_accuracy_reward(
        ["p"] * 3,
        [r"... so the total is \boxed{46}", "#### 47", "I think it's 46"],
        answer=[solution] * 3,
    )
    assert out == [1.0, 0.0, 0.0]  # judged (was None: every sample "unparseable gold")


def test_order_kept_when_the_pool_reads_no_task_ahead() -> None:
    """A pool that reads its next task only when asked for a result (so verdicts made while it
    reads land in front of that task's result) still gives every record its own verdict."""

    class OneAtATime:
        def imap(self, fn, tasks):  # the shape of WorkerPool.imap
            for t in tasks:
                yield TaskResult("ok", value=fn(*t))

        def close(self) -> None:
            pass

    v = MathVerifier(workers=1)
    v._pool = OneAtATime()  # type: ignore[assignment]
    recs = [
        {"completion": r"\boxed{1}", "answer": "1"},
        {"completion": "nothing", "answer": "2"},
        {"completion": r"\boxed{3}", "answer": "3"},
        {"completion": r"\boxed{4}", "answer": None},
        {"completion": r"\boxed{5} \boxed{6}", "answer": "5"},
        {"completion": r"\boxed{7}", "answer": "8"},
    ]
    got = [(x.correct, x.reason) for x in v.score(recs)]
    assert got == [
        (True, "ok"), (False, "no answer"), (True, "ok"), (None, "unparseable gold"),
        (False, "ambiguous"), (False, "wrong"),
    ]
