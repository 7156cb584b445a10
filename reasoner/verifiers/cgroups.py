"""One memory + CPU cgroup per running sandbox, where the host lets this process make them.

A sandbox's processes are capped one by one by rlimits (``RLIMIT_AS`` per process, ...), but some
memory is charged to nobody's address space: tmpfs inodes and dentries (an empty directory costs
~1 KiB of kernel slab that the tmpfs ``size`` does not count), SysV shared memory, pipes. A memory
cgroup counts all of it, kernel memory included, and its limit holds for the sandbox as a whole;
its CPU controller gives each sandbox one share of the machine however many processes it runs.

``SandboxCgroups.detect`` looks for a hierarchy we may write to, in this order:

- cgroup v2: under our own cgroup (or ``parent``), when its ``cgroup.subtree_control`` has (or
  accepts) the ``memory`` controller; this needs a delegated subtree our process is not a member
  of, e.g. ``systemd-run --user --scope -p Delegate=yes`` plus moving the trainer into a leaf,
  or a container whose init lives in a leaf cgroup;
- cgroup v1: the ``memory`` (and, when present, ``cpu``) hierarchies, under our own cgroup in each,
  when we may create directories there (typically root in a container);

and otherwise reports why not. Slots (one cgroup per concurrent sandbox) are created on demand
under one directory of ours, ``reasoner-<pid>-<random>``, reused run after run, and removed by
``close``. A sandbox enters its slot before any of its code runs (``Sandbox.run`` holds bwrap at
``--block-fd`` until its processes are attached); every process it forks inherits the slot.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass

CPU_PERIOD_US = 100_000


@dataclass
class _Hierarchy:
    version: int  # 1 or 2
    base: str  # our directory: <mount>/<our cgroup>/reasoner-<pid>-<random>
    controllers: tuple[str, ...]  # those we set limits for in this hierarchy


class Slot:
    """One cgroup (one directory per hierarchy) for one sandbox at a time."""

    def __init__(self, dirs: list[str]) -> None:
        self.dirs = dirs

    def pids(self) -> list[int]:
        out: list[int] = []
        for d in self.dirs:
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
        return out


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, mount root, fs type, super options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields, after = pre.split(), post.split()
            if len(fields) < 5 or len(after) < 3 or after[0] not in ("cgroup", "cgroup2"):
                continue
            out.append((fields[4], fields[3], after[0], set(after[2].split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """controller (or "" for v2) -> our cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) != 3:
                continue
            if parts[0] == "0" and parts[1] == "":
                out[""] = parts[2]
            for c in parts[1].split(","):
                if c:
                    out[c] = parts[2]
    return out


def _join(mount: str, root: str, path: str) -> str:
    if root != "/" and path.startswith(root):
        path = path[len(root) :]
    return os.path.join(mount, path.lstrip("/"))


