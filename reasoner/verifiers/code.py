"""Code verifier: run the completion's program against unit tests in the bubblewrap sandbox.

Records: ``{"completion": str, "tests": [{"input": str, "output": str}, ...]}`` (stdin/stdout
pairs) and/or ``{"completion": str, "test_list": ["assert f(1) == 2", ...]}`` (MBPP assert lines).

The program is the last fenced block tagged ``python``/``py``/``python3``; when no block is tagged,
the last bare (untagged) block; a block must be closed. None: reward 0, reason "no code".
Reward = passed / total tests (``all_or_nothing``: 1 if all pass else 0); ``correct`` = all passed;
no tests or an assert line we cannot judge: ``correct=None`` (reason says which line).

Pass/fail is decided here, in the trusted parent, never inside the sandbox:

- assert lines are parsed with ``ast`` in the parent. ``assert EXPR == LIT`` (also ``!=``, ``in``,
  ``not in``, ``is None/True/False``, the literal on either side), ``assert math.isclose(EXPR, LIT,
  rel_tol=.., abs_tol=..)``, ``assert EXPR`` and ``assert not EXPR`` are supported. LIT is evaluated in
  the parent by ``ast.literal_eval`` (plus ``set/frozenset/tuple/list/dict/float/int/str/complex`` of a
  literal); it never enters the sandbox. The sandbox runs the program, evaluates only the EXPR side
  of each line, and serializes each value with an encoder that reads containers and scalars through
  the builtin base-type methods (``int.__repr__``, ``list.__getitem__``, ``dict.items``...), so a
  subclass with a forged ``__eq__``/``__repr__``/``__iter__`` cannot lie about its content; objects
  of any other type are "unencodable" and fail. The values come back on a pipe opened before the
  program runs, one line per test tagged with a per-run random nonce; any duplicated, malformed or
  foreign line voids the whole run (reward 0). Comparison: Python ``==`` semantics on the decoded
  plain values (so ``1 == 1.0 == True``, ``[1] != (1,)``, a ``Counter``/``namedtuple`` equals the
  dict/tuple with the same content), except that two floats (or complex parts) are equal when
  ``|a-b| <= max(1e-9 * max(|a|, |b|), 1e-12)``, and NaN equals NaN.
- stdin/stdout tests: one sandbox per program (per STDIO_BATCH tests), each test a fresh
  interpreter process inside it with its own timer and its own stdout, a pipe the parent opened
  and reads (capped). That stdout is compared with the expected output after normalizing both
  the same way: ``\\r\\n`` -> ``\\n``, trailing whitespace stripped from every line, trailing empty
  lines dropped. Every line counts; leading whitespace and inner blank lines are significant.
  Exit status is ignored; a test killed for time or output size fails.

See docs/verifiers-code.md for the sandbox, the limits and the threat model.
"""

from __future__ import annotations

import ast
import math
import os
import re
import secrets
import textwrap
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from reasoner.verifiers.base import Verdict
from reasoner.verifiers.sandbox import (
    RunResult,
    Sandbox,
    SandboxConfig,
    SandboxLimits,
    SandboxUnavailable,
)

DEFAULT_TIMEOUT = 5.0  # seconds per test
STDIO_BATCH = 32  # stdin/stdout tests per sandbox (each still a fresh process inside it)
FLOAT_REL_TOL = 1e-9
FLOAT_ABS_TOL = 1e-12

# ---------------------------------------------------------------------------------------------
# Extracting the program

