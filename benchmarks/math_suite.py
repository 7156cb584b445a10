"""Math verifier suite: correctness on benchmarks/math_cases.jsonl (ours must be right on every
case), a side-by-side with Math-Verify (``math_verify.parse`` / ``verify``) on the same cases,
throughput (checks per second: ours with its worker pool vs Math-Verify in one process) and
worker start-up costs.

    python benchmarks/math_suite.py [--workers 2] [--reps 20] [--skip-startup] [--out-dir DIR]

Writes math_suite.json and .md to --out-dir (default benchmarks/results). Not part of the test
run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/<name>.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, cpu, write_results  # noqa: E402

CASES = ROOT / "benchmarks" / "math_cases.jsonl"
SLOW_RULES = {"timeout", "too-large"}  # left out of the throughput runs (see the notes)


def load_cases() -> list[dict[str, Any]]:
    cases = []
    for n, line in enumerate(CASES.read_text().splitlines(), 1):
        if line.strip():
            try:
                c = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{CASES}:{n}: bad JSON: {exc}") from None
            for key in ("rule", "gold", "completion", "expected"):
                if key not in c:
                    raise SystemExit(f"{CASES}:{n}: missing field {key!r}")
            cases.append(c)
    return cases


def run_ours(cases: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    from reasoner.verifiers.math import MathVerifier

    with MathVerifier(workers=workers) as v:
        recs = [{"completion": c["completion"], "answer": c["gold"]} for c in cases]
        return [
            {"correct": bool(x.correct), "reason": x.reason} for x in v.score(recs)
        ]


def mv_check(gold: str, completion: str) -> tuple[bool, str]:
    from math_verify import parse, verify

    try:
        g = parse("$" + gold + "$")
        a = parse(completion)
        return bool(verify(g, a)), ""
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"[:120]


def distinct_workload(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n DISTINCT (gold, completion) pairs in the style of MATH/GSM8K answers (so no cache
    can help): integers, fractions, radicals, tuples, polynomials, decimals; half correct."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, k = rng.randint(2, 999), rng.randint(2, 999), rng.randint(2, 9)
        ok = i % 2 == 0
        d = 0 if ok else 1
        kind = i % 6
        if kind == 0:
            gold, ans = str(a * b), f"{a * b + d:,}"
        elif kind == 1:
            gold, ans = rf"\frac{{{a}}}{{{b}}}", rf"\dfrac{{{k * a + d}}}{{{k * b}}}"
        elif kind == 2:
            gold, ans = rf"{k}\sqrt{{{a}}}", rf"\sqrt{{{k * k * a + d}}}"
        elif kind == 3:
            gold, ans = f"({a}, {b})", f"({a}, {b + d})"
        elif kind == 4:
            sign = "+" if a >= b else "-"
            gold, ans = f"(x+{a})(x-{b})", f"x^2 {sign} {abs(a - b)}x - {a * b + d}"
        else:
            gold, ans = rf"\frac{{{a}}}{{8}}", f"{a / 8 + d / 1000:.4f}"
        text = f"Step {i}: we compute carefully. So the answer is $\\boxed{{{ans}}}$."
        out.append({"gold": gold, "completion": text, "expected": ok})
    return out


def throughput_ours(cases: list[dict[str, Any]], workers: int) -> dict[str, float]:
    from reasoner.verifiers.math import MathVerifier

    recs = [{"completion": c["completion"], "answer": c["gold"]} for c in cases]
    warm = [{"completion": r"\boxed{\frac{1}{3}}", "answer": "0.5"}] * (4 * workers)
    with MathVerifier(workers=workers) as v:
        list(v.score(warm))  # workers started, parser loaded; caches hold nothing useful
        t = time.perf_counter()
        out = list(v.score(recs))
        dt = time.perf_counter() - t
    right = sum(bool(o.correct) == c["expected"] for o, c in zip(out, cases))
    return {"checks": len(out), "seconds": dt, "checks_per_s": len(out) / dt, "right": right}


def throughput_mv(cases: list[dict[str, Any]]) -> dict[str, float]:
    mv_check("1", r"\boxed{1}")  # warm
    t = time.perf_counter()
    res = [mv_check(c["gold"], c["completion"])[0] for c in cases]
    dt = time.perf_counter() - t
    right = sum(r == c["expected"] for r, c in zip(res, cases))
    return {"checks": len(res), "seconds": dt, "checks_per_s": len(res) / dt, "right": right}


_STARTUP_SNIPPET = """
import json, sys, time
{pre}
t0 = time.perf_counter()
from reasoner.verifiers.math import MathVerifier
v = MathVerifier(workers={workers}, timeout=2.0, start_method={method!r})
r = list(v.score([{{"completion": r"\\boxed{{1/2}}", "answer": "0.5"}}] * {workers}))
t1 = time.perf_counter()
r2 = list(v.score([{{"completion": r"\\boxed{{\\sin(10^{{90000}})}}", "answer": "1"}},
                   {{"completion": r"\\boxed{{3}}", "answer": "3"}}]))
