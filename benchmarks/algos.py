"""GRPO, PPO, A2C, RLOO and REINFORCE++ on the same tiny task, warm start and completion budget:
held-out accuracy reached, training seconds and peak memory (the critic's cost made visible);
and, with --vs-trl, PPO's step time against TRL's PPO trainer on the same model.

    python benchmarks/algos.py                       # the comparison (minutes on a CPU)
    python benchmarks/algos.py --steps 3 --sft-steps 20 --eval-rows 16   # a quick smoke run
    python benchmarks/algos.py --vs-trl --algos      # only PPO vs TRL (needs trl <= 1.12)
    python benchmarks/algos.py --vs-trl --algos --profile   # ... and both steps by phase

The warm start is the GRPO demo's (`reasoner demo`, reasoner/demo.py's DEMO_RECIPE): the tiny
128x4 Qwen2 SFT-trained on correct worked solutions of 1-3 digit additions (plain cross-entropy,
constant learning rate, stopped early), and the algorithms train on the demo's 3-digit problems,
so samples at temperature 1 are right a fraction of the time, greedy a bit more often, and every
algorithm has room to learn. Each algorithm then starts from that same directory and trains
--steps steps of --prompts prompts x --generations completions (the same completions for all),
in its own process (so its peak resident memory is its own); held-out accuracy is measured on
--eval-rows test problems, 4 samples each at temperature 1 (the headline) and greedy. Writes
benchmarks/results/algos.{json,md} (or algos_vs_trl.* with --vs-trl).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/algos.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ALGOS = ("grpo", "rloo", "reinforce_plus_plus", "a2c", "ppo")


def demo_recipe() -> tuple[dict[str, Any], dict[str, Any]]:
    """The GRPO demo's recipe (its config sections) and its ``demo`` section (the warm start
    and the held-out evaluation)."""
    from reasoner.demo import demo_section, load_recipe

    recipe = load_recipe(None)
    return recipe, demo_section(recipe)


RECIPE, DEMO = demo_recipe()
TASK_OPTIONS = RECIPE["data"]["task_options"]  # the demo's RL problems
COMPLETION_TOKENS = RECIPE["rollout"]["max_completion_length"]

# Each algorithm's settings beside the shared ones (TRL's defaults where it has the algorithm;
# the KL penalties small: the warm start is the reference).
ALGO_SETTINGS: dict[str, dict[str, Any]] = {
    "grpo": {"algo": {"name": "grpo", "beta": 0.0, "loss_type": "dapo", "scale_rewards": "group"}},
    "rloo": {"algo": {"name": "rloo", "beta": 0.0, "loss_type": "dapo"}},
    "reinforce_plus_plus": {"algo": {"name": "reinforce_plus_plus", "beta": 0.01,
                                     "kl_in_reward": True, "kl_estimator": "k1",
                                     "loss_type": "dapo"}},
    "a2c": {"algo": {"name": "a2c", "kl_coef": 0.01, "kl_estimator": "k1", "vf_coef": 0.1,
                     "gamma": 1.0, "lam": 0.95, "loss_type": "dapo"},
            "critic": {"learning_rate": 1e-4}},
    "ppo": {"algo": {"name": "ppo", "num_ppo_epochs": 2, "num_mini_batches": 2, "cliprange": 0.2,
                     "cliprange_value": 0.2, "kl_coef": 0.01, "kl_estimator": "k1",
                     "vf_coef": 0.1, "gamma": 1.0, "lam": 0.95, "loss_type": "dapo"},
            "critic": {"learning_rate": 1e-4}},
}
CRITIC_WARMUP_FRACTION = 0.05  # of the steps, at most 5: the fresh value head learns first


def config_dict(algo: str, model: str, out: str, args: argparse.Namespace) -> dict[str, Any]:
    """The run's config: shared rollout / optimisation settings, the algorithm's own."""
    cfg: dict[str, Any] = {
        "model": {"path": model},
        "data": {"task": "arithmetic", "task_options": TASK_OPTIONS, "num_train_rows": 4000,
                 "template": "r1_short"},
        "rollout": {"num_generations": args.generations,
                    "max_completion_length": COMPLETION_TOKENS,
                    "temperature": 1.0},
        "train": {"output_dir": out, "max_steps": args.steps, "seed": args.seed,
                  "device": "cpu", "per_device_train_batch_size": args.prompts * args.generations,
                  "gradient_accumulation_steps": 1, "learning_rate": args.lr,
                  "lr_scheduler_type": "constant_with_warmup", "warmup_steps": 10,
                  "save_steps": 0, "log_completions_steps": 0, "logging_steps": 10**6,
                  "report_to_tensorboard": False},
    }
    for section, values in ALGO_SETTINGS[algo].items():
        cfg.setdefault(section, {}).update(values)
    if "critic" in cfg:
        cfg["critic"]["critic_warmup_steps"] = min(5, int(args.steps * CRITIC_WARMUP_FRACTION))
    return cfg


def held_out(model: Any, tok: Any, rows: list[dict[str, Any]], seed: int) -> dict[str, float]:
    from reasoner.evaluate import evaluate
    from reasoner.tasks import get_task

    task = get_task("arithmetic", **TASK_OPTIONS)
    kw = dict(task=task, template="r1_short", max_new_tokens=DEMO["eval_max_new_tokens"],
              batch_size=256, seed=seed)
    sampled = evaluate(model, tok, rows, temperature=1.0, num_samples=4, **kw)
    greedy = evaluate(model, tok, rows, temperature=0.0, **kw)
    return {"accuracy_T1": sampled["accuracy"], "accuracy_greedy": greedy["accuracy"]}


def test_rows(n: int) -> list[dict[str, Any]]:
    from reasoner.tasks import get_task

    return get_task("arithmetic", **TASK_OPTIONS).rows("test", n, 0)


def run_one(algo: str, model: str, out: str, args: argparse.Namespace) -> dict[str, Any]:
    """One algorithm's run (in its own process): train, then the held-out evaluation."""
    import torch

    from reasoner.config import config_from_dict
    from reasoner.metrics import read_metrics
    from reasoner.models import load_model_and_tokenizer
    from reasoner.trainers import ALGORITHMS

    torch.set_num_threads(args.threads)
    cfg = config_from_dict(config_dict(algo, model, out, args))
    trainer = ALGORITHMS.get(algo)(cfg, progress=False)
    engines = [trainer.engine, *trainer.extra_engines.values()]
    trained = sum(p.numel() for e in engines for p in e.params)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    recs = read_metrics(Path(out) / "metrics.jsonl")
    final, tok = load_model_and_tokenizer(Path(out) / "final")
    acc = held_out(final, tok, test_rows(args.eval_rows), args.seed + 12345)
    tail = recs[-min(10, len(recs)):]
    return {"algo": algo, "steps": len(recs),
            "completions": int(len(recs) * args.prompts * args.generations),
            "train_seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / max(len(recs), 1), 3),
            "trained_params_m": round(trained / 1e6, 3),
            "peak_rss_gb": round(max(r["memory/peak_gb"] for r in recs), 3),
            "train_accuracy_last10": sum(r["accuracy"] for r in tail) / len(tail),
            **{f"{k}_after": v for k, v in acc.items()}}


