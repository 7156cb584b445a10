"""DeepSpeed ZeRO-2 / ZeRO-3 training with 2 ranks on CPU (gloo), launched by torchrun.

- a 2-rank step over fixed rollouts equals a 1-process step (plain torch engine) over the same
  global batch: weights, loss, grad norm, entropy, KL (fp32 rounding only);
- configs/tiny.yaml trains under ZeRO-2 (`deepspeed --num_gpus 2 --module reasoner train`) and
  ZeRO-3 (`torchrun --nproc_per_node 2 -m reasoner train`); only
  rank 0 writes; checkpoints hold DeepSpeed shards and one RNG file per rank; final/ is a
  consolidated Hugging Face model;
- a ZeRO-3 run killed while writing a checkpoint resumes from the last complete one and ends
  with the same weights as an uninterrupted run.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("deepspeed")

from reasoner.config import TrainConfig  # noqa: E402
from reasoner.engine.deepspeed_engine import resolve_deepspeed_config  # noqa: E402
from reasoner.metrics import read_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
TINY = ROOT / "configs" / "tiny.yaml"
DIGITS = "rewards.names=[toy_rewards:digit_reward]"  # a reward a random model varies on


def torchrun(args: list[str], out: Path, env_extra: dict[str, str] | None = None,
             check: bool = True, launcher: str = "torchrun") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1",
           **(env_extra or {})}
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", *args]
    else:  # `deepspeed --num_gpus 2 --module reasoner ...` (on a CPU: 2 processes)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        assert args[0] == "-m"
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2",
               "--master_port", str(port), "--module", *args[1:]]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    (out.parent / f"{out.name}.log").write_text(r.stdout + r.stderr)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


# ------------------------------------------------------------------------------------------


def test_resolve_deepspeed_config_fills_auto_and_rejects_contradictions():
    g = TrainConfig(per_device_train_batch_size=4, gradient_accumulation_steps=3,
                   max_grad_norm=0.5, learning_rate=2e-5, bf16=False)
    ds = json.loads((ROOT / "configs" / "zero3_offload.json").read_text())
    out = resolve_deepspeed_config(ds, g, world=2)
    assert out["train_micro_batch_size_per_gpu"] == 4
    assert out["gradient_accumulation_steps"] == 3
    assert out["train_batch_size"] == 24
    assert out["gradient_clipping"] == 0.5
    assert out["bf16"]["enabled"] is False
    assert out["managed_gradient_accumulation"] is False
    assert out["optimizer"]["params"] == {"lr": 2e-5, "betas": [g.adam_beta1, g.adam_beta2], "eps": 1e-8,
                                          "weight_decay": 0.0}
    assert ds["train_batch_size"] == "auto"  # the input is not modified
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2 contradicts"):
        resolve_deepspeed_config({"gradient_accumulation_steps": 2}, g, 1)
    with pytest.raises(ValueError, match="train_batch_size=12 contradicts"):
        resolve_deepspeed_config({"train_batch_size": 12}, g, 2)
    with pytest.raises(ValueError, match="'scheduler'"):
        resolve_deepspeed_config({"scheduler": {"type": "WarmupLR"}}, g, 1)
    with pytest.raises(ValueError, match="fp16"):
        resolve_deepspeed_config({"fp16": {"enabled": True}}, g, 1)
    for name in ("zero2.json", "zero3.json", "zero3_offload.json"):
        cfg = resolve_deepspeed_config(json.loads((ROOT / "configs" / name).read_text()), g, 8)
        assert cfg["zero_optimization"]["stage"] == int(name[4])
        assert "auto" not in json.dumps(cfg)
    # ZeRO's buckets from the hidden size, as the HF integration sizes them; fixed without it
    ds = json.loads((ROOT / "configs" / "zero3.json").read_text())
    z = resolve_deepspeed_config(ds, g, 2, hidden_size=4096)["zero_optimization"]
    assert (z["reduce_bucket_size"], z["stage3_prefetch_bucket_size"],
            z["stage3_param_persistence_threshold"]) == (4096**2, int(0.9 * 4096**2), 40960)
    z = resolve_deepspeed_config(ds, g, 2)["zero_optimization"]
    assert (z["reduce_bucket_size"], z["stage3_param_persistence_threshold"]) == (5 * 10**7, 10**5)


def test_bf16_weights_route_to_deepspeeds_bf16_mode():
    """model.dtype=bfloat16 under DeepSpeed: its bf16 mode (fp32 master weights and optimizer
    state) whatever train.bf16 says; a config that turns it off is refused."""
    g = TrainConfig(bf16=False)
    for name in ("zero2.json", "zero3.json"):
        ds = json.loads((ROOT / "configs" / name).read_text())
        assert resolve_deepspeed_config(ds, g, 2)["bf16"]["enabled"] is False
        assert resolve_deepspeed_config(ds, g, 2, bf16_weights=True)["bf16"]["enabled"] is True
    assert resolve_deepspeed_config({}, g, 1, bf16_weights=True)["bf16"]["enabled"] is True
    with pytest.raises(ValueError, match="bf16.enabled=false with model.dtype=bfloat16"):
        resolve_deepspeed_config({"bf16": {"enabled": False}}, g, 1, bf16_weights=True)


@pytest.mark.parametrize("stage,overrides", [
    (2, ["algo.loss_type=dapo", "algo.scale_rewards=batch"]),  # batch std over both ranks
    (3, ["algo.loss_type=grpo"]),
    (3, ["algo.loss_type=dr_grpo", "algo.scale_rewards=none", "algo.beta=0.04"]),  # + ZeRO-3 ref
    # the fused-linear loss reads the (tied) lm_head weight, gathered from the ZeRO-3 shards
    (3, ["train.use_fused_linear=true", "train.loss_backend=torch"]),
])
def test_two_rank_step_equals_one_rank_step_on_the_same_global_batch(tmp_path, stage, overrides):
    sys.path.insert(0, str(TESTS))
    from dist_worker import fixed_config, fixed_trainer

    # Adam's eps at 1e-4 keeps near-zero gradients from turning rounding into +-lr updates
    overrides = [*overrides, "train.adam_epsilon=1e-4"]
    one = tmp_path / "one"
    fixed_trainer(fixed_config(one, 1, *overrides)).train()
    two = tmp_path / "two"
    torchrun([str(TESTS / "dist_worker.py"), str(two), str(ROOT / f"configs/zero{stage}.json"),
              *overrides], two)

    init, w1, w2 = weights(one / "init_model"), weights(one / "final"), weights(two / "final")
    assert max_diff(w1, init) > 5e-3  # two Adam steps at lr 0.01 moved the weights
    assert max_diff(w1, w2) < 2e-6
    m1, m2 = read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    assert [r["step"] for r in m2] == [1, 2]  # rank 0 alone wrote the metrics
    for a, b in zip(m1, m2):
        # without a KL term the zero-advantage group's rows are skipped, so rank 0 runs fewer
        # micro-batches than rank 1 and pads with zero-weight ones
        trained = 1.0 if "algo.beta=0.04" in overrides else 0.75
        assert a["update/trained_rows_frac"] == b["update/trained_rows_frac"] == trained
        for key in ("loss", "grad_norm", "entropy", "kl", "reward/mean", "reward/std",
                    "completion_length/mean", "frac_zero_std_groups", "clip/low"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    assert m1[0]["grad_norm"] > 0


@pytest.mark.parametrize("stage", [2, 3])
def test_a_nan_loss_on_one_rank_skips_the_step_on_every_rank(tmp_path, stage, monkeypatch):
    sys.path.insert(0, str(TESTS))
    from dist_worker import fixed_config, fixed_trainer

    monkeypatch.setenv("POISON_FIRST_STEP", "1")  # the last rank's step-1 loss is NaN
    overrides = ["train.adam_epsilon=1e-4", "train.max_steps=2"]
    one = tmp_path / "one"
    fixed_trainer(fixed_config(one, 1, *overrides)).train()
    two = tmp_path / "two"
    torchrun([str(TESTS / "dist_worker.py"), str(two), str(ROOT / f"configs/zero{stage}.json"),
              *overrides], two)
    m1, m2 = read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    assert [r["skipped_updates"] for r in m1] == [r["skipped_updates"] for r in m2] == [1, 0]
    # step 2 starts from the untouched weights with clean gradients on both sides
    assert m2[1]["grad_norm"] == pytest.approx(m1[1]["grad_norm"], rel=1e-5)
    w1, w2 = weights(one / "final"), weights(two / "final")
    assert max_diff(w1, weights(one / "init_model")) > 5e-3
    assert max_diff(w1, w2) < 2e-6


def test_zero2_run_of_tiny_yaml_under_the_deepspeed_launcher(tmp_path):
    out = tmp_path / "z2"
    r = torchrun(["-m", "reasoner", "train", "--config", str(TINY), "--output-dir", str(out),
                  "--deepspeed", str(ROOT / "configs/zero2.json"), "--no-progress", DIGITS,
                  # ranks refill zero-std groups in lockstep (same number of rollout phases)
                  "rollout.dynamic_sampling=true"], out, launcher="deepspeed")
    assert r.stdout.count("done: 4 steps") == 1  # rank 0 alone reports
    recs = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    # metrics are over the global batch: 2 ranks x 2 prompts x G=4 completions
    assert all(r["grad_norm"] > 0 and r["skipped_updates"] == 0 for r in recs)
    for r in recs:  # each rank's peak memory (resident set on CPU), and the largest
        assert 0.1 < r["memory/rank0_peak_gb"] < 64 and 0.1 < r["memory/rank1_peak_gb"] < 64
        assert r["memory/peak_gb"] == max(r["memory/rank0_peak_gb"], r["memory/rank1_peak_gb"])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    ck = out / "checkpoint-4"
    for f in ("deepspeed", "rng-rank0.pt", "rng-rank1.pt", "tokenizer.json",
              "trainer_state.json"):
        assert (ck / f).exists(), f
    state = json.loads((ck / "trainer_state.json").read_text())
    # every draw takes world x n rows of the shared order: 2 ranks x 2 prompts per step, more
    # when dynamic sampling refilled
    tries = sum(r["dynamic_sampling/tries"] for r in recs)
    assert state["step"] == 4 and state["data"]["index"] >= 4 * 2 * 2
    assert (state["data"]["index"] > 16) == (tries > 0)
    assert max_diff(weights(out / "final"), weights(out / "init_model")) > 1e-4


def test_zero3_run_killed_mid_checkpoint_resumes_to_the_uninterrupted_weights(tmp_path):
    base = ["-m", "reasoner", "train", "--config", str(TINY), "--deepspeed",
            str(ROOT / "configs/zero3.json"), "--no-progress", DIGITS, "algo.beta=0.04"]
    full = tmp_path / "full"
    torchrun([*base, "--output-dir", str(full)], full)

    cut = tmp_path / "cut"
    r = torchrun([*base, "--output-dir", str(cut)], cut,
                 env_extra={"REASONER_DEBUG_KILL": "save:4"}, check=False)
    assert r.returncode != 0  # rank 0 was SIGKILLed half-way through writing checkpoint 4
    assert (cut / "checkpoint-2").is_dir() and not (cut / "checkpoint-4").exists()
    assert (cut / ".tmp-checkpoint-4").is_dir()
    torchrun([*base, "--output-dir", str(cut), "--resume"], cut)
    assert not (cut / ".tmp-checkpoint-4").exists()
    assert [r["step"] for r in read_metrics(cut / "metrics.jsonl")] == [1, 2, 3, 4]

    # the consolidated final model (gathered from the ZeRO-3 shards) loads in transformers
    from transformers import AutoModelForCausalLM

    w_full, w_cut = weights(full / "final"), weights(cut / "final")
    assert max_diff(w_full, weights(full / "init_model")) > 1e-4
    assert max_diff(w_full, w_cut) == 0.0
    model = AutoModelForCausalLM.from_pretrained(full / "final")
    assert float(model.model.norm.weight.detach().sub(w_full["model.norm.weight"]).abs().max()) == 0
    kl = [r["kl"] for r in read_metrics(full / "metrics.jsonl")]
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and kl[-1] > 0  # the ZeRO-3 reference works


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("stage", [2, 3])
def test_bf16_on_gpus_with_nccl(tmp_path, stage):
    """One process per visible GPU (NCCL), bf16 weights held by DeepSpeed, the Triton loss."""
    n = torch.cuda.device_count()
    out = tmp_path / f"gpu{stage}"
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    env.pop("TRITON_INTERPRET", None)
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         str(n), "-m", "reasoner", "train", "--config", str(TINY), "--output-dir", str(out),
         "--deepspeed", str(ROOT / f"configs/zero{stage}.json"), "--no-progress", DIGITS,
         "train.device=cuda", "train.bf16=true", "algo.beta=0.04"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = read_metrics(out / "metrics.jsonl")
    assert [x["step"] for x in recs] == [1, 2, 3, 4]
    assert all(x["grad_norm"] > 0 and x["skipped_updates"] == 0 for x in recs)
    final = weights(out / "final")
    assert all(t.dtype == torch.bfloat16 for t in final.values())
    assert max_diff(final, weights(out / "init_model")) > 1e-4


_LEAN_CHECK = """
import sys
from reasoner import distributed
from reasoner.config import load_config
from reasoner.metrics import read_metrics
from reasoner.models.lean import lean_decoder
from reasoner.trainers.grpo import GRPOTrainer

