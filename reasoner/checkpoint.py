"""Atomic checkpoints and exact resume.

A checkpoint is written to ``output_dir/.tmp-checkpoint-<step>``, every file fsynced, then
renamed to ``checkpoint-<step>`` (rename is atomic on POSIX) and the parent directory fsynced.
A directory named ``checkpoint-<step>`` holding ``trainer_state.json`` is therefore complete;
anything else (a temp dir left by a killed run) is ignored and cleaned up.

Contents: the engine's part (`reasoner.engine.Engine.save`: with the plain-torch engine the model
in Hugging Face format, adapters only with LoRA, and ``engine.pt`` with optimizer and scheduler;
under DeepSpeed ``deepspeed/``, each rank's shard of weights, optimizer and scheduler), the
tokenizer, the RNG states (python, numpy, torch CPU/CUDA: ``rng.pt``, or ``rng-rank<r>.pt`` per
rank under DeepSpeed) and ``trainer_state.json`` (step, data position, anything the trainer needs
to continue). The directory is renamed by rank 0 only after every rank has written its part.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
# what a run writes into its output directory besides checkpoints (metrics.py names the logs)
CONFIG_FILE = "config.yaml"
FINAL_DIR = "final"


def capture_rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    out = []
    root = Path(output_dir)
    if not root.is_dir():
        return []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    cps = list_checkpoints(output_dir)
    return cps[-1][1] if cps else None


def debug_kill(stage: str, step: int) -> None:
    """Test hook: REASONER_DEBUG_KILL="save:<step>" SIGKILLs this process half-way through writing
    checkpoint <step> (model written, state not yet), to prove partial checkpoints are ignored."""
    if os.environ.get("REASONER_DEBUG_KILL") == f"{stage}:{step}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def begin_checkpoint(output_dir: str | Path, step: int) -> Path:
    """A fresh temporary directory for checkpoint `step` (any leftover of a killed run removed)."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-checkpoint-{step}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def commit_checkpoint(output_dir: str | Path, step: int, tmp: Path, trainer_state: dict[str, Any],
                      save_total_limit: int | None = None) -> Path:
    """Write the state file, fsync everything, rename tmp to checkpoint-<step> (atomic), then
    drop all but the newest `save_total_limit` checkpoints."""
    root = Path(output_dir)
    final = root / f"checkpoint-{step}"
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, **trainer_state}, indent=1))
    _fsync_tree(tmp)
    if final.exists():  # a complete checkpoint of the same step from an earlier run
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    if save_total_limit is not None:
        for _, old in list_checkpoints(root)[:-save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def rng_file(rank: int | None) -> str:
    """rng.pt for one process; rng-rank<r>.pt per rank of a multi-process (DeepSpeed) run."""
    return "rng.pt" if rank is None else f"rng-rank{rank}.pt"


def load_checkpoint(path: str | Path, rank: int | None = None) -> dict[str, Any]:
    """Read the trainer state and this process's RNG states of a complete checkpoint (the
    engine reads its own part, `Engine.load`)."""
    p = Path(path)
    state = json.loads((p / STATE_FILE).read_text())
    rng_path = p / rng_file(rank)
    if not rng_path.is_file():
        raise FileNotFoundError(f"{rng_path}: missing (was the checkpoint written by a run with "
                                "a different number of processes?)")
    rng = torch.load(rng_path, map_location="cpu", weights_only=False)
    return {"trainer": state, "rng": rng}


def run_outputs(extra: Iterable[str] = ()) -> set[str]:
    """The names a run writes into its output directory besides checkpoints: its config, logs,
    TensorBoard directory, plots, final/, and a trainer's `extra` (final_critic/, eval.json)."""
    from reasoner.metrics import COMPLETIONS_FILE, METRICS_FILE, OPTIONAL_PLOTS, PLOTS, TB_DIR

    return {CONFIG_FILE, FINAL_DIR, METRICS_FILE, COMPLETIONS_FILE, TB_DIR,
            *(name for name, _, _ in (*PLOTS, *OPTIONAL_PLOTS)), *extra}


def earlier_run(output_dir: str | Path, outputs: Iterable[str] | None = None) -> list[str]:
    """The names of what an earlier run left in `output_dir` (`outputs`, default
    `run_outputs()`, and its checkpoints), sorted; empty when there is none. Anything else in
    the directory is not ours."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    ours = set(run_outputs() if outputs is None else outputs)
    return sorted(p.name for p in root.iterdir()
                  if p.name in ours or _NAME.match(p.name) or p.name.startswith(".tmp-checkpoint-"))


def check_output_dir(output_dir: str | Path, *, resume: bool, overwrite: bool,
                     outputs: Iterable[str] | None = None) -> None:
    """A new run (neither `resume` nor `overwrite`) refuses a directory that holds an earlier
    run, rather than mixing its logs and checkpoints into that run's or replacing them."""
    if resume or overwrite:
        return
    found = earlier_run(output_dir, outputs)
    if found:
        from reasoner.config import ConfigError

        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise ConfigError(f"train.output_dir {str(output_dir)!r} holds an earlier run ({shown}): "
                          "--resume continues it, --overwrite replaces it; or choose another "
                          "train.output_dir")


HELD_PREFIX = ".overwritten-"  # an earlier run set aside by --overwrite until the new one starts


def hold_earlier_run(output_dir: str | Path, outputs: Iterable[str] | None = None) -> Path | None:
    """--overwrite: move what `earlier_run` lists into a hidden folder of `output_dir` (renames:
    instant, nothing copied), so that a new run that fails to start can put it back
    (`restore_held`); once it has started, `drop_held` deletes it. None when there is nothing.
    (A process killed in between leaves the folder, with the earlier run in it, for the user.)"""
    root = Path(output_dir)
    found = earlier_run(root, outputs)
    if not found:
        return None
    held = root / f"{HELD_PREFIX}{os.getpid()}-{time.time_ns()}"
    held.mkdir()
    for name in found:
        os.rename(root / name, held / name)
    return held


def restore_held(output_dir: str | Path, held: Path) -> None:
    """Put an earlier run held by `hold_earlier_run` back, replacing what the failed new run
    wrote under the same names."""
    root = Path(output_dir)
    for p in held.iterdir():
        dest = root / p.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        os.rename(p, dest)
    held.rmdir()


def drop_held(held: Path) -> None:
    """Delete an earlier run held by `hold_earlier_run` (the new run has started)."""
    shutil.rmtree(held, ignore_errors=True)


def remove_partial_checkpoints(output_dir: str | Path) -> list[Path]:
    removed = []
    root = Path(output_dir)
    if root.is_dir():
        for p in root.glob(".tmp-checkpoint-*"):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
