"""The demo's warm start, measured: build the tiny model, SFT it on a task's worked solutions,
and report held-out accuracy (greedy and sampled at temperature 1) and wall time.

    python -m benchmarks.sft_warmstart --steps 800 --label-smoothing 0.1 [--threads 1]

Writes benchmarks/results/sft_warmstart.{json,md}. Timings are noisy on a shared CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from benchmarks.common import write_results
from reasoner.evaluate import evaluate
from reasoner.models import build_tiny_model, count_parameters, load_model_and_tokenizer
from reasoner.tasks import get_task
from reasoner.trainers.sft import run_sft


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, nargs="*", default=[800])
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task("arithmetic", ops=("+",), digits=(1, 2))
    train, test = task.rows("train", 4000, 1), task.rows("test", 200, 0)
    rows = []
    for steps in args.steps:
        with tempfile.TemporaryDirectory() as d:
            model, tok = load_model_and_tokenizer(build_tiny_model(
                d, hidden_size=args.hidden, num_layers=args.layers, seed=args.seed))
        t0 = time.perf_counter()
        r = run_sft(model, tok, train, max_steps=steps, batch_size=args.batch_size, lr=args.lr,
                    seed=args.seed, label_smoothing=args.label_smoothing, progress=False)
        sft_s = time.perf_counter() - t0
        kw = dict(task=task, max_new_tokens=20, batch_size=256, seed=12345)
        t1 = time.perf_counter()
        greedy = evaluate(model, tok, test, **kw)
        sampled = evaluate(model, tok, test, temperature=1.0, num_samples=4, k_values=(1, 4), **kw)
        rows.append({
            "sft_steps": steps, "label_smoothing": args.label_smoothing,
            "sft_seconds": round(sft_s, 1), "loss_last": round(r["loss_last"], 4),
            "greedy_acc": greedy["accuracy"], "sampled_acc_T1": sampled["accuracy"],
            "pass@4_T1": sampled["pass@4"], "format_rate_T1": sampled["format_rate"],
            "eval_seconds": round(time.perf_counter() - t1, 1),
        })
    write_results("sft_warmstart", rows, packages=("torch", "transformers"),
                  extra={"params": count_parameters(model), "hidden_size": args.hidden,
                         "layers": args.layers, "threads": args.threads, "seed": args.seed,
                         "task": "arithmetic ops=+ digits=(1,2)", "batch_size": args.batch_size,
                         "lr": args.lr},
                  notes="shared CPU: timings are noisy")


if __name__ == "__main__":
    main()
