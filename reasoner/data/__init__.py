"""Data: rows from local files (`sources`), prompt templates and the answer format they ask for
(`templates`), the order rows are visited in (`order`), and the training rows a config
describes (`load_training_data`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reasoner.config import ConfigError
from reasoner.data.order import DataOrder
from reasoner.data.sources import OUR_COLUMNS, iter_jsonl, load_rows, rename_columns
from reasoner.data.templates import (
    R1_ZERO_SYSTEM,
    TAG_TOKENS,
    TEMPLATES,
    answer_blocks,
    extract_answer,
    render_prompt,
)

DEFAULT_TRAIN_ROWS = 10000  # data.num_train_rows null: this many rows of a task, or all it has


@dataclass
class TrainingData:
    """The rows a run trains on and how they are prompted."""

    rows: list[dict[str, Any]]
    task: Any  # the procedural Task the rows come from, or None for a dataset
    template: str  # data.template, or the task's default (r1_zero for a dataset)


def load_training_data(data_cfg: Any, rows: list[dict[str, Any]] | None = None) -> TrainingData:
    """The ``data`` config section's rows: ``num_train_rows`` rows of the train split of
    ``data.task`` (unset: `DEFAULT_TRAIN_ROWS`, or every train row of a smaller task), or the
    rows of ``data.dataset_path`` (columns renamed by ``column_map``).
    Given `rows`, those instead (the task, if one is configured, still sets the defaults).
    A missing or unreadable file (a line that is not JSON or not UTF-8, an unknown format, a
    split that is not there) or a missing column is a ConfigError naming
    ``data.dataset_path`` / ``data.split`` / ``data.column_map``."""
    task = None
    if data_cfg.task is not None:
        from reasoner.tasks import get_task

        task = get_task(data_cfg.task, **data_cfg.task_options)
    if rows is None:
        if task is not None:
            n = data_cfg.num_train_rows
            try:  # unset: up to DEFAULT_TRAIN_ROWS, all of a smaller task's
                rows = task.rows("train", n or DEFAULT_TRAIN_ROWS, data_cfg.data_seed,
                                 at_most=n is None)
            except ValueError as e:  # a task too small for the rows asked for
                raise ConfigError(f"data.num_train_rows={data_cfg.num_train_rows}: {e}") from None
        else:
            check_dataset_path(data_cfg.dataset_path)
            try:
                rows = load_rows(data_cfg.dataset_path, columns=data_cfg.column_map or None,
                                 split=data_cfg.split)
            except ConfigError:
                raise
            except (ValueError, OSError) as e:  # an unreadable file: a bad line, a wrong format
                raise ConfigError(f"data.dataset_path {data_cfg.dataset_path!r}: {e}") from None
            if not rows:
                raise ConfigError(f"data.dataset_path {data_cfg.dataset_path!r} holds no rows")
            for i, row in enumerate(rows):
                if "question" not in row:
                    raise ConfigError(
                        f"data.dataset_path {data_cfg.dataset_path!r}: row {i} has no 'question' "
                        f"column; its columns are {sorted(row)}: name yours in data.column_map, "
                        "ours on the left, e.g. {question: problem, answer: solution}")
                if row["question"] is None or row["question"] in ("", [], ()):
                    raise ConfigError(
                        f"data.dataset_path {data_cfg.dataset_path!r}: row {i} has an empty "
                        f"'question' ({row['question']!r}); every row needs a prompt")
    return TrainingData(list(rows), task, data_cfg.template or default_template(task))


def default_template(task: Any) -> str:
    """The prompt template when ``data.template`` is null: the task's default, r1_zero for a
    dataset (training and evaluation alike)."""
    return task.default_template if task is not None else "r1_zero"


def check_dataset_path(path: str | None) -> None:
    """``data.dataset_path`` names something that exists (ConfigError otherwise)."""
    if path is not None and not Path(path).exists():
        raise ConfigError(f"data.dataset_path {path!r} does not exist (a .jsonl / .parquet file "
                          "or a datasets.save_to_disk directory)")


__all__ = ["OUR_COLUMNS", "R1_ZERO_SYSTEM", "TAG_TOKENS", "TEMPLATES", "DataOrder",
           "TrainingData", "answer_blocks", "check_dataset_path", "default_template",
           "extract_answer", "iter_jsonl", "load_rows", "load_training_data", "rename_columns",
           "render_prompt"]
