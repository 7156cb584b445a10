"""Data: rows from local files (`sources`), prompt templates and the answer format they ask for
(`templates`), the order rows are visited in (`order`), and the training rows a config
describes (`load_training_data`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass
class TrainingData:
    """The rows a run trains on and how they are prompted."""

    rows: list[dict[str, Any]]
    task: Any  # the procedural Task the rows come from, or None for a dataset
    template: str  # data.template, or the task's default (r1_zero for a dataset)


def load_training_data(data_cfg: Any, rows: list[dict[str, Any]] | None = None) -> TrainingData:
    """The ``data`` config section's rows: ``num_train_rows`` rows of the train split of
    ``data.task``, or the rows of ``data.dataset_path`` (columns renamed by ``column_map``).
    Given `rows`, those instead (the task, if one is configured, still sets the defaults)."""
    task = None
    if data_cfg.task is not None:
        from reasoner.tasks import get_task

        task = get_task(data_cfg.task, **data_cfg.task_options)
    if rows is None:
        if task is not None:
            rows = task.rows("train", data_cfg.num_train_rows, data_cfg.data_seed)
        else:
            rows = load_rows(data_cfg.dataset_path, columns=data_cfg.column_map or None,
                             split=data_cfg.split)
    template = data_cfg.template or (task.default_template if task is not None else "r1_zero")
    return TrainingData(list(rows), task, template)


__all__ = ["OUR_COLUMNS", "R1_ZERO_SYSTEM", "TAG_TOKENS", "TEMPLATES", "DataOrder",
           "TrainingData", "answer_blocks", "extract_answer", "iter_jsonl", "load_rows",
           "load_training_data", "rename_columns", "render_prompt"]
