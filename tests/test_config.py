"""Config: YAML + dotted overrides, validation messages that name the field, CLI help."""

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reasoner.cli import app
from reasoner.config import (
    Config,
    ConfigError,
    config_from_dict,
    describe_config,
    load_config,
    validate,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def test_defaults_are_valid_and_follow_trl_names():
    cfg = Config()
    validate(cfg)
    g = cfg.grpo
    for name in ("num_generations", "max_completion_length", "beta", "epsilon", "epsilon_high",
                 "num_iterations", "loss_type", "scale_rewards", "mask_truncated_completions",
                 "temperature", "learning_rate", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "max_grad_norm", "delta", "top_p", "top_k"):
        assert hasattr(g, name), name


def test_yaml_and_overrides_are_typed():
    cfg = load_config(TINY, ["grpo.beta=0.04", "grpo.loss_type=grpo", "model.path=/x/y",
                             "data.task_options.digits=2", "rewards.names=[format_soft]",
                             "grpo.epsilon_high=null", "grpo.learning_rate=1"])
    assert cfg.grpo.beta == 0.04
    assert cfg.grpo.loss_type == "grpo"
    assert cfg.model.path == "/x/y"
    assert cfg.data.task_options == {"ops": ["+"], "digits": 2}  # merged into the file's dict
    assert cfg.rewards.names == ["format_soft"]
    assert cfg.grpo.epsilon_high is None
    assert cfg.grpo.learning_rate == 1.0 and isinstance(cfg.grpo.learning_rate, float)
    assert cfg.grpo.num_generations == 4  # from the file


@pytest.mark.parametrize(
    "override, message",
    [
        ("grpo.betta=0.1", "unknown config key grpo.betta"),
        ("trainer.beta=0.1", "unknown config section 'trainer'"),
        ("grpo.beta=abc", "grpo.beta: expected a number"),
        ("grpo.num_generations=2.5", "grpo.num_generations: expected an integer"),
        ("grpo.bf16=1", "grpo.bf16: expected true/false"),
        ("grpo.beta=-1", "grpo.beta must be >= 0"),
        ("grpo.epsilon=1.5", "grpo.epsilon must be in (0, 1)"),
        ("grpo.delta=0.5", "grpo.delta (dual clip) must be > 1"),
        ("grpo.loss_type=ppo", "grpo.loss_type must be one of grpo, bnpo, dr_grpo, dapo"),
        ("grpo.scale_rewards=std", "grpo.scale_rewards must be one of"),
        ("grpo.kl_estimator=k4", "grpo.kl_estimator must be one of k1, k2, k3"),
        ("grpo.num_generations=1", "grpo.num_generations must be >= 2"),
        ("grpo.num_generations=3", "must be divisible by grpo.num_generations"),
        ("grpo.loss_type=dr_grpo", "set grpo.scale_rewards=none"),
        ("grpo.kl_in_reward=true", "grpo.kl_in_reward needs grpo.beta > 0"),
        ("grpo.overlong_buffer_len=100", "grpo.overlong_buffer_len must be in [1, max_completion_length"),
        ("grpo.lr_scheduler_type=step", "grpo.lr_scheduler_type must be one of"),
        ("grpo.save_total_limit=0", "grpo.save_total_limit must be >= 1"),
        ("grpo.max_steps=0", "grpo.max_steps must be >= 1"),
        ("grpo.top_p=0", "grpo.top_p must be in (0, 1]"),
        ("model.tiny_arch=gpt2", "model.tiny_arch must be one of qwen2, llama"),
        ("data.template=fancy", "data.template must be one of"),
        ("data.dataset_path=x.jsonl", "data.task and data.dataset_path are exclusive"),
        ("rewards.names=[nope]", "rewards.names[0]: unknown reward function 'nope'"),
        ("rewards.names=[nomodule_xyz:f]", "rewards.names[0]: reward function 'nomodule_xyz:f': cannot import"),
        ("rewards.reward_weights=[1.0]", "rewards.reward_weights needs rewards.names"),
        ("lora.dropout=1.0", "lora.dropout must be in [0, 1)"),
        ("grpo.beta", "must look like section.field=value"),
        ("beta=1", "must be section.field"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(TINY, [override])
    assert message in str(e.value)


def test_reward_weights_length_must_match():
    with pytest.raises(ConfigError, match="rewards.reward_weights has 1 values for 2"):
        config_from_dict({"rewards": {"names": ["format_soft", "format_strict"],
                                      "reward_weights": [1.0]}})


def test_bad_yaml_file_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("grpo: 3\n")
    with pytest.raises(ConfigError, match="grpo: expected a mapping"):
        load_config(bad)


def test_describe_config_lists_every_field_with_help():
    import dataclasses

    text = describe_config()
    for section in ("model", "lora", "data", "rewards", "grpo"):
        cls = type(getattr(Config(), section))
        for f in dataclasses.fields(cls):
            assert f"{section}.{f.name} (" in text
            assert f.metadata["help"]


def test_cli_train_help_documents_config_and_flags():
    r = CliRunner().invoke(app, ["train", "--help"], terminal_width=200)
    assert r.exit_code == 0
    for flag in ("--config", "--output-dir", "--max-steps", "--save-steps", "--seed", "--resume",
                 "--deepspeed", "--help-config"):
        assert flag in r.output
    assert "grpo.num_generations" in r.output and "grpo.loss_type" in r.output
    r = CliRunner().invoke(app, ["train", "--help-config"])
    assert r.exit_code == 0 and "grpo.kl_estimator" in r.output


def test_cli_train_bad_override_exits_2_naming_field():
    r = CliRunner().invoke(app, ["train", "--config", str(TINY), "grpo.beta=-2"])
    assert r.exit_code == 2
    assert "grpo.beta must be >= 0" in r.output


def test_cli_bad_deepspeed_config_exits_2_naming_it(tmp_path):
    def run(path):
        return CliRunner().invoke(app, ["train", "--config", str(TINY), "--output-dir",
                                        str(tmp_path / "out"), "--deepspeed", str(path)])

    r = run(tmp_path / "missing.json")
    assert r.exit_code == 2 and "missing.json': no such file" in r.output
    (tmp_path / "bad.json").write_text("{not json")
    r = run(tmp_path / "bad.json")
    assert r.exit_code == 2 and "bad.json" in r.output and "not valid JSON" in r.output
    (tmp_path / "mb.json").write_text('{"train_micro_batch_size_per_gpu": 3}')
    r = run(tmp_path / "mb.json")
    assert r.exit_code == 2
    assert "train_micro_batch_size_per_gpu=3 contradicts grpo.per_device_train_batch_size=4" \
        in r.output
    assert not (tmp_path / "out" / "init_model").exists()  # failed before loading anything


def test_demo_yaml_is_the_embedded_recipe_and_valid():
    import yaml

    from reasoner.demo import DEMO_KEYS, DEMO_RECIPE

    data = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    assert data == DEMO_RECIPE
    assert set(data["demo"]) == DEMO_KEYS
    cfg = config_from_dict({k: v for k, v in data.items() if k != "demo"})
    assert cfg.grpo.max_steps >= 1


def test_deepspeed_launchers_local_rank_argument_is_taken_out(monkeypatch):
    from reasoner.cli import strip_local_rank

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert strip_local_rank(["--local_rank=1", "train", "--config", "c.yaml"]) == [
        "train", "--config", "c.yaml"]
    assert os.environ["LOCAL_RANK"] == "1"
    assert strip_local_rank(["train", "--local-rank", "3", "x=1"]) == ["train", "x=1"]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")
                                          if p.name != "demo.yaml"))  # demo: its own test
def test_every_shipped_config_is_valid_and_its_rewards_resolve(name):
    from reasoner.config import resolve_reward

    cfg = load_config(ROOT / "configs" / name)
    for reward in cfg.rewards.names:
        assert callable(resolve_reward(reward))
