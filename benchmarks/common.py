"""What every benchmark writes beside its numbers: the device, the versions, the commit.

    from benchmarks.common import write_results
    write_results("math_suite", rows, extra={...})   # -> benchmarks/results/math_suite.{json,md}
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=RESULTS.parent, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=RESULTS.parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({os.cpu_count()} cores)"


def versions(*packages: str) -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def write_results(name: str, rows: list[dict[str, Any]], *, packages: tuple[str, ...] = (),
                  extra: dict[str, Any] | None = None, notes: str = "") -> Path:
    """Write results/<name>.json and .md; print the table; return the JSON path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"device": device(), "versions": versions(*packages), "commit": git_commit(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    payload = {**meta, **(extra or {}), "rows": rows}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    table = markdown_table(rows)
    md = [f"# {name}", "", f"- device: {meta['device']}", f"- commit: {meta['commit']}",
          "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
          f"- command: `{meta['command']}`", "", table]
    if notes:
        md += ["", notes]
    (RESULTS / f"{name}.md").write_text("\n".join(md) + "\n")
    print(table)
    return path
