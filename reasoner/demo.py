"""`reasoner demo`: the whole method end to end on a CPU in minutes.

build the tiny model -> a short SFT warm start on correct worked solutions of easier problems
-> held-out accuracy on the harder RL problems (before) -> GRPO on those -> held-out accuracy
(after). Writes summary.json, metrics.jsonl, plots (heldout.png, demo.png besides the trainer's),
init_model/, sft_model/, final/.

The warm start is honest imitation: correct solutions only, plain cross-entropy, stopped while the
model is still learning (constant learning rate, no decay). What the demo is meant to show is that
GRPO with nothing but a correctness check then raises greedy held-out accuracy on problems the warm
start only half solves.

The demo uses the public APIs only: the model the config describes is warm-started
(`reasoner.trainers.sft.run_sft`) and saved, and the GRPO trainer starts from that directory.
The recipe is embedded here (DEMO_RECIPE) so an installed package needs no files;
configs/demo.yaml is the same recipe as a file (a test keeps them equal) to copy and edit.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

from reasoner.config import ConfigError, config_from_dict, read_config_file

DEMO_RECIPE: dict[str, Any] = {
    "demo": {
        # warm start: SFT on correct worked solutions of 1-3 digit addition, stopped early
        # (constant lr, no decay) so 3-digit problems are only partly learned
        "sft_task_options": {"ops": ["+"], "digits": [1, 3]},
        "sft_rows": 4000,
        "sft_steps": 1100,
        "sft_batch_size": 32,
        "sft_lr": 1.0e-3,
        "sft_lr_scheduler_type": "constant_with_warmup",
        # held-out accuracy on 500 unseen 3-digit problems: greedy, and 4 samples each at T=1
        "eval_rows": 500,
        "eval_temperature": 1.0,
        "eval_samples": 4,
        "eval_max_new_tokens": 24,
        "torch_threads": 1,
    },
    "model": {
        "path": "tiny",
        "tiny_hidden_size": 128,
        "tiny_num_layers": 4,
        "tiny_num_heads": 4,
        "tiny_num_kv_heads": 2,
        "tiny_max_position_embeddings": 128,
        "tiny_seed": 0,
    },
    "data": {  # GRPO's problems: 3-digit addition
        "task": "arithmetic",
        "task_options": {"ops": ["+"], "digits": [3, 3]},
        "num_train_rows": 4000,
        "template": "r1_short",
    },
    "rollout": {  # 32 problems x 8 completions per step
        "num_generations": 8,
        "max_completion_length": 24,
        "temperature": 1.0,
    },
    "algo": {
        "beta": 0.0,
        "loss_type": "dapo",
        "scale_rewards": "group",
    },
    "train": {
        "max_steps": 300,
        "seed": 0,
        "device": "cpu",
        "per_device_train_batch_size": 256,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1.0e-4,
        "lr_scheduler_type": "constant_with_warmup",
        "warmup_steps": 10,
        "save_steps": 100,
        "save_total_limit": 1,
        "log_completions_steps": 20,
        "logging_steps": 20,
    },
}

DEMO_KEYS = {"sft_task_options", "sft_rows", "sft_steps", "sft_batch_size", "sft_lr",
             "sft_lr_scheduler_type", "eval_rows", "eval_temperature", "eval_samples",
             "eval_max_new_tokens", "torch_threads"}
DEMO_REQUIRED = DEMO_KEYS - {"sft_task_options", "sft_lr_scheduler_type", "torch_threads"}


def load_recipe(path: str | Path | None) -> dict[str, Any]:
    """The embedded recipe (a copy) when `path` is None, else the YAML file's mapping."""
    if path is None:
        return copy.deepcopy(DEMO_RECIPE)
    data = read_config_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping of sections")
    return data