def warm_start(args: argparse.Namespace, work: Path) -> str:
    """The GRPO demo's warm start (or --model as given): the demo recipe's tiny model
    (seeded by --seed), SFT-trained as the demo does (`demo_recipe`: its problems, steps,
    batch, learning rate and schedule; --sft-steps overrides the steps); the directory every
    algorithm starts from."""
    if args.model is not None:
        return args.model
    import torch

    from reasoner.config import config_from_dict
    from reasoner.models import build_tiny_from_config, load_model_and_tokenizer
    from reasoner.tasks import get_task
    from reasoner.trainers.sft import run_sft

    torch.set_num_threads(args.threads)
    cfg = config_from_dict(RECIPE)
    cfg.model.tiny_seed = args.seed
    path = build_tiny_from_config(cfg.model, work / "sft")
    model, tok = load_model_and_tokenizer(path)
    rows = get_task("arithmetic", **DEMO["sft_task_options"]).rows(
        "train", DEMO["sft_rows"], cfg.data.data_seed + 1)
    run_sft(model, tok, rows, template=cfg.data.template, max_steps=sft_steps(args),
            batch_size=DEMO["sft_batch_size"], lr=DEMO["sft_lr"], seed=args.seed,
            progress=False, lr_scheduler_type=DEMO["sft_lr_scheduler_type"])
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


def sft_steps(args: argparse.Namespace) -> int:
    return DEMO["sft_steps"] if args.sft_steps is None else args.sft_steps


