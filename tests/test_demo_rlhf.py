"""`reasoner demo rlhf` at tiny settings: the summary's fields and how they tie together, the
plots, the no-KL run really without the penalty, the rounds continuing one PPO run whose KL
reference stays the warm start; the recipe file and its errors."""

import copy
import json
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from reasoner.config import ConfigError, config_from_dict
from reasoner.demo_rlhf import (
    DEMO_KEYS,
    RLHF_RECIPE,
    SUMMARY_KEYS,
    build_recipe,
    run_rlhf_demo,
    step_plan,
)
from reasoner.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
ROUND_KEYS = {"round", "true_score_before", "true_score_after", "rm_score_before",
              "rm_score_after", "rm_accuracy", "annotator_accuracy", "kl_after",
              "rm_0_score_after", "reward_model", "ppo_steps",
              "rm_accuracy_by_annotator_confidence"}

TINY = {
    "demo": {"seed": 0, "sft_rows": 64, "sft_steps": 40, "rm_sft_steps": 60, "sft_batch_size": 16,
             "sft_lr": 1e-2, "sft_lr_scheduler_type": "constant_with_warmup",
             "sft_label_smoothing": 0.0, "k": 3, "noise_temperature": 0.05, "rm_prompts": 8,
             "round_prompts": 6, "eval_prompts": 6, "rounds": 1, "round_rm_steps": 2,
             "round_ppo_steps": 2, "no_kl": True, "parallel": True, "torch_threads": 1},
    "model": {"path": "tiny", "tiny_hidden_size": 32, "tiny_num_layers": 1, "tiny_num_heads": 2,
              "tiny_num_kv_heads": 1, "tiny_max_position_embeddings": 64},
    "data": {"task": "arithmetic", "task_options": {"ops": ["+"], "digits": 1},
             "num_train_rows": 40, "template": "r1_short"},
    "reward_model": {
        "rm": {"max_length": 64},
        "train": {"max_steps": 3, "device": "cpu", "per_device_train_batch_size": 4,
                  "learning_rate": 1e-3, "save_steps": 0, "report_to_tensorboard": False}},
    "ppo": {
        "rewards": {"names": ["reward_model"]},
        "rollout": {"num_generations": 2, "max_completion_length": 10},
        "algo": {"name": "ppo", "num_ppo_epochs": 1, "num_mini_batches": 1, "kl_coef": 0.05,
                 "kl_estimator": "k1"},
        "train": {"max_steps": 2, "device": "cpu", "per_device_train_batch_size": 4,
                  "learning_rate": 1e-2, "lr_scheduler_type": "constant", "save_steps": 0,
                  "report_to_tensorboard": False}},
}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rlhf")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out = tmp / "demo"
    summary = run_rlhf_demo(out, config_path=recipe, progress=False)
    return out, summary