def demo_section(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe's ``demo`` section, taken out of `recipe` and checked (unknown or missing
    keys, eval_samples < 1 are ConfigErrors naming them)."""
    demo = dict(recipe.pop("demo", {}) or {})
    unknown = set(demo) - DEMO_KEYS
    if unknown:
        raise ConfigError(f"unknown demo keys {sorted(unknown)}; known: {sorted(DEMO_KEYS)}")
    missing = DEMO_REQUIRED - set(demo)
    if missing:
        raise ConfigError(f"demo section is missing {sorted(missing)}")
    if int(demo["eval_samples"]) < 1:
        raise ConfigError(f"demo.eval_samples must be >= 1, got {demo['eval_samples']}")
    return demo


def headline(ev: dict[str, Any], k: int) -> dict[str, float]:
    """The three held-out measures of one evaluation (greedy and sampled results) that the
    summary and the plots report: greedy accuracy, sampled accuracy, sampled pass@k."""
    return {"greedy": ev["greedy"]["accuracy"], "sampled T=1": ev["sampled"]["accuracy"],
            f"pass@{k}": ev["sampled"][f"pass@{k}"]}


def plot_demo(metrics_path: str | Path, before: dict[str, float], after: dict[str, float],
              path: str | Path, *, heldout_title: str = "held-out problems") -> Path:
    """The demo in one picture: GRPO's training accuracy per step (raw and smoothed) beside the
    held-out measures before and after GRPO."""
    from reasoner.metrics import draw_heldout, draw_series, pyplot, read_metrics, save_figure

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    draw_series(left, read_metrics(metrics_path), "accuracy", label="accuracy of the samples")
    left.set_xlabel("GRPO step")
    left.set_title("GRPO's training problems (samples at T=1)")
    left.set_ylim(0, 1)
    left.grid(alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    draw_heldout(right, before, after)
    right.set_title(heldout_title)
    return save_figure(fig, path)


DEMO_MARK = ".reasoner-demo"  # in a demo's output folder: which demo wrote it


def prepare_demo_dir(out: str | Path, which: str, *, overwrite: bool = False) -> Path:
    """The output folder of demo `which`, before any work: made if missing; a folder that an
    earlier run of the same demo wrote (it holds DEMO_MARK) is the demo's to replace; any other
    folder that is not empty (a training run, the current directory, someone's files) stops the
    demo with an error naming it, unless `overwrite`: the demo then writes there, replacing its
    own outputs (checkpoints, final/, ...) and leaving everything else."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {str(out)!r} is a file, not a folder")
    if out.is_dir() and not overwrite:
        mark = out / DEMO_MARK
        wrote = mark.read_text().strip() if mark.is_file() else None
        found = sorted(p.name for p in out.iterdir() if p.name != DEMO_MARK)
        if found and wrote != which:
            shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
            whose = (f"the {wrote} demo's output" if wrote else
                     "files no demo wrote")
            raise ConfigError(f"--output-dir {str(out)!r} holds {whose} ({shown}): choose "
                              "another --output-dir, or --overwrite to write this demo there "
                              "(its checkpoints, final/ and summary replace what is there)")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARK).write_text(which + "\n")
    return out