class SandboxCgroups:
    """Per-sandbox cgroups. `acquire` a slot, `attach` pids to it, `release` it after the run."""

    def __init__(self, hierarchies: list[_Hierarchy], memory_bytes: int, cpus: float) -> None:
        self.hierarchies = hierarchies
        self.memory_bytes = memory_bytes
        self.cpus = cpus
        self._free: deque[Slot] = deque()
        self._all: list[Slot] = []
        self._lock = threading.Lock()
        self._n = 0
        self.description = "cgroup v{} ({}), {} MiB and {} CPU per sandbox".format(
            hierarchies[0].version,
            ", ".join(c for h in hierarchies for c in h.controllers),
            memory_bytes >> 20,
            cpus,
        )

    # -- detection -------------------------------------------------------------------------------
    @classmethod
    def detect(
        cls, memory_bytes: int, cpus: float, parent: str | None = None
    ) -> tuple[SandboxCgroups | None, str]:
        """(manager, "") when per-sandbox cgroups work here, else (None, why not)."""
        tag = f"reasoner-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            mounts, own = _mounts(), _own_paths()
        except OSError as e:
            return None, f"cannot read the cgroup setup: {e}"
        why: list[str] = []
        for make in (cls._v2, cls._v1):
            try:
                hs = make(mounts, own, tag, parent)
            except OSError as e:
                why.append(str(e))
                continue
            if isinstance(hs, str):
                why.append(hs)
                continue
            mgr = cls(hs, memory_bytes, cpus)
            try:
                mgr.release(mgr.acquire())  # creates and configures one slot: proves we may
            except OSError as e:
                mgr.close()
                why.append(f"cannot configure a cgroup: {e}")
                continue
            return mgr, ""
        return None, "; ".join(why)

    @staticmethod
    def _v2(mounts, own, tag, parent) -> list[_Hierarchy] | str:  # type: ignore[no-untyped-def]
        v2 = [m for m in mounts if m[2] == "cgroup2"]
        if not v2 or "" not in own:
            return "no cgroup v2 hierarchy"
        mount, root, _, _ = v2[0]
        here = parent or _join(mount, root, own[""])
        with open(os.path.join(here, "cgroup.controllers")) as f:
            available = f.read().split()
        if "memory" not in available:
            return f"cgroup v2: no memory controller in {here}"
        with open(os.path.join(here, "cgroup.subtree_control")) as f:
            enabled = f.read().split()
        want = [c for c in ("memory", "cpu") if c in available]
        missing = [c for c in want if c not in enabled]
        if missing:
            try:
                _write(
                    os.path.join(here, "cgroup.subtree_control"), " ".join("+" + c for c in missing)
                )
            except OSError as e:
                return f"cgroup v2: cannot enable {missing} in {here} ({e.strerror})"
        base = os.path.join(here, tag)
        os.mkdir(base)
        try:
            _write(os.path.join(base, "cgroup.subtree_control"), " ".join("+" + c for c in want))
        except OSError:
            os.rmdir(base)
            raise
        return [_Hierarchy(2, base, tuple(want))]

    @staticmethod
    def _v1(mounts, own, tag, parent) -> list[_Hierarchy] | str:  # type: ignore[no-untyped-def]
        hs = []
        for controller in ("memory", "cpu"):
            found = [m for m in mounts if m[2] == "cgroup" and controller in m[3]]
            if not found or controller not in own:
                if controller == "memory":
                    return "no cgroup v1 memory hierarchy"
                continue
            mount, root, _, _ = found[0]
            base = os.path.join(_join(mount, root, own[controller]), tag)
            try:
                os.mkdir(base)
            except OSError as e:
                for h in hs:
                    os.rmdir(h.base)
                if controller == "memory":
                    return f"cgroup v1: cannot create {base} ({e.strerror})"
                continue
            hs.append(_Hierarchy(1, base, (controller,)))
        return hs

    # -- slots -----------------------------------------------------------------------------------
    def _new_slot(self) -> Slot:
        with self._lock:
            self._n += 1
            name = f"s{self._n}"
        dirs = []
        for h in self.hierarchies:
            d = os.path.join(h.base, name)
            os.mkdir(d)
            dirs.append(d)
            self._configure(h, d)
        slot = Slot(dirs)
        with self._lock:
            self._all.append(slot)
            n = len(self._all)
        self._weigh(n)
        return slot

    def _weigh(self, n: int) -> None:
        """Give our directory the CPU weight of `n` ordinary processes: the sandboxes share the
        machine with the rest of it as they would without cgroups, and with each other equally."""
        for h in self.hierarchies:
            if "cpu" not in h.controllers:
                continue
            try:
                if h.version == 2:
                    _write(os.path.join(h.base, "cpu.weight"), str(min(100 * n, 10_000)))
                else:
                    _write(os.path.join(h.base, "cpu.shares"), str(min(1024 * n, 262_144)))
            except OSError:
                pass

    def _configure(self, h: _Hierarchy, d: str) -> None:
        quota = max(1000, int(self.cpus * CPU_PERIOD_US))
        if h.version == 2:
            _write(os.path.join(d, "memory.max"), str(self.memory_bytes))
            for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                try:
                    _write(os.path.join(d, name), value)
                except OSError:
                    pass  # no swap accounting / an older kernel
            if "cpu" in h.controllers:
                _write(os.path.join(d, "cpu.max"), f"{quota} {CPU_PERIOD_US}")
            return
        if "memory" in h.controllers:
            _write(os.path.join(d, "memory.limit_in_bytes"), str(self.memory_bytes))
            try:
                _write(os.path.join(d, "memory.memsw.limit_in_bytes"), str(self.memory_bytes))
            except OSError:
                pass  # no swap accounting
        if "cpu" in h.controllers:
            _write(os.path.join(d, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
            _write(os.path.join(d, "cpu.cfs_quota_us"), str(quota))

    def acquire(self) -> Slot:
        """A slot with no process in it (the oldest released one, or a new one)."""
        while True:
            with self._lock:
                slot = self._free.popleft() if self._free else None
            if slot is None:
                return self._new_slot()
            if self._drain(slot):
                return slot
            with self._lock:  # still busy after the grace period: leave it, take another
                self._all.remove(slot)

    def attach(self, slot: Slot, pids: list[int]) -> None:
        """Move `pids` into the slot (each hierarchy). A pid that is gone already is skipped."""
        for d in slot.dirs:
            for pid in pids:
                try:
                    _write(os.path.join(d, "cgroup.procs"), str(pid))
                except ProcessLookupError:
                    pass

    def release(self, slot: Slot) -> None:
        with self._lock:
            self._free.append(slot)

    def _drain(self, slot: Slot, grace: float = 2.0) -> bool:
        """Wait until the slot is empty, killing what is left (by pidfd, checking that each
        process is still in the slot, so a recycled pid is never signalled). False if it isn't
        empty after `grace` seconds."""
        deadline = time.monotonic() + grace
        delay = 0.0005
        while True:
            pids = slot.pids()
            if not pids:
                return True
            for pid in pids:
                try:
                    fd = os.pidfd_open(pid)
                except OSError:
                    continue
                try:
                    if pid in slot.pids():
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                except OSError:
                    pass
                finally:
                    os.close(fd)
            if time.monotonic() > deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def close(self) -> None:
        """Remove every slot and our directories (slots still busy are left behind)."""
        with self._lock:
            slots, self._all, self._free = list(self._all), [], deque()
        for slot in slots:
            if self._drain(slot, grace=1.0):
                for d in slot.dirs:
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
        for h in self.hierarchies:
            try:
                os.rmdir(h.base)
            except OSError:
                pass
