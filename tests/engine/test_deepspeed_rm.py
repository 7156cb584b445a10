"""`reasoner rm` under DeepSpeed ZeRO-3 with 2 CPU ranks (torchrun, gloo): the same weights as one
process on the same global batch (the loss is normalised by the pairs of all ranks); final/ is
a consolidated sequence-classification model with eval.json; and that reward model, sharded like
the KL reference, scores completions in a 2-rank ZeRO-3 GRPO run."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

from test_deepspeed import max_diff, torchrun, weights  # noqa: E402

from reasoner.config import load_config  # noqa: E402
from reasoner.metrics import read_metrics  # noqa: E402
from reasoner.trainers import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
TINY = ROOT / "configs" / "tiny.yaml"


def test_zero3_reward_model_equals_one_process_and_serves_as_a_zero3_reward(tmp_path):
    sys.path.insert(0, str(TESTS / "trainers"))
    from test_reward_trainer import TINY_RM, write_rankings

    data = write_rankings(tmp_path / "prefs.jsonl", 24)
    common = [*TINY_RM, f"rm.dataset_path={data}", "train.max_steps=2", "rm.eval_fraction=0.25",
              "train.learning_rate=0.01", "train.adam_epsilon=1e-4", "train.save_steps=2",
              "train.gradient_accumulation_steps=2"]
    one, two = tmp_path / "one", tmp_path / "two"
    # one process: 4 records per micro-batch; two ranks: 2 each (the same global batch)
    train(load_config(None, [*common, f"train.output_dir={one}",
                             "train.per_device_train_batch_size=4"]), progress=False)
    torchrun(["-m", "reasoner", "rm", "--no-progress", "--output-dir", str(two),
              "--deepspeed", str(ROOT / "configs" / "zero3.json"),
              *[x for x in common if not x.startswith("algo.")],
              "train.per_device_train_batch_size=2"], two)
    w_init, w1, w2 = weights(one / "init_model"), weights(one / "final"), weights(two / "final")
    assert "score.weight" in w2
    assert max_diff(w1, w_init | {'score.weight': w1['score.weight'] * 0}) > 1e-3
    assert max_diff(w1, w2) < 5e-6
    m1, m2 = read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    for a, b in zip(m1, m2):
        assert a["pairs"] == b["pairs"] == 4 * 2 * 6
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    e1, e2 = (json.loads((p / "eval.json").read_text()) for p in (one, two))
    assert e1["num_pairs"] == e2["num_pairs"] > 0
    assert e2["accuracy"] == pytest.approx(e1["accuracy"], abs=1e-9)
    assert (two / "checkpoint-2" / "deepspeed").is_dir()

    grpo = tmp_path / "grpo"
    torchrun(["-m", "reasoner", "train", "--config", str(TINY), "--no-progress", "--output-dir",
              str(grpo), "--deepspeed", str(ROOT / "configs" / "zero3.json"),
              "rewards.names=[toy_rewards:digit_reward, reward_model]",
              "rewards.reward_weights=[1.0, 0.5]", f"rewards.reward_model_path={two / 'final'}",
              "rewards.reward_model_batch_size=3", "train.max_steps=2", "train.save_steps=0",
              "train.report_to_tensorboard=false"], grpo)
    m = read_metrics(grpo / "metrics.jsonl")
    assert [r["step"] for r in m] == [1, 2]
    assert all(r["rewards/reward_model/std"] > 0 for r in m)
