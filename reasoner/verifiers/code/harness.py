"""The trusted harness: the first code that runs inside the sandbox.

``verifier.BOOTSTRAP`` (the ``python -I -S -B -c`` program) reads this module and the sandbox half
of ``channel`` as code objects from stdin (compiled once by the sandbox's interpreter), makes the
``channel`` module and runs this one as ``__main__``; the result channel's fd is ``sys.argv[1]``,
the stdio tests' stdout pipes follow. It reads its job from stdin (marshal: 8-byte length, then a
dict), sets the rlimits (soft = hard for all but RLIMIT_CPU; nothing inside can raise them), points
stdin at /dev/null, writes ``start`` to the channel, and only then runs untrusted code:

- "asserts": first each test's *reference* leaves (those that name nothing of the program) are
  evaluated, each test's in a forked process, before any untrusted code runs ("p" lines); then
  the program runs as module ``solution`` under the per-test budget; then each test is
  a forked process (its own CPU budget, its own process group) that evaluates the test's leaf
  expressions in the program's namespace, encodes each value (``channel.make_encoder``) and hands
  the payload to the harness over a private pipe; the harness relays it to the channel, or
  reports why there is none (timeout, killed, exited). Tests can't see each other's side effects.
- "stdio": each test is a fresh interpreter (``python -I -S -B /tmp/solution.py``) in its own
  process group, stdin fed by a helper process, stdout the parent's pipe for that test; the
  harness makes itself non-dumpable first, so a test process can't attach to it.

Per test: ``timeout`` CPU seconds (``ITIMER_PROF``; ``RLIMIT_CPU`` backs it up, one test's budget
for every process) and ``wall`` seconds of wall clock, after which the test's process group is
killed. Nothing here imports the project: the sandbox sees only the standard library.
"""

import builtins
import marshal
import os
import sys

try:  # imported as part of the package (tests, linters)
    from .channel import MAX_ENCODED, make_emitter, make_encoder
except ImportError:  # inside the sandbox: the bootstrap made `channel` from sandbox_source()
    from channel import MAX_ENCODED, make_emitter, make_encoder  # type: ignore[no-redef]

SIGNAL_NAMES = {4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 11: "SIGSEGV", 13: "SIGPIPE"}


class _Timeout(BaseException):
    pass


def _alarm(*_):
    raise _Timeout()


def safe_name(e, _type=type, _isalnum=str.isalnum, _join="".join, _str=str):
    """An exception's class name reduced to [A-Za-z0-9_], at most 60 characters."""
    n = _type(e).__name__
    if _type(n) is not _str or not n:
        return "_"
    return _join([c if _isalnum(c) and c.isascii() else "_" for c in n[:60]])


def read_job(fd=0):
    def readn(n):
        parts = []
        while n:
            b = os.read(fd, n)
            if not b:
                os._exit(3)
            parts.append(b)
            n -= len(b)
        return b"".join(parts)

    return marshal.loads(readn(int.from_bytes(readn(8), "little")))


