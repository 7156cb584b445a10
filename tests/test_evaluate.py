"""Held-out evaluation: pass@k, accuracy over judged samples, and `reasoner sft` then
`reasoner eval` from the command line."""

import json

import pytest
from typer.testing import CliRunner

from reasoner.cli import app
from reasoner.evaluate import evaluate, pass_at_k
from reasoner.models import build_tiny_model, load_model_and_tokenizer
from reasoner.tasks.base import Task
from reasoner.verifiers.rewards import WeightedReward, register_reward


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=64, num_layers=2,
                            num_heads=4, num_kv_heads=2, max_position_embeddings=64)


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0  # fewer than k wrong samples
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


class _ScriptedTask(Task):
    """Its accuracy reward returns a fixed script of rewards, in order."""

    def __init__(self, script):
        super().__init__(name="scripted", accuracy_reward="scripted_reward")
        self.script = list(script)

        def reward(prompts, completions, **columns):
            out, self.script = self.script[: len(completions)], self.script[len(completions):]
            return out

        register_reward("scripted_reward", reward)


def test_evaluate_pass_at_k_and_accuracy(tiny_dir):
    model, tok = load_model_and_tokenizer(tiny_dir)
    rows = [{"question": "1+1", "answer": "2"}, {"question": "2+2", "answer": "4"},
            {"question": "3+3", "answer": "6"}]
    # row 0: 1 of 4 right, row 1: 2 of 4, row 2: unjudged sample -> left out of pass@k
    task = _ScriptedTask([1, 0, 0, 0, 1, 1, 0, 0, None, 1, 1, 1])
    ev = evaluate(model, tok, rows, task=task, num_samples=4, temperature=1.0,
                  max_new_tokens=4, batch_size=8, k_values=(1, 2, 4))
    assert ev["accuracy"] == pytest.approx(6 / 11)
    assert ev["unjudged"] == 1
    assert ev["pass@1"] == pytest.approx((0.25 + 0.5) / 2)
    assert ev["pass@2"] == pytest.approx(((1 - 3 / 6) + (1 - 1 / 6)) / 2)
    assert ev["pass@4"] == pytest.approx(1.0)
    assert 1.0 <= ev["mean_length"] <= 4.0 and 0.0 <= ev["truncated_rate"] <= 1.0
    with pytest.raises(ValueError, match="pass@8"):
        evaluate(model, tok, rows, task=task, num_samples=2, k_values=(8,), max_new_tokens=2)


def test_the_tasks_accuracy_is_scored_beside_rewards_that_do_not_include_it(tiny_dir):
    model, tok = load_model_and_tokenizer(tiny_dir)
    rows = [{"question": "1+1", "answer": "2"}, {"question": "2+2", "answer": "4"}]
    task = _ScriptedTask([1, 0, 1, 1])
    digits = WeightedReward("count_digits", lambda p, c, **k: [0.5] * len(c))
    ev = evaluate(model, tok, rows, task=task, reward_funcs=[digits], num_samples=2,
                  temperature=1.0, max_new_tokens=4)
    assert ev["accuracy"] == pytest.approx(3 / 4)  # the task's verdicts, not the 0.5s
    assert ev["rewards/count_digits"] == pytest.approx(0.5)