def compare(args: argparse.Namespace, work: Path, model: str) -> None:
    from reasoner.models import load_model_and_tokenizer

    m, tok = load_model_and_tokenizer(model)
    before = held_out(m, tok, test_rows(args.eval_rows), args.seed + 12345)
    del m
    rows = []
    for algo in args.algos:
        out = work / algo
        cmd = [sys.executable, str(Path(__file__).resolve()), "--run", algo, "--model", model,
               "--run-dir", str(out), *args.passthrough]
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{algo} failed:\n{p.stderr[-3000:]}")
        r = json.loads((out / "bench.json").read_text())
        r["accuracy_T1_before"] = before["accuracy_T1"]
        r["accuracy_greedy_before"] = before["accuracy_greedy"]
        rows.append(r)
        print(f"{algo}: T=1 accuracy {before['accuracy_T1']:.3f} -> "
              f"{r['accuracy_T1_after']:.3f} in {r['train_seconds']} s", flush=True)
    cols = ["algo", "steps", "completions", "train_seconds", "seconds_per_step",
            "trained_params_m", "peak_rss_gb",
            "accuracy_T1_before", "accuracy_T1_after", "accuracy_greedy_before",
            "accuracy_greedy_after", "train_accuracy_last10"]
    write_results("algos", [{c: r[c] for c in cols} for r in rows],
                  packages=("torch", "transformers", "deepspeed"),
                  extra={"task": f"arithmetic {TASK_OPTIONS}, template r1_short",
                         "model": args.model or f"the GRPO demo's warm start: tiny qwen2 "
                                                f"{RECIPE['model']['tiny_hidden_size']}x"
                                                f"{RECIPE['model']['tiny_num_layers']}, SFT "
                                                f"{sft_steps(args)} steps on "
                                                f"{DEMO['sft_task_options']} additions",
                         "per_step": f"{args.prompts} prompts x {args.generations} completions, "
                                     f"<= {COMPLETION_TOKENS} tokens, temperature 1",
                         "learning_rate": args.lr, "threads": args.threads,
                         "eval": f"{args.eval_rows} test problems: 4 samples at T=1, and greedy",
                         "settings": {a: ALGO_SETTINGS[a] for a in args.algos}},
                  notes="Each algorithm in its own process; peak_rss_gb is that process's peak "
                        "resident set (the Python runtime, model, optimizer, critic, "
                        "activations: at this size mostly the runtime), trained_params_m the "
                        "parameters its optimizers update (a separate critic doubles them). "
                        "Timings on a shared CPU are noisy: compare runs made on a quiet "
                        "machine.")


# --------------------------------------------------------------------------- PPO vs TRL's PPO


class PhaseClock:
    """CPU and wall seconds spent inside wrapped callables, by phase name (`--profile`): CPU
    seconds (this process's user + sys) are what a loaded machine does not inflate."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}
        self.on = True

    def wrap(self, name: str, fn: Any) -> Any:
        import functools

        @functools.wraps(fn)
        def timed(*a: Any, **kw: Any) -> Any:
            if not self.on:
                return fn(*a, **kw)
            c0, t0 = time.process_time(), time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0
                self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t0
        return timed

    def patch(self, owner: Any, attr: str, name: str) -> None:
        setattr(owner, attr, self.wrap(name, getattr(owner, attr)))

    def reset(self) -> None:
        self.cpu.clear()
        self.wall.clear()


def profile_ours(clock: PhaseClock, trainer: Any) -> None:
    """Our PPO step's phases (forward, backward, optimizer per model)."""
    import reasoner.trainers.grpo as grpo
    import reasoner.trainers.ppo as ppo

    clock.patch(grpo, "generate_rollouts", "generation")
    clock.patch(grpo, "score_completions", "reward model")
    clock.patch(ppo, "token_logprobs", "no-grad passes: old / ref log-probs")
    clock.patch(ppo, "token_values", "no-grad passes: values")
    clock.patch(grpo.GRPOTrainer, "policy_forward", "update: policy forward")
    clock.patch(ppo, "forward_values", "update: critic forward")
    clock.patch(grpo.GRPOTrainer, "policy_loss_of", "update: losses")
    clock.patch(ppo, "clipped_value_loss", "update: losses")
    for engine, who in ((trainer.engine, "policy"), (trainer.critic_engine, "critic")):
        clock.patch(engine, "backward", f"update: {who} backward")
        clock.patch(engine, "step", f"update: {who} optimizer step")


