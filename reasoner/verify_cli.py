"""`reasoner verify`: score a JSONL file of completions with a named verifier.

One output line per input record, in input order: the input record plus ``reward`` (float),
``correct`` (bool, or null when it can't be judged) and ``reason``. Blank lines are not records and
are skipped. Results are appended and flushed as they are scored, so a crash or a malformed line
loses nothing already scored; ``--resume`` continues an interrupted output file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from reasoner.data import iter_jsonl
from reasoner.verifiers import registry

CHUNK = 256  # records scored per call to the verifier; results are written as they come back


class InputError(ValueError):
    """A user-fixable problem with the input file; the message names the line."""


@dataclass
class VerifySummary:
    scored: int
    skipped_existing: int
    correct: int
    unjudged: int


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_number, record) for each non-blank line; raise InputError naming a bad line."""
    try:
        for lineno, record in iter_jsonl(path):
            if not isinstance(record.get("completion"), str):
                raise InputError(f"{path}:{lineno}: field 'completion' is missing or not a string")
            yield lineno, record
    except InputError:
        raise
    except ValueError as e:
        raise InputError(str(e)) from None


def _count_records(path: Path) -> int:
    with path.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _count_done(path: Path) -> int:
    """Complete lines already in an output file; a torn last line (crash mid-write) is cut off."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with path.open("r+b") as f:
            f.truncate(keep)
    return data[:keep].count(b"\n")


def _json_line(row: dict[str, Any]) -> str:
    """One output line: UTF-8 text as is; a record holding a lone surrogate (valid in JSON's
    \\ud800 escapes, not encodable as UTF-8) is written with escapes instead, so it round-trips."""
    line = json.dumps(row, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(row)
    return line + "\n"


def _write_scored(out: TextIO, verifier: Any, chunk: list[dict[str, Any]], summary: VerifySummary,
                  advance: Any) -> None:
    for record, verdict in zip(chunk, verifier.score(chunk), strict=True):
        row = dict(record)
        row["reward"] = float(verdict.reward)
        row["correct"] = verdict.correct
        row["reason"] = verdict.reason
        out.write(_json_line(row))
        out.flush()
        summary.scored += 1
        summary.correct += verdict.correct is True
        summary.unjudged += verdict.correct is None
        advance()


def verify_file(
    task: str,
    input_path: Path,
    output_path: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    **verifier_options: Any,
) -> VerifySummary:
    """Score every record of `input_path` into `output_path`. Raises InputError on a bad line,
    after everything before that line has been scored and written."""
    if not input_path.is_file():
        raise InputError(f"input file not found: {input_path}")
    total = _count_records(input_path)
    done = _count_done(output_path) if resume else 0
    if done > total:
        raise InputError(f"{output_path} has {done} lines but {input_path} only {total} records")
    options = {k: v for k, v in verifier_options.items() if v is not None}
    _check_options(task, options)
    summary = VerifySummary(scored=0, skipped_existing=done, correct=0, unjudged=0)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    columns = [TextColumn("verify {task.fields[name]}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn()]
    with (
        registry.create(task, **options) as verifier,
        output_path.open("a" if resume else "w", encoding="utf-8") as out,
        Progress(*columns, disable=not progress, transient=False) as bar,
    ):
        bar_task = bar.add_task("verify", total=total, completed=done, name=task)

        def advance() -> None:
            bar.advance(bar_task)

        chunk: list[dict[str, Any]] = []
        records = read_records(input_path)
        try:
            for index, (_, record) in enumerate(records):
                if index < done:
                    continue
                chunk.append(record)
                if len(chunk) == CHUNK:
                    _write_scored(out, verifier, chunk, summary, advance)
                    chunk = []
        finally:
            # On a bad line (InputError) the records read before it are still scored and kept.
            if chunk:
                _write_scored(out, verifier, chunk, summary, advance)
    return summary


def _check_options(task: str, options: dict[str, Any]) -> None:
    """The verifier's factory takes every option given (workers=, timeout=, all_or_nothing=:
    each passed only when the command line sets it), else an InputError naming the flag."""
    import inspect

    factory = registry.get_factory(task)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    refused = [k for k in options if k not in params]
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") for k in refused)
        raise InputError(f"verifier {task!r} takes no {flags} (its constructor's options: "
                         f"{', '.join(params) or 'none'})")


def run_verify(*, task: str, input_path: Path, output_path: Path, workers: int | None,
               timeout: float | None, all_or_nothing: bool, resume: bool = False) -> None:
    """CLI entry: prints a one-line summary; exits 2 with a clear message on bad input."""
    options: dict[str, Any] = {"workers": workers, "timeout": timeout}
    if all_or_nothing:
        options["all_or_nothing"] = True
    try:
        s = verify_file(task, input_path, output_path, resume=resume,
                        progress=sys.stderr.isatty(), **options)
    except (InputError, registry.UnknownVerifierError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        raise SystemExit(2) from None
    judged = s.scored - s.unjudged
    acc = f"{s.correct / judged:.1%}" if judged else "n/a"
    print(f"scored {s.scored} records ({s.skipped_existing} already done), correct {s.correct}/{judged} "
          f"({acc}), cannot judge {s.unjudged} -> {output_path}")