def test_cli_sft_then_eval(tiny_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "sft"
    res = runner.invoke(app, ["sft", "--model", str(tiny_dir), "--task", "arithmetic",
                              "--output-dir", str(out), "--max-steps", "3", "--n-train", "50",
                              "--batch-size", "4", "--task-option", "digits=[1,2]", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    js = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval", "--model", str(out), "--task", "countdown", "--n", "4",
                              "--num-samples", "2", "--temperature", "1.0", "--max-new-tokens", "8",
                              "--json", str(js)])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "pass@2" in res.output
    r = json.loads(js.read_text())
    assert r["n_rows"] == 4 and r["num_samples"] == 2 and 0.0 <= r["accuracy"] <= 1.0


def test_eval_on_a_dataset_with_the_training_config(tmp_path, monkeypatch):
    """`reasoner eval --config` on a dataset: the training config's column map, reward functions
    (the first is the accuracy) and template default (r1_zero for a dataset) are what it uses,
    and its numbers are `evaluate`'s with those; a task gets the task's template (as in
    training), and the context check covers eval's --max-new-tokens."""
    import yaml

    import reasoner.evaluate as ev_mod
    from reasoner.verifiers.rewards import resolve_rewards

    model_dir = build_tiny_model(tmp_path / "m", hidden_size=32, num_layers=1, num_heads=2,
                                 num_kv_heads=1, max_position_embeddings=512)
    rows = [{"problem": f"{i}+{i}", "solution": str(2 * i)} for i in range(5)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    names = ["toy_rewards:digit_reward", "format_soft"]
    cfg = {"data": {"task": None, "dataset_path": str(data),
                    "column_map": {"question": "problem", "answer": "solution"}},
           "rewards": {"names": names}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    templates = []
    real = ev_mod.render_prompt

    def spy(question, **kw):
        templates.append(kw["template"])
        return real(question, **kw)

    monkeypatch.setattr(ev_mod, "render_prompt", spy)
    js = tmp_path / "e.json"
    res = CliRunner().invoke(app, ["eval", "--model", str(model_dir), "--config",
                                   str(tmp_path / "train.yaml"), "--n", "3",
                                   "--max-new-tokens", "6", "--json", str(js)])
    assert res.exit_code == 0, res.output
    got = json.loads(js.read_text())
    assert set(templates) == {"r1_zero"}
    assert got["n_rows"] == 3 and got["unjudged"] == 0
    assert got["accuracy"] == got["rewards/toy_rewards:digit_reward"]
    model, tok = load_model_and_tokenizer(model_dir)
    ours = [{"question": r["problem"], "answer": r["solution"]} for r in rows[:3]]
    direct = evaluate(model, tok, ours, reward_funcs=resolve_rewards(names),
                      template="r1_zero", max_new_tokens=6, k_values=(1,))
    for key in ("accuracy", "rewards/format_soft", "mean_length", "pass@1"):
        assert got[key] == pytest.approx(direct[key]), key
    # a task: its own template default, as training has it
    templates.clear()
    res = CliRunner().invoke(app, ["eval", "--model", str(model_dir), "--task", "arithmetic",
                                   "--n", "2", "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert set(templates) == {"r1_short"}
    res = CliRunner().invoke(app, ["eval", "--model", str(model_dir), "--config",
                                   str(tmp_path / "train.yaml"), "--max-new-tokens", "500"])
    assert res.exit_code == 2 and "lower --max-new-tokens" in res.output, res.output


def test_eval_of_a_run_trained_on_a_reward_model(tiny_dir, tmp_path):
    """`reasoner eval --config` of a PPO run against a reward model: the reward model loads
    and scores the samples, and the accuracy is the task's (scored beside it); a reward-model
    path that is not a model directory is a ConfigError naming the field."""
    import yaml

    from reasoner.models.reward import encode_sequence, load_reward_model, score_sequences

    rm_model, rm_tok = load_reward_model(tiny_dir)  # a new head on the tiny model
    rm_dir = tmp_path / "rm"
    rm_model.save_pretrained(rm_dir)
    rm_tok.save_pretrained(rm_dir)
    cfg = {"data": {"task": "arithmetic", "task_options": {"ops": ["+"], "digits": 1},
                    "template": "r1_short"},
           "rewards": {"names": ["reward_model"], "reward_model_path": str(rm_dir)}}
    (tmp_path / "ppo.yaml").write_text(yaml.safe_dump(cfg))
    js = tmp_path / "e.json"
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_dir), "--config",
                                   str(tmp_path / "ppo.yaml"), "--n", "3", "--show", "3",
                                   "--max-new-tokens", "6", "--json", str(js)])
    assert res.exit_code == 0, res.output
    got = json.loads(js.read_text())
    # the samples' reward-model scores, recomputed; the accuracy: the task's verdicts
    prompts = [f"{s['question']}\n<think>" for s in got["samples"]]
    want = score_sequences(rm_model, [encode_sequence(rm_tok, p, s["completion"])
                                      for p, s in zip(prompts, got["samples"])],
                           rm_tok.pad_token_id, batch_size=8, device="cpu")
    assert got["rewards/reward_model"] == pytest.approx(sum(want) / len(want), abs=1e-5)
    assert got["rewards/integer_exact"] == got["accuracy"]
    assert [s["reward"] for s in got["samples"]] == [0.0, 0.0, 0.0]  # a random model's sums
    # trained with running normalization: eval has none of the run's moments, so the raw score
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_dir), "--config",
                                   str(tmp_path / "ppo.yaml"), "--n", "3", "--max-new-tokens",
                                   "6", "--json", str(js), "rewards.reward_model_normalize=true"])
    assert res.exit_code == 0, res.output
    assert json.loads(js.read_text())["rewards/reward_model"] == pytest.approx(
        got["rewards/reward_model"], abs=1e-5)
    bad = CliRunner().invoke(app, ["eval", "--model", str(tiny_dir), "--config",
                                   str(tmp_path / "ppo.yaml"), "--n", "2",
                                   f"rewards.reward_model_path={tmp_path / 'nope'}"])
    assert bad.exit_code != 0 and "rewards.reward_model_path" in bad.output
