"""The `reasoner` command line (also `python -m reasoner`).

Each command is a thin shell over one function in the module that does the work, so the same
work is callable from Python with plain arguments.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

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


def _config_epilog() -> str:
    from reasoner.config import describe_config

    return ("Overrides: section.field=value (YAML values), e.g. algo.beta=0.04 "
            "model.path=/models/qwen data.task_options.digits=2\n\nConfig fields:\n\n"
            + describe_config())


_OVERRIDES_ARG = typer.Argument(None, help="Config overrides: section.field=value.")


def _run_training(config: Optional[Path], overrides: Optional[list[str]], *,
                  flags: dict[str, object], resume: bool, deepspeed: Optional[str],
                  help_config: bool, no_progress: bool, algo: Optional[str] = None,
                  overwrite: bool = False) -> dict:
    """`reasoner train` / `reasoner rm`: the config, the DeepSpeed file, the run; a user's
    mistake is one line (exit status 2)."""
    from reasoner.config import ConfigError, describe_config, load_config

    if help_config:
        typer.echo(describe_config())
        raise typer.Exit()
    extra = [f"train.{k}={v}" for k, v in flags.items() if v is not None]
    if algo is not None:
        extra.append(f"algo.name={algo}")
    if resume and config is None and flags.get("output_dir"):
        # --resume without --config: the run's own config.yaml (the overrides it was started
        # with included), then this command's overrides
        from reasoner.checkpoint import CONFIG_FILE

        saved = Path(str(flags["output_dir"])) / CONFIG_FILE
        if saved.is_file():
            config = saved
    try:
        cfg = load_config(config, list(overrides or []) + extra)
    except ConfigError as e:
        _fail(f"config: {e}")
    from reasoner.trainers import train as run_train

    if deepspeed is not None:  # a bad DeepSpeed file fails here, before anything is loaded
        from reasoner.distributed import launched_world_size
        from reasoner.engine.deepspeed_engine import load_deepspeed_config, resolve_deepspeed_config

        try:
            resolve_deepspeed_config(load_deepspeed_config(deepspeed), cfg.train,
                                     launched_world_size(),
                                     bf16_weights=cfg.model.dtype == "bfloat16")
        except (ValueError, FileNotFoundError) as e:
            _fail(str(e))
    from reasoner.preferences.formats import PreferenceDataError

    try:
        return _user_errors(lambda: run_train(
            cfg, resume=resume, deepspeed_config=deepspeed, progress=not no_progress,
            overwrite=overwrite))
    except (NotImplementedError, PreferenceDataError, FileNotFoundError) as e:
        _fail(str(e))


@app.command(epilog=_config_epilog(), context_settings={"max_content_width": 120})
def train(
    overrides: Optional[list[str]] = _OVERRIDES_ARG,
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config file (default: built-in defaults)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="= train.output_dir."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="= train.max_steps."),
    save_steps: Optional[int] = typer.Option(None, "--save-steps", help="= train.save_steps."),
    seed: Optional[int] = typer.Option(None, "--seed", help="= train.seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest complete checkpoint in the output dir; without --config, with the run's own config.yaml (only steps, saving, logging, the device and the reward model path may change on resume)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run in the output dir (its config, logs, checkpoints, final/; deleted once the new run has done its first step, put back if it fails before); without it, or --resume, such a directory is refused."),
    deepspeed: Optional[str] = typer.Option(None, "--deepspeed", help="DeepSpeed config JSON (configs/zero2.json, configs/zero3.json); \"auto\" values come from the train section. Launch with torchrun or deepspeed for several processes."),
    help_config: bool = typer.Option(False, "--help-config", help="Print every config field with its help and exit."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (the per-step lines stay)."),
) -> None:
    """RL training (algo.name: grpo, ...): YAML config + dotted overrides -> metrics.jsonl, checkpoints, final/."""
    flags = {"output_dir": output_dir, "max_steps": max_steps, "save_steps": save_steps, "seed": seed}
    summary = _run_training(config, overrides, flags=flags, resume=resume, deepspeed=deepspeed,
                            help_config=help_config, no_progress=no_progress,
                            overwrite=overwrite)
    if summary.get("rank", 0) == 0:
        typer.echo(f"done: {summary['steps']} steps; final policy in {summary['final']}")


@app.command(epilog=_config_epilog(), context_settings={"max_content_width": 120})
def rm(
    overrides: Optional[list[str]] = _OVERRIDES_ARG,
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config file (configs/rm_tiny.yaml)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="= train.output_dir."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="= train.max_steps."),
    save_steps: Optional[int] = typer.Option(None, "--save-steps", help="= train.save_steps."),
    seed: Optional[int] = typer.Option(None, "--seed", help="= train.seed."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest complete checkpoint in the output dir; without --config, with the run's own config.yaml (only steps, saving, logging, the device and the reward model path may change on resume)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run in the output dir (its config, logs, checkpoints, final/; deleted once the new run has done its first step, put back if it fails before); without it, or --resume, such a directory is refused."),
    deepspeed: Optional[str] = typer.Option(None, "--deepspeed", help="DeepSpeed config JSON, as for train."),
    help_config: bool = typer.Option(False, "--help-config", help="Print every config field with its help and exit."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (the per-step lines stay)."),
) -> None:
    """Reward model from preferences (pairs, rankings, comparisons): the rm section + train -> D/final (AutoModelForSequenceClassification), D/eval.json."""
    flags = {"output_dir": output_dir, "max_steps": max_steps, "save_steps": save_steps, "seed": seed}
    summary = _run_training(config, overrides, flags=flags, resume=resume, deepspeed=deepspeed,
                            help_config=help_config, no_progress=no_progress, algo="rm",
                            overwrite=overwrite)
    if summary.get("rank", 0) == 0:
        ev = summary.get("eval")
        line = f"done: {summary['steps']} steps; reward model in {summary['final']}"
        if ev:
            line += f"; held-out accuracy {ev['accuracy']:.3f} on {ev['num_pairs']} pairs"
            if "bayes_accuracy" in ev:
                line += f" (annotator's Bayes-optimal {ev['bayes_accuracy']:.3f})"
                groups = "; ".join(
                    f"p in [{g['confidence'][0]:g}, {g['confidence'][1]:g}): {g['pairs']} pairs, "
                    f"{g['accuracy']:.3f} vs {g['bayes_accuracy']:.3f}, {g['gap_points']:+.2f} pts"
                    for g in ev["by_annotator_confidence"] if g["pairs"])
                line += f"\ngap to Bayes by the annotator's confidence p: {groups}"
        typer.echo(line)


@app.command()
def preferences(
    policy: Path = typer.Option(..., "--policy", help="Local HF causal LM directory to sample completions from."),
    task: str = typer.Option(..., "--task", help="Task whose rows are prompted and whose accuracy reward says what is correct."),
    output: Path = typer.Option(..., "--output", help="Output JSONL."),
    k: int = typer.Option(4, "--k", help="Completions sampled per prompt (distinct ones are ranked)."),
    n: int = typer.Option(2000, "--n", help="Prompts (rows of the split)."),
    split: str = typer.Option("train", "--split", help="train or test (held out)."),
    fmt: str = typer.Option("rankings", "--format", help="rankings | pairs (TRL) | comparisons (a, b, winner)."),
    noise_temperature: float = typer.Option(0.05, "--noise-temperature", help="The annotator's Bradley-Terry noise: P(a over b) = sigmoid((u_a - u_b) / T)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature of the policy."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens"),
    task_option: Optional[list[str]] = typer.Option(None, "--task-option", help="KEY=VALUE task option (repeatable)."),
    template: Optional[str] = typer.Option(None, "--template", help="Prompt template (default: the task's)."),
    seed: int = typer.Option(0, "--seed"),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Rank K completions per prompt sampled from a policy with the synthetic annotator (hidden preference + Bradley-Terry noise)."""
    from reasoner.preferences.annotator import SyntheticAnnotator
    from reasoner.preferences.sample import sample_preferences
    from reasoner.registry import UnknownNameError
    from reasoner.tasks import parse_task_options

    try:
        r = sample_preferences(policy, task, k=k, n=n, output=output, split=split, fmt=fmt,
                               task_options=parse_task_options(task_option),
                               annotator=SyntheticAnnotator(noise_temperature=noise_temperature),
                               temperature=temperature, max_new_tokens=max_new_tokens,
                               template=template, seed=seed, progress=not no_progress)
    except (ValueError, OSError, UnknownNameError) as e:  # UnknownNameError: a task's name
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{r.records} rankings ({r.lines} lines) in {output}; {r.left_out} prompts left "
               f"out; annotator's Bayes-optimal pairwise accuracy {r.bayes_accuracy:.4f}; "
               f"policy's true score {r.true_score:.4f}; {r.seconds:.0f} s")


