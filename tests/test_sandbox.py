"""The bubblewrap sandbox itself: refusal without bwrap, the command line, what a program sees
inside, the unprivileged host uid, wall-clock and output limits killing the whole process tree."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from reasoner.verifiers.code import CodeVerifier
from reasoner.verifiers.sandbox import (
    NOBODY,
    Sandbox,
    SandboxConfig,
    SandboxLimits,
    SandboxUnavailable,
)

REPO = Path(__file__).resolve().parents[1]
EXEC = "import sys\nexec(sys.argv[1])"  # a harness that just runs its first argument
needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed"
)


def test_missing_bwrap_raises_clear_error():
    with pytest.raises(SandboxUnavailable, match="not found.*never run unsandboxed"):
        Sandbox(SandboxConfig(bwrap="definitely-not-bwrap"))


def test_code_verifier_never_falls_back_without_bwrap(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        CodeVerifier(workers=1)


@pytest.fixture(scope="module")
def sandbox():
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    return Sandbox(SandboxConfig(limits=SandboxLimits(output_bytes=4096, tmpfs_bytes=2**20)))


@needs_bwrap
def test_virtualenv_interpreter_is_refused():
    if sys.prefix == sys.base_prefix:
        pytest.skip("tests are not running in a virtualenv")
    with pytest.raises(SandboxUnavailable, match="virtualenv"):
        Sandbox(SandboxConfig(python=os.path.join(sys.prefix, "bin", "python")))


@needs_bwrap
def test_command_line_has_every_isolation_flag(sandbox):
    argv = sandbox.command("pass")
    for flag in (
        "--unshare-all",
        "--unshare-user",
        "--clearenv",
        "--die-with-parent",
        "--new-session",
        "--disable-userns",
    ):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--uid") + 1] == str(NOBODY) and argv[argv.index("--gid") + 1] == str(
        NOBODY
    )
    i = argv.index("/tmp")
    assert argv[i - 3 : i] == ["--size", str(2**20), "--tmpfs"]
    assert argv[argv.index("--remount-ro") + 1] in ("/",) or ["--remount-ro", "/"] == argv[-7:-5]
    assert argv[-5:-1] == ["-I", "-S", "-B", "-c"]
    binds = [argv[k + 2] for k, a in enumerate(argv) if a in ("--ro-bind", "--bind")]
    for b in binds:
        assert not b.startswith((str(REPO), sys.prefix, "/root", "/home", "/tmp", "/etc")), b
    assert "--bind" not in argv and "--proc" not in argv and "--share-net" not in argv


INSIDE = r"""
import os, socket, sys, errno
r = {}
r['ids'] = (os.getuid(), os.getgid(), os.geteuid())
r['env'] = sorted(os.environ)
r['root'] = sorted(os.listdir('/'))
r['pid'] = os.getpid()
r['host'] = socket.gethostname()
r['ifaces'] = [n for _, n in socket.if_nameindex()]
r['path_sp'] = [p for p in sys.path if 'packages' in p]
r['visible'] = [p for p in sys.argv[2:] if os.path.exists(p)]
def err(fn):
    try:
        fn()
        return 'ok'
    except OSError as e:
        return errno.errorcode[e.errno]
r['setuid0'] = err(lambda: os.setuid(0))
r['write_root'] = err(lambda: open('/owned', 'w').close())
r['write_usr'] = err(lambda: open(sys.executable, 'ab').close())
r['fill_tmp'] = err(lambda: open('/tmp/f', 'wb').write(b'x' * 2**21))
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
r['unshare_user'] = (libc.unshare(0x10000000), errno.errorcode.get(ctypes.get_errno()))
import platform
if platform.machine() == 'x86_64':  # the seccomp filter: EPERM for these
    calls = {'shmget': (29, 0, 4096, 0o1600), 'keyctl': (250, 0, -3, 0), 'setsid': (112,),
             'memfd_create': (319, b'x', 0), 'ptrace': (101, 16, 1, 0, 0)}
    r['denied'] = {}
    for name, args in calls.items():
        ret = libc.syscall(*args)
        r['denied'][name] = errno.errorcode.get(ctypes.get_errno()) if ret < 0 else 'ok'
