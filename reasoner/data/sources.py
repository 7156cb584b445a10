"""Datasets from local files.

`load_rows` reads .jsonl, .parquet, or a `datasets.save_to_disk` directory into a list of plain
dicts, renaming the user's columns to ours ("question", "answer", "tests", "test_list",
"solution") with a `{our_name: their_name}` mapping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reasoner.config import ConfigError

OUR_COLUMNS = ("question", "answer", "tests", "test_list", "solution")


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line, read lazily; a line that is not UTF-8
    text or not a JSON object raises ValueError naming ``path:line`` (a UTF-8 byte-order mark
    at the start is skipped). The one JSONL reader of the project."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at "
                                 f"byte {e.start + 1} of the line); save the file as UTF-8"
                                 ) from None
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
                raise ValueError(f"{path} holds splits {sorted(ds)}; choose one with data.split "
                                 "(reasoner eval: --split)")
            split = next(iter(ds))
        if split not in ds:
            raise ValueError(f"{path} has no split {split!r} (data.split); it has {sorted(ds)}")
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
    `split` chooses a split of a saved DatasetDict (a file has none: refused).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset {str(p)!r} does not exist")
    if p.is_dir():
        rows = _read_dataset_dir(p, split)
    elif split is not None:  # a file has no splits: reading all of it would not be that split
        raise ValueError(f"{p} is a file, which has no splits; data.split ({split!r}) is for a "
                         "datasets.save_to_disk directory (give the split's own file instead)")
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
    """Rename `columns` ({ours: theirs}) in every row; a missing column is an error naming it
    (ConfigError: the mapping is ``data.column_map``)."""
    for ours, theirs in columns.items():
        if ours not in OUR_COLUMNS:
            hint = (f" (reversed? {{{theirs}: {ours}}} would map your {ours!r} to our "
                    f"{theirs!r})" if theirs in OUR_COLUMNS else "")
            raise ConfigError(f"data.column_map: unknown target column {ours!r}; the map goes "
                              f"{{our name: your column}} and ours are "
                              f"{', '.join(OUR_COLUMNS)}{hint}")
    if not columns:
        return rows
    out = []
    for i, row in enumerate(rows):
        new = dict(row)
        for ours, theirs in columns.items():
            if theirs not in row:
                raise ConfigError(
                    f"{source}: row {i} has no column {theirs!r} (data.column_map maps our "
                    f"{ours!r} to it: {{our name: your column}}); its columns are {sorted(row)}")
            value = new.pop(theirs)
            new[ours] = value
        out.append(new)
    return out
