"""The demo through public APIs: the configured model is warm-started and saved, and the trainer
starts from that directory, so its KL reference is the warm-started policy (not the model before
SFT)."""

import json

import pytest
import yaml
from safetensors.torch import load_file

from reasoner.demo import run_demo
from reasoner.metrics import read_metrics

RECIPE = {
    "demo": {"sft_rows": 40, "sft_steps": 5, "sft_batch_size": 8, "sft_lr": 3e-3,
             "eval_rows": 4, "eval_temperature": 1.0, "eval_samples": 2,
             "eval_max_new_tokens": 6, "torch_threads": 1},
    "model": {"path": "tiny", "tiny_hidden_size": 32, "tiny_num_layers": 1, "tiny_num_heads": 2,
              "tiny_num_kv_heads": 1, "tiny_max_position_embeddings": 64},
    "data": {"task": "arithmetic", "task_options": {"ops": ["+"], "digits": 1},
             "num_train_rows": 40, "template": "r1_short"},
    "rewards": {"names": ["toy_rewards:digit_reward"]},  # a reward the samples vary on
    "rollout": {"num_generations": 4, "max_completion_length": 6},
    "algo": {"beta": 0.1},
    "train": {"max_steps": 2, "device": "cpu", "per_device_train_batch_size": 8,
              "learning_rate": 1e-2, "save_steps": 0, "report_to_tensorboard": False},
}


def test_the_trainer_starts_from_the_warm_started_model(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    out = tmp_path / "demo"
    summary = run_demo(out, config_path=recipe, progress=False)
    assert summary["grpo_steps"] == 2 and summary["config"]["model"]["path"] == str(
        out / "sft_model")
    init, sft = load_file(out / "init_model" / "model.safetensors"), load_file(
        out / "sft_model" / "model.safetensors")
    assert any((init[k] - sft[k]).abs().max() > 0 for k in init)  # SFT moved the weights
    recs = read_metrics(out / "metrics.jsonl")
    # the reference is the warm-started policy: no KL at the first step, then the policy moves
    assert recs[0]["kl"] == pytest.approx(0.0, abs=1e-7) and recs[1]["kl"] > 1e-5
    assert json.loads((out / "summary.json").read_text())["accuracy_after"] >= 0.0
