"""Run metrics: metrics.jsonl (every step), completions.jsonl, TensorBoard, PNG plots, progress bar.

metrics.jsonl is appended and flushed line by line, so a killed run loses nothing already logged;
on resume the lines after the checkpoint's step are dropped (they are recomputed identically).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
COMPLETIONS_FILE = "completions.jsonl"
TB_DIR = "tb"
PLOTS = (  # file name -> (title, metric keys)
    ("reward.png", "reward", ("reward/mean",)),
    ("accuracy.png", "accuracy", ("accuracy",)),
    ("length.png", "completion length", ("completion_length/mean", "completion_length/max")),
)
# written only when the run logged one of their keys (a critic's, a KL penalty in the reward)
OPTIONAL_PLOTS = (
    ("value.png", "critic", ("value_loss", "explained_variance", "value_clipfrac")),
    ("kl.png", "KL penalty", ("kl", "kl_coef")),
)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def clean_json(obj: Any) -> Any:
    """`obj` with every non-finite float replaced as in metrics.jsonl (NaN: null, inf: "inf"),
    at any depth: what json.dumps writes is then valid JSON for any reader."""
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return _clean(obj)


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Keep only the records with step <= max_step (and drop a torn last line)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("step", 0) <= max_step:
            keep.append(line)
    path.write_text("".join(k + "\n" for k in keep))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class MetricsLogger:
    def __init__(self, output_dir: str | Path, *, tensorboard: bool = True,
                 resume_step: int | None = None) -> None:
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / METRICS_FILE
        self.completions_path = self.dir / COMPLETIONS_FILE
        if resume_step is None:
            for p in (self.metrics_path, self.completions_path):
                p.unlink(missing_ok=True)
        else:
            truncate_jsonl(self.metrics_path, resume_step)
            truncate_jsonl(self.completions_path, resume_step)
        self._metrics = open(self.metrics_path, "a")
        self._completions = open(self.completions_path, "a")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.dir / TB_DIR), purge_step=resume_step)
            except ImportError:  # tensorboard not installed: jsonl only
                self.tb = None

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        rec = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(rec) + "\n")
        self._metrics.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

    def log_completions(self, step: int, records: list[dict[str, Any]]) -> None:
        for r in records:
            self._completions.write(json.dumps({"step": step, **r}) + "\n")
        self._completions.flush()

    def close(self) -> None:
        self._metrics.close()
        self._completions.close()
        if self.tb is not None:
            self.tb.close()


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """TensorBoard-style smoothing: an exponential moving average with weight `weight` on the
    past, debiased so the first points are not pulled towards 0 (out[0] == values[0])."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = weight * avg + (1.0 - weight) * v
        out.append(avg / (1.0 - weight**i))
    return out


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out `fig`, write it to `path` as a PNG (100 dpi) and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return Path(path)


def draw_series(ax: Any, recs: list[dict[str, Any]], key: str, *, label: str | None = None,
                color: str | None = None, smoothing: float = 0.9) -> bool:
    """Draw metric `key` of `recs` (metrics.jsonl records) on `ax`: the raw value of every step
    as faint points and its `smooth`-ed curve as a line. Returns False if no record has it."""
    pts = [(r["step"], float(r[key])) for r in recs
           if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    if not pts:
        return False
    steps, vals = [p[0] for p in pts], [p[1] for p in pts]
    line = ax.plot(steps, smooth(vals, smoothing), label=label or key, color=color, lw=1.8)[0]
    ax.scatter(steps, vals, s=6, alpha=0.3, color=line.get_color(), linewidths=0)
    return True


def plot_metrics(metrics_path: str | Path, out_dir: str | Path,
                 plots: Sequence[tuple[str, str, tuple[str, ...]]] | None = None) -> list[Path]:
    """PNG plots over steps (matplotlib Agg), each metric's raw value per step as faint points
    under its smoothed curve (`draw_series`): `plots` (file name, title, metric keys), default
    PLOTS (reward, accuracy, completion length); with a critic also its value loss and
    explained variance, and the KL and its coefficient."""
    plt = pyplot()
    recs = read_metrics(metrics_path)
    out = []
    logged = {k for r in recs for k in r}
    optional = [p for p in OPTIONAL_PLOTS if "kl_coef" in logged and logged & set(p[2])]
    for fname, title, keys in (*(PLOTS if plots is None else plots), *optional):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        if any([draw_series(ax, recs, k) for k in keys]):  # a list: draw every key
            ax.legend()
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        out.append(save_figure(fig, Path(out_dir) / fname))
    return out


def draw_heldout(ax: Any, before: dict[str, float], after: dict[str, float]) -> None:
    """Grouped bars: one group per measure (the keys of `before`, e.g. "greedy", "sampled T=1",
    "pass@4"), a bar for before and one for after, each labelled with its value."""
    names = list(before)
    xs = range(len(names))
    w = 0.38
    for shift, vals, label, color in ((-w / 2, before, "before GRPO", "#9aa5b1"),
                                      (w / 2, after, "after GRPO", "#2b7bb9")):
        bars = ax.bar([x + shift for x in xs], [vals[n] for n in names], w, label=label,
                      color=color)
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("held-out accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def plot_heldout(before: dict[str, float], after: dict[str, float], path: str | Path,
                 *, title: str = "held-out accuracy") -> Path:
    """A PNG of `draw_heldout` (before vs after, per measure)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    draw_heldout(ax, before, after)
    ax.set_title(title)
    return save_figure(fig, path)


class Progress:
    """A rich progress bar with ETA and live reward / accuracy; a no-op when disabled."""

    def __init__(self, total: int, start: int = 0, *, enabled: bool = True,
                 description: str = "GRPO",
                 info: Callable[[dict[str, Any]], str | None] | None = None) -> None:
        """`info`: the live text from a step's metrics (None, or returning None: reward,
        accuracy and length)."""
        self.enabled = enabled
        self.info = info
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self.bar.start()
        self.task = self.bar.add_task(description, total=total, completed=start, info="")

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        info = self.info(metrics) if self.info is not None else None
        if info is None:
            info = (f"reward {metrics.get('reward/mean', float('nan')):.3f}  "
                    f"acc {metrics.get('accuracy', float('nan')):.3f}  "
                    f"len {metrics.get('completion_length/mean', float('nan')):.1f}")
        self.bar.update(self.task, completed=step, info=info)

    def print(self, text: str) -> None:
        """A log line (above the bar; plain stdout without one: --no-progress hides the bar,
        not the per-step lines)."""
        if self.enabled:
            self.bar.console.print(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.enabled:
            self.bar.stop()
