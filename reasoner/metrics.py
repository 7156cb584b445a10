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


def plot_metrics(metrics_path: str | Path, out_dir: str | Path,
                 plots: Sequence[tuple[str, str, tuple[str, ...]]] | None = None) -> list[Path]:
    """PNG line plots over steps (matplotlib Agg): `plots` (file name, title, metric keys),
    default PLOTS (reward, accuracy, completion length); with a critic also its value loss and
    explained variance, and the KL and its coefficient."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(metrics_path)
    out = []
    logged = {k for r in recs for k in r}
    optional = [p for p in OPTIONAL_PLOTS if "kl_coef" in logged and logged & set(p[2])]
    for fname, title, keys in (*(PLOTS if plots is None else plots), *optional):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        drawn = False
        for k in keys:
            pts = [(r["step"], r[k]) for r in recs if isinstance(r.get(k), (int, float))]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, marker=".")
                drawn = True
        ax.set_xlabel("step")
        ax.set_title(title)
        if drawn:
            ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = Path(out_dir) / fname
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out.append(path)
    return out


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
