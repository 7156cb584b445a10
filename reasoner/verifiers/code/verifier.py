"""The code verifier: records in, verdicts out; each program runs in the sandbox (one bwrap per
program for its assert tests, one per STDIO_BATCH stdio tests), on a thread pool."""

from __future__ import annotations

import marshal
import math
import os
import secrets
import subprocess
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any

from reasoner.verifiers.base import Reason, Verdict
from reasoner.verifiers.code import channel
from reasoner.verifiers.code.asserts import AssertTest, UnsupportedTest, judge, parse_assert
from reasoner.verifiers.code.program import MAX_COMPLETION_CHARS, extract_program
from reasoner.verifiers.sandbox import (
    RunResult,
    Sandbox,
    SandboxConfig,
    SandboxLimits,
    SandboxUnavailable,
)

DEFAULT_TIMEOUT = 5.0  # CPU seconds per test
WALL_FACTOR = 2.0  # a test's wall-clock budget, as a multiple of its CPU budget
STDIO_BATCH = 32  # stdin/stdout tests per sandbox (each still a fresh process inside it)
# file descriptors one run holds in the parent at most: a pipe per stdio test and the channel,
# bwrap's info / block / seccomp pipes, Popen's three, with room to spare
FDS_PER_RUN = 2 * (STDIO_BATCH + 1) + 30
FDS_RESERVE = 256  # for everything else in the process


