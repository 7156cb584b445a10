"""Throughput of the sandboxed code verifier against plain, unsandboxed subprocesses.

    python benchmarks/code_sandbox.py [--programs 200] [--workers N [N ...]]

Workloads (every program is correct, so every reward must be 1.0):
  asserts: N MBPP-style programs with 3 assert lines each; one sandbox per program.
  stdio:   N/2 programs with 2 stdin/stdout tests each; one sandbox per program, each test a
           fresh interpreter process inside it.
Baseline: the same tests with one plain `python -I -S` subprocess per test, no sandbox, on a
thread pool of the same size (what a naive "exec the asserts" verifier costs). Each workload
is measured at several pool sizes: a sandboxed run mostly waits on the kernel (namespace and
mount setup/teardown), so more threads than CPUs pays off.

Prints a table and writes benchmarks/results/code_sandbox.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reasoner.verifiers.code import CodeVerifier

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def assert_records(n: int) -> list[dict]:
    recs = []
    for i in range(n):
        k, c = i % 7 + 2, i % 5
        code = f"def f(x):\n    return [x * {k} + {c}, str(x)]\n"
        tests = [f"assert f({x}) == [{x * k + c}, '{x}']" for x in (1, 2, i)]
        recs.append({"completion": f"```python\n{code}```", "test_list": tests})
    return recs


def stdio_records(n: int) -> list[dict]:
    recs = []
    for i in range(n):
        code = f"a, b = map(int, input().split())\nprint(a * b + {i})\n"
        tests = [{"input": f"{a} {a + 1}\n", "output": f"{a * (a + 1) + i}\n"} for a in (3, i)]
        recs.append({"completion": f"```python\n{code}```", "tests": tests})
    return recs


def plain_assert(rec: dict, python: str) -> bool:
    code = rec["completion"].split("```python\n")[1].split("```")[0]
    ok = True
    for t in rec["test_list"]:
        r = subprocess.run([python, "-I", "-S", "-c", code + t], capture_output=True, timeout=30)
        ok &= r.returncode == 0
    return ok


def plain_stdio(rec: dict, python: str) -> bool:
    code = rec["completion"].split("```python\n")[1].split("```")[0]
    ok = True
    for t in rec["tests"]:
        r = subprocess.run(
            [python, "-I", "-S", "-c", code], input=t["input"].encode(), capture_output=True
        )
        ok &= r.stdout.decode().split() == t["output"].split()
    return ok


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def versions(python: str) -> dict:
    def cmd(*a: str) -> str:
        try:
            return subprocess.run(a, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return "unknown"

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "device": f"{cpu}, {os.cpu_count()} CPUs",
        "kernel": platform.release(),
        "python_host": platform.python_version(),
        "python_sandbox": cmd(python, "-c", "import platform; print(platform.python_version())"),
        "bwrap": cmd("bwrap", "--version"),
        "git_commit": cmd("git", "rev-parse", "HEAD"),
        "load_average_before": os.getloadavg()[0],
    }


def main() -> None:
    cpus = os.cpu_count() or 1
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[cpus, 4 * cpus, 8 * cpus],
        help="thread-pool sizes to measure (default: CPU count x 1, 4, 8)",
    )
    args = ap.parse_args()
    n = args.programs
    recs_a, recs_s = assert_records(n), stdio_records(n // 2)
    n_tests_a = sum(len(r["test_list"]) for r in recs_a)
    n_tests_s = sum(len(r["tests"]) for r in recs_s)
    rows = []  # (workload, workers, runs, tests, seconds)
    info: dict = {}
    for w in args.workers:
        with CodeVerifier(workers=w, timeout=5.0) as v:
            python = v.sandbox.python
            info = info or versions(python)
            list(v.score(assert_records(2 * w)))  # warm-up (page cache, thread pool)
            va, ta = timed(lambda v=v: list(v.score(recs_a)))
            vs, ts = timed(lambda v=v: list(v.score(recs_s)))
        bad = [x for x in va + vs if x.reward != 1.0]
        assert not bad, bad[:3]
        rows.append(("sandbox asserts (1 bwrap/program)", w, len(recs_a), n_tests_a, ta))
        rows.append(("sandbox stdio (1 bwrap/program)", w, len(recs_s), n_tests_s, ts))
        with ThreadPoolExecutor(w) as pool:
            pyx = [python] * len(recs_a)
            pa, tpa = timed(lambda p=pool, x=pyx: list(p.map(plain_assert, recs_a, x)))
            ps, tps = timed(lambda p=pool, x=pyx: list(p.map(plain_stdio, recs_s, x)))
        assert all(pa) and all(ps)
        rows.append(("plain asserts (1 python/test)", w, n_tests_a, n_tests_a, tpa))
        rows.append(("plain stdio (1 python/test)", w, n_tests_s, n_tests_s, tps))

    table = [
        {
            "workload": name,
            "workers": w,
            "runs": runs,
            "tests": tests,
            "seconds": round(sec, 3),
            "runs_per_s": round(runs / sec, 1),
            "tests_per_s": round(tests / sec, 1),
        }
        for name, w, runs, tests, sec in rows
    ]
    header = (
        f"{'workload':34} {'workers':>7} {'runs':>5} {'tests':>5} {'sec':>7} "
        f"{'runs/s':>7} {'tests/s':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in table:
        lines.append(
            f"{r['workload']:34} {r['workers']:>7} {r['runs']:>5} {r['tests']:>5} "
            f"{r['seconds']:>7.2f} {r['runs_per_s']:>7.1f} {r['tests_per_s']:>7.1f}"
        )
    print("\n".join(lines))
    info["load_average_after"] = os.getloadavg()[0]
    result = {"programs": n, **info, "results": table}
    for k, val in info.items():
        print(f"{k}: {val}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "code_sandbox.json").write_text(json.dumps(result, indent=2) + "\n")
    workers = " ".join(map(str, args.workers))
    md = [
        "# Code sandbox throughput",
        "",
        f"Command: `python benchmarks/code_sandbox.py --programs {n} --workers {workers}`",
        "",
        *(f"- {k}: {val}" for k, val in info.items()),
        "",
        "| workload | workers | runs | tests | seconds | runs/s | tests/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['workload']} | {r['workers']} | {r['runs']} | {r['tests']} | {r['seconds']} | "
            f"{r['runs_per_s']} | {r['tests_per_s']} |"
            for r in table
        ),
        "",
    ]
    (RESULTS / "code_sandbox.md").write_text("\n".join(md))
    print(f"wrote {RESULTS / 'code_sandbox.json'} and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