def profile_trl(clock: PhaseClock, trainer: Any, ref: Any, reward: Any) -> None:
    """TRL's PPO step's phases (trl 1.12's module functions)."""
    import trl.experimental.ppo.ppo_trainer as tp

    clock.patch(tp, "batch_generation", "generation")
    fwd, get_reward = tp.forward, tp.get_reward

    def forward(model: Any, *a: Any, **kw: Any) -> Any:
        name = ("no-grad passes: old / ref log-probs" if model is ref
                else "update: policy + critic forward")
        return clock.wrap(name, fwd)(model, *a, **kw)

    def reward_or_value(model: Any, *a: Any, **kw: Any) -> Any:
        name = "reward model" if model is reward else "no-grad passes: values"
        return clock.wrap(name, get_reward)(model, *a, **kw)

    tp.forward, tp.get_reward = forward, reward_or_value
    clock.patch(tp.gc, "collect", "gc.collect")
    clock.patch(trainer.accelerator, "backward", "update: policy + critic backward")
    clock.patch(trainer.optimizer, "step", "update: optimizer step")


def matmul_rate(tokens: int, hidden: int, inner: int) -> float:
    """FLOP/s of this CPU's matmul at the model's MLP shape ([tokens, hidden] x [hidden, inner]),
    at the current thread count."""
    import torch

    x, w = torch.randn(tokens, hidden), torch.randn(inner, hidden)
    for _ in range(5):
        torch.nn.functional.linear(x, w)
    reps, c0 = 50, time.process_time()
    for _ in range(reps):
        torch.nn.functional.linear(x, w)
    return 2 * tokens * hidden * inner * reps / (time.process_time() - c0)