_FENCE = re.compile(
    r"^[ \t]*```[ \t]*(?P<lang>[A-Za-z0-9_+.-]*)[^\n`]*\n(?P<body>.*?)^[ \t]*```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_PYTHON_TAGS = {"python", "py", "python3"}


def extract_program(completion: str) -> str | None:
    """The last closed ```python (or ```py / ```python3) block; when none is tagged, the last bare
    ``` block; else None. Blocks tagged with another language are never used."""
    tagged: list[str] = []
    bare: list[str] = []
    for m in _FENCE.finditer(completion):
        lang = m.group("lang").lower()
        if lang in _PYTHON_TAGS:
            tagged.append(m.group("body"))
        elif lang == "":
            bare.append(m.group("body"))
    blocks = tagged or bare
    if not blocks:
        return None
    return textwrap.dedent(blocks[-1])


# ---------------------------------------------------------------------------------------------
# Parsing assert lines (in the parent; nothing here executes untrusted code)


class UnsupportedTest(ValueError):
    """An assert line whose expected value can't be computed safely in the parent."""


@dataclass
class AssertTest:
    """One MBPP assert: the sandbox evaluates `expr`; the parent checks `op` against `expected`."""

    expr: str  # source of the expression evaluated in the sandbox
    op: str  # "==", "!=", "in", "not in", "is", "is not", "isclose", "truthy", "falsy"
    expected: Any = None
    rel_tol: float = 1e-9
    abs_tol: float = 0.0


_CONSTRUCTORS: dict[str, Any] = {
    "set": set, "frozenset": frozenset, "tuple": tuple, "list": list, "dict": dict,
    "float": float, "int": int, "str": str, "complex": complex, "bool": bool,
}  # fmt: skip
_MAX_LITERAL_INT = 10**4300


def _literal(node: ast.expr) -> Any:
    """ast.literal_eval, plus `-x` and builtin constructors (set([1, 2]), float('inf')) of literals."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand)
        if isinstance(v, (int, float, complex)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _CONSTRUCTORS
        and not node.keywords
        and len(node.args) <= 1
    ):
        args = [_literal(a) for a in node.args]
        if node.func.id == "int" and args and isinstance(args[0], str) and len(args[0]) > 4300:
            raise UnsupportedTest("int literal too long")
        try:
            return _CONSTRUCTORS[node.func.id](*args)
        except (TypeError, ValueError) as e:
            raise UnsupportedTest(f"bad literal: {e}") from None
    raise UnsupportedTest(f"not a literal: {ast.unparse(node)[:80]}")


def _is_literal(node: ast.expr) -> bool:
    try:
        _literal(node)
        return True
    except UnsupportedTest:
        return False


def _isclose_call(node: ast.expr) -> bool:
    f = node.func if isinstance(node, ast.Call) else None
    return (isinstance(f, ast.Attribute) and f.attr == "isclose") or (
        isinstance(f, ast.Name) and f.id == "isclose"
    )


_OPS = {
    ast.Eq: "==", ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
    ast.IsNot: "is not",
}  # fmt: skip
_SWAPPABLE = {"==", "!="}


def parse_assert(line: str) -> AssertTest:
    """Parse one MBPP assert line. Raises UnsupportedTest for lines we can't judge safely."""
    try:
        tree = ast.parse(line.strip())
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise UnsupportedTest(f"unparseable assert: {e}") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise UnsupportedTest("not a single assert statement")
    test = tree.body[0].test
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and type(test.ops[0]) in _OPS:
        op = _OPS[type(test.ops[0])]
        left, right = test.left, test.comparators[0]
        if not _is_literal(right) and op in _SWAPPABLE and _is_literal(left):
            left, right = right, left
        expected = _literal(right)
        if op in ("is", "is not") and type(expected) not in (type(None), bool):
            raise UnsupportedTest("`is` only against None, True or False")
        return AssertTest(ast.unparse(left), op, expected)
    if isinstance(test, ast.Call) and _isclose_call(test):
        if len(test.args) != 2:
            raise UnsupportedTest("isclose needs two positional arguments")
        a, b = test.args
        if not _is_literal(b) and _is_literal(a):
            a, b = b, a
        t = AssertTest(ast.unparse(a), "isclose", _literal(b), rel_tol=1e-9, abs_tol=0.0)
        for kw in test.keywords:
            if kw.arg not in ("rel_tol", "abs_tol"):
                raise UnsupportedTest(f"isclose keyword {kw.arg!r}")
            v = _literal(kw.value)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise UnsupportedTest(f"isclose {kw.arg} must be a number")
            setattr(t, kw.arg, float(v))
        return t
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return AssertTest(ast.unparse(test.operand), "falsy")
    if isinstance(test, ast.Compare):
        raise UnsupportedTest("chained or unsupported comparison")
    return AssertTest(ast.unparse(test), "truthy")


# ---------------------------------------------------------------------------------------------
# Values: decoding the harness's tagged JSON-like lines and comparing in the parent


class BadValue(ValueError):
    pass


def decode_value(node: Any, depth: int = 0) -> Any:
    """Decode the harness encoding (lists tagged by their first element) to plain Python values."""
    if depth > 200 or not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise BadValue("malformed value")
    tag, args = node[0], node[1:]
    try:
        if tag == "n":
            return None
        if tag == "b":
            return bool(args[0])
        if tag == "i":
            return int(args[0])
        if tag == "f":
            return float(args[0])
        if tag == "c":
            return complex(args[0])
        if tag == "s":
            return bytes.fromhex(args[0]).decode("utf-8", "surrogatepass")
        if tag == "y":
            return bytes.fromhex(args[0])
        items = [decode_value(x, depth + 1) for x in args]
        if tag == "l":
            return items
        if tag == "t":
            return tuple(items)
        if tag == "S":
            return set(items)
        if tag == "F":
            return frozenset(items)
        if tag == "d":
            return dict(zip(items[::2], items[1::2]))
    except (ValueError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise BadValue(f"malformed {tag!r} value: {e}") from None
    raise BadValue(f"unknown tag {tag!r}")


def _floats_close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= max(FLOAT_REL_TOL * max(abs(a), abs(b)), FLOAT_ABS_TOL)


def values_equal(got: Any, exp: Any) -> bool:
    """Python `==` on plain values, with float tolerance (see module docstring)."""
    num = (int, float)
    if isinstance(got, complex) or isinstance(exp, complex):
        if isinstance(got, (*num, complex)) and isinstance(exp, (*num, complex)):
            g, e = complex(got), complex(exp)
            return _floats_close(g.real, e.real) and _floats_close(g.imag, e.imag)
        return False
    if isinstance(got, float) or isinstance(exp, float):
        if isinstance(got, num) and isinstance(exp, num):
            try:
                return _floats_close(float(got), float(exp))
            except OverflowError:
                return got == exp
        return False
    if type(got) in (list, tuple) and type(exp) is type(got):
        return len(got) == len(exp) and all(values_equal(g, e) for g, e in zip(got, exp))
    if type(got) is dict and type(exp) is dict:
        return got.keys() == exp.keys() and all(values_equal(got[k], exp[k]) for k in got)
    return bool(got == exp)


def check_assert(test: AssertTest, got: Any) -> bool:
    op = test.op
    if op == "==":
        return values_equal(got, test.expected)
    if op == "!=":
        return not values_equal(got, test.expected)
    if op in ("in", "not in"):
        try:
            if isinstance(test.expected, (str, bytes)):  # substring, as Python's `in`
                found = type(got) is type(test.expected) and got in test.expected
            else:
                found = any(values_equal(got, e) for e in test.expected)
        except TypeError:
            return False
        return found if op == "in" else not found
    if op == "is":
        return type(got) is type(test.expected) and got == test.expected
    if op == "is not":
        return not (type(got) is type(test.expected) and got == test.expected)
    if op == "isclose":
        if not all(isinstance(v, (int, float)) for v in (got, test.expected)):
            return False
        return math.isclose(got, test.expected, rel_tol=test.rel_tol, abs_tol=test.abs_tol)
    if op == "truthy":
        return bool(got)
    if op == "falsy":
        return not got
    raise AssertionError(op)


def normalize_output(text: str) -> list[str]:
    """Lines with trailing whitespace stripped, `\\r\\n` as `\\n`, trailing empty lines dropped."""
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    return lines


# ---------------------------------------------------------------------------------------------
# The harness: trusted code run first inside the sandbox (python -I -S -B -c HARNESS [fd]).
# It reads its job (marshal, written by the parent) from stdin, sets the rlimits, then runs the
# program. It writes "<nonce> start", then one line per test, then "<nonce> end" to the result fd.
# "asserts" mode: runs the program as module `solution`, then evaluates each expression:
#   "<nonce> <i> v <value>" | "<nonce> <i> e <ExceptionName>" | "<nonce> <i> t" (timeout) |
#   "<nonce> <i> u" (unencodable); or "<nonce> load e <Name>" / "<nonce> load t" if loading failed.
# "stdio" mode: one fresh interpreter per test, stdout = the parent's pipe for that test:
#   "<nonce> <i> x" (exited) | "<nonce> <i> t" (killed at the timeout) | "<nonce> <i> e <Name>".

HARNESS = r"""
import os, sys, marshal, builtins
def _main(_type=type, _issub=issubclass, _len=len, _range=range, _compile=compile, _eval=eval,
          _exec=exec, _write=os.write, _exit=os._exit, _irepr=int.__repr__, _frepr=float.__repr__,
          _crepr=complex.__repr__, _senc=str.encode, _bhex=bytes.hex, _llen=list.__len__,
          _lget=list.__getitem__, _tlen=tuple.__len__, _tget=tuple.__getitem__,
          _ditems=dict.items, _siter=set.__iter__, _fiter=frozenset.__iter__, _join=''.join,
          _BE=BaseException, _isalnum=str.isalnum, _str=str):
    def readn(n):
        parts = []
        while n:
            b = os.read(0, n)
            if not b:
                _exit(3)
            parts.append(b)
            n -= _len(b)
        return b''.join(parts)
    job = marshal.loads(readn(int.from_bytes(readn(8), 'little')))
    import resource
    for name, soft, hard in job['rlimits']:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    import _signal as signal  # the C module: `signal` would import enum & co (~4 ms)
    out, nonce, per = int(sys.argv[1]), job['nonce'], job['timeout']
    mode, src, exprs, inputs = job['mode'], job['program'], job.get('exprs'), job.get('inputs')
    del job
    fd = os.open('/dev/null', os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    class _Timeout(_BE):
        pass
    def _alarm(*a):
        raise _Timeout()
    def emit(s):
        b = _senc(nonce + ' ' + s + '\n', 'ascii')
        while b:
            b = b[_write(out, b):]
    def safe_name(e):
        n = _type(e).__name__
        return _join([c if _isalnum(c) else '_' for c in n[:60]]) if _type(n) is str else '_'
    class _Unenc(Exception):
        pass
    budget = [200000]
    def enc(v, depth):
        budget[0] -= 1
        if depth > 100 or budget[0] < 0:
            raise _Unenc()
        t = _type(v)
        if v is None:
            return '["n"]'
        if t is bool:
            return '["b",1]' if v is True else '["b",0]'
        if _issub(t, int):
            return '["i","' + _irepr(v) + '"]'
        if _issub(t, float):
            return '["f","' + _frepr(v) + '"]'
        if _issub(t, complex):
            return '["c","' + _crepr(v) + '"]'
        if _issub(t, str):
            return '["s","' + _bhex(_senc(v, 'utf-8', 'surrogatepass')) + '"]'
        if _issub(t, bytes):
            return '["y","' + _bhex(v) + '"]'
        if _issub(t, list):
            items = [_lget(v, i) for i in _range(_llen(v))]
            tag = 'l'
        elif _issub(t, tuple):
            items = [_tget(v, i) for i in _range(_tlen(v))]
            tag = 't'
        elif _issub(t, dict):
            items = [x for kv in _ditems(v) for x in kv]
            tag = 'd'
        elif _issub(t, set):
            items = [x for x in _siter(v)]
            tag = 'S'
        elif _issub(t, frozenset):
            items = [x for x in _fiter(v)]
            tag = 'F'
        else:
            raise _Unenc()
        return _join(['["', tag, '"'] + [',' + enc(x, depth + 1) for x in items] + [']'])
    def stdio(src, inputs, outs):
        # One fresh interpreter per test, run as __main__ on the test's input; its stdout is
        # the parent's pipe outs[k] (the parent judges it), its stderr /dev/null.
        path = '/tmp/solution.py'
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
        b = _senc(src, 'utf-8', 'surrogatepass')
        while b:
            b = b[_write(fd, b):]
        os.close(fd)
        null = os.open('/dev/null', os.O_RDWR)
        exe = sys.executable
        for k in _range(_len(outs)):
            pid = feeder = r = w = -1
            try:
                r, w = os.pipe()
                feeder = os.fork()
                if feeder == 0:  # writes the input, so that the harness can wait on the test
                    try:
                        os.close(r)
                        mv = memoryview(inputs[k])
                        while mv:
                            mv = mv[_write(w, mv[:65536]):]
                    finally:
                        _exit(0)
                os.close(w)
                w = -1
                pid = os.fork()
                if pid == 0:
                    try:
                        os.setsid()
                        os.dup2(r, 0)
                        os.dup2(outs[k], 1)
                        os.dup2(null, 2)
                        os.closerange(3, 1 << 16)
                        os.execv(exe, [exe, '-I', '-S', '-B', path])
                    finally:
                        _exit(127)
                os.close(r)
            except OSError as e:
                status = 'e ' + safe_name(e)
                for fd in (r, w, outs[k]):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            else:
                signal.signal(signal.SIGALRM, _alarm)
                signal.setitimer(signal.ITIMER_REAL, per)
                try:
                    os.close(outs[k])
                    os.waitpid(pid, 0)
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    status = 'x'
                except _Timeout:
                    status = 't'
            for p in (pid, feeder):
                if p > 0:
                    for kill in (os.killpg, os.kill):
                        try:
                            kill(p, 9)
                        except OSError:
                            pass
                    try:
                        os.waitpid(p, 0)
                    except OSError:
                        pass
            emit(_str(k) + ' ' + status)
    emit('start')
    if mode == 'stdio':
        stdio(src, inputs, [int(a) for a in sys.argv[2:]])
        emit('end')
        _exit(0)
    g = {'__name__': 'solution', '__builtins__': builtins}
    signal.signal(signal.SIGALRM, _alarm)
    try:
        code = _compile(src, '<program>', 'exec')
        signal.setitimer(signal.ITIMER_REAL, per)
        _exec(code, g)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        emit('load t')
        _exit(0)
    except _BE as e:
        signal.setitimer(signal.ITIMER_REAL, 0)
        emit('load e ' + safe_name(e))
        _exit(0)
    for i in _range(_len(exprs)):
        signal.signal(signal.SIGALRM, _alarm)
        try:
            c = _compile(exprs[i], '<test>', 'eval')
            signal.setitimer(signal.ITIMER_REAL, per)
            try:
                v = _eval(c, g)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            emit(_str(i) + ' t')
            continue
        except _BE as e:
            emit(_str(i) + ' e ' + safe_name(e))
            continue
        budget[0] = 200000
        try:
            s = enc(v, 0)
        except _BE:
            s = None
        if s is None or _len(s) > 4000000:
            emit(_str(i) + ' u')
            continue
        emit(_str(i) + ' v ' + s)
    emit('end')
    _exit(0)
_main()
"""


def _job_bytes(job: dict[str, Any]) -> bytes:
    import marshal

    blob = marshal.dumps(job)
    return len(blob).to_bytes(8, "little") + blob


def _rlimits(limits: SandboxLimits, cpu_seconds: float) -> list[tuple[str, int, int]]:
    cpu = max(1, math.ceil(cpu_seconds))
    return [
        ("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes),
        ("RLIMIT_CPU", cpu, cpu + 1),
        ("RLIMIT_FSIZE", limits.file_bytes, limits.file_bytes),
        ("RLIMIT_NOFILE", limits.open_files, limits.open_files),
        ("RLIMIT_NPROC", limits.processes, limits.processes),
        ("RLIMIT_CORE", 0, 0),
    ]


# ---------------------------------------------------------------------------------------------
# The verifier


# failed-test statuses that name the record's reason, most telling first (else "wrong")
_REASONS = [
    ("tampered", "tampered"),
    ("load error", "load error"),
    ("output limit", "output limit"),
    ("timeout", "timeout"),
    ("missing", "no result"),
]


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
    ) -> None:
        # A run mostly waits on the kernel (namespace setup/teardown), not the CPU: measured
        # throughput keeps rising up to ~4-8 threads per CPU (benchmarks/code_sandbox.py).
        self.workers = workers or 4 * (os.cpu_count() or 1)
        self.timeout = float(timeout) if timeout else DEFAULT_TIMEOUT
        self.all_or_nothing = all_or_nothing
        self.sandbox = Sandbox(SandboxConfig(python=python, limits=limits or SandboxLimits()))
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

    def __enter__(self) -> CodeVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one record ----------------------------------------------------------------------------
    def score_one(self, record: dict[str, Any]) -> Verdict:
        completion = record.get("completion")
        if not isinstance(completion, str):
            return Verdict(0.0, None, "bad record: 'completion' must be a string")
        tests, test_list = record.get("tests"), record.get("test_list")
        try:
            stdio = _check_stdio_tests(tests)
            asserts = _check_test_list(test_list)
        except ValueError as e:
            return Verdict(0.0, None, f"bad record: {e}")
        if not stdio and not asserts:
            return Verdict(0.0, None, "no tests")
        parsed: list[AssertTest] = []
        for i, line in enumerate(asserts):
            try:
                parsed.append(parse_assert(line))
            except UnsupportedTest as e:
                return Verdict(0.0, None, f"unsupported test: test_list[{i}]: {e}")
        total = len(stdio) + len(parsed)
        program = extract_program(completion)
        if program is None:
            return self._verdict([], total, "no code")
        try:
            compile(program, "<program>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError) as e:
            return self._verdict([], total, "syntax error", {"error": str(e)[:200]})
        outcomes: list[_Outcome] = []
        if parsed:
            outcomes += self._run_asserts(program, parsed)
        for at in range(0, len(stdio), STDIO_BATCH):
            outcomes += self._run_stdio(program, stdio[at : at + STDIO_BATCH])
        return self._verdict(outcomes, total, None)

    def _verdict(
        self, outcomes: list[_Outcome], total: int, reason: str | None, extra: dict | None = None
    ) -> Verdict:
        passed = sum(o.passed for o in outcomes)
        frac = passed / total if total else 0.0
        reward = (1.0 if passed == total else 0.0) if self.all_or_nothing else frac
        if reason is None:
            statuses = {o.status.split(":")[0] for o in outcomes if not o.passed}
            reason = "ok" if passed == total else "wrong"
            for status, r in _REASONS:
                if status in statuses:
                    reason = r
                    break
        detail = {"passed": passed, "total": total, "tests": [o.status for o in outcomes]}
        detail.update(extra or {})
        return Verdict(float(reward), passed == total and total > 0, reason, detail)

    def _run_harness(self, job: dict[str, Any], wall: float, outputs: int = 0) -> RunResult:
        """Run the harness on `job`. The harness writes "<nonce> start" before any untrusted code
        runs, so a run without it failed in bwrap or the harness (say, no namespace left): that
        is retried once, then raised, never scored as the program's failure."""
        for attempt in range(2):
            res = self.sandbox.run(
                [], _job_bytes(job), wall, HARNESS, channel=True, outputs=outputs
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
        wall = self.timeout * (n + 1) + 1.0
        job = {
            "mode": "asserts",
            "program": program,
            "exprs": [t.expr for t in tests],
            "timeout": self.timeout,
            "nonce": nonce,
            "rlimits": _rlimits(self.sandbox.config.limits, wall),
        }
        res = self._run_harness(job, wall)
        results, tampered, load = _parse_channel(res.channel, nonce, n)
        if tampered:
            return [_Outcome("tampered", False) for _ in tests]
        if load is not None:
            status = "timeout" if load == "timeout" else f"load error:{load}"
            return [_Outcome(status, False) for _ in tests]
        out: list[_Outcome] = []
        for i, t in enumerate(tests):
            r = results.get(i)
            if r is None:
                status = (
                    "output limit"
                    if res.output_exceeded
                    else "timeout"
                    if res.timed_out
                    else "missing"
                )
                out.append(_Outcome(status, False))
            elif r[0] == "v":
                try:
                    ok = check_assert(t, decode_value(r[1]))
                except (BadValue, TypeError, ValueError, OverflowError, RecursionError):
                    out.append(_Outcome("malformed", False))
                    continue
                out.append(_Outcome("pass" if ok else "fail", ok))
            elif r[0] == "t":
                out.append(_Outcome("timeout", False))
            elif r[0] == "e":
                out.append(_Outcome(f"error:{r[1]}", False))
            else:
                out.append(_Outcome("unencodable", False))
        return out

    def _run_stdio(self, program: str, tests: list[tuple[str, str]]) -> list[_Outcome]:
        """One sandbox for up to STDIO_BATCH tests; each test a fresh process inside it."""
        n = len(tests)
        nonce = secrets.token_hex(16)
        wall = (self.timeout + 0.5) * n + 2.0
        job = {
            "mode": "stdio",
            "program": program,
            "inputs": [inp.encode("utf-8", "surrogateescape") for inp, _ in tests],
            "timeout": self.timeout,
            "nonce": nonce,
            "rlimits": _rlimits(self.sandbox.config.limits, self.timeout + 1.0),
        }
        res = self._run_harness(job, wall, outputs=n)
        results, tampered, _ = _parse_channel(res.channel, nonce, n)
        out: list[_Outcome] = []
        for k, (_, expected) in enumerate(tests):
            r = results.get(k)
            if tampered:
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


_LINE = re.compile(
    r"(?P<i>\d{1,9}) (?:(?P<v>v) (?P<val>.*)|(?P<e>e) (?P<name>\w{1,60})|(?P<k>[tux]))"
)


def _parse_channel(
    data: bytes, nonce: str, n: int
) -> tuple[dict[int, tuple[str, Any]], bool, str | None]:
    """(results by test index, tampered?, load failure name or None). Every line must be ours."""
    import json

    results: dict[int, tuple[str, Any]] = {}
    load: str | None = None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    else:  # a partial last line: the run was killed mid-write
        lines = lines[:-1]
    prefix = nonce + " "
    for i, raw in enumerate(lines):
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            return {}, True, None
        if not line.startswith(prefix):
            return {}, True, None
        body = line[len(prefix) :]
        if i == 0:
            if body != "start":
                return {}, True, None
            continue
        if body == "end" or body in ("load t",) or body.startswith("load e "):
            if i != len(lines) - 1:
                return {}, True, None
            if body != "end":
                load = "timeout" if body == "load t" else body[7:]
            continue
        m = _LINE.fullmatch(body)
        if m is None:
            return {}, True, None
        idx = int(m.group("i"))
        if idx >= n or idx in results:
            return {}, True, None
        if m.group("v"):
            try:
                results[idx] = ("v", json.loads(m.group("val")))
            except (ValueError, RecursionError):
                return {}, True, None
        elif m.group("e"):
            results[idx] = ("e", m.group("name"))
        else:
            results[idx] = (m.group("k"), None)
    return results, False, load


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
