"""The few collective operations the trainer needs, as no-ops in a single process.

A run is multi-process when launched by `torchrun` or `deepspeed` (WORLD_SIZE > 1) or when it
trains under `--deepspeed`. Every function here is safe to call in one process without any
process group, so the trainer has one code path.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

DEVICES = ("auto", "cpu", "cuda")


def launched_world_size() -> int:
    """Processes the launcher started (WORLD_SIZE), 1 without a launcher."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def launched_rank() -> int:
    """This process's rank as the launcher set it (RANK), 0 without a launcher; known before
    the process group is joined."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(device_type: str) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPUs) through DeepSpeed's initializer, which
    reads the launcher's environment (torchrun, deepspeed, MPI)."""
    if is_initialized():
        return
    import deepspeed

    if "MASTER_ADDR" not in os.environ and launched_world_size() == 1:
        # one process without a launcher (e.g. `reasoner train --deepspeed ...`): a group of one
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": os.environ.get(
            "MASTER_PORT", str(_free_port())), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"})
    quiet_deepspeed()
    if device_type != "cuda" and os.environ.get("REASONER_DS_SHM") != "1":
        # DeepSpeed would JIT-compile its shared-memory all-reduce for CPUs on first use (a
        # minute of g++); plain gloo is what we test on CPUs. REASONER_DS_SHM=1 turns it back on.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo")


def quiet_deepspeed() -> None:
    """DeepSpeed logs every engine detail at INFO on every rank; we report progress ourselves.
    REASONER_DS_VERBOSE=1 keeps its logs."""
    import logging

    if os.environ.get("REASONER_DS_VERBOSE") != "1":
        from deepspeed.utils import logger

        logger.setLevel(logging.WARNING)


def quiet_deepspeed_accelerator() -> None:
    """DeepSpeed warns "Setting accelerator to CPU" whenever it is imported on a machine without
    CUDA, and accelerate imports it for every save_pretrained, in runs without --deepspeed too.
    Without CUDA the CPU is what DeepSpeed would choose, and our only other device: say so in
    DS_ACCELERATOR (unless it is set already) before anything imports deepspeed."""
    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_initialized() and world_size() > 1:
        dist.barrier()


def _reduce(values: list[float], op: Any) -> list[float]:
    if not is_initialized() or world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=op)
    return t.cpu().tolist()


def sum_all(values: list[float]) -> list[float]:
    """Element-wise sum over ranks."""
    return _reduce(values, dist.ReduceOp.SUM)


def max_all(values: list[float]) -> list[float]:
    """Element-wise maximum over ranks."""
    return _reduce(values, dist.ReduceOp.MAX)


def gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (small, picklable objects only)."""
    if not is_initialized() or world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown(*, synchronize: bool = True) -> None:
    """Destroy the process group. After a run that ended normally (`synchronize`) every rank
    first waits for the others: a rank that tears down gloo while a peer is still in its last
    collective can abort at exit ("terminate called without an active exception"). After an
    error there is no barrier, since a failed peer would never reach it."""
    if is_initialized():
        if synchronize:
            barrier()
        dist.destroy_process_group()