def fit_open_files(workers: int) -> int:
    """Raise the soft RLIMIT_NOFILE so `workers` concurrent runs fit (the usual soft limit of
    1024 holds about 10: a many-core host's default of 4 workers per CPU failed every run of a
    batch with EMFILE); where the hard limit can't hold them, the workers that fit (at least 1),
    with a warning. Returns the number of workers."""
    import resource
    import warnings

    need = FDS_RESERVE + workers * FDS_PER_RUN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < need:
        fit = max(1, (soft - FDS_RESERVE) // FDS_PER_RUN)
        warnings.warn(f"code verifier: {workers} workers need {need} open files, the limit is "
                      f"{soft}: using {fit} workers (raise it with `ulimit -n`)", stacklevel=3)
        return fit
    return workers


# The `-c` program of every run. It reads the harness as code objects from stdin (8-byte length,
# then marshal of (channel code, harness code), compiled once by the sandbox's own interpreter:
# `compile_harness`), makes the `channel` module, and runs harness.py as __main__; the harness
# then reads its job from stdin. Compiling ~400 lines of source on every run would cost more than
# the rest of the harness's start.
BOOTSTRAP = (
    "import marshal, os, sys\n"
    "def _read(n):\n"
    "    b = b''\n"
    "    while len(b) < n:\n"
    "        c = os.read(0, n - len(b))\n"
    "        if not c:\n"
    "            os._exit(3)\n"
    "        b += c\n"
    "    return b\n"
    "_c, _h = marshal.loads(_read(int.from_bytes(_read(8), 'little')))\n"
    "_m = type(sys)('channel')\n"
    "exec(_c, _m.__dict__)\n"
    "sys.modules['channel'] = _m\n"
    "exec(_h, {'__name__': '__main__', '__builtins__': __builtins__})\n"
)
_COMPILER = (
    "import marshal, sys\n"
    "data = sys.stdin.buffer.read()\n"
    "n = int.from_bytes(data[:8], 'little')\n"
    "ch, h = data[8 : 8 + n].decode(), data[8 + n :].decode()\n"
    "sys.stdout.buffer.write(marshal.dumps("
    "(compile(ch, 'channel.py', 'exec'), compile(h, 'harness.py', 'exec'))))\n"
)


def harness_sources() -> tuple[str, str]:
    """(the sandbox half of channel.py, harness.py): what runs inside the sandbox."""
    harness = (resources.files(__package__) / "harness.py").read_text(encoding="utf-8")
    return channel.sandbox_source(), harness


def compile_harness(python: str) -> bytes:
    """The harness compiled by `python` (the sandbox's interpreter, so the bytecode fits it; run
    unsandboxed on our own source only), framed for BOOTSTRAP."""
    ch, h = (x.encode("utf-8") for x in harness_sources())
    res = subprocess.run(
        [python, "-I", "-S", "-B", "-c", _COMPILER],
        input=len(ch).to_bytes(8, "little") + ch + h,
        capture_output=True,
        timeout=60,
        env={},
    )
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()[-500:]
        raise SandboxUnavailable(f"cannot compile the harness with {python}: {err}")
    return len(res.stdout).to_bytes(8, "little") + res.stdout


def normalize_output(text: str) -> list[str]:
    """Lines with trailing whitespace stripped, `\\r\\n` as `\\n`, trailing empty lines dropped."""
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _job_bytes(job: dict[str, Any]) -> bytes:
    blob = marshal.dumps(job)
    return len(blob).to_bytes(8, "little") + blob


def _rlimits(limits: SandboxLimits, cpu_seconds: float) -> list[tuple[str, int, int]]:
    """Per process: one test's CPU budget (SIGXCPU one second after the per-test timer would
    have fired, SIGKILL a second later), and the memory / file / process caps."""
    cpu = math.ceil(cpu_seconds) + 1
    return [
        ("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes),
        ("RLIMIT_CPU", cpu, cpu + 1),
        ("RLIMIT_FSIZE", limits.file_bytes, limits.file_bytes),
        ("RLIMIT_NOFILE", limits.open_files, limits.open_files),
        ("RLIMIT_NPROC", limits.processes, limits.processes),
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_MSGQUEUE", 0, 0),
    ]


# failed-test statuses that name the record's reason, most telling first (else "wrong")
_REASONS = [
    ("tampered", Reason.TAMPERED),
    ("load error", Reason.LOAD_ERROR),
    ("output limit", Reason.OUTPUT_LIMIT),
    ("timeout", Reason.TIMEOUT),
    ("missing", Reason.NO_RESULT),
    ("killed", Reason.NO_RESULT),
    ("exited", Reason.NO_RESULT),
]
# what the harness reports for a test without a value -> the test's status
_NO_VALUE = {"t": "timeout", "k": "killed", "m": "exited"}


@dataclass
class _Outcome:
    status: str  # "pass", "fail", "timeout", "error:<Name>", "unencodable", "missing", ...
    passed: bool


class CodeVerifier:
    """Scores code completions in the sandbox with a thread pool (one bwrap process per run)."""

    name = "code"

    def __init__(
        self,
        workers: int | None = None,
        timeout: float | None = None,
        all_or_nothing: bool = False,
        python: str | None = None,
        limits: SandboxLimits | None = None,
        cgroups: str = "auto",
    ) -> None:
        # A run mostly waits on the kernel (namespace setup/teardown), not the CPU: measured
        # throughput keeps rising up to ~4-8 threads per CPU (benchmarks/code_sandbox.py).
        self.workers = fit_open_files(workers or 4 * (os.cpu_count() or 1))
        self.timeout = float(timeout) if timeout else DEFAULT_TIMEOUT
        self.wall = WALL_FACTOR * self.timeout
        self.all_or_nothing = all_or_nothing
        self.sandbox = Sandbox(
            SandboxConfig(python=python, limits=limits or SandboxLimits(), cgroups=cgroups)
        )
        try:
            self.harness = compile_harness(self.sandbox.python)
        except BaseException:
            self.sandbox.close()
            raise
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            self.workers, thread_name_prefix="code-verifier"
        )

    # -- protocol ------------------------------------------------------------------------------
    def score(self, records: Iterable[dict[str, Any]]) -> Iterator[Verdict]:
        if self._pool is None:
            raise RuntimeError("CodeVerifier is closed")
        window: deque[Future[Verdict]] = deque()
        for rec in records:
            window.append(self._pool.submit(self.score_one, rec))
            if len(window) >= 4 * self.workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self.sandbox.close()

    def __enter__(self) -> CodeVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one record ----------------------------------------------------------------------------
    def score_one(self, record: dict[str, Any]) -> Verdict:
        completion = record.get("completion")
        if not isinstance(completion, str):
            return Verdict(0.0, None, f"{Reason.BAD_RECORD}: 'completion' must be a string")
        tests, test_list = record.get("tests"), record.get("test_list")
        try:
            stdio = _check_stdio_tests(tests)
            asserts = _check_test_list(test_list)
        except ValueError as e:
            return Verdict(0.0, None, f"{Reason.BAD_RECORD}: {e}")
        if not stdio and not asserts:
            return Verdict(0.0, None, Reason.NO_TESTS.value)
        parsed: list[AssertTest] = []
        for i, line in enumerate(asserts):
            try:
                parsed.append(parse_assert(line))
            except UnsupportedTest as e:
                return Verdict(0.0, None, f"{Reason.UNSUPPORTED_TEST}: test_list[{i}]: {e}")
        total = len(stdio) + len(parsed)
        if len(completion) > MAX_COMPLETION_CHARS:
            return self._verdict(
                [], total, Reason.TOO_LARGE, {"error": f"over {MAX_COMPLETION_CHARS} characters"}
            )
        program = extract_program(completion)
        if program is None:
            return self._verdict([], total, Reason.NO_CODE)
        try:
            compile(program, "<program>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError) as e:
            return self._verdict([], total, Reason.SYNTAX_ERROR, {"error": str(e)[:200]})
        outcomes: list[_Outcome] = []
        if parsed:
            outcomes += self._run_asserts(program, parsed)
        for at in range(0, len(stdio), STDIO_BATCH):
            outcomes += self._run_stdio(program, stdio[at : at + STDIO_BATCH])
        return self._verdict(outcomes, total, None)

    def _verdict(
        self,
        outcomes: list[_Outcome],
        total: int,
        reason: Reason | None,
        extra: dict | None = None,
    ) -> Verdict:
        passed = sum(o.passed for o in outcomes)
        frac = passed / total if total else 0.0
        reward = (1.0 if passed == total else 0.0) if self.all_or_nothing else frac
        if reason is None:
            statuses = {o.status.split(":")[0] for o in outcomes if not o.passed}
            reason = Reason.OK if passed == total else Reason.WRONG
            for status, r in _REASONS:
                if status in statuses:
                    reason = r
                    break
        detail = {"passed": passed, "total": total, "tests": [o.status for o in outcomes]}
        detail.update(extra or {})
        return Verdict(float(reward), passed == total and total > 0, reason.value, detail)

    def _run_harness(self, job: dict[str, Any], wall: float, outputs: int = 0) -> RunResult:
        """Run the harness on `job`. The harness writes "<nonce> start" before any untrusted code
        runs, so a run without it failed in bwrap or the harness (say, no namespace left): that
        is retried once, then raised, never scored as the program's failure."""
        for attempt in range(2):
            res = self.sandbox.run(
                [], self.harness + _job_bytes(job), wall, BOOTSTRAP, channel=True, outputs=outputs
            )
            if res.timed_out or res.channel.startswith(f"{job['nonce']} start\n".encode()):
                return res
            if attempt == 0:
                time.sleep(0.1)
        err = res.stderr.decode("utf-8", "replace").strip()[-500:]
        raise SandboxUnavailable(
            f"the sandbox failed before the program ran (exit status {res.returncode}): {err}"
        )

    def _run_asserts(self, program: str, tests: list[AssertTest]) -> list[_Outcome]:
        n = len(tests)
        nonce = secrets.token_hex(16)
        refs = [[r is not None for r in t.reference] for t in tests]
        references = []  # (test, its reference leaves, the modules they use)
        for i, t in enumerate(tests):
            if any(refs[i]):
                leaves = [src for src, r in zip(t.leaves, refs[i]) if r]
                modules = sorted({m for r in t.reference if r for m in r})
                references.append((i, leaves, modules))
        job = {
            "mode": "asserts",
            "program": program,
            "tests": [
                [src for src, r in zip(t.leaves, ref) if not r] for t, ref in zip(tests, refs)
            ],
            "references": references,
            "timeout": self.timeout,
            "wall": self.wall,
            "nonce": nonce,
            "rlimits": _rlimits(self.sandbox.config.limits, self.timeout),
        }
        n_runs = n + 1 + len(references)
        res = self._run_harness(job, self.wall * n_runs + 1.0)
        ch = channel.parse_channel(res.channel, nonce, n, frozenset(r[0] for r in references))
        if ch.tampered:
            return [_Outcome("tampered", False) for _ in tests]
        if ch.load is not None:
            status = "timeout" if ch.load == "timeout" else f"load error:{ch.load}"
            return [_Outcome(status, False) for _ in tests]
        out: list[_Outcome] = []
        for i, t in enumerate(tests):
            runs = [ch.references.get(i)] if any(refs[i]) else []
            runs.append(ch.results.get(i))
            status = ""
            for r in runs:  # the reference leaves' run, then the program's
                if r is None:
                    status = (
                        "output limit"
                        if res.output_exceeded
                        else "timeout"
                        if res.timed_out
                        else "missing"
                    )
                elif r[0] == "e":
                    status = f"error:{r[1]}"
                elif r[0] != "r":
                    status = _NO_VALUE.get(r[0], "malformed")
                if status:
                    break
            if not status:  # each leaf's outcome, from the run that evaluated it
                ref_values = iter(runs[0][1] if len(runs) == 2 else ())  # type: ignore[index]
                values = iter(runs[-1][1])  # type: ignore[index]
                status = judge(t, [next(ref_values if r else values, ["m"]) for r in refs[i]])
            out.append(_Outcome(status, status == "pass"))
        return out

    def _run_stdio(self, program: str, tests: list[tuple[str, str]]) -> list[_Outcome]:
        """One sandbox for up to STDIO_BATCH tests; each test a fresh process inside it."""
        n = len(tests)
        nonce = secrets.token_hex(16)
        job = {
            "mode": "stdio",
            "program": program,
            "inputs": [inp.encode("utf-8", "surrogatepass") for inp, _ in tests],
            "timeout": self.timeout,
            "wall": self.wall,
            "nonce": nonce,
            "rlimits": _rlimits(self.sandbox.config.limits, self.timeout),
        }
        res = self._run_harness(job, (self.wall + 0.5) * n + 2.0, outputs=n)
        ch = channel.parse_channel(res.channel, nonce, n)
        out: list[_Outcome] = []
        for k, (_, expected) in enumerate(tests):
            r = ch.results.get(k)
            if ch.tampered:
                out.append(_Outcome("tampered", False))
            elif res.outputs_exceeded[k]:
                out.append(_Outcome("output limit", False))
            elif r is None:
                status = "timeout" if res.timed_out else "missing"
                out.append(_Outcome("output limit" if res.output_exceeded else status, False))
            elif r[0] == "t":
                out.append(_Outcome("timeout", False))
            elif r[0] == "e":
                out.append(_Outcome(f"error:{r[1]}", False))
            elif r[0] != "x":
                out.append(_Outcome("malformed", False))
            else:
                got = normalize_output(res.outputs[k].decode("utf-8", "replace"))
                ok = got == normalize_output(expected)
                out.append(_Outcome("pass" if ok else "fail", ok))
        return out


def _check_stdio_tests(tests: Any) -> list[tuple[str, str]]:
    if tests is None:
        return []
    if not isinstance(tests, list):
        raise ValueError("'tests' must be a list of {input, output} objects")
    out = []
    for i, t in enumerate(tests):
        if (
            not isinstance(t, dict)
            or not isinstance(t.get("input"), str)
            or not isinstance(t.get("output"), str)
        ):
            raise ValueError(f"tests[{i}] must be an object with string 'input' and 'output'")
        out.append((t["input"], t["output"]))
    return out


def _check_test_list(test_list: Any) -> list[str]:
    if test_list is None:
        return []
    if not isinstance(test_list, list) or not all(isinstance(t, str) for t in test_list):
        raise ValueError("'test_list' must be a list of assert strings")
    return list(test_list)
