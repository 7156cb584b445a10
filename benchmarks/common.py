"""What every benchmark writes beside its numbers: the device, the versions, the commit.

    from benchmarks.common import write_results
    write_results("math_suite", rows, extra={...})   # -> benchmarks/results/math_suite.{json,md}

Every script in benchmarks/ runs both as ``python benchmarks/<name>.py`` and as
``python -m benchmarks.<name>`` from the repository root. For the first form each script puts the
repository root on ``sys.path`` just before it imports this module:

    if __package__ in (None, ""):  # run as `python benchmarks/<name>.py`
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    from benchmarks.common import write_results  # noqa: E402
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def seeds_arguments(doc: str, recipe: str, out: str) -> argparse.Namespace:
    """The command line of a script that runs a demo on several seeds: --seeds, --config (the
    recipe, default `recipe`), --out (OUT/seed-S per seed), --results-dir."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config", default=None,
                    help=f"recipe YAML (default: the embedded recipe = {recipe})")
    ap.add_argument("--out", type=Path, default=Path(out),
                    help="each seed's demo output goes to OUT/seed-S")
    ap.add_argument("--results-dir", default=None, help="default: benchmarks/results")
    return ap.parse_args()


def run_timed(cmd: list[str]) -> tuple[float, float]:
    """Run `cmd` in a fresh process (unbuffered output, failing on a non-zero exit); its wall
    seconds and its CPU seconds (user + sys of the process and its children)."""
    def children_cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    cpu0, t0 = children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return time.perf_counter() - t0, children_cpu() - cpu0


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT,
                          check=True).stdout.strip()


def git_commit(full: bool = False) -> str:
    """HEAD's hash (short unless ``full``), with "-dirty" if tracked files other than the results
    themselves differ from it (a run after another benchmark's fresh results stays clean)."""
    try:
        sha = _git("rev-parse", *(() if full else ("--short",)), "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                     ":(exclude)benchmarks/results")
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu() -> str:
    """The CPU's model name and the number of cores, e.g. "Intel(R) Xeon(R) Processor (2 cores)"."""
    name = platform.processor() or platform.machine() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


def device() -> str:
    """The first CUDA device's name if torch sees one, else the CPU (see ``cpu``)."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return cpu()


def versions(*packages: str) -> dict[str, str]:
    """Python's version and each named distribution's ("not installed" if absent); with "torch"
    among them also the CUDA version torch was built with, when it was built with one."""
    out = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    if "torch" in packages and out["torch"] != "not installed":
        try:
            import torch

            if torch.version.cuda:
                out["cuda"] = torch.version.cuda
        except ImportError:
            pass
    return out


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table with the first row's keys as columns; numeric columns right-aligned."""
    if not rows:
        return ""
    cols = list(rows[0])

    def numeric(c: str) -> bool:
        vals = [r.get(c) for r in rows if r.get(c) is not None]
        return bool(vals) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                  for v in vals)

    lines = ["| " + " | ".join(cols) + " |",
             "|" + "".join("---:|" if numeric(c) else "---|" for c in cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    return "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def _command() -> str:
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if script is None or not script.is_file():
        return shlex.join(sys.argv)
    try:
        script_name = str(script.relative_to(ROOT))
    except ValueError:
        script_name = str(script)
    return shlex.join(["python", script_name, *sys.argv[1:]])


def write_results(name: str, rows: list[dict[str, Any]], *, packages: tuple[str, ...] = (),
                  extra: dict[str, Any] | None = None, notes: str = "",
                  out_dir: str | Path | None = None, title: str | None = None,
                  device_name: str | None = None, command: str | None = None) -> Path:
    """Write <out_dir>/<name>.json and .md (out_dir defaults to benchmarks/results); print the
    table; return the JSON path.

    The JSON holds device, cpu, platform, versions (python + ``packages``), commit (short),
    commit_sha (full), command, then ``extra`` (which wins on a clash), then ``rows``. The
    Markdown holds the same header, the scalar entries of ``extra`` as a list, ``rows`` as a
    table and ``notes`` (Markdown) last.
    ``device_name`` replaces ``device()`` (e.g. a CPU-only benchmark on a machine with a GPU);
    ``command`` replaces the command line read from ``sys.argv``.
    """
    out = Path(out_dir) if out_dir is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    meta = {"device": device_name or device(), "cpu": cpu(), "platform": platform.platform(),
            "versions": versions(*packages), "commit": git_commit(),
            "commit_sha": git_commit(full=True), "command": command or _command()}
    payload = {**meta, **(extra or {}), "rows": rows}
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    table = markdown_table(rows)
    md = [f"# {title or name}", "", f"- device: {meta['device']}"]
    if meta["cpu"] != meta["device"]:
        md.append(f"- cpu: {meta['cpu']}")
    md += [f"- platform: {meta['platform']}", f"- commit: {meta['commit_sha']}",
           "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
           f"- command: `{meta['command']}`"]
    md += [f"- {k}: {_fmt(v)}" for k, v in (extra or {}).items()
           if v is None or isinstance(v, str | int | float | bool)]
    md += ["", table]
    if notes:
        md += ["", notes.rstrip("\n")]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    print(table)
    print(f"wrote {path} and {path.with_suffix('.md').name}", file=sys.stderr)
    return path