r['proc'] = os.path.exists('/proc/self')
r['sh'] = os.path.exists('/bin/sh') or os.path.exists('/usr/bin/sh')
print(repr(r))
"""


@needs_bwrap
def test_what_the_program_sees_inside(sandbox, monkeypatch):
    monkeypatch.setenv("REASONER_SECRET_TOKEN", "s3cret")
    probe = [str(REPO), sys.prefix, str(Path.home()), "/etc/passwd", "/root", "/work", "/run"]
    res = sandbox.run([INSIDE, *probe], b"", timeout=20, harness=EXEC)
    r = eval(res.stdout.decode())  # output of our own probe program
    assert r["ids"] == (NOBODY, NOBODY, NOBODY)
    assert set(r["env"]) <= {"LANG", "PYTHONDONTWRITEBYTECODE", "PWD"}
    assert set(r["root"]) <= {"usr", "lib", "lib64", "dev", "tmp"}
    assert r["pid"] <= 3  # fresh pid namespace: bwrap's init is 1
    assert r["host"] == "sandbox"
    assert r["ifaces"] == ["lo"]  # fresh net namespace
    assert r["path_sp"] == [] and r["visible"] == []
    assert r["setuid0"] in ("EPERM", "EINVAL")  # uid 0 is not even mapped
    assert r["write_root"] in ("EROFS", "EACCES") and r["write_usr"] in ("EROFS", "EACCES")
    assert r["fill_tmp"] in ("ENOSPC", "EFBIG")  # the 1 MiB tmpfs is full
    assert r["proc"] is False and r["sh"] is False
    assert r["unshare_user"][0] == -1  # --disable-userns: no nested user namespace
    if "denied" in r:
        assert set(r["denied"].values()) == {"EPERM"}, r["denied"]


@needs_bwrap
def test_command_line_passes_this_runs_fds(sandbox):
    argv = sandbox.command("pass", (), info_fd=7, block_fd=8, seccomp_fd=9)
    i = len(argv) - 1 - argv[::-1].index(sandbox.python)
    assert argv[i - 6 : i] == ["--info-fd", "7", "--block-fd", "8", "--seccomp", "9"]
    assert sandbox.seccomp is None or len(sandbox.seccomp) % 8 == 0


@needs_bwrap
def test_each_run_is_in_its_own_cgroup_before_it_runs_code():
    try:
        sb = Sandbox(SandboxConfig(cgroups="require"))
    except SandboxUnavailable as e:
        pytest.skip(f"no per-sandbox cgroups here: {e}")
    marker = "cgroup-probe-51c2"
    seen: list[str] = []

    def watch() -> None:
        for _ in range(200):
            for d in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmd = Path(f"/proc/{d}/cmdline").read_bytes()
                    # the sandboxed interpreter (bwrap's own command line holds the marker too)
                    if marker.encode() in cmd and cmd.split(b"\0")[0] == sb.python.encode():
                        seen.append(Path(f"/proc/{d}/cgroup").read_text())
                except OSError:
                    pass
            if seen:
                return
            time.sleep(0.01)

    t = threading.Thread(target=watch)
    t.start()
    assert sb.cgroups is not None
    bases = [h.base for h in sb.cgroups.hierarchies]
    try:
        res = sb.run([f"import time; time.sleep(1) # {marker}"], b"", 10, EXEC)
    finally:
        t.join()
        sb.close()
    assert res.returncode == 0 and seen, (res, seen)
    mem = [ln for ln in seen[0].splitlines() if ":memory:" in ln or ln.startswith("0::")]
    assert any(os.path.basename(bases[0]) in ln for ln in mem), (seen[0], bases)
    assert not any(os.path.exists(b) for b in bases)  # close() removes them


@needs_bwrap
def test_runs_as_unprivileged_host_uid(sandbox):
    if os.geteuid() != 0:
        pytest.skip("only root switches host uid")
    marker = "uid-probe-7d1e"
    t = threading.Thread(
        target=sandbox.run, args=([f"import time; time.sleep(2) # {marker}"], b"", 10, EXEC)
    )
    t.start()
    try:
        uids = []
        for _ in range(100):
            for d in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if marker.encode() in Path(f"/proc/{d}/cmdline").read_bytes():
                        status = Path(f"/proc/{d}/status").read_text()
                        uids.append(next(ln for ln in status.splitlines() if ln.startswith("Uid:")))
                except OSError:
                    pass
            if uids:
                break
            time.sleep(0.05)
        assert uids and all(u.split()[1:] == [str(NOBODY)] * 4 for u in uids), uids
    finally:
        t.join()


def _survivors(marker: bytes) -> list[str]:
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker in Path(f"/proc/{d}/cmdline").read_bytes():
                out.append(d)
        except OSError:
            pass
    return out


@needs_bwrap
def test_wall_clock_kills_the_whole_tree(sandbox):
    prog = (
        "import os, signal, time  # tree-kill-probe\n"
        "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP): signal.signal(s, signal.SIG_IGN)\n"
        "if os.fork() == 0:\n    os.setsid()\n    while True: time.sleep(1)\n"
        "while True: pass\n"
    )
    res = sandbox.run([prog], b"", timeout=0.5, harness=EXEC)
    assert res.timed_out and not res.output_exceeded
    for _ in range(40):
        if not _survivors(b"tree-kill-probe"):
            break
        time.sleep(0.05)
    assert _survivors(b"tree-kill-probe") == []


@needs_bwrap
def test_output_is_capped_and_run_killed(sandbox):
    res = sandbox.run(
        ["import os\nwhile True: os.write(1, b'x' * 65536)"], b"", timeout=20, harness=EXEC
    )
    assert res.output_exceeded and len(res.stdout) == 4096 and not res.timed_out


@needs_bwrap
def test_stdin_is_delivered_in_full(sandbox):
    data = bytes(range(256)) * 4000  # 1 MB: more than a pipe buffer
    prog = "import sys, hashlib\nprint(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"
    import hashlib

    res = sandbox.run([prog], data, timeout=20, harness=EXEC)
    assert res.stdout.decode().strip() == hashlib.sha256(data).hexdigest()


@needs_bwrap
def test_base_interpreter_site_packages_hidden():
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = os.path.join(sys.base_prefix, "bin", ver)
    site = os.path.join(sys.base_prefix, "lib", ver, "site-packages")
    if os.geteuid() != 0 or not os.path.isdir(site) or not os.listdir(site):
        pytest.skip("needs root and a base interpreter with a non-empty site-packages")
    # host_uid=0 only so that bwrap may read an interpreter under /root in this test
    sb = Sandbox(SandboxConfig(python=base, host_uid=0))
    prog = f"import os\nprint(os.listdir({site!r}), os.path.exists({sys.prefix!r}))"
    res = sb.run([prog], b"", timeout=20, harness=EXEC)
    assert res.stdout.decode().split() == ["[]", "False"], res


@needs_bwrap
def test_deadline_holds_after_program_closes_its_streams(sandbox):
    prog = "import os\nfor fd in (0, 1, 2):\n    os.close(fd)\nwhile True: pass"
    res = sandbox.run([prog], b"", timeout=0.5, harness=EXEC)
    assert res.timed_out  # set only when the deadline, not stream EOF, ended the run


def test_cgroup_v2_layout(tmp_path):
    """The v2 path on a stand-in directory (this host may have no writable v2 hierarchy): the
    controllers are enabled below our cgroup, each slot gets its memory and CPU limits."""
    from reasoner.verifiers.cgroups import SandboxCgroups

    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("\n")
    mounts = [("/sys/fs/cgroup", "/", "cgroup2", {"rw"})]
    hs = SandboxCgroups._v2(mounts, {"": "/"}, "reasoner-test", str(tmp_path))
    assert not isinstance(hs, str) and hs[0].controllers == ("memory", "cpu")
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +cpu"
    base = tmp_path / "reasoner-test"
    assert (base / "cgroup.subtree_control").read_text() == "+memory +cpu"
    mgr = SandboxCgroups(hs, 256 * 2**20, 0.5)
    slot = mgr.acquire()
    d = Path(slot.dirs[0])
    assert d.parent == base and (d / "memory.max").read_text() == str(256 * 2**20)
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert (d / "memory.swap.max").read_text() == "0"
    assert (base / "cpu.weight").read_text() == "100"  # one slot: one process's weight
    mgr.release(slot)
    assert mgr.acquire() is slot  # reused once empty
    (tmp_path / "cgroup.controllers").write_text("cpu pids\n")
    assert "no memory controller" in SandboxCgroups._v2(mounts, {"": "/"}, "x", str(tmp_path))
