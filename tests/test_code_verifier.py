"""The code verifier: program extraction, assert parsing, comparison rules (no sandbox needed),
then honest programs scored 1 and hostile programs scored 0 with no effect on the host (bwrap)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from reasoner.verifiers import registry
from reasoner.verifiers.code import (
    AssertTest,
    CodeVerifier,
    UnsupportedTest,
    check_assert,
    decode_value,
    extract_program,
    normalize_output,
    parse_assert,
    values_equal,
)
from reasoner.verifiers.sandbox import SandboxUnavailable

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"
)
REPO = Path(__file__).resolve().parents[1]
HARNESS_MARK = b"sys.modules['channel'] = _m"


def py(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\n"


# ---------------------------------------------------------------------------------------------
# Pure parent-side logic


def test_extract_last_python_block_and_bare_rule():
    two = "```python\na = 1\n```\ntext\n```py\nb = 2\n```\n```cpp\nint x;\n```"
    assert extract_program(two) == "b = 2\n"
    assert extract_program("```\nc = 3\n```") == "c = 3\n"  # bare block when none is tagged
    assert extract_program("```\nbare = 1\n```\n```python\ntagged = 1\n```") == "tagged = 1\n"
    assert extract_program("```cpp\nint x;\n```") is None
    assert extract_program("```python\nunclosed = 1\n") is None
    assert extract_program("no code at all") is None
    assert extract_program("  ```python\n  x = 1\n  ```") == "x = 1\n"  # indented fence


def test_parse_assert_forms():
    t = parse_assert("assert add(1, 2) == 3")
    assert (t.expr, t.op, t.expected) == ("add(1, 2)", "==", 3)
    t = parse_assert("assert [1, 2] == f(x)")  # literal on the left is swapped
    assert (t.expr, t.op, t.expected) == ("f(x)", "==", [1, 2])
    t = parse_assert("assert set(f(1)) == set([3, 4])")
    assert (t.expr, t.expected) == ("set(f(1))", {3, 4})
    t = parse_assert("assert math.isclose(area(2), 12.566, rel_tol=0.001)")
    assert (t.expr, t.op, t.expected, t.rel_tol) == ("area(2)", "isclose", 12.566, 0.001)
    assert parse_assert("assert is_prime(7)").op == "truthy"
    assert parse_assert("assert not is_prime(8)").op == "falsy"
    assert parse_assert("assert f(1) is None").op == "is"
    assert parse_assert("assert f(2) == -float('inf')").expected == float("-inf")
    for bad in ("assert f(1) == g(2)", "x = 1", "assert 1 < f(2) < 3", "assert f(1) is [1]"):
        with pytest.raises(UnsupportedTest):
            parse_assert(bad)


def test_values_equal_rules():
    assert values_equal(3, 3.0) and values_equal(True, 1)  # Python == semantics
    assert not values_equal([1, 2], (1, 2))
    assert values_equal(0.1 + 0.2, 0.3)  # float tolerance rel 1e-9
    assert not values_equal(1.0, 1.0 + 1e-6)
    assert values_equal(float("nan"), float("nan"))
    assert values_equal({"a": [0.1 + 0.2]}, {"a": [0.3]})
    assert not values_equal("3", 3)
    assert values_equal(frozenset({1}), {1})
    assert check_assert(AssertTest("x", "in", [1, 2]), 2)
    assert check_assert(AssertTest("x", "in", "hello"), "ell")  # substring, as in Python
    assert not check_assert(AssertTest("x", "in", "hello"), ["e"])
    assert not check_assert(AssertTest("x", "is", None), 0)
    assert check_assert(AssertTest("x", "isclose", 1.0, rel_tol=0.01), 1.005)


def test_normalize_output_rule():
    assert normalize_output("1 2  \r\n3\n\n\n") == ["1", "2", "3"][:0] + ["1 2", "3"]
    assert normalize_output("a\n\nb") == ["a", "", "b"]  # inner blank lines count
    assert normalize_output(" a") != normalize_output("a")  # leading whitespace counts


def test_decode_value_roundtrip_and_rejects_junk():
    enc = ["d", ["s", b"a".hex()], ["t", ["i", "1"], ["f", "inf"], ["n"]]]
    assert decode_value(enc) == {"a": (1, float("inf"), None)}
    for junk in ([], ["q"], ["i", "x"], ["S", ["l"]], "s", ["s", "zz"]):
        with pytest.raises(ValueError):
            decode_value(junk)


def test_parse_channel_rejects_forgery():
    ok = b'N start\nN 0 v ["i","3"]\nN 1 e ZeroDivisionError\nN end\n'
    res, tampered, load = _parse_channel(ok, "N", 2)
    assert (
        not tampered and load is None and res[0][0] == "v" and res[1] == ("e", "ZeroDivisionError")
    )
    for bad in (
        b'N start\nN 0 v ["i","3"]\nN 0 v ["i","3"]\n',  # duplicate index
        b'N start\nX 0 v ["i","3"]\n',  # foreign nonce
        b'N start\nN 5 v ["i","3"]\n',  # index out of range
        b"N start\nN 0 v {not json\n",
        b'N 0 v ["i","3"]\n',  # no start line
    ):
        assert _parse_channel(bad, "N", 2)[1], bad


# ---------------------------------------------------------------------------------------------
# Sandboxed runs


@pytest.fixture(scope="module")
def verifier():
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    v = registry.create("code", workers=2, timeout=1.0)
    yield v
    v.close()


def score(v: CodeVerifier, rec: dict) -> object:
    return next(iter(v.score([rec])))


HONEST = [
    {
        "completion": py("def add(a, b):\n    return a + b"),
        "test_list": ["assert add(1, 2) == 3", "assert add('a', 'b') == 'ab'"],
    },
    {
        "completion": py("import math\ndef area(r):\n    return math.pi * r * r"),
        "test_list": [
            "assert math.isclose(area(2), 12.566, rel_tol=0.001)",
            "assert area(1) == 3.141592653589793",
        ],
    },
    {
        "completion": py("from collections import Counter\ndef freq(s):\n    return Counter(s)"),
        "test_list": ["assert freq('aab') == {'a': 2, 'b': 1}"],
    },
    {
        "completion": py("def pairs(n):\n    return [(i, i * i) for i in range(n)]"),
        "test_list": ["assert pairs(3) == [(0, 0), (1, 1), (2, 4)]", "assert not pairs(0)"],
    },
    {
        "completion": py("def is_even(n):\n    return n % 2 == 0"),
        "test_list": [
            "assert is_even(4) == True",
            "assert is_even(3) is False",
            "assert is_even(2)",
        ],
    },
    {
        "completion": py("n = int(input())\nfor i in range(n):\n    print(i, i * i)"),
        "tests": [{"input": "3\n", "output": "0 0\n1 1\n2 4\n"}, {"input": "1", "output": "0 0"}],
    },
    {
        "completion": py("import sys\ndata = sys.stdin.read().split()\nprint(sum(map(int, data)))"),
        "tests": [{"input": "1 2 3", "output": "6"}],
    },
]


@needs_bwrap
@pytest.mark.parametrize("rec", HONEST, ids=[f"honest{i}" for i in range(len(HONEST))])
def test_honest_programs_score_one(verifier, rec):
    v = score(verifier, rec)
    assert (v.reward, v.correct, v.reason) == (1.0, True, "ok"), v


@needs_bwrap
def test_partial_credit_all_or_nothing_and_reasons(verifier):
    rec = {
        "completion": py("def f(x):\n    return 1 / x"),
        "test_list": [
            "assert f(1) == 1.0",
            "assert f(0) == 0",
            "assert f(2) == 0.5",
            "assert f(4) == 9",
        ],
    }
    v = score(verifier, rec)
    assert v.reward == 0.5 and v.correct is False
    assert v.detail["tests"] == ["pass", "error:ZeroDivisionError", "pass", "fail"]
    with CodeVerifier(workers=1, timeout=1.0, all_or_nothing=True) as strict:
        assert score(strict, rec).reward == 0.0
        assert score(strict, HONEST[0]).reward == 1.0
    first_line_only = {"completion": py("print(1)"), "tests": [{"input": "", "output": "1\n2\n"}]}
    assert score(verifier, first_line_only).reward == 0.0
    assert (
        score(verifier, {"completion": "no fence", "test_list": ["assert f(1) == 1"]}).reason
        == "no code"
    )
    assert score(verifier, {"completion": py("def f(:")}).correct is None  # no tests
    syn = score(verifier, {"completion": py("def f(:"), "test_list": ["assert f(1) == 1"]})
    assert (syn.reward, syn.reason) == (0.0, "syntax error")
    bad = score(verifier, {"completion": py("x=1"), "tests": [{"input": 1}]})
    assert bad.correct is None and "tests[0]" in bad.reason
    uns = score(verifier, {"completion": py("x=1"), "test_list": ["assert f(1) == g(1)"]})
    assert uns.correct is None and "test_list[0]" in uns.reason


@needs_bwrap
def test_score_keeps_input_order(verifier):
    recs = [HONEST[0], {"completion": "none", "test_list": ["assert f(1) == 1"]}, HONEST[5]] * 3
    assert [v.reward for v in verifier.score(recs)] == [1.0, 0.0, 1.0] * 3


# ---------------------------------------------------------------------------------------------
# Hostile programs: each must score 0 AND leave no trace on the host.


def surviving_sandbox_processes() -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if HARNESS_MARK in Path(f"/proc/{d}/cmdline").read_bytes():
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def wait_no_survivors() -> list[int]:
    for _ in range(50):
        left = surviving_sandbox_processes()
        if not left:
            return []
        time.sleep(0.05)
    return left


def attempt(body: str) -> str:
    """A program whose f() returns True only if `body` ran without raising."""
    indented = "\n".join("        " + ln for ln in body.splitlines())
    return py(
        f"import os, sys\ndef f():\n    try:\n{indented}\n        return True\n    except BaseException:\n        return False"
    )


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "pwned"


@needs_bwrap
@pytest.mark.parametrize(
    "name, body",
    [
        ("posix_system", "import posix\nassert posix.system('echo pwned > {m}') == 0"),
        ("os_system", "assert os.system('touch {m}') == 0"),
        (
            "subprocess",
            "import subprocess\nsubprocess.run(['/bin/sh', '-c', 'touch {m}'], check=True)",
        ),
        (
            "posix_spawn",
            "pid = os.posix_spawn('/bin/sh', ['sh', '-c', 'touch {m}'], {{}})\nassert os.waitpid(pid, 0)[1] == 0",
        ),
        ("ctypes_system", "import ctypes\nassert ctypes.CDLL(None).system(b'touch {m}') == 0"),
        (
            "exec_python",
            'os.execv(sys.executable, [sys.executable, \'-c\', \'open("{m}", "w").write("x")\'])',
        ),
        ("write_host_path", "open('{m}', 'w').write('x')"),
        ("write_project_tree", "open('{repo}/pwned-by-sandbox', 'w').write('x')"),
    ],
)
def test_hostile_escape_attempts(verifier, marker, name, body):
    code = attempt(body.format(m=marker, repo=REPO))
    if name != "write_project_tree":  # control: unsandboxed, the same program does leave the marker
        ctl = extract_program(code) + "\nprint(f())"
        subprocess.run(["/usr/bin/python3", "-I", "-c", ctl], cwd=marker.parent, timeout=30)
        assert marker.exists(), f"control run of {name} did not work; the test would prove nothing"
        marker.unlink()
    v = score(verifier, {"completion": code, "test_list": ["assert f() == True"]})
    assert v.reward == 0.0, (name, v)
    assert not marker.exists() and not (REPO / "pwned-by-sandbox").exists()
    assert wait_no_survivors() == []


@needs_bwrap
def test_hostile_reads_environment_secret(verifier, monkeypatch):
    monkeypatch.setenv("REASONER_TEST_SECRET", "hunter2-7f3a")
    code = py("import os\ndef f():\n    return os.environ.get('REASONER_TEST_SECRET')")
    v = score(verifier, {"completion": code, "test_list": ["assert f() == 'hunter2-7f3a'"]})
    assert v.reward == 0.0 and v.detail["tests"] == ["fail"]


@needs_bwrap
def test_hostile_reads_host_files(verifier, tmp_path):
    secret_in_repo = REPO / f".sandbox-secret-{os.getpid()}"
    secret_in_repo.write_text("repo-secret")
    (tmp_path / "s").write_text("tmp-secret")
    passwd = Path("/etc/passwd").read_text()
    home_secret = Path.home() / f".sandbox-secret-{os.getpid()}"
    try:
        home_secret.write_text("home-secret")
        code = py(
            "def f(p):\n    try:\n        return open(p).read()\n    except OSError as e:\n        return repr(e)"
        )
        tests = [
            f"assert f({str(secret_in_repo)!r}) == 'repo-secret'",
            f"assert f({str(tmp_path / 's')!r}) == 'tmp-secret'",
            f"assert f({str(home_secret)!r}) == 'home-secret'",
            f"assert f('/etc/passwd') == {passwd!r}",
            "assert f('/etc/shadow').startswith('root:')",
        ]
        v = score(verifier, {"completion": code, "test_list": tests})
        assert v.reward == 0.0, v
        assert v.detail["tests"] == ["fail"] * 5
    finally:
        secret_in_repo.unlink()
        home_secret.unlink(missing_ok=True)


@needs_bwrap
def test_hostile_connects_to_loopback_server(verifier):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    seen: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                seen.append(srv.accept())
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        code = attempt(
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')"
        )
        v = score(verifier, {"completion": code, "test_list": ["assert f() == True"]})
        assert v.reward == 0.0, v
        time.sleep(0.3)
        assert seen == []
    finally:
        stop.set()
        t.join()
        srv.close()


@needs_bwrap
def test_hostile_kills_parent_and_everything(verifier):
    # A host process with the same unprivileged host uid the sandbox runs under: the most exposed target.
    kw = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    sentinel = subprocess.Popen(["sleep", "30"], **kw)
    try:
        code = py(
            "import os, signal\ndef f():\n"
            f"    for pid in (os.getppid(), {os.getpid()}, {sentinel.pid}, -1, 1):\n"
            "        try:\n            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n"
            "    return 1"
        )
        v = score(verifier, {"completion": code, "test_list": ["assert f() == 2"]})
        assert v.reward == 0.0
        assert sentinel.poll() is None  # still alive; and so are we
    finally:
        sentinel.kill()
        sentinel.wait()


@needs_bwrap
@pytest.mark.parametrize(
    "name, program",
    [
        ("memory_bomb", "def f():\n    a = bytearray(4 * 2**30)\n    return len(a)"),
        ("memory_bomb_list", "def f():\n    a = [0] * (2**31)\n    return len(a)"),
        (
            "fork_bomb",
            "import os\ndef f():\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass",
        ),
        (
            "ignore_signals_loop",
            "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGHUP):\n    signal.signal(s, signal.SIG_IGN)\ndef f():\n    while True:\n        try:\n            pass\n        except BaseException:\n            pass",
        ),
        (
            "stdout_flood",
            "import sys\ndef f():\n    while True:\n        sys.stdout.write('x' * 65536)",
        ),
        ("stderr_flood", "import os\ndef f():\n    while True:\n        os.write(2, b'y' * 65536)"),
        (
            "background_daemon",
            "import os, time\ndef f():\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n            time.sleep(3)\n            open('/tmp/late', 'w').write('x')\n        os._exit(0)\n    return 1",
        ),
        (
            "big_file",
            "def f():\n    with open('/tmp/big', 'wb') as fh:\n        for _ in range(200):\n            fh.write(b'z' * 2**20)\n    return 2",
        ),
        (
            "many_files_root",
            "def f():\n    for i in range(10000):\n        open(f'/x{i}', 'w').write('a' * 4096)\n    return 2",
        ),
    ],
)
def test_hostile_resource_abuse(verifier, name, program):
    v = score(verifier, {"completion": py(program), "test_list": ["assert f() == 2"]})
    assert v.reward == 0.0, (name, v)
    assert wait_no_survivors() == [], name


FORGERIES = {
    # __eq__ that always says yes, on an int subclass and on a plain object
    "eq_int_subclass": "class Y(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\ndef f():\n    return Y(5)",
    "eq_object": "class Y:\n    def __eq__(self, o):\n        return True\ndef f():\n    return Y()",
    "list_subclass_iter": "class L(list):\n    def __iter__(self):\n        return iter([3])\n    def __getitem__(self, i):\n        return 3\n    def __len__(self):\n        return 1\ndef f():\n    return L([9, 9])",
    "repr_lies": "class S(str):\n    def __repr__(self):\n        return \"'yes'\"\n    def __str__(self):\n        return 'yes'\n    def encode(self, *a):\n        return b'yes'\ndef f():\n    return S('no')",
    "fake_stdout_markers": "import os, sys\nprint('PASS\\nALL TESTS PASSED\\n0 v [\"i\",\"3\"]')\ndef f():\n    print('ok 1/1')\n    sys.stdout.flush()\n    os._exit(0)",
    "os_exit_at_import": "import os\nos._exit(0)",
    "system_exit_in_call": "def f():\n    raise SystemExit(0)",
    "patch_builtins": "import builtins\nbuiltins.type = lambda *a: int\nbuiltins.repr = lambda *a: '3'\nbuiltins.isinstance = lambda *a: True\nbuiltins.issubclass = lambda *a: True\ndef f():\n    return 4",
    "sys_modules_swap": "import sys, types\nfake = types.ModuleType('os')\nfake.write = lambda fd, b: len(b)\nfake._exit = lambda c: None\nsys.modules['os'] = fake\nsys.modules['marshal'] = fake\nsys.modules['json'] = fake\ndef f():\n    return 4",
    "write_fake_results_everywhere": 'import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b\'0 v ["i","3"]\\nend\\n\')\n    except OSError:\n        pass\ndef f():\n    return 4',
    "fake_results_then_exit": 'import os\ndef f():\n    for fd in range(1, 64):\n        try:\n            os.write(fd, b\'deadbeef 0 v ["i","3"]\\ndeadbeef end\\n\')\n        except OSError:\n            pass\n    os._exit(0)',
    "close_result_fd": "import os\nfor fd in range(3, 64):\n    try:\n        os.close(fd)\n    except OSError:\n        pass\ndef f():\n    return 4",
    "weird_exception_name": 'E = type(\'x\\n0 v ["i","3"]\', (Exception,), {})\ndef f():\n    raise E()',
}


@needs_bwrap
@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_hostile_forged_results(verifier, name):
    expected = {"list_subclass_iter": "[3]", "repr_lies": "'yes'"}.get(name, "3")
    v = score(
        verifier, {"completion": py(FORGERIES[name]), "test_list": [f"assert f() == {expected}"]}
    )
    assert v.reward == 0.0 and v.correct is False, (name, v)
    assert "pass" not in v.detail["tests"]


@needs_bwrap
def test_hostile_stdio_flood_and_partial_output(verifier):
    flood = {
        "completion": py("while True:\n    print('42' * 1000)"),
        "tests": [{"input": "", "output": "42"}],
    }
    v = score(verifier, flood)
    assert v.reward == 0.0 and v.detail["tests"] == ["output limit"]
    hang = {
        "completion": py("print(42)\nimport time\ntime.sleep(60)"),
        "tests": [{"input": "", "output": "42"}],
    }
    assert score(verifier, hang).detail["tests"] == ["timeout"]
    assert wait_no_survivors() == []


@needs_bwrap
def test_trl_style_reward_function_uses_the_sandbox():
    from reasoner.verifiers.rewards import code_pass_rate_reward

    good = [{"role": "assistant", "content": py("def sq(x):\n    return x * x")}]
    bad = py("def sq(x):\n    return x + x")
    rewards = code_pass_rate_reward(
        ["p1", "p2", "p3"],
        [good, bad, bad],
        test_list=[["assert sq(3) == 9", "assert sq(2) == 4"]] * 2 + [None],
    )
    assert rewards == [1.0, 0.5, None]  # sq(2) == 2 + 2 passes; no tests -> None


@needs_bwrap
def test_per_test_timer_keeps_the_other_tests(verifier):
    code = py("def f(x):\n    while x == 0:\n        pass\n    return x")
    v = score(
        verifier, {"completion": code, "test_list": [f"assert f({x}) == {x}" for x in (1, 0, 2)]}
    )
    assert v.detail["tests"] == ["pass", "timeout", "pass"] and v.reward == pytest.approx(2 / 3)


@needs_bwrap
def test_hostile_neighbours_do_not_disturb_honest_runs():
    bomb = py(
        "import os\ndef f():\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass"
    )
    hog = py("def f():\n    a = []\n    while True:\n        a.append(bytearray(2**20))")
    honest = {
        "completion": py(
            "import threading\ndef f():\n    t = threading.Thread(target=print)\n    t.start()\n    t.join()\n    return 3"
        ),
        "test_list": ["assert f() == 3"],
    }
    recs = []
    for bad in (bomb, hog, bomb, hog):
        recs += [{"completion": bad, "test_list": ["assert f() == 3"]}, honest]
    with CodeVerifier(workers=4, timeout=1.0) as v:
        rewards = [x.reward for x in v.score(recs)]
    assert rewards == [0.0, 1.0] * 4
    assert wait_no_survivors() == []


@needs_bwrap
def test_stdio_tests_are_isolated_from_each_other(verifier):
    prog = (
        "import os, sys, time\n"
        "cmd = sys.stdin.readline().strip()\n"
        "if cmd == 'loop':\n    while True:\n        pass\n"
        "elif cmd == 'flood':\n    while True:\n        sys.stdout.write('x' * 65536)\n"
        "elif cmd == 'daemon':\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(30)\n"
        "    print('daemon')\n"
        "elif cmd == 'big':\n    print(len(sys.stdin.read()))\n"
        "else:\n    print(cmd[::-1])\n"
    )
    tests = [
        ("abc", "cba"),
        ("loop", ""),
        ("flood", "x"),
        ("daemon", "daemon"),
        ("big\n" + "y" * 1_000_000, "1000000"),
        ("xyz", "zyx"),
    ]
    rec = {"completion": py(prog), "tests": [{"input": i, "output": o} for i, o in tests]}
    v = score(verifier, rec)
    assert v.detail["tests"] == ["pass", "timeout", "output limit", "pass", "pass", "pass"]
    assert v.reward == pytest.approx(4 / 6)
    assert wait_no_survivors() == []


@needs_bwrap
def test_stdio_program_with_threaded_main_and_exit_code(verifier):
    # the competitive-programming idiom: deep recursion in a thread with a big stack
    prog = (
        "import sys, threading\n"
        "sys.setrecursionlimit(100000)\nthreading.stack_size(64 * 2**20)\n"
        "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
        "def main():\n    print(depth(int(input())))\n    sys.stdout.flush()\n"
        "threading.Thread(target=main).start()\n"
    )
    tests = [{"input": "20000\n", "output": "20000\n"}, {"input": "5", "output": "5"}]
    assert score(verifier, {"completion": py(prog), "tests": tests}).reward == 1.0
    crash_after = py("print(7)\nraise SystemExit(3)")
    v = score(verifier, {"completion": crash_after, "tests": [{"input": "", "output": "7"}]})
    assert v.reward == 1.0  # exit status ignored: only stdout is judged


@needs_bwrap
def test_sandbox_failure_is_raised_not_scored_as_zero():
    with CodeVerifier(workers=1, timeout=1.0) as v:
        v.sandbox._argv.insert(1, "--no-such-bwrap-option")  # every run now fails in bwrap
        with pytest.raises(SandboxUnavailable, match="before the program ran"):
            list(v.score([HONEST[0]]))
