"""The `reasoner` command line (also `python -m reasoner`).

Each command is a thin shell over one function in the module that does the work, so the same
work is callable from Python with plain arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="reasoner",
    help="GRPO trainer for reasoning models with verifiable rewards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """GRPO trainer for reasoning models with verifiable rewards."""


@app.command()
def verify(
    task: str = typer.Option(..., "--task", help="Verifier name: math, code, or a registered plugin."),
    input: Path = typer.Option(..., "--input", help="Input JSONL file."),
    output: Path = typer.Option(..., "--output", help="Output JSONL file (input record + reward, correct, reason)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: CPU count)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Per-check time limit in seconds (verifier default if unset)."),
    all_or_nothing: bool = typer.Option(False, "--all-or-nothing", help="Code: reward 1 only if every test passes."),
    resume: bool = typer.Option(False, "--resume", help="Keep the lines already in OUTPUT and score only the rest."),
) -> None:
    """Score completions in a JSONL file with a verifier; one output line per input line, same order."""
    from reasoner.verify_cli import run_verify

    run_verify(task=task, input_path=input, output_path=output, workers=workers, timeout=timeout,
               all_or_nothing=all_or_nothing, resume=resume)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
