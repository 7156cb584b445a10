"""PPO under DeepSpeed ZeRO-2 / ZeRO-3 with 2 ranks on CPU (gloo): the critic is a second
engine (or a value head on the policy's, sharded with it).

- a 2-rank step over fixed rollouts equals a 1-process step (plain torch engines) over the same
  global batch: policy and critic weights, policy / value losses, grad norms, explained
  variance, clip fractions (fp32 rounding only); mini-batches hold the same completions
  whatever the number of ranks;
- configs/ppo_tiny.yaml trains under ZeRO-2 with the deepspeed launcher: the checkpoints hold
  both engines' shards, final_critic/ is a consolidated value model;
- a ZeRO-3 run (torchrun) killed while writing a checkpoint resumes from the last complete one
  and ends with the same policy and critic weights as an uninterrupted run.
"""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

from test_deepspeed import max_diff, torchrun, weights  # noqa: E402  (tests/engine is on the path)

from reasoner.metrics import read_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PPO_TINY = ROOT / "configs" / "ppo_tiny.yaml"
DIGITS = "rewards.names=[toy_rewards:digit_reward]"
PPO = ["algo.name=ppo", "algo.num_ppo_epochs=2", "algo.num_mini_batches=2", "algo.kl_coef=0.05",
       "critic.learning_rate=0.01", "train.adam_epsilon=1e-4"]


@pytest.mark.parametrize("stage,overrides", [
    (2, []),  # separate value model: a second DeepSpeed engine
    (3, ["critic.shared_trunk=true"]),  # the value head sharded with the policy
])
def test_ppo_two_rank_step_equals_one_rank_step(tmp_path, stage, overrides):
    sys.path.insert(0, str(TESTS))
    from dist_worker import fixed_config, fixed_trainer

    overrides = [*PPO, *overrides]
    one = tmp_path / "one"
    fixed_trainer(fixed_config(one, 1, *overrides)).train()
    two = tmp_path / "two"
    torchrun([str(TESTS / "dist_worker.py"), str(two), str(ROOT / f"configs/zero{stage}.json"),
              *overrides], two)
    init = weights(one / "init_model")
    for d in ("final", "final_critic"):
        w1, w2 = weights(one / d), weights(two / d)
        assert max_diff(w1, w2) < 5e-6, d
    assert max_diff(weights(one / "final"), init) > 5e-3
    m1, m2 = read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    assert [r["step"] for r in m2] == [1, 2]
    for a, b in zip(m1, m2):
        for key in ("loss", "grad_norm", "value_loss", "explained_variance", "returns/mean",
                    "values/mean", "kl", "entropy", "reward/mean"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
        for key in ("clip/low", "clip/high", "value_clipfrac"):  # the same tokens clipped
            assert b[key] == a[key], key
    assert m1[1]["clip/low"] + m1[1]["clip/high"] > 0 and m1[0]["value_clipfrac"] > 0


def test_ppo_tiny_under_zero2_and_the_deepspeed_launcher(tmp_path):
    out = tmp_path / "z2"
    r = torchrun(["-m", "reasoner", "train", "--config", str(PPO_TINY), "--output-dir", str(out),
                  "--deepspeed", str(ROOT / "configs/zero2.json"), "--no-progress", DIGITS,
                  "algo.adap_kl_ctrl=true"], out, launcher="deepspeed")
    assert r.stdout.count("done: 4 steps") == 1
    recs = read_metrics(out / "metrics.jsonl")
    assert [x["step"] for x in recs] == [1, 2, 3, 4]
    assert all(x["grad_norm"] > 0 and x["critic/grad_norm"] > 0 for x in recs)
    ck = out / "checkpoint-4"
    for f in ("deepspeed", "critic/deepspeed", "rng-rank0.pt", "rng-rank1.pt"):
        assert (ck / f).exists(), f
    state = json.loads((ck / "trainer_state.json").read_text())
    assert state["kl_controller"]["value"] != 0.05
    assert max_diff(weights(out / "final"), weights(out / "init_model")) > 1e-4
    assert weights(out / "final_critic")["score.weight"].abs().sum() > 0


def test_ppo_zero3_run_killed_mid_checkpoint_resumes_to_the_uninterrupted_weights(tmp_path):
    base = ["-m", "reasoner", "train", "--config", str(PPO_TINY), "--deepspeed",
            str(ROOT / "configs/zero3.json"), "--no-progress", DIGITS, "algo.adap_kl_ctrl=true",
            "algo.kl_target=0.01", "algo.kl_horizon=100"]
    full = tmp_path / "full"
    torchrun([*base, "--output-dir", str(full)], full)
    cut = tmp_path / "cut"
    r = torchrun([*base, "--output-dir", str(cut)], cut,
                 env_extra={"REASONER_DEBUG_KILL": "save:4"}, check=False)
    assert r.returncode != 0
    assert (cut / "checkpoint-2" / "critic" / "deepspeed").is_dir()
    assert not (cut / "checkpoint-4").exists()
    torchrun([*base, "--output-dir", str(cut), "--resume"], cut)
    for d in ("final", "final_critic"):
        assert max_diff(weights(full / d), weights(cut / d)) == 0.0, d
    m_full, m_cut = read_metrics(full / "metrics.jsonl"), read_metrics(cut / "metrics.jsonl")
    assert [x["kl_coef"] for x in m_cut] == [x["kl_coef"] for x in m_full]
    assert len({x["kl_coef"] for x in m_full}) == 4  # the controller state came back
    assert m_full[0]["kl"] == pytest.approx(0.0, abs=1e-6) and m_full[-1]["kl"] != 0
