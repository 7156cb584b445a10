"""The demo's warm start, measured: build the tiny model, SFT it as the demo recipe does (on correct
worked solutions of the warm-start problems), and report held-out accuracy on GRPO's problems
(greedy, and sampled at the evaluation temperature with pass@k) and the SFT time, for several SFT
lengths and seeds. This is how the recipe's `sft_steps` was chosen: short enough that the
held-out problems are only partly solved on every seed, long enough that GRPO sees rewards.

    python benchmarks/sft_warmstart.py --steps 900 1100 1300 --seeds 0 1 2 [--config FILE]

Seed S is the demo's `--seed S` (the tiny model's initialisation and the SFT order). Writes
benchmarks/results/sft_warmstart.{json,md}. Timings are noisy on a shared CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/sft_warmstart.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reasoner.cli import quiet_libraries  # noqa: E402

quiet_libraries()  # before transformers is imported: no progress bars between the rows

import torch  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from reasoner.config import config_from_dict  # noqa: E402
from reasoner.data import load_training_data  # noqa: E402
from reasoner.demo import demo_section, load_recipe  # noqa: E402
from reasoner.evaluate import evaluate  # noqa: E402
from reasoner.models import (  # noqa: E402
    build_tiny_from_config,
    count_parameters,
    load_model_and_tokenizer,
)
from reasoner.tasks import get_task  # noqa: E402
from reasoner.trainers.sft import run_sft  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=None,
                    help="SFT lengths to measure (default: the recipe's sft_steps)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--config", default=None, help="demo recipe YAML (default: the embedded one)")
    args = ap.parse_args()
    recipe = load_recipe(args.config)
    demo = demo_section(recipe)
    cfg = config_from_dict(recipe)
    torch.set_num_threads(int(demo.get("torch_threads") or 1))
    data = load_training_data(cfg.data, rows=[])  # the task and template, as the demo has them
    rl_task, template = data.task, data.template
    sft_task = get_task(cfg.data.task, **(demo.get("sft_task_options") or cfg.data.task_options))
    train = sft_task.rows("train", demo["sft_rows"], cfg.data.data_seed + 1)  # as the demo does
    test = rl_task.rows("test", demo["eval_rows"], 0)
    k = int(demo["eval_samples"])
    rows = []
    params = 0
    for seed in args.seeds:
        cfg.model.tiny_seed = seed
        for steps in args.steps or [demo["sft_steps"]]:
            with tempfile.TemporaryDirectory() as d:
                model, tok = load_model_and_tokenizer(build_tiny_from_config(cfg.model, d))
            params = count_parameters(model)
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            r = run_sft(model, tok, train, template=template, max_steps=steps,
                        batch_size=demo["sft_batch_size"], lr=demo["sft_lr"], seed=seed,
                        progress=False,
                        lr_scheduler_type=demo.get("sft_lr_scheduler_type", "linear"))
            sft_s = time.perf_counter() - t0
            kw = dict(task=rl_task, template=template,
                      max_new_tokens=demo["eval_max_new_tokens"], batch_size=256, seed=12345)
            greedy = evaluate(model, tok, test, **kw)
            sampled = evaluate(model, tok, test, temperature=demo["eval_temperature"],
                               num_samples=k, k_values=sorted({1, k}), **kw)
            rows.append({
                "seed": seed, "sft_steps": steps, "sft_seconds": round(sft_s, 1),
                "loss_last": round(r["loss_last"], 4), "greedy_acc": greedy["accuracy"],
                "sampled_acc": sampled["accuracy"], f"pass@{k}": sampled[f"pass@{k}"],
                "format_rate": sampled["format_rate"],
            })
            print(rows[-1], file=sys.stderr, flush=True)
    write_results("sft_warmstart", rows, packages=("torch", "transformers"),
                  extra={"params": params, "config": args.config or "embedded demo recipe",
                         "sft_task_options": demo.get("sft_task_options"),
                         "rl_task_options": cfg.data.task_options,
                         "sft_lr": demo["sft_lr"], "batch_size": demo["sft_batch_size"],
                         "lr_scheduler_type": demo.get("sft_lr_scheduler_type", "linear"),
                         "eval_rows": len(test), "eval_temperature": demo["eval_temperature"]},
                  notes="Held-out accuracy is on GRPO's problems (the recipe's data.task_options), "
                        "not on the warm start's. Shared CPU: timings are noisy.")


if __name__ == "__main__":
    main()
