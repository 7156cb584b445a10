"""Throughput of the sandboxed code verifier against plain, unsandboxed subprocesses.

    python benchmarks/code_sandbox.py [--programs 200] [--workers N [N ...]] [--out-dir DIR]

Workloads (every program is correct, so every reward must be 1.0):
  asserts: N MBPP-style programs with 3 assert lines each; one sandbox per program.
  stdio:   N/2 programs with 2 stdin/stdout tests each; one sandbox per program, each test a
           fresh interpreter process inside it.
Baseline: the same tests with one plain `python -I -S` subprocess per test, no sandbox, on a
thread pool of the same size (what a naive "exec the asserts" verifier costs). Each workload
is measured at several pool sizes: a sandboxed run mostly waits on the kernel (namespace and
mount setup/teardown), so more threads than CPUs pays off.

Prints a table and writes code_sandbox.json and .md to --out-dir (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reasoner.verifiers.code import CodeVerifier

if __package__ in (None, ""):  # run as `python benchmarks/<name>.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, cpu, write_results  # noqa: E402


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


def sandbox_info(python: str) -> dict:
    """What this benchmark records beyond benchmarks.common: the sandbox's tools."""

    def cmd(*a: str) -> str:
        try:
            return subprocess.run(a, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "unknown"

    return {
        "python_sandbox": cmd(python, "-c", "import platform; print(platform.python_version())"),
        "bwrap": cmd("bwrap", "--version"),
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
    ap.add_argument("--out-dir", type=Path, default=RESULTS, help="default: %(default)s")
    args = ap.parse_args()
    n = args.programs
    load_before = os.getloadavg()[0]
    recs_a, recs_s = assert_records(n), stdio_records(n // 2)
    n_tests_a = sum(len(r["test_list"]) for r in recs_a)
    n_tests_s = sum(len(r["tests"]) for r in recs_s)
    rows = []  # (workload, workers, runs, tests, seconds)
    info: dict = {}
    for w in args.workers:
        with CodeVerifier(workers=w, timeout=5.0) as v:
            python = v.sandbox.python
            info = info or sandbox_info(python)
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
    write_results(
        "code_sandbox",
        table,
        extra={
            "programs": n,
            **info,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
        },
        out_dir=args.out_dir,
        title="Code sandbox throughput",
        device_name=cpu(),
    )


if __name__ == "__main__":
    main()