out = sys.argv[1]
cfg = load_config(sys.argv[2], [f"train.output_dir={out}", "train.max_steps=1",
                                "train.report_to_tensorboard=false"])
t = GRPOTrainer(cfg, deepspeed_config=sys.argv[3], progress=False)
assert t.engine.partitioned and t.world == 1
assert t.model.lm_head.weight.numel() == 0  # sharded (a group of one holds it all, elsewhere)
assert lean_decoder(t.model) is None  # partitioned, ZeRO-3 hooks on
with t.engine.generation():
    assert lean_decoder(t.model) is not None, "lean path refused on gathered weights"
    assert t.model.lm_head.weight.shape == (t.model.config.vocab_size, 32)
assert lean_decoder(t.model) is None  # hooks back, weights released
assert t.model.model._forward_pre_hooks  # ZeRO-3's fetch hooks are re-registered
t.train()
assert read_metrics(out + "/metrics.jsonl")[0]["step"] == 1
distributed.shutdown()
print("LEAN-OK")
"""


def test_zero3_in_one_process_generation_takes_the_lean_path_on_gathered_weights(tmp_path):
    """`reasoner train --deepspeed` without a launcher (a group of one); under ZeRO-3 the weights
    are shards outside the rollout phase and whole, hooks off, inside it. In a subprocess:
    ZeRO-3 leaves torch.nn.functional.linear patched for the rest of the process."""
    r = subprocess.run([sys.executable, "-c", _LEAN_CHECK, str(tmp_path), str(TINY),
                        str(ROOT / "configs/zero3.json")], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "LEAN-OK" in r.stdout, r.stderr[-3000:]
