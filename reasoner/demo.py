"""`reasoner demo`: the whole method end to end on a CPU in minutes.

build the tiny model -> SFT warm start on worked solutions -> held-out accuracy (before)
-> GRPO -> held-out accuracy (after). Writes summary.json, metrics.jsonl, plots, final/.

The demo uses the public APIs only: the model the config describes is warm-started
(`reasoner.trainers.sft.run_sft`) and saved, and the GRPO trainer starts from that directory.
The recipe is embedded here (DEMO_RECIPE) so an installed package needs no files;
configs/demo.yaml is the same recipe as a file (a test keeps them equal) to copy and edit.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import yaml

from reasoner.config import ConfigError, config_from_dict

DEMO_RECIPE: dict[str, Any] = {
    "demo": {
        # warm start: SFT on worked solutions; label smoothing keeps the policy's samples at
        # temperature 1 exploratory (greedy is already good, samples are not: room for RL)
        "sft_rows": 4000,
        "sft_steps": 800,
        "sft_batch_size": 32,
        "sft_lr": 3.0e-3,
        "sft_label_smoothing": 0.1,
        "sft_wrong_answer_frac": 0.0,
        # held-out accuracy: 200 test problems x 4 samples at the training temperature
        "eval_rows": 200,
        "eval_temperature": 1.0,
        "eval_samples": 4,
        "eval_max_new_tokens": 20,
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
    "data": {
        "task": "arithmetic",
        "task_options": {"ops": ["+"], "digits": [1, 2]},
        "num_train_rows": 4000,
        "template": "r1_short",
    },
    "grpo": {
        "max_steps": 200,
        "seed": 0,
        "device": "cpu",
        "num_generations": 16,
        "per_device_train_batch_size": 128,
        "gradient_accumulation_steps": 1,
        "max_completion_length": 20,
        "temperature": 1.0,
        "learning_rate": 5.0e-5,
        "lr_scheduler_type": "constant_with_warmup",
        "warmup_steps": 10,
        "beta": 0.0,
        "loss_type": "dapo",
        "scale_rewards": "group",
        "save_steps": 100,
        "save_total_limit": 1,
        "log_completions_steps": 20,
        "logging_steps": 20,
    },
}

DEMO_KEYS = {"sft_rows", "sft_steps", "sft_batch_size", "sft_lr", "sft_label_smoothing",
             "sft_wrong_answer_frac", "eval_rows", "eval_temperature", "eval_samples",
             "eval_max_new_tokens", "torch_threads"}


def corrupt_answers(rows: list[dict[str, Any]], frac: float, seed: int) -> list[dict[str, Any]]:
    """A noisy teacher: in a `frac` of the rows the worked solution ends with a wrong final
    answer (the right one + a random offset in [-3, 3] other than 0). SFT on these teaches the model
    the right answer *and* plausible wrong ones; GRPO with the verifier must learn which is which.
    Rows whose solution does not end in ``ANSWER</think><answer>ANSWER</answer>`` stay as they are."""
    import random

    rng = random.Random(seed)
    out = []
    for row in rows:
        a, sol = str(row.get("answer", "")), str(row.get("solution", ""))
        tail = f"{a}</think><answer>{a}</answer>"
        if rng.random() < frac and sol.endswith(tail) and a.lstrip("-").isdigit():
            w = int(a) + rng.choice([-3, -2, -1, 1, 2, 3])
            row = dict(row, solution=sol[: -len(tail)] + f"{w}</think><answer>{w}</answer>")
        out.append(row)
    return out


def load_recipe(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return copy.deepcopy(DEMO_RECIPE)
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping")
    return data


def run_demo(output_dir: str | Path, *, config_path: str | Path | None = None,
             progress: bool = True) -> dict[str, Any]:
    from reasoner.data import load_training_data
    from reasoner.evaluate import evaluate
    from reasoner.models import build_tiny_from_config, load_model_and_tokenizer
    from reasoner.trainers import ALGORITHMS
    from reasoner.trainers.base import set_seed
    from reasoner.trainers.sft import run_sft

    t0 = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(config_path)
    demo = dict(recipe.pop("demo", {}) or {})
    unknown = set(demo) - DEMO_KEYS
    if unknown:
        raise ConfigError(f"unknown demo keys {sorted(unknown)}; known: {sorted(DEMO_KEYS)}")
    cfg = config_from_dict(recipe)
    cfg.train.output_dir = str(out)
    if demo.get("torch_threads"):  # tiny matmuls: thread overhead beats parallelism
        import torch

        torch.set_num_threads(int(demo["torch_threads"]))
    set_seed(cfg.train.seed)

    # warm start: the configured model, fine-tuned on worked solutions, saved; GRPO starts
    # from that directory (its KL reference, if any, is the warm-started policy)
    data = load_training_data(cfg.data, rows=[])  # the task and template (the trainer makes rows)
    task, template = data.task, data.template
    sft_rows = task.rows("train", demo["sft_rows"], cfg.data.data_seed + 1)
    sft_rows = corrupt_answers(sft_rows, demo.get("sft_wrong_answer_frac", 0.0), cfg.train.seed)
    test_rows = task.rows("test", demo["eval_rows"], 0)
    init = build_tiny_from_config(cfg.model, out / "init_model") if cfg.model.path == "tiny" \
        else Path(cfg.model.path)
    model, tokenizer = load_model_and_tokenizer(init, dtype=cfg.model.dtype)
    sft = run_sft(model, tokenizer, sft_rows, template=template,
                  max_steps=demo["sft_steps"], batch_size=demo["sft_batch_size"],
                  lr=demo["sft_lr"], seed=cfg.train.seed, progress=progress,
                  label_smoothing=demo.get("sft_label_smoothing", 0.0))
    model.save_pretrained(out / "sft_model", safe_serialization=True)
    tokenizer.save_pretrained(out / "sft_model")
    del model
    cfg.model.path = str(out / "sft_model")
    # the demo's directory is its own: a second demo replaces the first one's run
    trainer = ALGORITHMS.get(cfg.algo.name)(cfg, progress=progress, overwrite=True)

    def held_out() -> dict[str, Any]:
        kw = dict(task=task, template=template, max_new_tokens=demo["eval_max_new_tokens"],
                  batch_size=256, seed=12345)
        greedy = evaluate(trainer.model, trainer.tokenizer, test_rows, temperature=0.0, **kw)
        sampled = evaluate(trainer.model, trainer.tokenizer, test_rows,
                           temperature=demo["eval_temperature"],
                           num_samples=demo["eval_samples"], **kw)
        return {"greedy": greedy, "sampled": sampled}

    t_eval = time.perf_counter()
    before = held_out()
    eval_seconds = time.perf_counter() - t_eval
    t_grpo = time.perf_counter()
    result = trainer.train()
    grpo_seconds = time.perf_counter() - t_grpo
    after = held_out()
    summary = {
        # the headline: held-out accuracy of samples at the training temperature
        "accuracy_before": before["sampled"]["accuracy"],
        "accuracy_after": after["sampled"]["accuracy"],
        "greedy_accuracy_before": before["greedy"]["accuracy"],
        "greedy_accuracy_after": after["greedy"]["accuracy"],
        "eval_before": before,
        "eval_after": after,
        "sft": {k: v for k, v in sft.items() if k != "losses"},
        "grpo_steps": result["steps"],
        "grpo_seconds": grpo_seconds,
        "eval_seconds_each": eval_seconds,
        "wall_seconds": time.perf_counter() - t0,
        "config": {"demo": demo, **cfg.to_dict()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
