"""Generation throughput of the tiny model on CPU: completion tokens per second of
`generate_rollouts` (HF generate, KV cache) for several batch sizes (B*G rows).

    python -m benchmarks.rollout_throughput [--threads 1 2] [--new-tokens 32] [--repeats 3]

Writes benchmarks/results/rollout_throughput.{json,md}. On a shared machine the numbers are noisy
(other processes compete for the cores); best and median of `--repeats` runs are reported.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from reasoner.models import build_tiny_model, count_parameters, load_model_and_tokenizer
from reasoner.rollout import generate_rollouts

if __package__ in (None, ""):  # run as `python benchmarks/<name>.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rows", type=int, nargs="*", default=[64, 128])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        model, tok = load_model_and_tokenizer(
            build_tiny_model(d, hidden_size=args.hidden, num_layers=args.layers))
    # EOS is banned so every row generates exactly --new-tokens tokens
    kw = {"bad_words_ids": [[tok.eos_token_id]]}
    prompts = [f"{i}+{2 * i + 7}\n<think>" for i in range(128)]
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for n in args.rows:
            g = 8 if n % 8 == 0 else 1
            ps = prompts[: n // g]
            times = []
            for rep in range(args.repeats):
                t0 = time.perf_counter()
                ro = generate_rollouts(model, tok, ps, num_generations=g,
                                       max_completion_length=args.new_tokens, generator_seed=rep,
                                       generate_kwargs=kw)
                times.append(time.perf_counter() - t0)
            best, median = min(times), sorted(times)[len(times) // 2]
            toks = int(ro.completion_mask.sum())
            rows.append({"rows (B*G)": n, "new_tokens": args.new_tokens, "threads": threads,
                         "best_s": round(best, 3), "median_s": round(median, 3),
                         "tokens_per_s_best": round(toks / best, 1),
                         "tokens_per_s_median": round(toks / median, 1)})
    write_results("rollout_throughput", rows, packages=("torch", "transformers"),
                  extra={"params": count_parameters(model), "hidden_size": args.hidden,
                         "layers": args.layers},
                  notes="best and median of repeats; shared CPU, so noisy")


if __name__ == "__main__":
    main()