def test_summary_has_the_issues_fields_and_they_tie_together(demo_run):
    out, s = demo_run
    assert json.loads((out / "summary.json").read_text()) == s
    assert tuple(s) == SUMMARY_KEYS
    rounds = s["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and set(rounds[0]) == ROUND_KEYS
    assert set(rounds[1]) == ROUND_KEYS | {"rm_accuracy_before_update"}
    assert [r["reward_model"] for r in rounds] == ["rm-0", "rm-1"]
    assert [r["ppo_steps"] for r in rounds] == [2, 2]
    # each round starts where the last ended; the top level is the first start and last end
    assert rounds[1]["true_score_before"] == rounds[0]["true_score_after"]
    assert (s["true_score_before"], s["true_score_after"], s["kl_after"]) == (
        rounds[0]["true_score_before"], rounds[1]["true_score_after"], rounds[1]["kl_after"])
    # round 0's reward model is the top level's scale
    assert s["rm_score_before"] == rounds[0]["rm_score_before"]
    assert s["rm_score_after"] == rounds[1]["rm_0_score_after"]
    assert (s["rm_accuracy"], s["annotator_accuracy"]) == (rounds[1]["rm_accuracy"],
                                                           rounds[1]["annotator_accuracy"])
    for r in rounds:
        for k in ("true_score_before", "true_score_after"):
            assert 0.0 <= r[k] <= 1.0
        for k in ("rm_accuracy", "annotator_accuracy"):
            assert 0.0 <= r[k] <= 1.0
        assert r["annotator_accuracy"] >= 0.5  # Bayes-optimal: never below chance
        # the gap split by the annotator's confidence adds up to the whole gap
        groups = r["rm_accuracy_by_annotator_confidence"]
        assert sum(g["pairs"] for g in groups) > 0
        assert sum(g["gap_points"] for g in groups) == pytest.approx(
            100 * (r["annotator_accuracy"] - r["rm_accuracy"]))
        assert all(math.isfinite(r[k]) for k in ("rm_score_before", "rm_score_after",
                                                 "kl_after"))
    nk = s["no_kl"]
    assert set(nk) == {k for k in SUMMARY_KEYS if k not in ("no_kl", "wall_seconds")}
    assert [r["reward_model"] for r in nk["rounds"]] == ["rm-0", "rm-0"]
    # the same start as the main run, judged by the same (round 0's) reward model
    assert (nk["true_score_before"], nk["rm_score_before"]) == (s["true_score_before"],
                                                                s["rm_score_before"])
    assert nk["rounds"][1]["true_score_before"] == nk["rounds"][0]["true_score_after"]
    assert nk["true_score_after"] == nk["rounds"][-1]["true_score_after"]
    assert s["wall_seconds"] > 0


def test_evaluations_measure_what_they_say(demo_run):
    out, s = demo_run
    details = json.loads((out / "details.json").read_text())
    evals = details["evaluations"]
    assert [e["policy"] for e in evals] == ["sft", "ppo-0", "ppo-1"]
    assert evals[0]["kl"] == 0.0  # the warm start against itself
    assert [e["true_score"] for e in evals] == [s["true_score_before"],
                                                s["rounds"][0]["true_score_after"],
                                                s["true_score_after"]]
    assert evals[0]["samples"] == TINY["demo"]["eval_prompts"] * TINY["demo"]["k"]
    # the reward model trainer's own held-out evaluation (round 0's model on the warm start's
    # rankings) and the demo's evaluation of the same model on the same file agree
    rm0 = json.loads((out / "rm-0" / "eval.json").read_text())
    assert rm0["dataset"] == evals[0]["rankings"]
    assert rm0["accuracy"] == pytest.approx(s["rounds"][0]["rm_accuracy"], abs=1e-9)
    assert rm0["bayes_accuracy"] == pytest.approx(s["rounds"][0]["annotator_accuracy"])
    # the true score is the annotator's utility: every ranked completion's utility is one of
    # the utilities the mean was taken over (distinct completions of the first draws or resamples)
    ranked = [json.loads(line) for line in Path(evals[0]["rankings"]).read_text().splitlines()]
    assert ranked and all(0.0 <= u <= 1.0 for r in ranked for u in r["utilities"])


def test_the_reward_models_backbone_is_the_warm_starts_sft_run_continued(demo_run):
    """The policy is the SFT run at sft_steps; round 0's reward model starts from the same run
    at rm_sft_steps (its weights differ from the policy's); the KL reference stays the policy."""
    import torch
    from safetensors.torch import load_file

    out, _ = demo_run
    details = json.loads((out / "details.json").read_text())
    assert details["sft"]["steps"] == TINY["demo"]["rm_sft_steps"]
    assert details["sft"]["loss_policy"] > details["sft"]["loss_last"]
    rm0 = yaml.safe_load((out / "rm-0" / "config.yaml").read_text())
    assert rm0["model"]["path"] == str(out / "rm_sft")
    policy = load_file(out / "sft" / "model.safetensors")
    backbone = load_file(out / "rm_sft" / "model.safetensors")
    assert policy.keys() == backbone.keys()
    assert any(not torch.equal(policy[k], backbone[k]) for k in policy)
    main_cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert main_cfg["model"]["path"] == str(out / "sft")


def test_the_no_kl_run_has_no_penalty_and_the_main_run_keeps_its_reference(demo_run):
    out, s = demo_run
    main_cfg = yaml.safe_load((out / "config.yaml").read_text())
    nk_cfg = yaml.safe_load((out / "no_kl" / "config.yaml").read_text())
    assert main_cfg["algo"]["kl_coef"] == 0.05 and nk_cfg["algo"]["kl_coef"] == 0.0
    assert nk_cfg["algo"]["adap_kl_ctrl"] is False
    assert nk_cfg["rewards"]["reward_model_path"] == str(out / "rm-0" / "final")
    # the main run ends against the last round's reward model; both critics from round 0's
    assert main_cfg["rewards"]["reward_model_path"] == str(out / "rm-1" / "final")
    assert main_cfg["critic"]["model_path"] == nk_cfg["critic"]["model_path"] == str(
        out / "rm-0" / "final")
    # round 1's reward model: round 0's, trained on round 1's new rankings (the current
    # policy's samples) alone
    rm1 = yaml.safe_load((out / "rm-1" / "config.yaml").read_text())
    assert rm1["model"]["path"] == str(out / "rm-0" / "final")
    assert rm1["rm"]["dataset_path"] == str(out / "prefs" / "train-1.jsonl")
    assert rm1["train"]["max_steps"] == TINY["demo"]["round_rm_steps"]
    nk = read_metrics(out / "no_kl" / "metrics.jsonl")
    assert [r["step"] for r in nk] == [1, 2, 3, 4]
    assert all(r["kl_coef"] == 0.0 and r["kl"] == 0.0 for r in nk)
    m = read_metrics(out / "metrics.jsonl")
    # one PPO run over both rounds (resumed, not restarted)
    assert [r["step"] for r in m] == [1, 2, 3, 4] == list(range(1, step_plan(
        build_recipe(TINY)).pop() + 1))
    assert all(r["kl_coef"] == 0.05 for r in m)
    assert m[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts at its reference
    # round 1's first step: the policy has moved and the reference is still the warm start
    assert m[2]["kl"] > 1e-4


def test_plots_are_written(demo_run):
    out, _ = demo_run
    for name in ("scores_vs_kl.png", "rounds.png", "reward.png", "kl.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name


def test_rlhf_demo_yaml_is_the_embedded_recipe_and_valid():
    data = yaml.safe_load((ROOT / "configs" / "rlhf_demo.yaml").read_text())
    assert data == RLHF_RECIPE
    assert set(data["demo"]) == DEMO_KEYS
    recipe = build_recipe(data)
    assert recipe.ppo.algo.name == "ppo" and recipe.ppo.algo.kl_coef > 0
    assert recipe.rm.algo.name == "rm"
    assert step_plan(recipe)[-1] == recipe.ppo.train.max_steps + data["demo"]["rounds"] * data[
        "demo"]["round_ppo_steps"]
    # --seed reaches the model's initialisation and every trainer
    seeded = build_recipe(data, seed=7)
    assert (seeded.seed, seeded.ppo.model.tiny_seed, seeded.ppo.train.seed,
            seeded.rm.train.seed) == (7, 7, 7, 7)


@pytest.mark.parametrize("change, message", [
    (lambda r: r["demo"].update(bogus=1), "unknown demo keys ['bogus']"),
    (lambda r: r.update(extra={}), "unknown recipe sections ['extra']"),
    (lambda r: r["demo"].update(rounds=-1), "demo.rounds must be an integer >= 0"),
    (lambda r: r["demo"].update(k=1), "demo.k must be an integer >= 2"),
    (lambda r: r["demo"].update(rm_sft_steps=r["demo"]["sft_steps"] - 1),
     "demo.rm_sft_steps must be >= demo.sft_steps"),
    (lambda r: r["demo"].update(sft_lr_scheduler_type="step"),
     "demo.sft_lr_scheduler_type must be one of"),
    (lambda r: r["demo"].update(sft_lr=0), "demo.sft_lr must be a number > 0"),
    (lambda r: r["demo"].update(sft_label_smoothing=-0.1),
     "demo.sft_label_smoothing must be a number >= 0"),
    (lambda r: r["ppo"]["rewards"].update(names=["integer_exact"]),
     "ppo.rewards.names must include reward_model"),
    (lambda r: r["ppo"]["algo"].update(kl_coef=0.0), "ppo.algo.kl_coef must be > 0"),
    (lambda r: r["ppo"]["algo"].update(name="grpo"), "ppo.algo.name must be one of"),
    (lambda r: r["ppo"]["train"].update(lr_scheduler_type="linear"),
     "ppo.train.lr_scheduler_type must be one of"),
    (lambda r: r["ppo"].update(model={"path": "x"}), "ppo: sections ['model'] are not"),
    (lambda r: r["reward_model"]["train"].update(learning_rate=-1.0),
     "reward_model: train.learning_rate"),
    (lambda r: r.update(demo=[1, 2]), "demo: expected a mapping, got [1, 2]"),
    (lambda r: r["ppo"].update(critic={"shared_trunk": True}),
     "ppo.critic.shared_trunk must be false"),
    (lambda r: r.update(model=5), "model: expected a mapping, got 5"),
    (lambda r: r.pop("model") and r.pop("data"),
     "recipe sections ['data', 'model'] are missing: a recipe is a whole one"),
])
def test_recipe_errors_name_the_field(change, message):
    recipe = copy.deepcopy(RLHF_RECIPE)
    change(recipe)
    with pytest.raises(ConfigError) as e:
        build_recipe(recipe)
    assert message in str(e.value)


def test_cli_refuses_a_bad_recipe_before_training(tmp_path):
    from reasoner.cli import app

    recipe = copy.deepcopy(RLHF_RECIPE)
    recipe["demo"]["bogus"] = 1
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    r = CliRunner().invoke(app, ["demo", "rlhf", "--config", str(tmp_path / "r.yaml"),
                                 "--output-dir", str(tmp_path / "out")])
    assert r.exit_code == 2 and "unknown demo keys ['bogus']" in r.output
    assert not (tmp_path / "out").exists()
    for text, message in (("demo: [1", "is not valid YAML"), ("demo: {rounds: 1}\n",
                                                            "recipe sections ['data', 'model', "
                                                            "'ppo', 'reward_model'] are missing")):
        (tmp_path / "bad.yaml").write_text(text)
        r = CliRunner().invoke(app, ["demo", "rlhf", "--config", str(tmp_path / "bad.yaml"),
                                     "--output-dir", str(tmp_path / "out")])
        assert r.exit_code == 2 and message in r.output, r.output
    r = CliRunner().invoke(app, ["demo", "rlhf", "--config", str(tmp_path / "nope.yaml"),
                                 "--output-dir", str(tmp_path / "out")])
    assert r.exit_code == 2 and "nope.yaml' does not exist" in r.output
    assert not (tmp_path / "out").exists()
    r = CliRunner().invoke(app, ["demo", "dpo"])
    assert r.exit_code == 2 and "unknown demo 'dpo'" in r.output


def test_the_stage_configs_are_plain_configs():
    """What the demo runs is an ordinary config: a user reruns a stage by hand from the file."""
    recipe = build_recipe(RLHF_RECIPE)
    for cfg in (recipe.rm, recipe.ppo):
        assert config_from_dict(cfg.to_dict()) == cfg


def test_the_no_kl_worker_exits_when_the_demo_is_killed(tmp_path):
    """kill -9 of the demo must not leave its second process training on: the worker watches
    its parent (exit_with_parent) and ends when the parent is gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "worker.pid"
    script = tmp_path / "parent.py"  # spawn pickles `work` by its module: a file, not -c
    script.write_text(f"""
import multiprocessing, os, time
from reasoner.demo_rlhf import exit_with_parent

def work(parent_pid):
    exit_with_parent(parent_pid, every=0.1)
    open({str(pid_file)!r}, "w").write(str(os.getpid()))
    time.sleep(600)

if __name__ == "__main__":
    p = multiprocessing.get_context("spawn").Process(target=work, args=(os.getpid(),))
    p.start()
    time.sleep(600)
""")
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        for _ in range(300):
            if pid_file.is_file() and pid_file.read_text():
                break
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        for _ in range(100):
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)
            raise AssertionError("the worker outlived its parent by 10 s")
    finally:
        parent.kill()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CPU-only check")
def test_a_stage_on_cuda_without_a_gpu_is_refused_before_any_work():
    recipe = copy.deepcopy(RLHF_RECIPE)
    recipe["reward_model"]["train"]["device"] = "cuda"
    with pytest.raises(ConfigError, match="reward_model.train.device=cuda, but torch sees no "
                                          "CUDA device"):
        build_recipe(recipe)
