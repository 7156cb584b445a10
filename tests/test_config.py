"""Config: YAML + dotted overrides, validation messages that name the field, CLI help."""

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reasoner.cli import app
from reasoner.config import (
    Config,
    ConfigError,
    apply_overrides,
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
    for section, names in (
            ("rollout", ("num_generations", "max_completion_length", "temperature", "top_p",
                         "top_k")),
            ("algo", ("beta", "epsilon", "epsilon_high", "num_iterations", "loss_type",
                      "scale_rewards", "mask_truncated_completions",
                      # TRL's PPOConfig
                      "num_ppo_epochs", "num_mini_batches", "cliprange", "cliprange_value",
                      "vf_coef", "gamma", "lam", "kl_coef", "kl_estimator", "whiten_rewards",
                      "missing_eos_penalty")),
            ("train", ("learning_rate", "per_device_train_batch_size",
                       "gradient_accumulation_steps", "max_grad_norm", "lr_scheduler_type",
                       "warmup_ratio", "warmup_steps", "max_steps", "seed", "bf16"))):
        for name in names:
            assert hasattr(getattr(cfg, section), name), f"{section}.{name}"


def test_yaml_and_overrides_are_typed():
    cfg = load_config(TINY, ["algo.beta=0.04", "algo.loss_type=grpo", "model.path=/x/y",
                             "data.task_options.digits=2", "rewards.names=[format_soft]",
                             "algo.epsilon_high=null", "train.learning_rate=1"])
    assert cfg.algo.beta == 0.04
    assert cfg.algo.loss_type == "grpo"
    assert cfg.model.path == "/x/y"
    assert cfg.data.task_options == {"ops": ["+"], "digits": 2}  # merged into the file's dict
    assert cfg.rewards.names == ["format_soft"]
    assert cfg.algo.epsilon_high is None
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)
    assert cfg.rollout.num_generations == 4  # from the file
    # YAML 1.1 reads an unquoted off as false: a string field takes the word back
    assert load_config(TINY, ["model.lean_forward=off"]).model.lean_forward == "off"