def step_flops(fn: Any) -> int:
    """Matmul / attention FLOPs (forward and backward) that `fn()` runs."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def vs_trl(args: argparse.Namespace, work: Path, model: str) -> None:
    """PPO step time: ours vs TRL's PPOTrainer, same model, batch, completion length, epochs,
    mini-batches and a reward model of the same size on both sides (ours through a reward
    function of TRL's signature: the reward-function path GRPO uses), the two stepping in
    turns. Wall and CPU seconds per step; with --profile, both steps by phase and their FLOPs against this CPU's matmul rate."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from reasoner.models import load_model_and_tokenizer

    try:
        from trl.experimental.ppo import PPOConfig, PPOTrainer
    except ImportError:
        raise SystemExit("--vs-trl needs TRL's PPO trainer (trl.experimental.ppo, trl <= 1.12: "
                         "pip install trl==1.12.0)") from None
    torch.set_num_threads(args.threads)
    n, length = args.trl_batch, COMPLETION_TOKENS  # both sides: the recipe's budget
    args.trl_warmup = max(args.trl_warmup, 1)  # TRL's step times are gaps between step ends
    steps = args.trl_warmup + args.trl_steps
    _, tok = load_model_and_tokenizer(model)
    rm_dir = work / "rm"
    rm = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)
    clocks = {"reasoner": PhaseClock(), "trl": PhaseClock()}
    flops: dict[str, float] = {}

    # ours: the same reward model, scored through a reward function
    from reasoner.config import config_from_dict
    from reasoner.data import render_prompt
    from reasoner.trainers.ppo import PPOTrainer as Ours
    from reasoner.verifiers.rewards import WeightedReward

    rm.eval()

    @torch.no_grad()
    def rm_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        enc = tok([p + c for p, c in zip(prompts, completions)], return_tensors="pt",
                  padding=True, padding_side="right")
        return rm(**enc).logits[:, 0].tolist()

    cfg = config_dict("ppo", model, str(work / "ours"), args)
    cfg["rollout"]["num_generations"] = 1
    cfg["train"].update(max_steps=steps + 1, per_device_train_batch_size=n,
                        lr_scheduler_type="constant", warmup_steps=0)
    cfg["algo"].update(num_ppo_epochs=4, num_mini_batches=1, kl_coef=0.05)
    cfg["critic"] = {"learning_rate": args.lr}
    ours = Ours(config_from_dict(cfg), reward_funcs=[WeightedReward("rm", rm_reward)],
                progress=False)
    if args.profile:
        profile_ours(clocks["reasoner"], ours)

    # TRL
    from datasets import Dataset
    from transformers import TrainerCallback

    policy, _ = load_model_and_tokenizer(model)
    ref, _ = load_model_and_tokenizer(model)
    value = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1)
    reward = AutoModelForSequenceClassification.from_pretrained(rm_dir)
    rows = test_rows(n * steps)
    ids = [tok(render_prompt(r["question"], template="r1_short"),
               add_special_tokens=False)["input_ids"] for r in rows]
    ds = Dataset.from_list([{"input_ids": x} for x in ids])
    tok.padding_side = "left"

    class Alternate(TrainerCallback):
        """At each TRL step's end, one of our steps: the two sides alternate step by step in
        one process, so a change in the machine's load falls on both. stamps[i]: (wall, CPU)
        at TRL step i's end, then after our step i."""

        def __init__(self) -> None:
            self.stamps: list[tuple[tuple[float, float], tuple[float, float]]] = []

        def on_step_end(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            j = len(self.stamps)  # the TRL step that just ended (0-based)
            end = (time.perf_counter(), time.process_time())
            if j == args.trl_warmup:  # our timed steps start
                clocks["reasoner"].reset()
            ours.train_step()
            self.stamps.append((end, (time.perf_counter(), time.process_time())))
            if j == args.trl_warmup - 1:  # TRL's timed steps start
                clocks["trl"].reset()

    timer = Alternate()
    conf = PPOConfig(output_dir=str(work / "trl"), per_device_train_batch_size=n,
                     gradient_accumulation_steps=1, num_mini_batches=1, num_ppo_epochs=4,
                     total_episodes=n * steps, response_length=length, stop_token="eos",
                     kl_coef=0.05, kl_estimator="k1", learning_rate=args.lr, temperature=1.0,
                     use_cpu=True, report_to="none", bf16=False, num_sample_generations=0,
                     seed=args.seed, lr_scheduler_type="constant",
                     local_rollout_forward_batch_size=n, per_device_eval_batch_size=n,
                     gradient_checkpointing=False, save_strategy="no")
    trl = PPOTrainer(args=conf, processing_class=tok, model=policy, ref_model=ref,
                     reward_model=reward, train_dataset=ds, value_model=value, eval_dataset=ds,
                     callbacks=[timer])
    if args.profile:
        profile_trl(clocks["trl"], trl, ref, reward)
    trl.train()
    st, timed = timer.stamps, range(args.trl_warmup, steps)
    ours_s, ours_cpu = (sum(st[i][1][k] - st[i][0][k] for i in timed) / args.trl_steps
                        for k in (0, 1))
    trl_s, trl_cpu = (sum(st[i][0][k] - st[i - 1][1][k] for i in timed) / args.trl_steps
                      for k in (0, 1))
    if args.profile:
        for c in clocks.values():
            c.on = False
        flops["reasoner"] = step_flops(ours.train_step)
        trl.args.num_total_batches = 1  # one more step, counted (without ours)
        timer.on_step_end = lambda *a, **kw: None  # type: ignore[method-assign]
        flops["trl"] = step_flops(trl.train)
    import trl as trl_pkg

    row = {"batch": n, "max_completion_length": length, "num_ppo_epochs": 4,
           "reasoner_s_per_step": round(ours_s, 3), "trl_s_per_step": round(trl_s, 3),
           "speedup": round(trl_s / ours_s, 2),
           "reasoner_cpu_s_per_step": round(ours_cpu, 3), "trl_cpu_s_per_step": round(trl_cpu, 3),
           "cpu_speedup": round(trl_cpu / ours_cpu, 2)}
    extra = {"trl": trl_pkg.__version__, "model": model, "threads": args.threads,
             "steps_timed": args.trl_steps, "warmup_steps": args.trl_warmup}
    notes = ("Both sides: one completion per prompt, the same reward model (ours through a "
             "reward function), a value model from the policy's weights, 4 PPO epochs of one "
             "mini-batch, KL coefficient 0.05 (k1), the demo recipe's completion budget. The "
             "two sides alternate step by step in one process (after each TRL step, one of "
             "ours), so a change in the machine's load falls on both; the first warmup_steps "
             "of each are not timed. CPU seconds: this process's user + sys per step (less "
             "inflated by a loaded machine than wall seconds, not immune); the goal is on wall "
             "seconds on a quiet machine.")
    if args.profile:
        extra["profile"] = profile_rows(clocks, flops, args.trl_steps,
                                        {"reasoner": ours_cpu, "trl": trl_cpu}, model)
        notes += "\n\n" + profile_markdown(extra["profile"])
    write_results("algos_vs_trl", [row], packages=("torch", "transformers"), extra=extra,
                  title="PPO step: reasoner vs TRL", notes=notes)
    print(f"PPO step: reasoner {ours_s:.3f} s ({ours_cpu:.3f} CPU s), TRL {trl_s:.3f} s "
          f"({trl_cpu:.3f} CPU s) -> {trl_s / ours_s:.2f}x wall, {trl_cpu / ours_cpu:.2f}x CPU")


PROFILE_PHASES = ("generation", "reward model", "no-grad passes: old / ref log-probs",
                  "no-grad passes: values", "update: policy forward", "update: critic forward",
                  "update: policy + critic forward", "update: losses",
                  "update: policy backward", "update: critic backward",
                  "update: policy + critic backward", "update: policy optimizer step",
                  "update: critic optimizer step", "update: optimizer step", "gc.collect")


def profile_rows(clocks: dict[str, PhaseClock], flops: dict[str, float], steps: int,
                 step_cpu: dict[str, float], model: str) -> dict[str, Any]:
    """Per phase, CPU seconds per step of each side; the rest of the step; FLOPs per step and
    the floor they set at this CPU's matmul rate."""
    import json as _json

    conf = _json.loads((Path(model) / "config.json").read_text())
    rate = matmul_rate(1024, conf["hidden_size"], conf["intermediate_size"])
    phases = []
    for name in PROFILE_PHASES:
        row = {"phase": name}
        for side, clock in clocks.items():
            v = clock.cpu.get(name)
            row[side] = None if v is None else round(v / steps, 4)
        if any(row[s] is not None for s in clocks):
            phases.append(row)
    rest = {"phase": "rest of the step"}
    for side, clock in clocks.items():
        rest[side] = round(step_cpu[side] - sum(clock.cpu.values()) / steps, 4)
    phases.append(rest)
    return {"phases": phases, "matmul_gflops": round(rate / 1e9, 1),
            "gflop_per_step": {s: round(f / 1e9, 2) for s, f in flops.items()},
            "floor_s": {s: round(f / rate, 3) for s, f in flops.items()},
            "cpu_s_per_step": {s: round(v, 3) for s, v in step_cpu.items()}}


def profile_markdown(p: dict[str, Any]) -> str:
    lines = ["CPU seconds per step by phase (`--profile`):", "",
             "| phase | reasoner | TRL |", "|---|---:|---:|"]
    for r in p["phases"]:
        cells = ["" if r[s] is None else f"{r[s]:.3f}" for s in ("reasoner", "trl")]
        lines.append(f"| {r['phase']} | {cells[0]} | {cells[1]} |")
    c = p["cpu_s_per_step"]
    lines.append(f"| **step** | **{c['reasoner']:.3f}** | **{c['trl']:.3f}** |")
    g, f = p["gflop_per_step"], p["floor_s"]
    lines += ["", f"Matmul FLOPs per step (torch's FlopCounterMode, forward and backward, "
                  f"generation and the reward model included): reasoner {g.get('reasoner')} GFLOP, TRL {g.get('trl')} GFLOP; "
                  f"at this CPU's measured matmul rate ({p['matmul_gflops']} GFLOP/s, the "
                  f"model's MLP shape, same threads) that is a floor of {f.get('reasoner')} s "
                  f"and {f.get('trl')} s per step."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--algos", nargs="*", default=list(ALGOS), choices=ALGOS)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step")
    ap.add_argument("--generations", type=int, default=8, help="completions per prompt")
    ap.add_argument("--lr", type=float, default=RECIPE["train"]["learning_rate"],
                    help="the policy's learning rate (default: the demo's GRPO one)")
    ap.add_argument("--eval-rows", type=int, default=200)
    ap.add_argument("--model", default=None, help="start from this directory (no warm start)")
    ap.add_argument("--sft-steps", type=int, default=None,
                    help="warm-start SFT steps (default: the demo recipe's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vs-trl", action="store_true", help="also time PPO against TRL's PPO")
    ap.add_argument("--trl-batch", type=int, default=64)
    ap.add_argument("--trl-steps", type=int, default=5)
    ap.add_argument("--trl-warmup", type=int, default=1, help="untimed steps first (>= 1)")
    ap.add_argument("--profile", action="store_true",
                    help="with --vs-trl: both steps by phase (CPU seconds) and their FLOPs")
    ap.add_argument("--run", choices=ALGOS, help=argparse.SUPPRESS)  # one algorithm (internal)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        r = run_one(args.run, args.model, args.run_dir, args)
        Path(args.run_dir, "bench.json").write_text(json.dumps(r))
        return
    args.passthrough = [f"--{k}={getattr(args, k.replace('-', '_'))}" for k in
                        ("steps", "prompts", "generations", "lr", "eval-rows", "threads", "seed")]
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        model = warm_start(args, work)
        if args.algos:
            compare(args, work, model)
        if args.vs_trl:
            vs_trl(args, work, model)


if __name__ == "__main__":
    main()
