"""Run untrusted Python in a bubblewrap sandbox with hard resource limits.

One call to `Sandbox.run` starts one `bwrap` process that runs the trusted harness
(`python -I -S -B -c HARNESS`) in fresh user, pid, net, ipc, uts and cgroup namespaces:

- the sandbox sees only a read-only interpreter, its standard library and the shared libraries it
  links (found with `ldd`), a size-capped private tmpfs on /tmp, /dev/{null,zero,random,urandom};
  the root is remounted read-only; no /proc, no home, no project tree, no host /tmp, no site-packages;
- uid/gid 65534 inside; when the parent is root, bwrap itself is started as host uid/gid 65534
  (`Popen(user=, group=)`), so sandboxed processes are not host root and RLIMIT_NPROC is enforced
  (the kernel never applies RLIMIT_NPROC to host uid 0);
- `--cap-drop ALL --clearenv --die-with-parent --new-session`, environment: LANG=C.UTF-8 only;
- a seccomp filter (`seccomp.py`, x86-64 and aarch64) refuses SysV IPC, memfd, keyrings, ptrace
  and friends, setsid and io_uring;
- where the host allows it, the whole sandbox runs in its own memory + CPU cgroup (`cgroups.py`):
  bwrap is held at `--block-fd` until its processes are in the cgroup, so no sandboxed code runs
  outside it;
- the harness sets RLIMIT_AS / CPU / FSIZE / NOFILE / NPROC / CORE / MSGQUEUE before any untrusted
  code runs (hard = soft, and nothing in the sandbox holds CAP_SYS_RESOURCE to raise them again);
- the parent enforces a wall-clock limit and caps every output stream; on either it SIGKILLs
  bwrap's process group. bwrap's pid-1 then dies and the kernel kills every process left in the
  pid namespace, so nothing survives a run. bwrap's pid 1 is reaped here too when this process is
  its reaper (PID 1 of a container, or a subreaper), so runs leave no zombies.

If bubblewrap is missing or cannot create namespaces, `SandboxUnavailable` is raised: code is
never run unsandboxed.
"""

from __future__ import annotations

import os
import re
import select
import selectors
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

from reasoner.verifiers.cgroups import SandboxCgroups
from reasoner.verifiers.seccomp import denied_syscalls, filter_program