def run_demo(output_dir: str | Path, *, config_path: str | Path | None = None,
             progress: bool = True, seed: int | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Run the demo (see the module docstring) and return its summary (also in summary.json).

    `seed` (if given) replaces both the training seed (`train.seed`: SFT order, sampling, data
    order) and the tiny model's initialisation seed (`model.tiny_seed`) of the recipe. torch's
    thread count (the recipe's `torch_threads`) is restored on return. `output_dir`: see
    `prepare_demo_dir` (`overwrite`)."""
    import torch

    threads = torch.get_num_threads()
    try:
        return _run(Path(output_dir), config_path, progress, seed, overwrite)
    finally:
        torch.set_num_threads(threads)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def _run(out: Path, config_path: str | Path | None, progress: bool,
         seed: int | None, overwrite: bool) -> dict[str, Any]:
    from reasoner.data import load_training_data
    from reasoner.evaluate import evaluate
    from reasoner.metrics import METRICS_FILE, plot_heldout
    from reasoner.models import build_tiny_from_config, load_model_and_tokenizer
    from reasoner.tasks import get_task
    from reasoner.trainers import ALGORITHMS
    from reasoner.trainers.base import set_seed
    from reasoner.trainers.sft import run_sft

    t0 = time.perf_counter()
    recipe = load_recipe(config_path)
    demo = demo_section(recipe)
    cfg = config_from_dict(recipe)
    if seed is not None:
        cfg.train.seed = cfg.model.tiny_seed = seed
    prepare_demo_dir(out, "grpo", overwrite=overwrite)
    cfg.train.output_dir = str(out)
    if demo.get("torch_threads"):  # tiny matmuls: thread overhead beats parallelism
        import torch

        torch.set_num_threads(int(demo["torch_threads"]))
    set_seed(cfg.train.seed)

    # warm start: the configured model, fine-tuned on correct worked solutions (of the
    # sft_task_options' problems, else GRPO's), saved; GRPO starts from that directory (its KL
    # reference, if any, is the warm-started policy)
    data = load_training_data(cfg.data, rows=[])  # the task and template (the trainer makes rows)
    task, template = data.task, data.template
    if task is None:
        raise ConfigError("data.task: the demo needs a task (it makes the SFT, GRPO and "
                          "held-out problems), not a dataset file")
    sft_task = task
    if demo.get("sft_task_options") is not None:
        try:
            sft_task = get_task(cfg.data.task, **demo["sft_task_options"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"demo.sft_task_options: {e}") from None
    sft_rows = sft_task.rows("train", demo["sft_rows"], cfg.data.data_seed + 1)
    test_rows = task.rows("test", demo["eval_rows"], 0)
    init = build_tiny_from_config(cfg.model, out / "init_model") if cfg.model.path == "tiny" \
        else Path(cfg.model.path)
    model, tokenizer = load_model_and_tokenizer(init, dtype=cfg.model.dtype)
    _say(progress, f"warm start: {demo['sft_steps']} SFT steps on {len(sft_rows)} correct worked "
                   f"solutions ({cfg.data.task} {demo.get('sft_task_options') or 'as GRPO'})")
    sft = run_sft(model, tokenizer, sft_rows, template=template,
                  max_steps=demo["sft_steps"], batch_size=demo["sft_batch_size"],
                  lr=demo["sft_lr"], seed=cfg.train.seed, progress=progress, log_every=100,
                  lr_scheduler_type=demo.get("sft_lr_scheduler_type", "linear"))
    model.save_pretrained(out / "sft_model", safe_serialization=True)
    tokenizer.save_pretrained(out / "sft_model")
    del model
    cfg.model.path = str(out / "sft_model")
    # the demo's directory is its own: a second demo replaces the first one's run
    trainer = ALGORITHMS.get(cfg.algo.name)(cfg, progress=progress, overwrite=True)
    k = int(demo["eval_samples"])

    def held_out(when: str) -> dict[str, Any]:
        kw = dict(task=task, template=template, max_new_tokens=demo["eval_max_new_tokens"],
                  batch_size=256, seed=12345)
        greedy = evaluate(trainer.model, trainer.tokenizer, test_rows, temperature=0.0, **kw)
        sampled = evaluate(trainer.model, trainer.tokenizer, test_rows,
                           temperature=demo["eval_temperature"], num_samples=k,
                           k_values=sorted({1, k}), **kw)
        ev = {"greedy": greedy, "sampled": sampled}
        _say(progress, f"held-out {when} GRPO ({len(test_rows)} problems): "
                       + ", ".join(f"{n} {v:.3f}" for n, v in headline(ev, k).items()))
        return ev

    t_eval = time.perf_counter()
    before = held_out("before")
    eval_seconds = time.perf_counter() - t_eval
    t_grpo = time.perf_counter()
    result = trainer.train()
    grpo_seconds = time.perf_counter() - t_grpo
    after = held_out("after")
    h_before, h_after = headline(before, k), headline(after, k)
    plots = [p.name for p in sorted(out.glob("*.png"))]  # the trainer's: reward, accuracy, length
    title = f"{len(test_rows)} held-out problems"
    plot_heldout(h_before, h_after, out / "heldout.png", title=title)
    plot_demo(out / METRICS_FILE, h_before, h_after, out / "demo.png", heldout_title=title)
    summary = {
        # the headline: held-out accuracy of samples at the training temperature
        "accuracy_before": before["sampled"]["accuracy"],
        "accuracy_after": after["sampled"]["accuracy"],
        "greedy_accuracy_before": before["greedy"]["accuracy"],
        "greedy_accuracy_after": after["greedy"]["accuracy"],
        "pass_k": k,
        "pass_at_k_before": before["sampled"][f"pass@{k}"],
        "pass_at_k_after": after["sampled"][f"pass@{k}"],
        # completion tokens (incl. EOS) of the sampled held-out completions
        "mean_length_before": before["sampled"]["mean_length"],
        "mean_length_after": after["sampled"]["mean_length"],
        "eval_before": before,
        "eval_after": after,
        "sft": {key: v for key, v in sft.items() if key != "losses"},
        "grpo_steps": result["steps"],
        "grpo_seconds": grpo_seconds,
        "eval_seconds_each": eval_seconds,
        "wall_seconds": time.perf_counter() - t0,
        "plots": sorted({*plots, "heldout.png", "demo.png"}),
        "config": {"demo": demo, **cfg.to_dict()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
