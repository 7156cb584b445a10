"""Datasets from local files, and the prompt templates.

`load_rows` reads .jsonl, .parquet, or a `datasets.save_to_disk` directory into a list of plain
dicts, renaming the user's columns to ours ("question", "answer", "tests", "test_list",
"solution") with a `{our_name: their_name}` mapping.

`render_prompt` turns a question into the text the model continues:

- ``r1_zero``: the DeepSeek-R1-Zero template; the prompt ends in ``<think>``.
- ``r1_short``: ``"{question}\\n<think>"``, for the tiny character-level model (every prompt
  character costs a token).
- ``chat``: the tokenizer's chat template with ``add_generation_prompt=True``.
- ``plain``: the question unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OUR_COLUMNS = ("question", "answer", "tests", "test_list", "solution")
TEMPLATES = ("r1_zero", "r1_short", "chat", "plain")

R1_ZERO_SYSTEM = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process in the mind and then "
    "provides the User with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>."
)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line, read lazily; a line that is not a JSON
    object raises ValueError naming ``path:line``. The one JSONL reader of the project."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {e.msg} at column {e.colno}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def _read_dataset_dir(path: Path, split: str | None) -> list[dict[str, Any]]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            if len(ds) != 1:
                raise ValueError(f"{path} holds splits {sorted(ds)}; choose one with split=")
            split = next(iter(ds))
        if split not in ds:
            raise ValueError(f"{path} has no split {split!r}; it has {sorted(ds)}")
        ds = ds[split]
    return ds.to_list()


def load_rows(
    path: str | Path,
    *,
    columns: dict[str, str] | None = None,
    split: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of a .jsonl / .parquet file or a `datasets` directory, as dicts.

    `columns` maps our column names to the file's (``{"question": "problem"}``): each mapped
    column is renamed (and must exist in every row); other columns are kept as they are.
    `split` chooses a split of a saved DatasetDict.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset {str(p)!r} does not exist")
    if p.is_dir():
        rows = _read_dataset_dir(p, split)
    elif p.suffix == ".jsonl":
        rows = [row for _, row in iter_jsonl(p)]
    elif p.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(p).to_pylist()
    else:
        raise ValueError(f"{p}: unsupported dataset format (use .jsonl, .parquet or a datasets dir)")
    return rename_columns(rows, columns or {}, source=str(p))


def rename_columns(
    rows: list[dict[str, Any]], columns: dict[str, str], *, source: str = "dataset"
) -> list[dict[str, Any]]:
    """Rename `columns` ({ours: theirs}) in every row; a missing column is an error naming it."""
    for ours in columns:
        if ours not in OUR_COLUMNS:
            raise ValueError(f"unknown target column {ours!r} in the column mapping; ours are {OUR_COLUMNS}")
    if not columns:
        return rows
    out = []
    for i, row in enumerate(rows):
        new = dict(row)
        for ours, theirs in columns.items():
            if theirs not in row:
                raise KeyError(
                    f"{source}: row {i} has no column {theirs!r} (mapped to {ours!r}); "
                    f"its columns are {sorted(row)}"
                )
            value = new.pop(theirs)
            new[ours] = value
        out.append(new)
    return out


def render_prompt(
    question: str,
    *,
    template: str = "r1_zero",
    tokenizer: Any = None,
    system_prompt: str | None = None,
) -> str:
    """The prompt text for `question` under `template` (see the module docstring)."""
    if template == "r1_zero":
        system = R1_ZERO_SYSTEM if system_prompt is None else system_prompt
        return f"{system} User: {question}\nAssistant: <think>"
    if template == "r1_short":
        prefix = "" if system_prompt is None else system_prompt + "\n"
        return f"{prefix}{question}\n<think>"
    if template == "plain":
        prefix = "" if system_prompt is None else system_prompt + "\n"
        return prefix + question
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat' needs a tokenizer with a chat_template")
        messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown prompt template {template!r}; choose one of {TEMPLATES}")
