"""ZeRO-2 against ZeRO-3: per-rank peak memory, step time and generation time of GRPO training
with N processes (`torchrun -m reasoner train --deepspeed configs/zeroX.json`), on GPUs or CPUs.

    python benchmarks/zero_stages.py [--procs 2] [--hidden 1536] [--layers 16] [--steps 3]

The model is a Qwen2-style decoder built by our own code at the given size (random weights, a
character tokenizer), so nothing is downloaded; the task is configs/tiny.yaml's 1-digit addition
with `--prompts` prompts x G=4 completions of up to `--new-tokens` tokens per rank and step, no
reference model (beta 0). Peak memory is the process's resident set on CPUs (measured with
MALLOC_MMAP_THRESHOLD_=1048576, so freed tensors leave it) and max_memory_allocated on GPUs, as
the trainer's `memory/rank<r>_peak_gb` metrics report it. The first step is a warm-up; the
table gives the mean of the others.

Writes benchmarks/results/zero_stages.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/<name>.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, write_results  # noqa: E402


def run_stage(stage: int, args: argparse.Namespace, out: Path) -> list[dict]:
    G = 4
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(args.procs), "-m", "reasoner", "train", "--config", str(ROOT / "configs/tiny.yaml"),
           "--output-dir", str(out), "--deepspeed", str(ROOT / f"configs/zero{stage}.json"),
           "--no-progress", f"train.max_steps={args.steps}", "train.save_steps=0",
           f"rollout.num_generations={G}", f"train.per_device_train_batch_size={G * args.prompts}",
           "train.gradient_accumulation_steps=1", f"rollout.max_completion_length={args.new_tokens}",
           "train.report_to_tensorboard=false", "train.log_completions_steps=0",
           "algo.skip_zero_advantage=false", "train.device=auto", f"train.bf16={args.bf16}",
           f"model.tiny_hidden_size={args.hidden}", f"model.tiny_num_layers={args.layers}",
           f"model.tiny_num_heads={args.heads}", f"model.tiny_num_kv_heads={args.kv_heads}",
           f"model.tiny_intermediate_size={args.intermediate}",
           f"model.tiny_max_position_embeddings={max(128, 4 * args.new_tokens)}"]
    # glibc's malloc raises its mmap threshold as big blocks are freed, after which freed
    # tensors stay in the heap and the resident set keeps memory no tensor uses; a fixed
    # threshold makes the CPU figure the memory actually live (no effect on GPU figures)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "1048576")}
    print(f"ZeRO-{stage}: {' '.join(cmd[2:])}", flush=True)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (out.parent / f"zero{stage}.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"ZeRO-{stage} run failed with exit code {r.returncode} (-9: killed, "
                         f"e.g. out of memory):\n{r.stderr[-4000:]}")
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def count_params(hidden: int, layers: int, heads: int, kv_heads: int, inter: int,
                 vocab: int) -> int:
    head_dim = hidden // heads
    attn = 2 * hidden * hidden + 2 * hidden * kv_heads * head_dim + hidden + 2 * kv_heads * head_dim
    mlp = 3 * hidden * inter
    return layers * (attn + mlp + 2 * hidden) + vocab * hidden + hidden  # tied lm_head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=4096)
    ap.add_argument("--prompts", type=int, default=1, help="prompts per rank and step")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="OMP threads per process (CPU)")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--stages", type=int, nargs="*", default=[2, 3])
    ap.add_argument("--name", default="zero_stages", help="results file stem")
    args = ap.parse_args()

    rows, failed = [], []
    with tempfile.TemporaryDirectory() as d:
        for stage in args.stages:
            try:
                recs = run_stage(stage, args, Path(d) / f"zero{stage}")
            except SystemExit as e:  # e.g. killed for memory: say so in the notes
                print(e, file=sys.stderr)
                failed.append(str(e).splitlines()[0])
                continue
            timed = recs[1:] or recs

            def mean(key: str, rs: list[dict] = timed) -> float:
                return sum(r[key] for r in rs) / len(rs)

            row = {"config": f"zero{stage}.json"}
            for r in range(args.procs):
                row[f"rank{r} peak GiB"] = max(x.get(f"memory/rank{r}_peak_gb", x["memory/peak_gb"])
                                               for x in recs)
            row.update({"s/step": mean("time/step"), "generation s": mean("time/generation"),
                        "update s": mean("time/update"),
                        "completion tok/s": mean("completion_tokens_per_second"),
                        "mean completion len": mean("completion_length/mean")})
            rows.append(row)
    vocab = 262  # the character tokenizer of models.build_tiny_model
    n = count_params(args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate, vocab)
    ratio = ""
    if len(rows) == 2 and all("s/step" in r for r in rows):
        ratio = (f"\nZeRO-3 / ZeRO-2: generation time x{rows[1]['generation s'] / rows[0]['generation s']:.2f}, "
                 f"step time x{rows[1]['s/step'] / rows[0]['s/step']:.2f}, peak memory (rank 0) "
                 f"x{rows[1]['rank0 peak GiB'] / rows[0]['rank0 peak GiB']:.2f}.\n")
    write_results(
        args.name, rows, packages=("torch", "transformers", "deepspeed"),
        extra={"procs": args.procs, "parameters": n, "hidden": args.hidden, "layers": args.layers,
               "prompts_per_rank": args.prompts, "num_generations": 4,
               "max_new_tokens": args.new_tokens, "steps": args.steps, "threads": args.threads,
               "bf16": args.bf16},
        title=f"ZeRO-2 vs ZeRO-3: {args.procs} processes, {n / 1e6:.0f}M-parameter Qwen2",
        notes="".join(f"\n**{f}**\n" for f in failed) + ratio + __doc__.split("\n\n", 2)[2].rsplit("\n\n", 1)[0])


if __name__ == "__main__":
    main()