def set_nondumpable():
    """prctl(PR_SET_DUMPABLE, 0) through _ctypes (the `ctypes` package costs ~10 ms to import):
    a non-dumpable process can't be ptrace'd, nor its fds taken with pidfd_getfd, by its own
    uid. Best effort: the seccomp filter denies those calls as well."""
    try:
        import _ctypes

        class _Int(_ctypes._SimpleCData):
            _type_ = "i"

        class _Fn(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL
            _restype_ = _Int

        class _Lib:
            _handle = _ctypes.dlopen(None)

        _Fn(("prctl", _Lib()))(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (ImportError, OSError, AttributeError):
        pass


def _kill_group(pid, _killpg=os.killpg, _kill=os.kill):
    for kill in (_killpg, _kill):
        try:
            kill(pid, 9)
        except OSError:
            pass


def _reap(pid):
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def run_test(i, leaves, g, encode, per, wall, signal, out, modules=()):
    """Evaluate test i's leaf expressions in a forked process; the channel line to write.
    `modules`: standard library modules to import into `g` first (reference leaves)."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(r)
        os.close(w)
        return str(i) + " e " + safe_name(e)
    if pid == 0:  # the test process: its CPU budget starts at zero
        try:
            os.close(r)
            os.close(out)
            os.setpgid(0, 0)
            signal.signal(signal.SIGPROF, signal.SIG_DFL)  # out of CPU time: die of SIGPROF
            signal.setitimer(signal.ITIMER_PROF, per)
            for name in modules:
                try:
                    g[name] = __import__(name)
                except BaseException:
                    pass  # the leaf that uses it raises NameError
            parts = []
            room = MAX_ENCODED
            for src in leaves:
                try:
                    v = eval(compile(src, "<test>", "eval"), g)
                except BaseException as e:
                    parts.append('["e","' + safe_name(e) + '"]')
                    continue
                s = encode(v)
                if s is None or len(s) > room:
                    parts.append('["u"]')
                else:
                    room -= len(s)
                    parts.append('["v",' + s + "]")
            b = ("[" + ",".join(parts) + "]\n").encode("ascii")
            while b:
                b = b[os.write(w, b) :]
        finally:
            os._exit(0)
    os.close(w)
    data, size, timed_out, status = [], 0, False, None
    signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, wall)
        try:
            while True:
                b = os.read(r, 65536)
                if not b:
                    break
                size += len(b)
                if size > MAX_ENCODED + 65536:  # more than the test process may send
                    data = []
                    _kill_group(pid)
                    break
                data.append(b)
                if b.endswith(b"\n"):
                    break
            status = _reap(pid)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        timed_out = True
    finally:
        os.close(r)
        _kill_group(pid)  # whatever the test started in its process group
        if status is None:
            status = _reap(pid)
    if timed_out:
        return str(i) + " t"
    if status is not None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGPROF, signal.SIGXCPU):
            return str(i) + " t"
        if sig == signal.SIGKILL:
            return str(i) + " k"
        return str(i) + " e " + SIGNAL_NAMES.get(sig, "signal" + str(sig))
    payload = b"".join(data)
    if (
        not payload.endswith(b"\n")
        or payload.count(b"\n") != 1
        or not payload.isascii()
        or not payload.startswith(b"[")
    ):
        return str(i) + " m"
    return str(i) + " r " + payload[:-1].decode("ascii")


def run_asserts(job, emit, signal, out):
    per, wall = job["timeout"], job["wall"]
    encode = make_encoder()
    g = {"__name__": "solution", "__builtins__": builtins}
    emit("start")
    # Reference leaves (no name of the program in them: `str(5)`, `math.sqrt(2)`) before any
    # untrusted code runs: the program can't shadow or patch what computes them.
    for i, leaves, modules in job["references"]:
        ref = {"__name__": "reference", "__builtins__": builtins}
        emit("p " + run_test(i, leaves, ref, encode, per, wall, signal, out, modules))
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGPROF, _alarm)
    try:
        code = compile(job["program"], "<program>", "exec")
        signal.setitimer(signal.ITIMER_PROF, per)
        signal.setitimer(signal.ITIMER_REAL, wall)
        try:
            exec(code, g)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        emit("load t")
        os._exit(0)
    except BaseException as e:
        emit("load e " + safe_name(e))
        os._exit(0)
    for i, leaves in enumerate(job["tests"]):
        emit(run_test(i, leaves, g, encode, per, wall, signal, out))


def run_stdio(job, emit, signal, outs):
    """One fresh interpreter per test, run as __main__ on the test's input; its stdout is the
    parent's pipe outs[k] (the parent judges it), its stderr /dev/null."""
    per, wall, inputs = job["timeout"], job["wall"], job["inputs"]
    set_nondumpable()
    path = "/tmp/solution.py"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
    b = job["program"].encode("utf-8", "surrogatepass")
    while b:
        b = b[os.write(fd, b) :]
    os.close(fd)
    null = os.open("/dev/null", os.O_RDWR)
    exe = sys.executable
    emit("start")
    for k in range(len(outs)):
        pid = feeder = r = w = -1
        try:
            r, w = os.pipe()
            feeder = os.fork()
            if feeder == 0:  # writes the input, so that the harness can wait on the test
                try:
                    os.close(r)
                    mv = memoryview(inputs[k])
                    while mv:
                        mv = mv[os.write(w, mv[:65536]) :]
                finally:
                    os._exit(0)
            os.close(w)
            w = -1
            pid = os.fork()
            if pid == 0:
                try:
                    os.setpgid(0, 0)
                    os.dup2(r, 0)
                    os.dup2(outs[k], 1)
                    os.dup2(null, 2)
                    os.closerange(3, 1 << 16)
                    signal.setitimer(signal.ITIMER_PROF, per)  # kept across exec; SIGPROF kills
                    os.execv(exe, [exe, "-I", "-S", "-B", path])
                finally:
                    os._exit(127)
            os.close(r)
        except OSError as e:
            status = "e " + safe_name(e)
            for fd in (r, w, outs[k]):
                try:
                    os.close(fd)
                except OSError:
                    pass
        else:
            signal.signal(signal.SIGALRM, _alarm)
            signal.setitimer(signal.ITIMER_REAL, wall)
            try:
                os.close(outs[k])
                st = os.waitpid(pid, 0)[1]
                signal.setitimer(signal.ITIMER_REAL, 0)
                cpu = os.WIFSIGNALED(st) and os.WTERMSIG(st) in (signal.SIGPROF, signal.SIGXCPU)
                status = "t" if cpu else "x"
            except _Timeout:
                status = "t"
        for p in (pid, feeder):
            if p > 0:
                _kill_group(p)
                _reap(p)
        emit(str(k) + " " + status)


def main():
    job = read_job(0)
    import resource

    for name, soft, hard in job["rlimits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    import _signal as signal  # the C module: `signal` would import enum & co (~4 ms)

    out = int(sys.argv[1])
    emit = make_emitter(out, job["nonce"])
    fd = os.open("/dev/null", os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    if job["mode"] == "stdio":
        run_stdio(job, emit, signal, [int(a) for a in sys.argv[2:]])
    else:
        run_asserts(job, emit, signal, out)
    emit("end")
    os._exit(0)


if __name__ == "__main__":
    main()