NOBODY = 65534


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or refuses to run here; untrusted code is never run without it."""


@dataclass
class SandboxLimits:
    """Resource limits of one sandboxed run (applied to the untrusted process tree)."""

    memory_bytes: int = 512 * 2**20  # RLIMIT_AS
    file_bytes: int = 16 * 2**20  # RLIMIT_FSIZE: largest file the program may write
    tmpfs_bytes: int = 32 * 2**20  # size of the private /tmp
    open_files: int = 64  # RLIMIT_NOFILE
    # RLIMIT_NPROC: processes + threads of uid 65534 inside this sandbox's own user namespace,
    # bwrap's pid 1 and the harness included. Worst-case memory of one run is about
    # processes * memory_bytes; of the verifier, workers times that.
    processes: int = 8
    # stdout and stderr are each read up to this many bytes, then the run is killed
    output_bytes: int = 1 * 2**20
    channel_bytes: int = 8 * 2**20  # the harness's result channel, same rule
    # The sandbox's memory cgroup, where one can be made (see SandboxConfig.cgroups): RAM of all
    # its processes plus kernel memory (tmpfs inodes and dentries, pipes, page tables).
    sandbox_memory_bytes: int = 1 * 2**30
    sandbox_cpus: float = 1.0  # its CPU quota (cgroup cpu controller), in CPUs


@dataclass
class RunResult:
    """What the parent observed of one run. Nothing in it comes from an exit code alone."""

    stdout: bytes
    stderr: bytes
    channel: bytes  # bytes the harness wrote to its result pipe
    returncode: int | None
    timed_out: bool = False
    output_exceeded: bool = False  # stdout, stderr or the channel passed its cap: run killed
    wall_seconds: float = 0.0
    outputs: list[bytes] = field(default_factory=list)  # the extra output pipes, in order
    outputs_exceeded: list[bool] = field(default_factory=list)

    @property
    def killed(self) -> bool:
        return self.timed_out or self.output_exceeded


@dataclass
class SandboxConfig:
    # interpreter run inside; default: /usr/bin/python3, else the one under sys.base_prefix
    python: str | None = None
    bwrap: str = "bwrap"
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    host_uid: int = NOBODY  # used only when the parent runs as root
    # One cgroup per sandbox: "auto" (where the host lets us make them), "off", or "require"
    # (raise SandboxUnavailable where it can't).
    cgroups: str = "auto"
    cgroup_parent: str | None = None  # a cgroup v2 directory to make them under (default: ours)


def default_python() -> str:
    """The base interpreter (never a virtualenv's): /usr/bin/python3 when present, since it is
    readable by the unprivileged host uid, else the interpreter under sys.base_prefix."""
    if os.access("/usr/bin/python3", os.X_OK):
        return "/usr/bin/python3"
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for name in (ver, "python3"):
        cand = os.path.join(sys.base_prefix, "bin", name)
        if os.access(cand, os.X_OK):
            return cand
    raise SandboxUnavailable(
        "no base Python interpreter found (tried /usr/bin/python3 and sys.base_prefix)"
    )


_PROBE = "import sys; print(sys.prefix); print(*sys.path, sep='\\n')"


def _interpreter_paths(python: str) -> tuple[list[tuple[str, str]], list[str]]:
    """([(host path, sandbox path)] to bind read-only, site-packages directories to hide).

    Asks the interpreter itself (trusted, run unsandboxed with -I -S and an empty environment,
    executing only the probe above) for its stdlib directories, then `ldd` for the shared
    libraries the executable and its C extension modules load; each library file is bound on
    its own (plus libgcc_s, which glibc loads at thread exit), not whole library directories."""
    out = subprocess.run(
        [python, "-I", "-S", "-c", _PROBE], capture_output=True, text=True, timeout=30, env={}
    )
    if out.returncode != 0:
        raise SandboxUnavailable(
            f"cannot run the sandbox interpreter {python}: {out.stderr.strip()}"
        )
    _, *path = out.stdout.splitlines()
    bindir = os.path.dirname(os.path.abspath(python))
    if any(
        os.path.exists(os.path.join(d, "pyvenv.cfg")) for d in (bindir, os.path.dirname(bindir))
    ):
        raise SandboxUnavailable(f"{python} is a virtualenv interpreter; pass a base interpreter")
    stdlib = [p for p in path if p and os.path.isdir(p)]
    real = os.path.realpath(python)
    binds = [(real, real)] + [(d, d) for d in stdlib]
    hidden = [
        os.path.join(d, s)
        for d in stdlib
        for s in ("site-packages", "dist-packages")
        if os.path.isdir(os.path.join(d, s))
    ]
    objects = [os.path.realpath(python)]
    for d in stdlib:
        if d.endswith("lib-dynload"):
            objects += [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".so")]
    libs: set[str] = set()
    ldd = shutil.which("ldd")
    if ldd is None:
        raise SandboxUnavailable("ldd not found: cannot list the interpreter's shared libraries")
    res = subprocess.run([ldd, *objects], capture_output=True, text=True, timeout=60)
    for line in res.stdout.splitlines():
        if line.endswith(":"):  # "<object>:" header when ldd gets several files
            continue
        for p in line.replace("=>", " ").split():
            if p.startswith("/") and os.path.isfile(p):
                libs.add(p)
    for lib in sorted(libs):
        if lib.endswith("/libc.so.6"):
            gcc = os.path.join(os.path.dirname(lib), "libgcc_s.so.1")
            if os.path.isfile(gcc):
                libs.add(gcc)
    in_stdlib = tuple(d.rstrip("/") + "/" for d in stdlib)
    binds += [(os.path.realpath(p), p) for p in sorted(libs) if not p.startswith(in_stdlib)]
    return binds, hidden


class Sandbox:
    """Builds the bwrap command once; `run` is thread-safe (one bwrap process per call)."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        if self.config.cgroups not in ("auto", "off", "require"):
            raise ValueError(
                "SandboxConfig.cgroups must be 'auto', 'off' or 'require', "
                f"not {self.config.cgroups!r}"
            )
        given = self.config.python or default_python()
        bwrap = shutil.which(self.config.bwrap)
        if bwrap is None:
            raise SandboxUnavailable(
                f"bubblewrap ({self.config.bwrap!r}) not found on PATH; install it "
                "(Debian/Ubuntu: apt-get install bubblewrap). Code is never run unsandboxed."
            )
        self.bwrap = bwrap
        self.as_nobody = os.geteuid() == 0
        binds, hidden = _interpreter_paths(given)  # refuses a virtualenv's interpreter
        self.python = os.path.realpath(given)
        self._argv = self._build_argv(binds, hidden)
        self.seccomp = filter_program()
        self.cgroups: SandboxCgroups | None = None
        why = "off (SandboxConfig.cgroups)"
        if self.config.cgroups != "off":
            lim = self.config.limits
            self.cgroups, why = SandboxCgroups.detect(
                lim.sandbox_memory_bytes, lim.sandbox_cpus, self.config.cgroup_parent
            )
            if self.cgroups is None and self.config.cgroups == "require":
                raise SandboxUnavailable(f"per-sandbox cgroups are required but unavailable: {why}")
            if self.cgroups is not None:  # removed at exit even if close() is never called
                weakref.finalize(self, self.cgroups.close)
        self.guarantees = {
            "seccomp": (
                f"{len(denied_syscalls())} system calls denied"
                if self.seccomp
                else "not installed (no system call numbers for this architecture)"
            ),
            "cgroups": self.cgroups.description if self.cgroups else f"unavailable: {why}",
        }
        try:
            self._probe()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Remove the per-sandbox cgroups (call when no run is in flight)."""
        if self.cgroups is not None:
            self.cgroups.close()
            self.cgroups = None

    def _build_argv(self, binds: list[tuple[str, str]], hidden: list[str]) -> list[str]:
        lim = self.config.limits
        argv = [
            self.bwrap,
            "--unshare-all",
            "--unshare-user",
            "--uid", str(NOBODY), "--gid", str(NOBODY),
            "--hostname", "sandbox",
            "--cap-drop", "ALL",
            "--clearenv",
            "--setenv", "LANG", "C.UTF-8",
            "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--die-with-parent",
            "--new-session",
            "--disable-userns",
        ]  # fmt: skip
        seen: set[str] = set()
        for src, dest in binds:
            if dest not in seen:
                seen.add(dest)
                argv += ["--ro-bind", src, dest]
        for path in hidden:
            argv += ["--tmpfs", path, "--remount-ro", path]
        for dev in ("null", "zero", "random", "urandom"):
            argv += ["--dev-bind-try", f"/dev/{dev}", f"/dev/{dev}"]
        argv += ["--size", str(lim.tmpfs_bytes), "--tmpfs", "/tmp", "--chdir", "/tmp"]
        argv += ["--remount-ro", "/"]
        return argv

    def command(
        self,
        harness: str,
        args: Sequence[str] = (),
        info_fd: int | None = None,
        block_fd: int | None = None,
        seccomp_fd: int | None = None,
    ) -> list[str]:
        """The bwrap command line; the fds are this run's (`--info-fd`, `--block-fd`,
        `--seccomp`)."""
        extra: list[str] = []
        fds = (("--info-fd", info_fd), ("--block-fd", block_fd), ("--seccomp", seccomp_fd))
        for flag, fd in fds:
            if fd is not None:
                extra += [flag, str(fd)]
        return [*self._argv, *extra, self.python, "-I", "-S", "-B", "-c", harness, *args]

    def _probe(self) -> None:
        res = self.run(["print(6 * 7)"], b"", timeout=30.0, harness="import sys; exec(sys.argv[1])")
        if res.stdout.strip() != b"42":
            msg = res.stderr.decode(errors="replace").strip() or f"exit status {res.returncode}"
            raise SandboxUnavailable(
                f"bubblewrap cannot start a sandbox here ({msg}). It needs unprivileged user "
                "namespaces (sysctl kernel.unprivileged_userns_clone=1, "
                "user.max_user_namespaces > 0), and, when run as root, an interpreter readable "
                f"by uid {NOBODY} (python={self.python}). Code is never run unsandboxed."
            )

    def run(
        self,
        args: Sequence[str],
        stdin: bytes,
        timeout: float,
        harness: str,
        channel: bool = False,
        outputs: int = 0,
    ) -> RunResult:
        """Run `python -c harness *args` sandboxed, feeding `stdin`, for at most `timeout` wall
        seconds.

        channel: pass in the write end of a pipe; its fd number is appended to the arguments and
            what the harness writes there comes back in `RunResult.channel` (capped at
            `channel_bytes`; past it the run is killed).
        outputs: pass in this many more pipe write ends (fd numbers appended after the channel's),
            e.g. one stdout per test; each comes back in `RunResult.outputs`, read up to
            `output_bytes`, after which the parent stops reading it (closing its end) and sets
            `outputs_exceeded[i]`; the run goes on.
        stdout/stderr of the run are capped at `output_bytes`; past it the run is killed."""
        args = list(args)
        ours: list[int] = []  # read ends kept here: channel first, then outputs
        theirs: list[int] = []  # fds passed into bwrap (closed here once it started)
        control: list[int] = []  # our ends of the info and block pipes
        try:
            for _ in range(int(channel) + outputs):
                r, w = os.pipe()
                ours.append(r)
                theirs.append(w)
            info_r, info_w = os.pipe()
            control.append(info_r)
            theirs.append(info_w)
            block_r, block_w = os.pipe()
            control.append(block_w)
            theirs.append(block_r)
            seccomp_fd = None
            if self.seccomp is not None:
                seccomp_fd, w = os.pipe()
                theirs.append(seccomp_fd)
                try:
                    os.write(w, self.seccomp)  # a few hundred bytes: fits the pipe's buffer
                finally:
                    os.close(w)
        except OSError:
            for fd in ours + theirs + control:
                os.close(fd)
            raise
        args += [str(w) for w in theirs[: len(ours)]]
        ids: dict[str, object] = {}
        if self.as_nobody:
            ids = {"user": self.config.host_uid, "group": self.config.host_uid, "extra_groups": []}
        start = time.monotonic()
        deadline = start + timeout
        try:
            proc = subprocess.Popen(
                self.command(harness, args, info_w, block_r, seccomp_fd),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=tuple(theirs),
                close_fds=True,
                start_new_session=True,
                env={},
                **ids,  # type: ignore[arg-type]
            )
        except OSError as e:
            for fd in ours + control:
                os.close(fd)
            raise SandboxUnavailable(f"cannot start bubblewrap: {e}") from e
        finally:
            for fd in theirs:
                os.close(fd)
        pidfd: int | None = None
        slot = None
        try:
            child = _read_child_pid(info_r, deadline)
            if child is not None:
                try:
                    pidfd = os.pidfd_open(child)
                except OSError:
                    pidfd = None
            if self.cgroups is not None and child is not None:
                slot = self.cgroups.acquire()
                self.cgroups.attach(slot, [proc.pid, child])
            if self.cgroups is not None and child is None:
                _kill_group(proc)  # can't place it: it must not go on (the run reports why)
            else:
                try:
                    os.write(block_w, b"g")  # let the sandbox go on: its processes are placed
                except BrokenPipeError:
                    pass  # bwrap already gave up; the run reports why
        except BaseException as e:
            _kill_group(proc)
            proc.wait()
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f is not None:
                    f.close()
            for fd in ours:
                os.close(fd)
            if pidfd is not None:
                _reap_orphan(pidfd)
            if slot is not None and self.cgroups is not None:
                self.cgroups.release(slot)
            if isinstance(e, OSError):
                raise SandboxUnavailable(f"cannot place the sandbox in its cgroup: {e}") from e
            raise
        finally:
            for fd in control:
                os.close(fd)
        try:
            return self._communicate(proc, stdin, ours, channel, start, deadline)
        finally:
            if pidfd is not None:
                _reap_orphan(pidfd)
            if slot is not None and self.cgroups is not None:
                self.cgroups.release(slot)

    def _communicate(
        self,
        proc: subprocess.Popen[bytes],
        stdin: bytes,
        ours: list[int],
        channel: bool,
        start: float,
        deadline: float,
    ) -> RunResult:
        lim = self.config.limits
        assert proc.stdin and proc.stdout and proc.stderr
        # fd -> [buffer, cap, kills the run when exceeded]
        reads: dict[int, tuple[bytearray, int, bool]] = {
            proc.stdout.fileno(): (bytearray(), lim.output_bytes, True),
            proc.stderr.fileno(): (bytearray(), lim.output_bytes, True),
        }
        for k, fd in enumerate(ours):
            is_channel = channel and k == 0
            reads[fd] = (
                bytearray(),
                lim.channel_bytes if is_channel else lim.output_bytes,
                is_channel,
            )
        order = list(reads)  # stdout, stderr, [channel], outputs...
        over: set[int] = set()
        timed_out = exceeded = False
        sel = selectors.DefaultSelector()
        try:
            for fd in reads:
                sel.register(fd, selectors.EVENT_READ)
            stdin_fd = proc.stdin.fileno()
            pending = memoryview(stdin)
            if pending:
                os.set_blocking(stdin_fd, False)
                sel.register(stdin_fd, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
            open_reads = len(reads)
            while open_reads and not exceeded:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(left):
                    fd = key.fd
                    if fd == stdin_fd:
                        try:
                            pending = pending[os.write(fd, pending[:65536]) :]
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:  # the program won't read the rest
                            pending = pending[:0]
                        if not pending:
                            sel.unregister(fd)
                            proc.stdin.close()
                        continue
                    chunk = os.read(fd, 65536)
                    buf, cap, fatal = reads[fd]
                    room = cap - len(buf)
                    buf += chunk[: max(room, 0)]
                    if len(chunk) > room:
                        over.add(fd)
                        exceeded = exceeded or fatal
                    if not chunk or fd in over:
                        sel.unregister(fd)
                        open_reads -= 1
                    if fd in over and not fatal:  # the writer gets EPIPE instead of blocking
                        os.close(fd)
                        ours.remove(fd)
        finally:
            sel.close()
            if timed_out or exceeded or open_reads:
                _kill_group(proc)
            try:  # all streams closed, but the program may live on: the deadline still holds
                proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                proc.wait()
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if not f.closed:
                    try:
                        f.close()
                    except OSError:
                        pass
            for fd in ours:
                os.close(fd)
        bufs = [bytes(reads[fd][0]) for fd in order]
        n_fixed = 2 + int(channel)
        return RunResult(
            stdout=bufs[0],
            stderr=bufs[1],
            channel=bufs[2] if channel else b"",
            returncode=proc.returncode,
            timed_out=timed_out,
            output_exceeded=exceeded,
            wall_seconds=time.monotonic() - start,
            outputs=bufs[n_fixed:],
            outputs_exceeded=[fd in over for fd in order[n_fixed:]],
        )


_CHILD_PID = re.compile(rb'"child-pid"\s*:\s*(\d+)')


def _readable(fd: int, timeout: float) -> bool:
    """Whether `fd` becomes readable within `timeout` s. poll, not select: select refuses fd
    numbers from 1024 on, which a busy verifier (many workers, raised RLIMIT_NOFILE) reaches."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(max(0.0, timeout) * 1000))


def _read_child_pid(fd: int, deadline: float) -> int | None:
    """bwrap's `--info-fd` JSON (written by bwrap once it cloned the sandbox's pid 1, then
    closed): that pid 1's host pid, or None if bwrap exited or the deadline passed first."""
    data = b""
    while len(data) < 65536:
        left = deadline - time.monotonic()
        if left <= 0 or not _readable(fd, left):
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    m = _CHILD_PID.search(data)
    return int(m.group(1)) if m else None


def _reap_orphan(pidfd: int) -> None:
    """bwrap's pid 1 outlives bwrap by a moment and is then re-parented: to init, or to this
    process when it is PID 1 of a container or a subreaper. In that case reap it here (it dies
    at once: bwrap's --die-with-parent), or each run would leave a zombie."""
    try:
        try:
            if os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG) is None:
                _readable(pidfd, 5.0)  # readable once it has exited
                os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            pass  # not our child: its reaper is init
    finally:
        os.close(pidfd)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL bwrap's process group (bwrap and its pid-1); the pid namespace dies with pid 1."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except (ProcessLookupError, OSError):
        pass
