"""The code verifier end to end in the sandbox: honest programs score 1, hostile programs score 0
and leave no trace on the host (bwrap). The parent-side rules are in test_code_asserts.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reasoner.verifiers import registry
from reasoner.verifiers.code import CodeVerifier, extract_program
from reasoner.verifiers.sandbox import SandboxUnavailable

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"
)
REPO = Path(__file__).resolve().parents[1]
HARNESS_MARK = b"sys.modules['channel'] = _m"


def py(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\n"


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
    uns = {"completion": py("x=1"), "test_list": ["assert f(1)", "assert callable(f)"]}
    uns = score(verifier, uns)
    assert uns.correct is None and uns.reason.startswith("unsupported test: test_list[1]: ")


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


# ---------------------------------------------------------------------------------------------
# Issue #10: holes a red team found. Each program must score 0 (or an honest neighbour 1) with
# its host effect checked.

JUDGEMENT_FORGERIES = {
    # (program, test line): each paid 1.0 when the whole line was evaluated in the sandbox
    "or_eq_always": (
        "class Y:\n    def __eq__(self, o):\n        return True\ndef f(x):\n    return Y()",
        "assert f(1) == 5 or f(1) == 6",
    ),
    "not_ne": (
        "class Y(int):\n    def __ne__(self, o):\n        return False\n"
        "    __hash__ = int.__hash__\ndef f(x):\n    return Y(4)",
        "assert not f(1) != 5",
    ),
    "eq_true": (
        "class Y(int):\n    def __eq__(self, o):\n        return True\n"
        "    __hash__ = int.__hash__\ndef f(x):\n    return Y(4)",
        "assert (f(1) == 5) == True",
    ),
    "all_comprehension": (
        "class Y(int):\n    def __eq__(self, o):\n        return True\n"
        "    __hash__ = int.__hash__\ndef f(i):\n    return Y(-1)",
        "assert all(f(i) == i*i for i in range(5))",
    ),
    "shadow_all": ("all = lambda *a: True\ndef f(i):\n    return -1", "assert all(f(i) == i*i for i in range(5))"),
    "sub_forged": (
        "class Y(int):\n    def __sub__(self, o):\n        return 0\ndef f(x):\n    return Y(7)",
        "assert f(2) - 4 == 0",
    ),
    "shadow_len": ("len = lambda x: 3\ndef f():\n    return [1]", "assert len(f()) == 3"),
    "bool_forged": (
        "class Y(int):\n    def __bool__(self):\n        return True\ndef f():\n    return Y(0)",
        "assert f()",
    ),
    "getitem_forged": (
        "class L(list):\n    def __getitem__(self, i):\n        return 5\ndef f():\n    return L([1])",
        "assert f()[0] == 5",
    ),
    "approximate_int": ("def f():\n    return 1e9", "assert f() == 1000000001"),
}


@needs_bwrap
@pytest.mark.parametrize("name", sorted(JUDGEMENT_FORGERIES))
def test_hostile_forged_judgements_are_judged_in_the_parent(verifier, name):
    program, line = JUDGEMENT_FORGERIES[name]
    v = score(verifier, {"completion": py(program), "test_list": [line]})
    assert (v.reward, v.correct) == (0.0, False), (name, v)


@needs_bwrap
def test_judgements_in_the_parent_still_pass_honest_programs(verifier):
    rec = {
        "completion": py("def f(i):\n    return i * i\ndef g():\n    return (x for x in [3, 1])"),
        "test_list": [
            "assert f(2) == 5 or f(2) == 4",
            "assert not f(1) != 1",
            "assert (f(3) == 9) == True",
            "assert all(f(i) == i*i for i in range(5))",
            "assert f(2) - 4 == 0",
            "assert 0 < f(2) < 5",
            "assert sorted(g()) == [1, 3] and list(g()) == [3, 1]",
            "assert f(1) == f(-1)",
        ],
    }
    v = score(verifier, rec)
    assert (v.reward, v.reason) == (1.0, "ok"), v


REFERENCE_FORGERIES = {
    # An expected value computed by a leaf that names nothing of the program (`str(5)`,
    # `math.sqrt(16)`, `'ab'.upper()`) was evaluated after the program loaded, in its namespace:
    # the program chose both sides of the comparison and each of these paid 1.0.
    "shadow_str": (
        "def str(x):\n    return 'x'\ndef f(n):\n    return 'x'",
        "assert f(5) == str(5)",
    ),
    "patch_builtins": (
        "import builtins\nbuiltins.chr = lambda x: 42\ndef f(n):\n    return 42",
        "assert f(65) == chr(65)",
    ),
    "patch_module": (
        "import math\nmath.sqrt = lambda x: -1\ndef area(r):\n    return -1",
        "assert area(4) == math.sqrt(16)",
    ),
    "patch_str_type": (
        "import ctypes, gc\ngc.get_referents(str.__dict__)[0]['upper'] = lambda s: 'x'\n"
        "ctypes.pythonapi.PyType_Modified(ctypes.py_object(str))\ndef f(s):\n    return 'x'",
        "assert f('ab') == 'ab'.upper()",
    ),
    # a comparison through the operator module: judged in the parent, not by the (patched)
    # operator.eq in the sandbox
    "patch_operator": (
        "import operator\noperator.eq = lambda a, b: True\ndef f(n):\n    return 0",
        "assert operator.eq(f(1), 5)",
    ),
    "forged_reference_line": (
        "import gc, os, sys\n"
        "nonce = [o['nonce'] for o in gc.get_objects() if type(o) is dict and 'nonce' in o][0]\n"
        'os.write(int(sys.argv[1]), (nonce + \' p 0 r [["v",["i","0"]]]\\n\').encode())\n'
        "def f(n):\n    return 0",
        "assert f(5) == str(5)",
    ),
}


@needs_bwrap
@pytest.mark.parametrize("name", sorted(REFERENCE_FORGERIES))
def test_hostile_reference_values_are_computed_before_the_program(verifier, name):
    program, line = REFERENCE_FORGERIES[name]
    v = score(verifier, {"completion": py(program), "test_list": [line]})
    assert (v.reward, v.correct) == (0.0, False), (name, v)


@needs_bwrap
def test_reference_values_pass_honest_programs(verifier):
    rec = {
        "completion": py("import math\ndef f(n):\n    return str(n)\ndef area(r):\n    return r"),
        "test_list": [
            "assert f(5) == str(5)",
            "assert area(4) == math.sqrt(16)",
            "assert f('ab') == 'ab'.lower()",
            "assert all(f(i) == str(i) for i in range(3))",
            "assert f(1) == str(1) and area(2) == math.sqrt(4)",
            "assert f(0) == '0' or f(0) == str(math.sqrt(-1))",  # a leaf the check never needs
        ],
    }
    v = score(verifier, rec)
    assert (v.reward, v.reason) == (1.0, "ok"), v


@needs_bwrap
def test_a_task_that_defines_a_builtins_name_is_graded_on_the_programs_function(verifier):
    # a task "write sum" / "write pow": the lines name nothing else, so the function under test
    # is the program's, as Python reads them after the program; with the real builtins a wrong
    # program passed
    wrong = {"completion": py("def sum(xs):\n    return 0\ndef pow(a, b):\n    return 1"),
             "test_list": ["assert sum([1, 2, 3]) == 6", "assert pow(2, 3) == 8"]}
    v = score(verifier, wrong)
    assert (v.reward, v.reason, v.detail["tests"]) == (0.0, "wrong", ["fail", "fail"]), v
    right = {"completion": py("def sum(xs):\n    t = 0\n    for x in xs:\n        t += x\n"
                              "    return t\ndef pow(a, b):\n    return a ** b"),
             "test_list": wrong["test_list"]}
    v = score(verifier, right)
    assert (v.reward, v.reason) == (1.0, "ok"), v


@needs_bwrap
def test_ints_over_4300_digits_are_reported(verifier):
    # Python refuses to convert such ints to decimal: they were "unencodable" and failed
    rec = {
        "completion": py("import math\ndef f(n):\n    return math.factorial(n)"),
        "test_list": [
            "assert f(2000) == math.factorial(2000)",
            "assert f(2000) % 1000 == 0 and f(2000) > 10 ** 5000",
        ],
    }
    v = score(verifier, rec)
    assert (v.reward, v.reason) == (1.0, "ok"), v


CRLF = "Here:\r\n```python\r\ndef f():\r\n    return 'a\\r\\nb'\r\n```\r\n"
FENCE_IN_STRING = py('def f():\n    return """\n```\n"""\n')


@needs_bwrap
def test_crlf_completion_and_fence_inside_a_string(verifier):
    v = score(verifier, {"completion": CRLF, "test_list": ["assert f() == 'a\\r\\nb'"]})
    assert (v.reward, v.reason) == (1.0, "ok"), v
    v = score(verifier, {"completion": FENCE_IN_STRING, "test_list": ["assert f() == '\\n```\\n'"]})
    assert (v.reward, v.reason) == (1.0, "ok"), v