@app.command()
def elo(
    input: Path = typer.Option(..., "--input", help="Comparisons JSONL (a, b, winner; pairs and rankings are read too)."),
    output: Path = typer.Option(..., "--output", help="ratings.json"),
    method: str = typer.Option("bt", "--method", help="bt (Bradley-Terry maximum likelihood, Wald intervals) | elo (sequential updates, bootstrap intervals)."),
    per_prompt: bool = typer.Option(False, "--per-prompt", help="Players are completions of one prompt (rated within it); default: players are the a/b values (policy or checkpoint names)."),
    prior: float = typer.Option(0.01, "--prior", help="bt: Gaussian prior precision on the ratings (0 = plain MLE)."),
    k_factor: float = typer.Option(16.0, "--k-factor", help="elo: the K factor."),
    bootstrap: int = typer.Option(100, "--bootstrap", help="elo: bootstrap resamples for the intervals (0 = none)."),
    confidence: float = typer.Option(0.95, "--confidence"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Ratings with confidence intervals from pairwise comparisons (of completions, or of whole policies / checkpoints)."""
    from reasoner.preferences.formats import PreferenceDataError
    from reasoner.preferences.ratings import ratings_main

    try:
        out = ratings_main(str(input), str(output), method=method, prior=prior,
                           k_factor=k_factor, bootstrap=bootstrap, confidence=confidence,
                           per_prompt=per_prompt, seed=seed)
    except (PreferenceDataError, ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    def num(x: object) -> str:
        return f"{x:8.1f}" if isinstance(x, float) else f"{'-':>8}"

    for p in out["players"][:10]:
        name = p["player"] if isinstance(p["player"], str) else json.dumps(p["player"])
        typer.echo(f"{num(p['rating'])}  [{num(p['ci_low'])}, {num(p['ci_high'])}]  "
                   f"{p['games']:5d} games  {name[:60]!r}")
    typer.echo(f"{out['num_players']} players, {out['num_comparisons']} comparisons -> {output}")
    if not per_prompt and out["num_components"] > 1:
        typer.echo(f"note: the players form {out['num_components']} groups with no comparison "
                   "linking them: a rating compares only with those of its own group")
    if out.get("players_without_intervals"):
        typer.echo(f"note: {out['players_without_intervals']} players have no interval: "
                   f"{out['why_no_intervals']} (its diagonal needs n^2 memory); "
                   "--method elo gives bootstrap intervals")


@app.command()
def demo(
    which: str = typer.Argument("grpo", help="grpo: an SFT warm start, then GRPO with a verifier reward (the default) | rlhf: the RLHF pipeline (reward model from the synthetic annotator's rankings, PPO with a KL penalty, online rounds)."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Where the demo writes its outputs (default runs/demo, runs/rlhf). A rerun replaces the same demo's earlier outputs there; a folder holding anything else is refused."),
    config: Optional[Path] = typer.Option(None, "--config", help="Demo recipe YAML (default: the embedded recipe, configs/demo.yaml or configs/rlhf_demo.yaml)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write the demo into a --output-dir that holds other files (a training run's outputs there are replaced; nothing else is removed)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    seed: Optional[int] = typer.Option(None, "--seed", help="grpo: the seed of the tiny model's initialisation, the SFT order and GRPO (default: the recipe's train.seed and model.tiny_seed); rlhf: the seed of everything (default: the recipe's demo.seed)."),
) -> None:
    """End to end on a CPU. grpo (default): tiny model, SFT warm start, held-out accuracy before, GRPO, after. rlhf: SFT, rankings, reward model, PPO against it with and without the KL penalty, online rounds."""
    # each demo: (output dir or None for its own default, recipe, progress, seed, overwrite)
    # -> its line
    demos = {"grpo": _demo_grpo, "rlhf": _demo_rlhf}
    if which not in demos:
        _fail(f"unknown demo {which!r}; choose one of {sorted(demos)}")
    typer.echo(_user_errors(lambda: demos[which](output_dir, config, not no_progress, seed,
                                                 overwrite)))


def _demo_grpo(output_dir: Optional[Path], config: Optional[Path], progress: bool,
               seed: Optional[int], overwrite: bool) -> str:
    """`reasoner demo [grpo]`: run it; the line that says what it found."""
    from reasoner.demo import run_demo

    output_dir = output_dir or Path("runs/demo")
    s = run_demo(output_dir, config_path=config, progress=progress, seed=seed,
                 overwrite=overwrite)
    return (f"held-out accuracy before -> after GRPO: greedy {s['greedy_accuracy_before']:.3f} -> "
            f"{s['greedy_accuracy_after']:.3f}, sampled (T=1) {s['accuracy_before']:.3f} -> "
            f"{s['accuracy_after']:.3f}, pass@{s['pass_k']} {s['pass_at_k_before']:.3f} -> "
            f"{s['pass_at_k_after']:.3f}; {s['wall_seconds']:.0f} s; summary and plots in "
            f"{output_dir}")


def _demo_rlhf(output_dir: Optional[Path], config: Optional[Path], progress: bool,
               seed: Optional[int], overwrite: bool) -> str:
    """`reasoner demo rlhf`: run it; the line that says what it found."""
    from reasoner.demo_rlhf import run_rlhf_demo

    out = output_dir or Path("runs/rlhf")
    s = run_rlhf_demo(out, config_path=config, progress=progress, seed=seed,
                      overwrite=overwrite)
    line = (f"true score {s['true_score_before']:.3f} -> {s['true_score_after']:.3f} "
            f"(KL {s['kl_after']:.2f}); round 0's reward-model score "
            f"{s['rm_score_before']:.2f} -> {s['rm_score_after']:.2f}; final reward model "
            f"{s['rm_accuracy']:.3f} held-out accuracy (annotator "
            f"{s['annotator_accuracy']:.3f})")
    if s["no_kl"]:
        n = s["no_kl"]
        line += (f"; without the KL penalty: true score {n['true_score_after']:.3f}, reward-"
                 f"model score {n['rm_score_after']:.2f} (KL {n['kl_after']:.2f})")
    return f"{line}; {s['wall_seconds']:.0f} s; summary and plots in {out}"


@app.command()
def sft(
    model: str = typer.Option(..., "--model", help="Local HF model dir, or 'tiny' to build the tiny model."),
    task: str = typer.Option(..., "--task", help="Task: arithmetic, countdown, a plugin's, or module:Class."),
    output_dir: Path = typer.Option(..., "--output-dir", help="Where the fine-tuned model is saved (HF format)."),
    max_steps: int = typer.Option(..., "--max-steps", help="Optimizer steps."),
    task_option: Optional[list[str]] = typer.Option(None, "--task-option", help="KEY=VALUE task option (repeatable), e.g. digits=[1,2]."),
    n_train: int = typer.Option(4000, "--n-train", help="Training rows generated from the task."),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(3e-3, "--lr", help="Peak learning rate (linear warmup over 10% of the steps, then --lr-scheduler-type)."),
    lr_scheduler_type: str = typer.Option("linear", "--lr-scheduler-type", help="After the warmup: linear (decay to 0), constant_with_warmup (the peak to the end, as the demo's warm start), cosine."),
    seed: int = typer.Option(0, "--seed"),
    template: Optional[str] = typer.Option(None, "--template", help="Prompt template: r1_short, r1_zero, chat, plain (default: the task's, as in training)."),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing", help="Keeps the warm start exploratory for RL (e.g. 0.1)."),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Supervised warm start on a task's worked solutions (loss on the completion only)."""
    from reasoner.tasks import parse_task_options
    from reasoner.trainers.sft import sft_main

    r = _user_errors(lambda: sft_main(
        model=model, task=task, output_dir=str(output_dir), max_steps=max_steps,
        task_options=parse_task_options(task_option), n_train=n_train, batch_size=batch_size,
        lr=lr, seed=seed, template=template, progress=not no_progress,
        label_smoothing=label_smoothing, lr_scheduler_type=lr_scheduler_type))
    typer.echo(f"sft: {r['steps']} steps, loss {r['loss_first']:.4f} -> {r['loss_last']:.4f} "
               f"in {r['seconds']:.0f} s; model saved to {output_dir}")


@app.command("eval", context_settings={"max_content_width": 120})
def eval_cmd(
    overrides: Optional[list[str]] = typer.Argument(None, help="Config overrides, as for train: section.field=value (data.*, rewards.*)."),
    model: str = typer.Option(..., "--model", help="Local HF model dir."),
    config: Optional[Path] = typer.Option(None, "--config", help="A training config: its data and rewards sections (task or dataset, column map, template, reward functions) are evaluated."),
    task: Optional[str] = typer.Option(None, "--task", help="= data.task: a built-in task (arithmetic, countdown), a plugin's, or module:Class."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="= data.dataset_path (and data.task=null): a jsonl / parquet / datasets directory."),
    column_map: Optional[list[str]] = typer.Option(None, "--column-map", help="OURS=YOURS (repeatable) = data.column_map, e.g. question=problem."),
    reward: Optional[list[str]] = typer.Option(None, "--reward", help="Reward function (repeatable) = rewards.names; the accuracy logged is the task's accuracy reward (scored for the logs if not among them), or for a dataset the first, unless rewards.accuracy_reward says otherwise. Default: the task's."),
    split: Optional[str] = typer.Option(None, "--split", help="A task's train or test (default test, held out); a datasets directory's split."),
    n: int = typer.Option(200, "--n", help="Rows to evaluate (a dataset's first N)."),
    num_samples: int = typer.Option(1, "--num-samples", help="Completions per row."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    batch_size: int = typer.Option(64, "--batch-size", help="Sequences generated at once."),
    k: Optional[list[int]] = typer.Option(None, "--k", help="pass@k values (repeatable; default 1 and num-samples)."),
    task_option: Optional[list[str]] = typer.Option(None, "--task-option", help="KEY=VALUE task option (repeatable) = data.task_options.KEY."),
    seed: int = typer.Option(0, "--seed"),
    template: Optional[str] = typer.Option(None, "--template", help="= data.template (default as in training: the task's, r1_zero for a dataset)."),
    show: int = typer.Option(0, "--show", help="Print this many example completions."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results to this JSON file."),
) -> None:
    """Accuracy, pass@k, mean length and format rate of a model on a task split or a dataset,
    judged by the reward functions training uses (same config sections, same defaults)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from reasoner.evaluate import eval_main
    from reasoner.tasks import parse_task_options

    columns = {}
    for item in column_map or []:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            _fail(f"--column-map {item!r} is not OURS=YOURS (e.g. question=problem)")
        columns[ours.strip()] = theirs.strip()
    try:
        options = parse_task_options(task_option)
    except ValueError as e:
        _fail(f"--task-option: {e}")
    ks = sorted(set(k or [1, num_samples]))
    r = _user_errors(lambda: eval_main(
        model=model, task=task, task_options=options, dataset=dataset, column_map=columns,
        rewards=reward, template=template, overrides=list(overrides or []),
        config=str(config) if config else None, split=split, n=n, num_samples=num_samples,
        temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size,
        k_values=ks, seed=seed, show=show))
    table = Table(title=f"{r['n_rows']} rows x {num_samples} samples")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in r.items():
        if key != "samples":
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
    for s in r.get("samples", []):
        typer.echo(f"{s['question']!r} -> {s['completion']!r} (reward {s['reward']})")
    if json_out is not None:
        json_out.write_text(json.dumps(r, indent=1))


def _fail(message: str) -> NoReturn:
    """A user's mistake: one line on stderr, exit status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _user_errors(run: Any) -> Any:
    """`run()`, with a user's mistake (ConfigError: a bad config value, a missing file or
    column, an unknown name) reported as one line instead of a traceback."""
    from reasoner.config import ConfigError
    from reasoner.registry import UnknownNameError

    try:
        return run()
    except (ConfigError, UnknownNameError) as e:
        _fail(str(e))


def strip_local_rank(argv: list[str]) -> list[str]:
    """The deepspeed launcher puts `--local_rank=N` before our command; take it out (into
    LOCAL_RANK, where the rank is read from) so every command line parses as usual."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith(("--local_rank=", "--local-rank=")):
            os.environ.setdefault("LOCAL_RANK", a.split("=", 1)[1])
        elif a in ("--local_rank", "--local-rank") and i + 1 < len(argv):
            os.environ.setdefault("LOCAL_RANK", argv[i + 1])
            i += 1
        else:
            out.append(a)
        i += 1
    return out


def cwd_on_path() -> None:
    """The working directory first on sys.path, as ``python -m reasoner`` has it, so that
    ``module:function`` names (rewards.names, algo.policy_loss, data.task, ...) of modules in
    the working directory import under the ``reasoner`` script too."""
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


def quiet_libraries() -> None:
    """transformers' and datasets' progress bars ("Loading weights", "Writing model shards")
    off in our runs; setting the variables to 0 turns them back on. (DeepSpeed's accelerator
    warning: `reasoner.distributed.quiet_deepspeed_accelerator`.)"""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def main() -> None:
    sys.argv[1:] = strip_local_rank(sys.argv[1:])
    cwd_on_path()
    quiet_libraries()
    app()


if __name__ == "__main__":
    main()
