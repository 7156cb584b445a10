"""`reasoner demo` on several seeds: held-out accuracy before and after GRPO, and the time taken.

    python benchmarks/demo_seeds.py [--seeds 0 1 2] [--config FILE] [--out runs/demo_seeds]

Each seed is the README's command, `reasoner demo --seed S` (the seed of the tiny model's
initialisation, the SFT order and GRPO), run in a fresh process through the console script's
entry (`python -m reasoner`, so the log is the user's). Per seed: greedy and sampled
(temperature 1) held-out accuracy and pass@k before and after GRPO, the gains in points, the wall
time and the CPU time (user + sys of the process), and whether the demo's goals hold: greedy up by
at least 15 points and sampled up by at least 20. Writes benchmarks/results/demo_seeds.{json,md}.
Timings on a shared CPU are noisy: the CPU time is the steadier figure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/demo_seeds.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_timed, seeds_arguments, write_results  # noqa: E402

GOAL_GREEDY_POINTS = 15.0
GOAL_SAMPLED_POINTS = 20.0


def run_seed(seed: int, out: Path, config: str | None) -> dict:
    """Run `reasoner demo --seed seed` in a fresh process; its summary plus wall and CPU time."""
    cmd = [sys.executable, "-m", "reasoner", "demo", "--seed", str(seed), "--no-progress",
           "--output-dir", str(out)]
    if config:
        cmd += ["--config", config]
    wall, cpu = run_timed(cmd)
    summary = json.loads((out / "summary.json").read_text())
    return {"summary": summary, "wall_s": wall, "cpu_s": cpu}


def row(seed: int, r: dict) -> dict:
    s = r["summary"]
    greedy_gain = 100 * (s["greedy_accuracy_after"] - s["greedy_accuracy_before"])
    sampled_gain = 100 * (s["accuracy_after"] - s["accuracy_before"])
    k = s["pass_k"]
    return {
        "seed": seed,
        "greedy_before": round(s["greedy_accuracy_before"], 3),
        "greedy_after": round(s["greedy_accuracy_after"], 3),
        "greedy_gain_pts": round(greedy_gain, 1),
        "sampled_before": round(s["accuracy_before"], 3),
        "sampled_after": round(s["accuracy_after"], 3),
        "sampled_gain_pts": round(sampled_gain, 1),
        f"pass@{k}_before": round(s["pass_at_k_before"], 3),
        f"pass@{k}_after": round(s["pass_at_k_after"], 3),
        "length_before": round(s["mean_length_before"], 1),
        "length_after": round(s["mean_length_after"], 1),
        "sft_s": round(s["sft"]["seconds"], 0),
        "grpo_s": round(s["grpo_seconds"], 0),
        "wall_s": round(r["wall_s"], 0),
        "cpu_s": round(r["cpu_s"], 0),
        "goals_met": greedy_gain >= GOAL_GREEDY_POINTS and sampled_gain >= GOAL_SAMPLED_POINTS,
    }


def main() -> None:
    args = seeds_arguments(__doc__, "configs/demo.yaml", "runs/demo_seeds")
    rows = []
    for seed in args.seeds:
        rows.append(row(seed, run_seed(seed, args.out / f"seed-{seed}", args.config)))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    recipe = rows and json.loads((args.out / f"seed-{args.seeds[0]}" / "summary.json")
                                 .read_text())["config"]
    write_results(
        "demo_seeds", rows, packages=("torch", "transformers"), out_dir=args.results_dir,
        title="reasoner demo: three seeds",
        extra={"config": args.config or "embedded (configs/demo.yaml)",
               "goals": f"greedy +{GOAL_GREEDY_POINTS:.0f} pts and sampled (T=1) "
                        f"+{GOAL_SAMPLED_POINTS:.0f} pts on every seed",
               "all_goals_met": all(r["goals_met"] for r in rows),
               "torch_threads": recipe["demo"].get("torch_threads"),
               "recipe": recipe},
        notes="Accuracies are on held-out problems of GRPO's distribution (greedy: one completion "
              "per problem at temperature 0; sampled: `eval_samples` completions each at "
              "temperature 1). Gains are in percentage points. `cpu_s` is user + sys time of the "
              "demo process; with `torch_threads: 1` the demo keeps one core busy, so on a quiet "
              "machine wall time is about `cpu_s`. `wall_s` on a shared machine is not a figure "
              "to quote.")


if __name__ == "__main__":
    main()