def colliding_set_program(n: int) -> str:
    # plain ints congruent modulo 2**61 - 1 share one hash; H keeps them apart in the sandbox
    return py(
        "class H(int):\n    def __hash__(self):\n        return int(self) // (2**61 - 1)\n"
        f"def f():\n    return {{H(i * (2**61 - 1)) for i in range(1, {n + 1})}}"
    )


@needs_bwrap
def test_hostile_hash_collisions_do_not_stall_honest_records():
    """~110k values whose hashes collide once decoded as plain ints: building that set in the
    parent held the GIL for 85 s and every honest record in flight timed out."""
    n = 110_000
    hostile = {"completion": colliding_set_program(n), "test_list": [f"assert len(f()) == {n}"]}
    honest = {"completion": py("def f():\n    return 1"), "test_list": ["assert f() == 1"]}
    with CodeVerifier(workers=4, timeout=2.0) as v:
        t0 = time.monotonic()
        verdicts = list(v.score([hostile, honest, honest, honest, honest]))
        took = time.monotonic() - t0
    assert [x.reward for x in verdicts] == [1.0] * 5, verdicts
    assert took < 30, took  # old code: > 85 s


def meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class PeakSampler:
    """Samples a /proc/meminfo field every 10 ms in a thread; `.peak - .start` is the growth."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.start = self.peak = meminfo(field)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, meminfo(self.field))
            time.sleep(0.01)

    def __enter__(self) -> PeakSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


SHM_PROGRAMS = {
    # 3 x 256 MiB of SysV shared memory, each attached, filled and detached: the segments stay
    # in the sandbox's IPC namespace, outside RLIMIT_AS
    "sysv_shm": (
        "import ctypes, os, time\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.shmat.restype = ctypes.c_void_p\n"
        "def f():\n    made = 0\n    for _ in range(3):\n"
        "        sid = libc.shmget(0, 256 << 20, 0o1600)\n        if sid < 0:\n            break\n"
        "        p = libc.shmat(sid, None, 0)\n        if p in (None, 2**64 - 1):\n            break\n"
        "        ctypes.memset(p, 1, 256 << 20)\n        libc.shmdt(ctypes.c_void_p(p))\n"
        "        made += 1\n    time.sleep(0.5)\n    return made"
    ),
    # 48 memfds of 16 MiB (RLIMIT_FSIZE each): shmem that no address space counts
    "memfd": (
        "import os, time\ndef f():\n    fds = []\n    try:\n        for _ in range(48):\n"
        "            fd = os.memfd_create('x')\n            os.write(fd, b'z' * (16 << 20))\n"
        "            fds.append(fd)\n    except OSError:\n        pass\n"
        "    time.sleep(0.5)\n    return len(fds) // 16"
    ),
}


@needs_bwrap
@pytest.mark.parametrize("name", sorted(SHM_PROGRAMS))
def test_hostile_shared_memory_outside_the_caps(name):
    rec = {"completion": py(SHM_PROGRAMS[name]), "test_list": ["assert f() == 3"]}
    with CodeVerifier(workers=1, timeout=3.0, cgroups="off") as v:
        v.sandbox.seccomp = None  # control: without the filter the attack works and is seen
        with PeakSampler("Shmem") as ctl:
            assert score(v, rec).reward == 1.0
        assert ctl.growth > 512 * 2**20, ctl.growth
    with CodeVerifier(workers=1, timeout=3.0) as v, PeakSampler("Shmem") as s:
        assert score(v, rec).reward == 0.0
    assert s.growth < 128 * 2**20, s.growth


@needs_bwrap
def test_hostile_tmpfs_inode_farm_is_capped_by_the_memory_cgroup():
    """Empty directories cost kernel slab that the tmpfs size does not count (3 GiB per sandbox
    in the red team's run). The sandbox's memory cgroup counts it: the run dies at the cap."""
    from reasoner.verifiers.sandbox import SandboxLimits

    limits = SandboxLimits(sandbox_memory_bytes=64 * 2**20)
    try:
        v = CodeVerifier(workers=1, timeout=2.0, limits=limits, cgroups="require")
    except SandboxUnavailable as e:
        pytest.skip(f"no per-sandbox cgroups here: {e}")
    prog = py(
        "import errno, os\ndef f():\n    n = 0\n    try:\n        while n < 3_000_000:\n"
        "            os.mkdir(f'/tmp/{n}')\n            n += 1\n    except OSError as e:\n"
        "        return n, errno.errorcode.get(e.errno, '?')\n    return n, ''"
    )
    rec = {"completion": prog, "test_list": ["assert f()[0] == -1"]}
    with CodeVerifier(workers=1, timeout=2.0, cgroups="off") as ctl, PeakSampler("Slab") as s:
        assert score(ctl, rec).reward == 0.0
    assert s.growth > 192 * 2**20, s.growth  # control: the attack works and is seen
    with v, PeakSampler("Slab") as s:
        assert score(v, rec).reward == 0.0
    assert s.growth < 64 * 2**20 + 64 * 2**20, s.growth


@needs_bwrap
def test_cpu_budget_is_per_process_and_per_test(verifier):
    prog = py("import resource\ndef f():\n    return resource.getrlimit(resource.RLIMIT_CPU)")
    v = score(verifier, {"completion": prog, "test_list": ["assert f() == (2, 3)"]})
    assert v.reward == 1.0, v  # timeout 1 s: soft 2 s, hard 3 s for every process


@needs_bwrap
def test_hostile_spinners_do_not_starve_honest_records():
    """Five records that fill their sandboxes with spinning processes (each trying setsid, which
    gave each its own scheduler autogroup) turned four concurrent honest CPU-bound records into
    timeouts. Each sandbox now shares the CPU as one group (its cgroup, else its one session's
    autogroup), and tests are timed in CPU time. (A regression guard: how much CPU an honest
    record gets here depends on the machine's load; the mechanisms are pinned by the two tests
    below.)"""
    spinner = py(
        "import os\ndef f():\n    for _ in range(7):\n        try:\n            if os.fork() == 0:\n"
        "                try:\n                    os.setsid()\n                except OSError:\n"
        "                    pass\n                while True:\n                    pass\n"
        "        except OSError:\n            pass\n    while True:\n        pass"
    )
    work = 1_000_000  # ~0.05-0.15 s of CPU
    honest = py(f"def f():\n    return sum(i * i for i in range({work}))")
    recs = [{"completion": spinner, "test_list": ["assert f() == 1"]}] * 5
    expected = sum(i * i for i in range(work))
    recs += [{"completion": honest, "test_list": [f"assert f() == {expected}"]}] * 4
    with CodeVerifier(workers=9, timeout=2.0) as v:
        rewards = [x.reward for x in v.score(recs)]
    assert rewards == [0.0] * 5 + [1.0] * 4, rewards
    assert wait_no_survivors() == []


@needs_bwrap
def test_a_test_is_timed_in_cpu_seconds_with_a_wall_backstop(verifier):
    """A starved honest test no longer times out on the wall clock: `timeout` counts CPU seconds
    (here 1 s), and the wall clock stops a test at twice that."""
    prog = py("import time\ndef f(s):\n    time.sleep(s)\n    return s")
    lines = ["assert f(1.2) == 1.2", "assert f(30) == 30"]
    v = score(verifier, {"completion": prog, "test_list": lines})
    assert v.detail["tests"] == ["pass", "timeout"], v


@needs_bwrap
def test_a_sandbox_is_one_session(verifier):
    """setsid is refused: every process of a sandbox stays in one session (one autogroup where
    the scheduler groups by session), so forking does not buy a program more CPU."""
    prog = py(
        "import errno, os\ndef f():\n    try:\n        os.setsid()\n        return 'ok'\n"
        "    except OSError as e:\n        return errno.errorcode[e.errno]"
    )
    v = score(verifier, {"completion": prog, "test_list": ["assert f() == 'EPERM'"]})
    assert v.reward == 1.0, v


def _keyctl_numbers() -> dict[str, int]:
    import platform

    from reasoner.verifiers import seccomp

    arch = seccomp._ARCHES.get(platform.machine())
    if arch is None:
        pytest.skip("no syscall numbers for this architecture")
    return arch[1]


KEYRING_PROBE = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def f(name):
    kid = libc.syscall({request_key}, b'user', name.encode(), None, 0)
    planted = libc.syscall({add_key}, b'user', b'reasoner-planted-{tag}', b'x', 1, -3)
    if kid < 0:
        return 'denied', planted
    buf = ctypes.create_string_buffer(64)
    n = libc.syscall({keyctl}, 11, kid, buf, 64)
    return buf.raw[:max(n, 0)].decode(), planted
"""


@needs_bwrap
def test_hostile_reads_and_plants_session_keyring_keys(verifier):
    nr = _keyctl_numbers()
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    tag = str(os.getpid())
    name, secret = f"reasoner-canary-{tag}", f"s3cret-{tag}"
    kid = libc.syscall(nr["add_key"], b"user", name.encode(), secret.encode(), len(secret), -3)
    if kid < 0:
        pytest.skip("keyrings are not available here")
    try:
        probe = KEYRING_PROBE.format(tag=tag, **nr)
        # control: an unsandboxed child of this process reads the key and plants one
        ctl = subprocess.run(
            ["/usr/bin/python3", "-I", "-c", probe + f"\nprint(f({name!r})[0])"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert ctl.stdout.strip() == secret, ctl
        planted = libc.syscall(nr["request_key"], b"user", f"reasoner-planted-{tag}".encode(), None, 0)
        assert planted > 0  # the control's key outlived it
        libc.syscall(nr["keyctl"], 21, planted)  # KEYCTL_INVALIDATE
        time.sleep(0.1)
        v = score(
            verifier,
            {"completion": py(probe), "test_list": [f"assert f({name!r})[0] == {secret!r}"]},
        )
        assert v.reward == 0.0, v
        again = libc.syscall(nr["request_key"], b"user", f"reasoner-planted-{tag}".encode(), None, 0)
        assert again < 0  # nothing planted by the sandboxed run
    finally:
        libc.syscall(nr["keyctl"], 21, kid)


ZOMBIE_SCRIPT = """
import ctypes, os, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
from reasoner.verifiers.code import CodeVerifier
ok = {"completion": "```python\\ndef f():\\n    return 1\\n```", "test_list": ["assert f() == 1"]}
hang = {"completion": "```python\\nimport time\\ntime.sleep(60)\\n```", "test_list": ["assert 1"]}
io = {"completion": "```python\\nprint(input())\\n```", "tests": [{"input": "a", "output": "a"}]}
with CodeVerifier(workers=2, timeout=0.5) as v:
    print([x.reward for x in v.score([ok, io, hang] * 4)])
time.sleep(0.3)
zombies = 0
for d in os.listdir('/proc'):
    if d.isdigit():
        try:
            stat = open(f'/proc/{d}/stat').read()
        except OSError:
            continue
        state, ppid = stat[stat.rfind(')') + 2:].split()[:2]
        zombies += state == 'Z' and int(ppid) == os.getpid()
print('zombies', zombies)
"""


@needs_bwrap
def test_no_zombies_left_for_a_subreaper():
    """As a subreaper (or PID 1 of a container) every run left one unreaped bwrap behind."""
    res = subprocess.run(
        [sys.executable, "-c", ZOMBIE_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == str([1.0, 1.0, 0.0] * 4) and lines[1] == "zombies 0", res.stdout


PIDFD_THIEF = (
    "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "pfd = libc.syscall(434, os.getppid(), 0)\n"  # pidfd_open the parent (the harness)
    "taken = sum(libc.syscall(438, pfd, fd, 0) >= 0 for fd in range(64)) if pfd >= 0 else 0\n"
    "print('taken' if taken else 'none')"
)


@needs_bwrap
def test_hostile_stdio_test_cannot_take_the_harness_fds(verifier):
    import platform

    if platform.machine() != "x86_64":
        pytest.skip("syscall numbers are x86-64's")
    # control: a child of an unsandboxed process takes its parent's fds this way
    ctl = subprocess.run(
        [sys.executable, "-c", f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {PIDFD_THIEF!r}])"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if ctl.stdout.strip() != "taken":
        pytest.skip(f"pidfd_getfd is not available to a same-uid child here: {ctl.stdout!r}")
    v = score(verifier, {"completion": py(PIDFD_THIEF), "tests": [{"input": "", "output": "taken"}]})
    assert v.reward == 0.0 and v.detail["tests"] == ["fail"], v


FD_SCRIPT = r"""
import os, resource, sys, warnings
from reasoner.verifiers.code import CodeVerifier
from reasoner.verifiers.code.verifier import FDS_PER_RUN, FDS_RESERVE
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if sys.argv[1] == "raise":
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
    with CodeVerifier(workers=12, timeout=5.0) as v:
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= FDS_RESERVE + 12 * FDS_PER_RUN
        raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised + 1100, hard))  # room for these:
        held = [os.dup(0) for _ in range(1100)]  # the sandbox's pipes get numbers past 1024
        assert max(held) > 1024
        recs = [{"completion": "```python\nprint(int(input()) * 2)\n```",
                 "tests": [{"input": str(k), "output": str(2 * k)} for k in range(40)]},
                {"completion": "```python\ndef f(x):\n    return x + 1\n```",
                 "test_list": ["assert f(1) == 2"]}] * 6
        print(sorted({(r.reward, r.reason) for r in v.score(recs)}))
else:
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with CodeVerifier(workers=8, timeout=5.0) as v:
            print(v.workers, "ulimit -n" in str(w[0].message))
"""


@needs_bwrap
@pytest.mark.skipif(
    __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1] < 4096,
    reason="the hard open-file limit is below 4096",
)
def test_many_workers_get_the_open_files_they_need_and_fds_past_1024_work():
    """A many-core host's default workers needed more fds than the usual soft limit of 1024:
    every run of the batch failed with EMFILE. The verifier raises the soft limit (or, under a
    low hard limit, uses the workers that fit, with a warning), and waits on pipes with poll,
    since select refuses fd numbers from 1024 on."""
    r = subprocess.run([sys.executable, "-c", FD_SCRIPT, "raise"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[(1.0, 'ok')]", r.stdout
    r = subprocess.run([sys.executable, "-c", FD_SCRIPT, "cap"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1 True", r.stdout
