"""A small process pool with hard per-task time limits, a memory cap and in-order streaming.

Why not ``multiprocessing.Pool`` or ``concurrent.futures``: neither can stop one task that runs
too long without tearing the whole pool down, and ``signal.alarm`` only works in the main thread
and cannot interrupt C code (sympy's big-integer arithmetic). Here every worker is a process with
its own pipe; a task that passes its deadline is ended by killing its worker (SIGKILL), and a
fresh worker takes its place. A worker that dies (segfault, ``os._exit``, the OOM killer) is
replaced the same way. The batch never stalls and never raises because of one task.

Usage::

    with WorkerPool(workers=4, timeout=5.0, memory_mb=1024) as pool:
        for res in pool.imap(fn, [(1, 2), (3, 4)]):   # fn(*args) runs in a worker
            res.status   # "ok" | "timeout" | "crashed" | "error"
            res.value    # fn's return value when "ok"
            res.error    # a message otherwise

``fn`` must be picklable by reference (a module-level function). Results come back in input
order while later tasks keep running; the input iterable is read lazily (at most
``lookahead`` tasks ahead of the oldest unfinished one), so a caller can stream millions.

Start method: ``forkserver`` where available (Linux, macOS), else ``spawn``. Neither forks the
calling process, so a trainer that has torch (threads, CUDA) loaded is never forked; the fork
server is a fresh interpreter that imports only the ``preload`` modules once, and every worker
is forked from it in milliseconds with those modules already imported. (If the process's fork
server was already started by someone else, our preload list can't be added; workers then
import what they need on first use, which is slower but correct.)

Workers do not re-import the caller's ``__main__`` script (multiprocessing's default, which
would re-run a trainer's top-level imports in each worker); pass ``import_main=True`` for
functions defined in ``__main__``.

Thread safety: a pool may be used from any thread (no signals are used). One ``imap`` runs at
a time per pool; a caller in another thread waits for the first to finish, a second unfinished
``imap`` in the same thread raises RuntimeError (instead of deadlocking).

Memory: each worker sets ``RLIMIT_AS`` (address space) to what it already maps at start plus
``memory_mb`` MiB, before its first task, so a runaway allocation raises ``MemoryError`` in the
task (reported as status "error", error "MemoryError") instead of swapping the machine.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = ["TaskResult", "WorkerPool", "default_start_method", "worker_info"]


@dataclass
class TaskResult:
    """The outcome of one task. status: "ok", "timeout", "crashed" or "error"."""

    status: str
    value: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def default_start_method() -> str:
    methods = mp.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def worker_info(*modules: str) -> dict[str, Any]:
    """Diagnostics, run as a task: the worker's pid, its RLIMIT_AS soft limit (bytes, -1 for
    none), its address space when the cap was set, and which of `modules` it has imported."""
    import sys

    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    except ImportError:
        limit = -1
    return {
        "pid": os.getpid(),
        "rlimit_as": -1 if limit == getattr(resource, "RLIM_INFINITY", -1) else int(limit),
        "vm_at_cap": _BASE_VM,
        "imported": {m: m in sys.modules for m in modules},
    }


_BASE_VM = 0  # the worker's address space when its cap was set (bytes)


def _vm_size() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _set_memory_limit(memory_mb: int | None) -> None:
    """Cap the address space at what the worker already maps plus `memory_mb` MiB (so a fork
    server that happens to have big libraries mapped doesn't leave the worker with nothing)."""
    global _BASE_VM
    if not memory_mb:
        return
    try:
        import resource

        _BASE_VM = _vm_size()
        limit = _BASE_VM + int(memory_mb) * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # not POSIX, or not allowed: run uncapped
        pass


def _worker_main(conn: Connection, memory_mb: int | None, preload: Sequence[str]) -> None:
    """Worker loop: receive (fn, args), reply ("ok", value) or ("error", message)."""
    import importlib

    for name in preload:  # cheap if the fork server already imported them
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the task itself will report the import error
            pass
    _set_memory_limit(memory_mb)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, args = msg
        try:
            reply: tuple[str, Any] = ("ok", fn(*args))
        except MemoryError:
            reply = ("error", "MemoryError")
        except BaseException as exc:  # noqa: BLE001 - report anything, keep the worker
            reply = ("error", f"{type(exc).__name__}: {exc}"[:2000])
        try:
            conn.send(reply)
        except MemoryError:
            conn.send(("error", "MemoryError"))
        except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable return value
            conn.send(("error", f"cannot send result: {type(exc).__name__}: {exc}"[:2000]))


_NO_MAIN = threading.local()
_PATCHED = False


def _install_no_main_hook() -> None:
    """multiprocessing re-imports the parent's ``__main__`` script in every spawned or
    forkserver child (for a training script that means importing torch again, per worker).
    Our workers only run module-level functions, so they skip it: the hook drops the main
    module from the child's preparation data, only for processes started by this module's
    thread-local flag; everyone else's processes are untouched."""
    global _PATCHED
    if _PATCHED:
        return
    from multiprocessing import spawn

    original = spawn.get_preparation_data

    def get_preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        if getattr(_NO_MAIN, "on", False):
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
        return data

    spawn.get_preparation_data = get_preparation_data
    _PATCHED = True


class _Worker:
    def __init__(
        self, ctx: Any, memory_mb: int | None, preload: Sequence[str], import_main: bool
    ) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(
            target=_worker_main, args=(child, memory_mb, tuple(preload)), daemon=True
        )
        if not import_main:
            _install_no_main_hook()
        _NO_MAIN.on = not import_main
        try:
            self.proc.start()
        finally:
            _NO_MAIN.on = False
        child.close()
        self.index: int | None = None  # the task it runs
        self.started = 0.0

    @property
    def pid(self) -> int:
        return int(self.proc.pid or 0)

    def kill(self) -> None:
        try:
            self.proc.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.proc.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except Exception:  # noqa: BLE001
            pass
        self.proc.join(timeout=1)
        if self.proc.is_alive():
            self.kill()
        else:
            self.conn.close()


class WorkerPool:
    """A pool of `workers` processes (default os.cpu_count()); each task is limited to
    `timeout` seconds (None: no limit) of wall time and its worker to `memory_mb` MiB of
    address space (None: no cap). Workers start lazily on the first `imap`."""

    def __init__(
        self,
        workers: int | None = None,
        timeout: float | None = None,
        memory_mb: int | None = None,
        *,
        start_method: str | None = None,
        preload: Sequence[str] = (),
        lookahead: int | None = None,
        import_main: bool = False,
    ) -> None:
        n = workers if workers is not None else (os.cpu_count() or 1)
        if n < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout}")
        self.workers = int(n)
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.preload = tuple(preload)
        self.import_main = import_main
        self.start_method = start_method or default_start_method()
        self.lookahead = lookahead or 16 * self.workers
        self._ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver" and self.preload:
            _add_forkserver_preload(self._ctx, self.preload)
        self._pool: list[_Worker] = []
        self._lock = threading.Lock()
        self._owner: int | None = None  # thread running an imap now
        self._closed = False
        self.respawned = 0  # workers replaced after a timeout or crash (for metrics/tests)

    # -- lifecycle -----------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._closed:
            raise RuntimeError("WorkerPool is closed")
        while len(self._pool) < self.workers:
            self._pool.append(_Worker(self._ctx, self.memory_mb, self.preload, self.import_main))

    def start(self) -> WorkerPool:
        """Start the workers now (otherwise the first imap does)."""
        with self._lock:
            self._ensure_started()
        return self

    def pids(self) -> list[int]:
        """Process ids of the current workers."""
        return [w.pid for w in self._pool]

    def busy_pids(self) -> list[int]:
        """Process ids of the workers running a task right now."""
        return [w.pid for w in self._pool if w.index is not None]

    def running(self) -> dict[int, int]:
        """{task index within the current imap: worker pid} for the tasks running now."""
        return {w.index: w.pid for w in list(self._pool) if w.index is not None}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self._pool:
            w.stop()
        self._pool.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the contract
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def _replace(self, w: _Worker) -> None:
        w.kill()
        i = self._pool.index(w)
        self._pool[i] = _Worker(self._ctx, self.memory_mb, self.preload, self.import_main)
        self.respawned += 1

    # -- running tasks -------------------------------------------------------------------
    def imap(
        self, fn: Callable[..., Any], args: Iterable[Sequence[Any]], timeout: float | None = None
    ) -> Iterator[TaskResult]:
        """Run fn(*a) for every a in `args`; yield one TaskResult per task, in input order.
        `timeout` overrides the pool's per-task limit for this call."""
        limit = self.timeout if timeout is None else timeout
        me = threading.get_ident()
        if self._owner == me:
            raise RuntimeError(
                "this WorkerPool is already running an unfinished imap in this thread; "
                "consume or close that iterator first"
            )
        with self._lock:
            self._owner = me
            try:
                self._ensure_started()
                yield from self._run(fn, iter(args), limit)
            finally:
                self._owner = None

    def map(
        self, fn: Callable[..., Any], args: Iterable[Sequence[Any]], timeout: float | None = None
    ) -> list[TaskResult]:
        return list(self.imap(fn, args, timeout))

    def _run(
        self, fn: Callable[..., Any], tasks: Iterator[Sequence[Any]], limit: float | None
    ) -> Iterator[TaskResult]:
        done: dict[int, TaskResult] = {}
        next_in = 0  # index of the next task to read
        next_out = 0  # index of the next result to yield
        exhausted = False
        try:
            while True:
                # 1. hand tasks to idle workers (bounded lookahead keeps memory flat)
                for w in self._pool:
                    if w.index is not None or exhausted or next_in - next_out >= self.lookahead:
                        continue
                    try:
                        a = next(tasks)
                    except StopIteration:
                        exhausted = True
                        break
                    self._send(w, fn, a, next_in, done)
                    next_in += 1
                # 2. yield what is ready, in order
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
                busy = [w for w in self._pool if w.index is not None]
                if not busy:
                    if exhausted and next_out == next_in:
                        return
                    continue
                # 3. wait for a reply or the earliest deadline
                wait_s = None
                if limit is not None:
                    now = time.monotonic()
                    wait_s = max(0.0, min(w.started + limit for w in busy) - now)
                ready = wait([w.conn for w in busy], timeout=wait_s)
                for w in busy:
                    if w.conn in ready:
                        self._collect(w, done)
                # 4. kill workers past their deadline (a reply that just arrived wins)
                if limit is not None:
                    now = time.monotonic()
                    for w in busy:
                        if w.index is not None and now - w.started >= limit:
                            if w.conn.poll(0):
                                self._collect(w, done)
                                continue
                            done[w.index] = TaskResult(
                                "timeout", error=f"killed after {limit:g}s", seconds=now - w.started
                            )
                            w.index = None
                            self._replace(w)
        finally:
            # The caller stopped early (or an exception): in-flight results are unwanted.
            for w in list(self._pool):
                if w.index is not None:
                    w.index = None
                    self._replace(w)

    def _send(
        self, w: _Worker, fn: Callable[..., Any], a: Sequence[Any], index: int,
        done: dict[int, TaskResult],
    ) -> None:
        for attempt in range(2):
            try:
                w.conn.send((fn, tuple(a)))
                break
            except (BrokenPipeError, EOFError, OSError) as exc:  # it died while idle
                slot = self._pool.index(w)
                self._replace(w)
                w = self._pool[slot]
                if attempt == 1:
                    done[index] = TaskResult("crashed", error=f"cannot reach a worker: {exc}")
                    return
            except Exception as exc:  # noqa: BLE001 - e.g. unpicklable arguments
                msg = f"cannot send task: {type(exc).__name__}: {exc}"
                done[index] = TaskResult("error", error=msg)
                return
        w.index = index
        w.started = time.monotonic()

    def _collect(self, w: _Worker, done: dict[int, TaskResult]) -> None:
        index = w.index
        assert index is not None
        secs = time.monotonic() - w.started
        try:
            status, payload = w.conn.recv()
        except (EOFError, OSError, ConnectionError):
            code = w.proc.exitcode
            w.proc.join(timeout=1)
            code = w.proc.exitcode if code is None else code
            done[index] = TaskResult("crashed", error=f"worker exited (code {code})", seconds=secs)
            w.index = None
            self._replace(w)
            return
        w.index = None
        if status == "ok":
            done[index] = TaskResult("ok", value=payload, seconds=secs)
        else:
            done[index] = TaskResult("error", error=str(payload), seconds=secs)


def _add_forkserver_preload(ctx: Any, modules: Sequence[str]) -> None:
    """Ask the fork server (if not yet running) to import `modules` once, so forked workers
    start warm. The parent's __main__ is deliberately not preloaded: in a trainer it would
    import torch into the fork server."""
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver  # noqa: SLF001 - only way to read the current list
        if getattr(server, "_forkserver_pid", None) is not None:
            return  # already running: too late to preload
        current = [m for m in getattr(server, "_preload_modules", []) if m != "__main__"]
        ctx.set_forkserver_preload(list(dict.fromkeys([*current, *modules])))
    except Exception:  # noqa: BLE001 - preloading is an optimisation only
        pass
