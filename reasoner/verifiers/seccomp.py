"""A seccomp filter for the sandbox, assembled as classic BPF (no library needed).

bubblewrap loads it with ``--seccomp FD`` (after ``PR_SET_NO_NEW_PRIVS``) for every process in the
sandbox. It is a deny list on top of the namespaces and rlimits: each listed system call fails with
``EPERM``; everything else is allowed. A call made through another ABI than the native one (i386
``int 0x80`` on x86-64, the x32 ABI) fails with ``ENOSYS``, so the numbers below can't be dodged.

Denied, and why:

- SysV IPC (``shm*``, ``msg*``, ``sem*``): segments and queues live in kernel memory that
  ``RLIMIT_AS`` does not count (one sandbox held 4 GiB of host ``Shmem``), and outlive the process.
- ``memfd_create``, ``memfd_secret``: an anonymous file is shmem too; with ``RLIMIT_FSIZE`` per file
  and ``RLIMIT_NOFILE`` files, 64 of them hold a GiB outside ``RLIMIT_AS``.
- ``add_key``, ``request_key``, ``keyctl``: keyrings are not namespaced; the sandbox inherits the
  parent's session keyring (read its keys, plant keys a later run can read).
- ``ptrace``, ``process_vm_readv``/``writev``, ``pidfd_getfd``: a test process must not read or
  take the harness's memory and file descriptors (the result channel).
- ``setsid``: one session per sandbox, so the scheduler's autogroups (where enabled) share the CPU
  per sandbox, not per process a program chose to detach.
- ``io_uring_*``: its operations bypass this filter.
"""

from __future__ import annotations

import errno
import platform
import struct

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
_OFF_NR, _OFF_ARCH = 0, 4
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_X32_BIT = 0x40000000

_DENIED = (
    "shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl",
    "semget", "semop", "semctl", "semtimedop", "memfd_create", "memfd_secret",
    "add_key", "request_key", "keyctl", "ptrace", "process_vm_readv", "process_vm_writev",
    "pidfd_getfd", "setsid", "io_uring_setup", "io_uring_enter", "io_uring_register",
)  # fmt: skip

# (AUDIT_ARCH_*, syscall numbers of the native ABI, whether the x32 bit must be refused)
_ARCHES: dict[str, tuple[int, dict[str, int], bool]] = {
    "x86_64": (
        0xC000003E,
        {
            "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64, "semop": 65,
            "semctl": 66, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
            "semtimedop": 220, "memfd_create": 319, "memfd_secret": 447, "add_key": 248,
            "request_key": 249, "keyctl": 250, "ptrace": 101, "process_vm_readv": 310,
            "process_vm_writev": 311, "pidfd_getfd": 438, "setsid": 112, "io_uring_setup": 425,
            "io_uring_enter": 426, "io_uring_register": 427,
        },
        True,
    ),
    "aarch64": (
        0xC00000B7,
        {
            "msgget": 186, "msgctl": 187, "msgrcv": 188, "msgsnd": 189, "semget": 190,
            "semctl": 191, "semtimedop": 192, "semop": 193, "shmget": 194, "shmctl": 195,
            "shmat": 196, "shmdt": 197, "memfd_create": 279, "memfd_secret": 447,
            "add_key": 217, "request_key": 218, "keyctl": 219, "ptrace": 117,
            "process_vm_readv": 270, "process_vm_writev": 271, "pidfd_getfd": 438,
            "setsid": 157, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        },
        False,
    ),
}  # fmt: skip


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def denied_syscalls() -> tuple[str, ...]:
    """The system calls the filter refuses (with EPERM)."""
    return _DENIED


def filter_program(machine: str | None = None) -> bytes | None:
    """The BPF program (struct sock_filter[]) for `machine` (default: this one), or None when
    the architecture is not one we have syscall numbers for."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, numbers, x32 = arch
    nrs = sorted(numbers[name] for name in _DENIED)
    deny = _RET_ERRNO | errno.EPERM
    body = [
        _insn(_LD_W_ABS, 0, 0, _OFF_ARCH),
        _insn(_JEQ_K, 1, 0, audit_arch),
        _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),  # another ABI: nothing at all
        _insn(_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    if x32:
        body += [_insn(_JGE_K, 0, 1, _X32_BIT), _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    # one compare per denied number; a match jumps to the final "deny" (after the "allow")
    for i, nr in enumerate(nrs):
        body.append(_insn(_JEQ_K, len(nrs) - i, 0, nr))
    body += [_insn(_RET_K, 0, 0, _RET_ALLOW), _insn(_RET_K, 0, 0, deny)]
    return b"".join(body)