def test_a_file_with_the_old_grpo_section_reads_the_same():
    """Files and command lines written before the split into rollout / algo / train still
    work: each grpo.<field> goes to its section."""
    old = {"data": {"task": "arithmetic"},
           "grpo": {"num_generations": 4, "beta": 0.04, "loss_type": "grpo",
                    "learning_rate": 0.5, "per_device_train_batch_size": 8,
                    "output_dir": "somewhere"}}
    new = {"data": {"task": "arithmetic"}, "rollout": {"num_generations": 4},
           "algo": {"beta": 0.04, "loss_type": "grpo"},
           "train": {"learning_rate": 0.5, "per_device_train_batch_size": 8,
                     "output_dir": "somewhere"}}
    assert config_from_dict(old) == config_from_dict(new)
    # an override of either spelling replaces the file's value
    assert load_config(None, ["grpo.beta=0.1"]).algo.beta == 0.1
    over = apply_overrides(old, ["algo.beta=0.2", "grpo.learning_rate=0.25"])
    cfg = config_from_dict(over)
    assert (cfg.algo.beta, cfg.train.learning_rate) == (0.2, 0.25)
    with pytest.raises(ConfigError, match="grpo.beta and algo.beta are both set"):
        config_from_dict({"grpo": {"beta": 0.1}, "algo": {"beta": 0.2}})
    with pytest.raises(ConfigError, match="grpo.delta meant dual-clip PPO; it is algo.dual_clip"):
        load_config(None, ["grpo.delta=3.0"])
    with pytest.raises(ConfigError, match="unknown config key grpo.betta"):
        load_config(None, ["grpo.betta=3.0"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.betta=0.1", "unknown config key algo.betta"),
        ("trainer.beta=0.1", "unknown config section 'trainer'"),
        ("algo.beta=abc", "algo.beta: expected a number"),
        ("rollout.num_generations=2.5", "rollout.num_generations: expected an integer"),
        ("train.bf16=1", "train.bf16: expected true/false"),
        ("algo.beta=-1", "algo.beta must be >= 0"),
        ("algo.epsilon=1.5", "algo.epsilon must be in (0, 1)"),
        ("algo.dual_clip=0.5", "algo.dual_clip must be > 1"),
        ("algo.delta=1.1", "algo.delta (TRL's two-sided ratio cap) must be > 1 + epsilon_high = "
                           "1.2, got 1.1"),
        ("algo.loss_type=ppo", "algo.loss_type must be one of grpo, dapo, dr_grpo, bnpo"),
        ("algo.scale_rewards=std", "algo.scale_rewards must be one of"),
        ("algo.kl_estimator=k4", "algo.kl_estimator must be one of k1, k2, k3"),
        ("algo.name=ppo_xyz", "algo.name: unknown algorithm 'ppo_xyz'; available: a2c, grpo, "
                              "ppo, reinforce_plus_plus, rloo"),
        ("algo.gamma=1.5", "algo.gamma must be in [0, 1], got 1.5"),
        ("algo.lam=-0.1", "algo.lam must be in [0, 1], got -0.1"),
        ("algo.cliprange=0", "algo.cliprange must be in (0, 1), got 0"),
        ("algo.cliprange_value=0", "algo.cliprange_value must be > 0"),
        ("algo.num_ppo_epochs=0", "algo.num_ppo_epochs must be >= 1, got 0"),
        ("algo.kl_target=0", "algo.kl_target must be > 0"),
        ("algo.ptx_coef=0.5", "algo.ptx_coef (PPO-ptx) needs algo.name ppo or a2c, got 'grpo'"),
        # a GRPO run with PPO's settings would ignore them
        ("algo.num_ppo_epochs=2", "algo.num_ppo_epochs: PPO / A2C settings (the critic, its "
                                  "epochs and mini-batches, its KL penalty in the reward), which "
                                  "algo.name=grpo does not read"),
        ("critic.learning_rate=1e-4", "critic.learning_rate: PPO / A2C settings"),
        ("algo.kl_coef=0.5", "algo.kl_coef: PPO / A2C settings (the critic, its epochs and "
                             "mini-batches, its KL penalty in the reward), which algo.name=grpo "
                             "does not read; remove them, or set algo.name ppo or a2c; this "
                             "algorithm's KL penalty is algo.beta"),
        ("critic.learning_rate=0", "critic.learning_rate must be > 0 or null, got 0"),
        ("algo.adv_estimator=nope", "algo.adv_estimator: unknown advantage estimator 'nope'"),
        ("algo.policy_loss=nope:f", "algo.policy_loss: policy loss 'nope:f': cannot import"),
        ("rollout.num_generations=1", "rollout.num_generations must be >= 2"),
        ("rollout.num_generations=3", "must be divisible by rollout.num_generations"),
        ("algo.loss_type=dr_grpo", "set algo.scale_rewards=none"),
        ("algo.kl_in_reward=true", "algo.kl_in_reward needs algo.beta > 0"),
        ("algo.overlong_buffer_len=100",
         "algo.overlong_buffer_len must be in [1, rollout.max_completion_length"),
        ("train.lr_scheduler_type=step", "train.lr_scheduler_type must be one of"),
        ("train.save_total_limit=0", "train.save_total_limit must be >= 1"),
        ("train.max_steps=0", "train.max_steps must be >= 1"),
        ("train.device=tpu", "train.device must be one of auto, cpu, cuda"),
        ("train.loss_backend=cuda", "train.loss_backend must be one of auto, triton, torch"),
        ("rollout.top_p=0", "rollout.top_p must be in (0, 1]"),
        ("model.tiny_arch=gpt3",
         "model.tiny_arch must be one of qwen2, llama, mistral, qwen3, gpt2"),
        ("model.dtype=int8", "model.dtype must be one of float32, bfloat16, float16"),
        ("model.dtype=float16", "model.dtype=float16 does not train here (fp16 gradients need "
                                "loss scaling, which is not implemented); use model.dtype=bfloat16"),
        ("lora.target_modules=3", "lora.target_modules: expected list[str] or str, got 3"),
        ("model.lean_forward=on", "model.lean_forward must be one of auto, off"),
        ("data.template=fancy", "data.template must be one of"),
        ("data.dataset_path=x.jsonl", "data.task and data.dataset_path are exclusive"),
        ("data.task=chess", "data.task: unknown task 'chess'; available: arithmetic, countdown"),
        # a config written for arithmetic, switched to countdown: one line naming the field
        ("data.task=countdown",
         "data.task_options {'ops': ['+'], 'digits': 1} do not fit data.task='countdown': bad "
         "option for task 'countdown'"),
        ("data.task_options.ops=[^]", "do not fit data.task='arithmetic': ops must be"),
        ("rewards.names=[nope]", "rewards.names[0]: unknown reward function 'nope'"),
        ("rewards.names=[nomodule_xyz:f]", "rewards.names[0]: reward function 'nomodule_xyz:f': cannot import"),
        ("rewards.reward_weights=[1.0]", "rewards.reward_weights needs rewards.names"),
        # an accuracy reward outside rewards.names is scored for the logs: it must be a verdict
        ("rewards.accuracy_reward=nope", "rewards.accuracy_reward: unknown reward function"),
        ("rewards.accuracy_reward=reward_model", "rewards.accuracy_reward 'reward_model' holds "
                                                 "a model: a learned score is not a verdict"),
        ("lora.dropout=1.0", "lora.dropout must be in [0, 1)"),
        # YAML reads {question:problem} (no space after the colon) as the key "question:problem"
        ("data.column_map={question:problem}", "data.column_map: the key 'question:problem' has "
         "no value: YAML reads {question:problem} as one key; put a space after the colon: "
         "{question: problem}"),
        ("data.task_options={digits:2}", "data.task_options: the key 'digits:2' has no value"),
        ("algo.beta", "must look like section.field=value"),
        ("beta=1", "must be section.field"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(TINY, [override])
    assert message in str(e.value)


def test_delta_must_exceed_one_plus_epsilon_high():
    with pytest.raises(ConfigError, match="must be > 1 \\+ epsilon_high = 1.28, got 1.25"):
        load_config(TINY, ["algo.epsilon_high=0.28", "algo.delta=1.25"])
    assert load_config(TINY, ["algo.epsilon_high=0.28", "algo.delta=1.5"]).algo.delta == 1.5


@pytest.mark.parametrize("overrides,message", [
    (["algo.adv_estimator=grpo"], "algo.adv_estimator must be null for algo.name=ppo: its "
                                  "advantages are GAE"),
    (["algo.beta=0.04"], "ppo's KL penalty is in the per-token reward: set algo.kl_coef"),
    (["algo.epsilon=0.3"], "algo.epsilon is GRPO's clip range; ppo's is algo.cliprange"),
    (["rollout.dynamic_sampling=true"], "rollout.dynamic_sampling refills zero-std groups"),
    (["critic.critic_warmup_steps=4"], "critic.critic_warmup_steps (4) must be < "
                                       "train.max_steps (4)"),
    (["critic.shared_trunk=true", "critic.critic_warmup_steps=1"],
     "critic.critic_warmup_steps needs a separate value model"),
    (["critic.shared_trunk=true", "critic.model_path=/rm"], "leave it null"),
    (["algo.adap_kl_ctrl=true", "algo.kl_coef=0"], "algo.adap_kl_ctrl scales algo.kl_coef, its "
                                                   "start: with kl_coef 0 it stays 0"),
])
def test_ppo_settings_that_do_not_fit_are_rejected(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(TINY, ["algo.name=ppo", *overrides])
    assert message in str(e.value)


def test_ppo_and_a2c_take_one_completion_per_prompt_grpo_does_not():
    assert load_config(TINY, ["algo.name=ppo", "rollout.num_generations=1"]).algo.name == "ppo"
    assert load_config(TINY, ["algo.name=a2c", "rollout.num_generations=1"]).algo.name == "a2c"
    with pytest.raises(ConfigError, match="rollout.num_generations must be >= 2"):
        load_config(TINY, ["algo.name=rloo", "rollout.num_generations=1"])


def test_the_accuracy_reward_may_be_one_the_run_does_not_train_on():
    cfg = load_config(TINY, ["rewards.names=[format_soft]", "rewards.accuracy_reward=integer_exact"])
    assert cfg.rewards.accuracy_reward == "integer_exact"
    assert load_config(TINY, ["rewards.accuracy_reward=none"]).rewards.accuracy_reward == "none"


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
    for section in ("model", "lora", "data", "rewards", "rollout", "algo", "train"):
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
    assert "rollout.num_generations" in r.output and "algo.loss_type" in r.output
    r = CliRunner().invoke(app, ["train", "--help-config"])
    assert r.exit_code == 0 and "algo.kl_estimator" in r.output


def test_cli_train_bad_override_exits_2_naming_field():
    r = CliRunner().invoke(app, ["train", "--config", str(TINY), "algo.beta=-2"])
    assert r.exit_code == 2
    assert "algo.beta must be >= 0" in r.output
    r = CliRunner().invoke(app, ["train", "--config", str(TINY), "data.task=countdown"])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "data.task_options" in r.output  # one line


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
    assert "train_micro_batch_size_per_gpu=3 contradicts train.per_device_train_batch_size=4" \
        in r.output
    assert not (tmp_path / "out" / "init_model").exists()  # failed before loading anything


def test_demo_yaml_is_the_embedded_recipe_and_valid():
    import yaml

    from reasoner.demo import DEMO_KEYS, DEMO_RECIPE

    data = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    assert data == DEMO_RECIPE
    assert set(data["demo"]) == DEMO_KEYS
    cfg = config_from_dict({k: v for k, v in data.items() if k != "demo"})
    assert cfg.train.max_steps >= 1


def test_deepspeed_launchers_local_rank_argument_is_taken_out(monkeypatch):
    from reasoner.cli import strip_local_rank

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert strip_local_rank(["--local_rank=1", "train", "--config", "c.yaml"]) == [
        "train", "--config", "c.yaml"]
    assert os.environ["LOCAL_RANK"] == "1"
    assert strip_local_rank(["train", "--local-rank", "3", "x=1"]) == ["train", "x=1"]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")
                                          # the demos' recipes: their own tests
                                          if p.name not in ("demo.yaml", "rlhf_demo.yaml")))
def test_every_shipped_config_is_valid_and_its_rewards_resolve(name):
    from reasoner.config import resolve_reward

    cfg = load_config(ROOT / "configs" / name)
    for reward in cfg.rewards.names:
        assert callable(resolve_reward(reward))
