"""End-to-end bf16 GRPO steps on a randomly initialised model of Qwen2.5-0.5B's shape, with the
logits-input loss kernel and with the fused-linear one: tokens per second for generation and
for the update, the log-prob passes, and peak GPU memory.

GPU:      python benchmarks/e2e_step.py --out-dir OUT         (~1-2 minutes on an H200)
CPU test: python benchmarks/e2e_step.py --cpu-rehearsal --out-dir /tmp/e2e   (a 2-layer model of
          the same vocabulary; checks the harness, the numbers mean nothing)

The model: hidden 896, 24 layers, 14 heads, 2 key/value heads, MLP 4864, vocabulary 151936, tied
embeddings, random weights (seeded), saved as a Hugging Face directory with the tiny char-level
tokenizer (reasoner.models.build_char_tokenizer): the sampled ids above the tokenizer's 262 decode
to nothing, which is what a random model's text is worth; rewards are ~0, so the KL term
(beta = 0.04, a reference model) and skip_zero_advantage=false keep every row in the update.
Each variant runs `python -m reasoner train` (config overrides only: this script does not import
the trainer) for --steps steps; the first step compiles the Triton kernels, so the figures are
the last step's, read from its metrics.jsonl:
  generation tok/s  = completion tokens / time/generation
  update tok/s      = (prompt + completion tokens) / time/update
  peak GB           = memory/peak_gb (torch.cuda.max_memory_allocated over the run)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/<name>.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, markdown_table, write_results  # noqa: E402

QWEN25_05B = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                  max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                  tie_word_embeddings=True)  # fmt: skip
REHEARSAL = dict(QWEN25_05B, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=128)  # fmt: skip
VARIANTS = {  # name -> overrides
    "logits kernel": ["grpo.use_fused_linear=false", "grpo.loss_backend=auto"],
    "fused linear": ["grpo.use_fused_linear=true", "grpo.loss_backend=auto"],
}


@dataclass
class Row:
    variant: str
    status: str = "ok"
    completions: int | None = None
    completion_tokens: float | None = None
    generation_s: float | None = None
    generation_tok_s: float | None = None
    logprobs_s: float | None = None
    update_s: float | None = None
    update_tok_s: float | None = None
    step_s: float | None = None
    peak_gb: float | None = None
    wall_s: float | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cpu-rehearsal", action="store_true",
                   help="a 2-layer model on the CPU, one short step per variant (harness check)")
    p.add_argument("--steps", type=int, default=2, help="steps per variant (the last is reported)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--generations", type=int, default=8, help="completions per prompt")
    p.add_argument("--completion-length", type=int, default=256, help="max new tokens")
    p.add_argument("--micro-batch", type=int, default=32, help="completions per micro-batch")
    p.add_argument("--model-dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="weights dtype (bf16 autocast is on either way)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of " +
                   " | ".join(VARIANTS))
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per variant")
    p.add_argument("--out-dir", default=None, help="where e2e_step.json/.md go "
                   "(default benchmarks/results; nothing is written in --cpu-rehearsal unless given)")
    return p.parse_args(argv)  # fmt: skip


def build_model(out: Path, shape: dict, dtype: str, seed: int = 0) -> Path:
    """A randomly initialised Qwen2 of `shape`, saved with the tiny char tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from reasoner.models import build_char_tokenizer

    tok = build_char_tokenizer()
    cfg = Qwen2Config(**shape, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    del model
    return out


def overrides(args: argparse.Namespace, model_dir: Path, out_dir: Path) -> list[str]:
    n = args.prompts * args.generations
    return [
        f"model.path={model_dir}", f"model.dtype={args.model_dtype}",
        "data.task=arithmetic", "data.num_train_rows=256", "data.template=r1_short",
        f"grpo.output_dir={out_dir}", f"grpo.max_steps={args.steps}", "grpo.save_steps=0",
        "grpo.save_total_limit=1", "grpo.log_completions_steps=0",
        "grpo.report_to_tensorboard=false",
        f"grpo.device={'cpu' if args.cpu_rehearsal else 'cuda'}",
        f"grpo.bf16={'false' if args.cpu_rehearsal else 'true'}",
        f"grpo.num_generations={args.generations}",
        f"grpo.per_device_train_batch_size={min(args.micro_batch, n)}",
        f"grpo.gradient_accumulation_steps={max(1, n // min(args.micro_batch, n))}",
        f"grpo.max_completion_length={args.completion_length}",
        "grpo.beta=0.04", "grpo.skip_zero_advantage=false", "grpo.learning_rate=1e-6",
        "grpo.lr_scheduler_type=constant",
    ]  # fmt: skip


def run_variant(name: str, args: argparse.Namespace, model_dir: Path, work: Path) -> Row:
    row = Row(name, completions=args.prompts * args.generations)
    out_dir = work / name.replace(" ", "_")
    cmd = [sys.executable, "-m", "reasoner", "train", "--no-progress",
           *overrides(args, model_dir, out_dir), *VARIANTS[name]]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.cpu_rehearsal:
        env.pop("TRITON_INTERPRET", None)  # the CPU runs the torch path
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=args.timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        row.status = f"timeout after {args.timeout:.0f} s"
        return row
    row.wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        row.status = f"error (exit {proc.returncode}): {tail[0][:160]}"
        print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n", file=sys.stderr)
        return row
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    m = json.loads(lines[-1])

    def get(key: str) -> float | None:
        v = m.get(key)
        return float(v) if isinstance(v, int | float) else None

    row.step_s, row.generation_s = get("time/step"), get("time/generation")
    row.logprobs_s, row.update_s = get("time/logprobs"), get("time/update")
    row.peak_gb = get("memory/peak_gb")
    tps, ctps = get("tokens_per_second"), get("completion_tokens_per_second")
    if row.step_s and ctps is not None and tps is not None:
        row.completion_tokens = ctps * row.step_s
        if row.generation_s:
            row.generation_tok_s = row.completion_tokens / row.generation_s
        if row.update_s:
            row.update_tok_s = tps * row.step_s / row.update_s
    missing = [k for k in ("time/step", "time/generation", "time/update", "memory/peak_gb",
                           "tokens_per_second", "completion_tokens_per_second") if k not in m]
    if missing:
        row.status = f"ok; metrics.jsonl lacks {', '.join(missing)}"
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not args.cpu_rehearsal and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU, or --cpu-rehearsal to test the harness",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.cpu_rehearsal:
        args.steps, args.prompts, args.generations = 1, 2, 2
        args.completion_length, args.micro_batch = 4, 4
    shape = REHEARSAL if args.cpu_rehearsal else QWEN25_05B
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        print(f"unknown variants {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2
    device = "cpu (rehearsal)" if args.cpu_rehearsal else torch.cuda.get_device_name()
    notes = (f"shape {shape}; {args.prompts} prompts x {args.generations} completions of up to "
             f"{args.completion_length} tokens per step, micro-batches of {args.micro_batch}; "
             f"weights {args.model_dtype}, bf16 autocast; the last of {args.steps} steps.\n\n"
             + (__doc__ or ""))  # fmt: skip
    rows: list[Row] = []

    def save() -> None:  # after every variant: a run stopped by a time limit keeps what it has
        if args.out_dir or not args.cpu_rehearsal:
            write_results(
                "e2e_step", [asdict(r) for r in rows],
                packages=("torch", "triton", "transformers"),
                extra={"model_shape": shape, "cpu_rehearsal": args.cpu_rehearsal}, notes=notes,
                out_dir=args.out_dir,
                title="End-to-end GRPO step (Qwen2.5-0.5B shape, random weights)",
                device_name=device,
            )  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="e2e_step_") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        model_dir = build_model(work / "model", shape, args.model_dtype)
        print(f"built the random model in {time.perf_counter() - t0:.1f} s", flush=True)
        for name in names:
            rows.append(run_variant(name, args, model_dir, work))
            print(markdown_table([asdict(rows[-1])]), flush=True)
            save()
    if not (args.out_dir or not args.cpu_rehearsal):
        print(markdown_table([asdict(r) for r in rows]))
    return 0 if all(r.status.startswith("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