t2 = time.perf_counter()
list(v.score([{{"completion": r"\\boxed{{3}}", "answer": "3"}}] * 4 * {workers}))
t3 = time.perf_counter()
v.close()
assert r[0].reason == "ok" and r2[0].reason == "timeout" and r2[1].reason == "ok", (r, r2)
print(json.dumps({{"first_batch_s": t1 - t0, "after_kill_next_batch_s": t3 - t2}}))
"""


def startup(workers: int) -> list[dict[str, Any]]:
    """Time from constructing a verifier to its first verdicts, in a fresh interpreter (with
    and without torch imported), per start method; and the cost of a batch right after a
    worker was killed (the replacement's start-up)."""
    out = []
    for method in ("forkserver", "spawn"):
        for torch in (False, True):
            pre = "import torch" if torch else ""
            code = _STARTUP_SNIPPET.format(pre=pre, workers=workers, method=method)
            res = subprocess.run(
                [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
            )
            if res.returncode != 0:
                out.append({"method": method, "torch_imported": torch, "error": res.stderr[-500:]})
                continue
            d = json.loads(res.stdout.strip().splitlines()[-1])
            out.append({"method": method, "torch_imported": torch, **d})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20, help="suite repetitions for throughput")
    ap.add_argument("--distinct", type=int, default=600, help="distinct synthetic records")
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--out-dir", type=Path, default=RESULTS, help="default: %(default)s")
    args = ap.parse_args()

    cases = load_cases()
    ours = run_ours(cases, args.workers)
    mv = [mv_check(c["gold"], c["completion"]) for c in cases]
    rows = []
    for c, o, (m, merr) in zip(cases, ours, mv):
        rows.append({
            "rule": c["rule"], "gold": c["gold"], "completion": c["completion"][:120],
            "expected": c["expected"], "ours": o["correct"], "ours_reason": o["reason"],
            "math_verify": m, "math_verify_error": merr,
        })
    ours_right = sum(r["ours"] == r["expected"] for r in rows)
    mv_right = sum(r["math_verify"] == r["expected"] for r in rows)
    differ = [r for r in rows if r["ours"] != r["math_verify"]]
    rules = sorted({c["rule"] for c in cases})

    fast = [c for c in cases if c["rule"] not in SLOW_RULES]
    distinct = distinct_workload(args.distinct)
    tp = {
        "suite_x_reps": {
            "ours": throughput_ours(fast * args.reps, args.workers),
            "math_verify_one_process": throughput_mv(fast * max(1, args.reps // 2)),
        },
        "distinct": {
            "ours": throughput_ours(distinct, args.workers),
            "ours_1_worker": throughput_ours(distinct, 1),
            "math_verify_one_process": throughput_mv(distinct),
        },
    }
    starts = [] if args.skip_startup else startup(args.workers)

    throughput = {
        "workers": args.workers, "suite_cases_per_rep": len(fast),
        "excluded_rules": sorted(SLOW_RULES), **tp,
    }
    write_results(
        "math_suite",
        throughput_rows(throughput),
        packages=("sympy", "latex2sympy2_extended", "math-verify"),
        extra={
            "cases": len(cases), "rules": rules,
            "ours_correct": ours_right, "math_verify_correct": mv_right,
            "differences": differ,
            "throughput": throughput,
            "startup": starts,
            "case_results": rows,
        },
        notes=render_notes(len(cases), rules, ours_right, mv_right, throughput, starts, differ),
        out_dir=args.out_dir,
        title="Math verifier suite",
        device_name=cpu(),
    )
    if ours_right != len(cases):
        wrong = [r for r in rows if r["ours"] != r["expected"]]
        print(f"OURS WRONG ON {len(wrong)} CASES:", json.dumps(wrong, indent=1))
        raise SystemExit(1)


def throughput_rows(tp: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per (workload, checker) measured by main()."""
    names = {"ours": f"ours (pool, workers={tp['workers']})",
             "math_verify_one_process": "Math-Verify (one process)",
             "ours_1_worker": "ours (pool, workers=1)"}
    out = []
    for wl, label in (("distinct", "distinct synthetic"), ("suite_x_reps", "suite repeated")):
        for key, name in names.items():
            if key in tp[wl]:
                x = tp[wl][key]
                out.append({"workload": label, "checker": name, "checks": x["checks"],
                            "seconds": round(x["seconds"], 3),
                            "checks_per_s": round(x["checks_per_s"], 1), "right": x["right"]})
    return out


def render_notes(n_cases: int, rules: list[str], ours_right: int, mv_right: int,
                 tp: dict[str, Any], starts: list[dict[str, Any]],
                 differences: list[dict[str, Any]]) -> str:
    """The Markdown under the throughput table: what the workloads are, start-up costs and
    the cases where ours and Math-Verify differ."""
    lines = [
        f"Cases: {n_cases} over {len(rules)} rules. Right: ours {ours_right}/{n_cases}, "
        f"Math-Verify {mv_right}/{n_cases}.",
        "",
        f"'distinct synthetic': {tp['distinct']['ours']['checks']} different MATH/GSM8K-style "
        "records (no cache can help). 'suite repeated': the "
        f"{tp['suite_cases_per_rep']} suite cases outside rules "
        f"{', '.join(tp['excluded_rules'])} (those cost a 5 s timeout by design), repeated; "
        "ours then hits its per-worker gold/answer caches (as the G completions of a GRPO "
        "group do). The machine's 2 cores are shared with other jobs: figures are noisy.",
        "",
    ]
    if starts:
        lines += [
            "| start method | torch imported | first batch s | batch after a kill s |",
            "|---|---|---:|---:|",
        ]
        for s in starts:
            if "error" in s:
                lines.append(f"| {s['method']} | {s['torch_imported']} | error | |")
            else:
                lines.append(
                    f"| {s['method']} | {s['torch_imported']} | {s['first_batch_s']:.2f} | "
                    f"{s['after_kill_next_batch_s']:.2f} |"
                )
        lines.append("")
    lines += [
        f"## Where ours and Math-Verify differ ({len(differences)})",
        "",
        "| rule | gold | completion | expected | ours (reason) | Math-Verify |",
        "|---|---|---|---|---|---|",
    ]
    for d in differences:
        comp = d["completion"].replace("|", "\\|").replace("\n", " ")
        gold = d["gold"].replace("|", "\\|")
        lines.append(
            f"| {d['rule']} | `{gold}` | `{comp[:60]}` | {d['expected']} | "
            f"{d['ours']} ({d['ours_reason']}) | {d['math_verify']} |"
        )
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    main()
