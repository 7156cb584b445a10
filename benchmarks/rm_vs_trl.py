"""Reward-model training: reasoner's `rm` trainer vs TRL's RewardTrainer on the same data.

Same tiny model (a causal LM directory, both start a new scalar head on it), same preference
data, same optimiser settings (AdamW, lr, linear schedule with warmup, no weight decay, clipping
at 1, fp32, dropout off, no gradient checkpointing), the same number of pairs per optimizer step
and the same epochs. TRL reads pairs (each ranking of K expanded to its K(K-1)/2 chosen /
rejected rows: 2 sequences encoded per pair); ours reads the rankings (each completion encoded
once per ranking; `--ours-pairs` feeds ours the same pair rows instead). We report training
pairs per second (the loop only: TRL's `trainer.train()`, our `train_step` calls) and the
held-out pairwise accuracy of both final models, scored by the same code
(`reasoner.preferences.evaluation`), with the annotator's Bayes-optimal accuracy beside them.

    python benchmarks/rm_vs_trl.py --train runs/rm/train.jsonl --test runs/rm/test.jsonl \\
        --model runs/rm/policy --epochs 1        # the rm_tiny recipe's files
    python benchmarks/rm_vs_trl.py --n 200 --n-test 50 --sft-steps 100   # self-contained, small

Needs `pip install -e '.[bench]'` (trl). Writes benchmarks/results/rm_vs_trl.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/rm_vs_trl.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402

TASK_OPTIONS = {"ops": ["+"], "digits": [1, 2]}


def make_data(args: argparse.Namespace, work: Path) -> tuple[str, str, str]:
    """(model dir, train file, test file): the given ones, or a small pipeline built here
    (tiny model, SFT warm start, the synthetic annotator's rankings)."""
    if args.train and args.test and args.model:
        return args.model, args.train, args.test
    from reasoner.models import build_tiny_model, load_model_and_tokenizer
    from reasoner.preferences.sample import sample_preferences
    from reasoner.tasks import get_task
    from reasoner.trainers.sft import run_sft

    task = get_task("arithmetic", **TASK_OPTIONS)
    path = build_tiny_model(work / "policy", hidden_size=128, num_layers=4, num_heads=4,
                            num_kv_heads=2, max_position_embeddings=128, seed=0)
    model, tok = load_model_and_tokenizer(path)
    run_sft(model, tok, task.rows("train", 4000, 1), template="r1_short",
            max_steps=args.sft_steps, batch_size=32, lr=3e-3, seed=0, progress=False,
            label_smoothing=0.1)
    model.save_pretrained(path)
    for split, n, name, seed in (("train", args.n, "train.jsonl", 0),
                                 ("test", args.n_test, "test.jsonl", 1)):
        sample_preferences(path, "arithmetic", k=args.k, n=n, output=work / name,
                           task_options=TASK_OPTIONS, split=split, max_new_tokens=20,
                           seed=seed, progress=False)
    return str(path), str(work / "train.jsonl"), str(work / "test.jsonl")


def held_out(model_dir: Path, test: str) -> dict[str, Any]:
    """Held-out metrics of a saved reward model (ours or TRL's), by our evaluation code."""
    from reasoner.models.reward import load_reward_model
    from reasoner.preferences.evaluation import evaluate_reward_model
    from reasoner.preferences.formats import read_preferences

    model, tok = load_reward_model(model_dir)
    m = evaluate_reward_model(model, tok, read_preferences(test), batch_size=64)
    return {k: m[k] for k in ("accuracy", "ece", "mean_margin", "num_pairs", "bayes_accuracy")
            if k in m}


def run_ours(args: argparse.Namespace, model_dir: str, train: str, pairs: str,
             work: Path) -> dict[str, Any]:
    from reasoner.config import config_from_dict
    from reasoner.preferences.formats import read_preferences
    from reasoner.trainers.reward import RewardTrainer

    data = pairs if args.ours_pairs else train
    recs = read_preferences(data)
    pairs_per_record = sum(r.num_pairs for r in recs) / len(recs)
    bs = max(1, round(args.pairs_per_step / pairs_per_record))
    steps = math.ceil(args.epochs * len(recs) / bs)
    cfg = config_from_dict({
        "model": {"path": model_dir}, "algo": {"name": "rm"},
        "rm": {"dataset_path": data, "eval_fraction": 0.0, "max_length": 1024},
        "train": {"output_dir": str(work / "ours"), "max_steps": steps, "device": "cpu",
                  "per_device_train_batch_size": bs, "learning_rate": args.lr,
                  "lr_scheduler_type": "linear", "warmup_ratio": args.warmup_ratio,
                  "adam_beta2": 0.999, "save_steps": 0, "report_to_tensorboard": False,
                  "log_completions_steps": 0, "max_grad_norm": 1.0, "seed": 0},
    })
    trainer = RewardTrainer(cfg, progress=False)
    n_pairs, t0 = 0.0, time.perf_counter()
    for _ in range(steps):
        n_pairs += trainer.train_step().metrics["pairs"]
    seconds = time.perf_counter() - t0
    trainer.save_final()
    return {"trainer": "reasoner" + (" (pairs)" if args.ours_pairs else " (rankings)"),
            "optimizer_steps": steps, "pairs": int(n_pairs), "seconds": seconds,
            "pairs_per_second": n_pairs / seconds, **held_out(work / "ours" / "final",
                                                              args.test_file)}


def run_trl(args: argparse.Namespace, model_dir: str, pairs: str, work: Path) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    rows = [json.loads(x) for x in Path(pairs).read_text().splitlines() if x.strip()]
    ds = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"],
                             "rejected": r["rejected"]} for r in rows])
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    conf = RewardConfig(
        output_dir=str(work / "trl"), num_train_epochs=args.epochs,
        per_device_train_batch_size=args.pairs_per_step, gradient_accumulation_steps=1,
        learning_rate=args.lr, lr_scheduler_type="linear",
        warmup_steps=math.ceil(args.warmup_ratio * math.ceil(len(rows) / args.pairs_per_step)
                               * args.epochs),
        weight_decay=0.0, adam_beta2=0.999, max_grad_norm=1.0, use_cpu=True, bf16=False,
        report_to="none", logging_steps=10**6, save_strategy="no", seed=0,
        dataloader_num_workers=0, gradient_checkpointing=False, max_length=1024,
        disable_dropout=True)
    trainer = RewardTrainer(model=model, args=conf, train_dataset=ds, processing_class=tok)
    t0 = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - t0
    trainer.save_model(str(work / "trl" / "final"))
    tok.save_pretrained(str(work / "trl" / "final"))
    return {"trainer": "trl", "optimizer_steps": int(out.global_step), "pairs": len(rows) *
            args.epochs, "seconds": seconds, "pairs_per_second": len(rows) * args.epochs /
            seconds, **held_out(work / "trl" / "final", args.test_file)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", help="preference JSONL (rankings) to train on")
    ap.add_argument("--test", help="held-out preference JSONL")
    ap.add_argument("--model", help="causal LM directory both reward models start from")
    ap.add_argument("--n", type=int, default=200, help="without --train: rankings to make")
    ap.add_argument("--n-test", type=int, default=50)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--sft-steps", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--pairs-per-step", type=int, default=96, help="TRL's batch (pairs); ours "
                    "takes as many records as hold about this many pairs")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup-ratio", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ours-pairs", action="store_true",
                    help="feed ours the same pair rows as TRL (no ranking trick)")
    ap.add_argument("--out-dir", default=None, help="results directory (default "
                    "benchmarks/results)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from reasoner.preferences.formats import read_preferences, record_to_pairs

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        model_dir, train, test = make_data(args, work)
        args.test_file = test
        pairs = work / "pairs.jsonl"
        pairs.write_text("".join(json.dumps(p) + "\n" for r in read_preferences(train)
                                 for p in record_to_pairs(r)))
        ours = run_ours(args, model_dir, train, str(pairs), work)
        theirs = run_trl(args, model_dir, str(pairs), work)
    ratio = ours["pairs_per_second"] / theirs["pairs_per_second"]
    rows = [ours, theirs]
    write_results("rm_vs_trl", rows, packages=("torch", "transformers", "trl"),
                  extra={"speedup_pairs_per_second": ratio,
                         "accuracy_difference": ours["accuracy"] - theirs["accuracy"],
                         "epochs": args.epochs, "pairs_per_step": args.pairs_per_step,
                         "threads": args.threads},
                  out_dir=args.out_dir, title="Reward model training: reasoner vs TRL",
                  notes=f"speedup (training pairs per second): {ratio:.2f}x; held-out accuracy "
                        f"{ours['accuracy']:.4f} (ours) vs {theirs['accuracy']:.4f} (TRL).")
    print(f"speedup {ratio:.2f}x; accuracy ours {ours['accuracy']:.4f} TRL "
          f"{theirs['accuracy']:.4f}")


if __name__ == "__main__":
    main()
