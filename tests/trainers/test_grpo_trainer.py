"""The training loop on configs/tiny.yaml: metrics, checkpoints, final policy, exact kill -9 resume."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reasoner.config import load_config
from reasoner.data import DataOrder, load_training_data
from reasoner.metrics import read_metrics
from reasoner.tasks.arithmetic import integer_exact_reward
from reasoner.trainers import train
from reasoner.trainers.batch import Batch, cat_batches, select_groups
from reasoner.trainers.grpo import GRPOTrainer
from reasoner.verifiers.rewards import WeightedReward

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
TESTS = ROOT / "tests"
# A reward a random model already varies on, so the tiny runs really update the weights.
DIGITS = "rewards.names=[toy_rewards:digit_reward]"


def _cfg(out, *extra):
    return load_config(TINY, [f"train.output_dir={out}", DIGITS, *extra])


def test_tiny_run_writes_metrics_checkpoints_and_final(tmp_path):
    out = tmp_path / "run"
    summary = train(_cfg(out, "algo.beta=0.04", "algo.num_iterations=2"), progress=False)
    assert summary["steps"] == 4
    recs = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    for key in ("reward/mean", "reward/std", "rewards/toy_rewards:digit_reward/mean", "accuracy",
                "frac_zero_std_groups", "completion_length/mean", "completion_length/max",
                "truncated_ratio", "clip/low", "clip/high", "clip/dual", "kl", "entropy",
                "grad_norm", "lr", "time/generation", "time/reward", "time/logprobs",
                "time/update", "tokens_per_second"):
        assert key in recs[0], key
    assert all(r["completion_length/max"] <= 12 for r in recs)
    assert all(0 <= r["frac_zero_std_groups"] <= 1 for r in recs)
    assert recs[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # first pass: policy == reference
    assert recs[-1]["kl"] > 0  # the policy moved away from the reference
    assert all(r["grad_norm"] > 0 and r["skipped_updates"] == 0 for r in recs)
    # checkpoints every 2 steps, keep last 2; final policy in HF format
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    ck = out / "checkpoint-4"
    for f in ("model.safetensors", "config.json", "tokenizer.json", "engine.pt", "rng.pt",
              "trainer_state.json"):
        assert (ck / f).is_file(), f
    assert json.loads((ck / "trainer_state.json").read_text())["step"] == 4
    init = load_file(out / "init_model" / "model.safetensors")
    final = load_file(out / "final" / "model.safetensors")
    assert any(not torch.equal(init[k], final[k]) for k in init)
    comps = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    assert {c["step"] for c in comps} == {2, 4} and "completion" in comps[0]
    for png in ("reward.png", "accuracy.png", "length.png"):
        assert (out / png).stat().st_size > 1000
    assert list((out / "tb").iterdir())


def _weights(path):
    return load_file(Path(path) / "model.safetensors")


def test_kill_9_then_resume_matches_uninterrupted_run_bitwise(tmp_path):
    extra = ["train.max_steps=5", "algo.beta=0.02", "train.lr_scheduler_type=linear",
             "train.warmup_steps=2"]
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    train(_cfg(ref_out, *extra), progress=False)
    # The run SIGKILLs itself half-way through writing checkpoint-4 (after checkpoint-2).
    # Bitwise equality on a CPU needs the same intra-op thread count (it sets the summation
    # order): the subprocess gets this process's count.
    env = dict(os.environ, REASONER_DEBUG_KILL="save:4", OMP_NUM_THREADS=str(torch.get_num_threads()),
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "reasoner", "train", "--config", str(TINY), "--output-dir",
           str(out), "--no-progress", DIGITS, *extra]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert (out / ".tmp-checkpoint-4").is_dir() and not (out / "checkpoint-4").exists()
    assert not (out / "final").exists()
    # resume: continues from checkpoint-2, ignores and removes the partial one
    summary = train(_cfg(out, *extra), resume=True, progress=False)
    assert summary["resumed_from"] == 2 and summary["steps"] == 5
    assert not (out / ".tmp-checkpoint-4").exists()
    a, b = _weights(ref_out / "final"), _weights(out / "final")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the metrics log is the uninterrupted one (timings and memory aside)
    strip = lambda rs: [{k: v for k, v in r.items()  # noqa: E731
                         if not any(w in k for w in ("time", "per_second", "memory"))}
                        for r in rs]
    assert strip(read_metrics(out / "metrics.jsonl")) == strip(read_metrics(ref_out / "metrics.jsonl"))


def test_loss_types_scale_modes_and_skipped_samples_train(tmp_path):
    """Each loss type / option combination runs a step with finite numbers; skipped samples
    (reward None) are counted and get no gradient."""
    combos = [
        ["algo.loss_type=grpo", "algo.scale_rewards=batch", "algo.mask_truncated_completions=true"],
        ["algo.loss_type=bnpo", "algo.overlong_buffer_len=4", "algo.epsilon_high=0.28"],
        ["algo.loss_type=dr_grpo", "algo.scale_rewards=none", "algo.dual_clip=3.0"],
        ["algo.loss_type=dapo", "algo.beta=0.1", "algo.kl_in_reward=true", "algo.kl_estimator=k1"],
        ["algo.beta=0.1", "algo.num_iterations=2", "algo.delta=1.5",
         "algo.use_bias_correction_kl=true"],
    ]
    for i, extra in enumerate(combos):
        cfg = _cfg(tmp_path / f"r{i}", "train.max_steps=1", "train.save_steps=0",
                   "train.report_to_tensorboard=false", *extra)
        rows = load_training_data(cfg.data).rows
        rows = [dict(r, answer="skip") if j % 2 else r for j, r in enumerate(rows)]
        out = GRPOTrainer(cfg, rows=rows, progress=False).train_step()
        m = out.metrics
        assert m["skipped_samples"] > 0, extra
        skipped = [r["answer"] == "skip" for r in out.batch.rows]
        assert int(m["skipped_samples"]) == sum(skipped) == int(m["skipped_samples/unscorable"])
        assert all(out.advantages[j] == 0 for j, s in enumerate(skipped) if s)
        assert torch.isfinite(torch.tensor([m["loss"], m["grad_norm"], m["entropy"]])).all(), extra


def test_non_finite_step_is_skipped_not_applied(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path / "nan", "train.max_steps=1", "train.save_steps=0",
               "train.report_to_tensorboard=false")
    t = GRPOTrainer(cfg, progress=False)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    orig = t.micro_batch_loss

    def nan_loss(*a, **k):
        out = orig(*a, **k)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(t, "micro_batch_loss", nan_loss)
    m = t.train_step().metrics
    assert m["skipped_updates"] == 1
    after = t.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert t.engine.scheduler.last_epoch == 0  # the schedule did not advance


def test_dynamic_sampling_refills_zero_std_groups(tmp_path):
    cfg = _cfg(tmp_path / "ds", "train.max_steps=1", "rollout.dynamic_sampling=true",
               "rollout.max_dynamic_sampling_tries=2", "train.report_to_tensorboard=false")
    calls = []

    def flaky(prompts, completions, **cols):  # first round: every group flat; later: spread
        calls.append(len(completions))
        if len(calls) == 1:
            return [0.5] * len(completions)
        return [float(i % 2) for i in range(len(completions))]

    t = GRPOTrainer(cfg, reward_funcs=[WeightedReward("flaky", flaky)], progress=False)
    # the task's accuracy is logged, scored beside the reward the run trains on
    assert t.accuracy_reward == "integer_exact" and t.accuracy_monitor.weight == 0.0
    m = t.train_step().metrics
    assert calls == [8, 8]  # 2 prompts x G=4, then 2 fresh prompts to replace both groups
    assert m["dynamic_sampling/tries"] == 1 and m["frac_zero_std_groups"] == 0.0
    assert m["dynamic_sampling/filled_frac"] == 1.0


def test_the_tasks_accuracy_is_logged_when_the_run_trains_on_another_reward(tmp_path):
    t = GRPOTrainer(_cfg(tmp_path / "acc", "train.max_steps=2", "train.report_to_tensorboard=false",
                         "train.num_completions_to_log=8"), progress=False)
    assert t.accuracy_reward == "integer_exact"  # the arithmetic task's, not the digit reward
    step = t.train_step()
    b = step.batch
    assert b.monitored == integer_exact_reward(b.prompts, b.texts,
                                               answer=[r["answer"] for r in b.rows])
    assert [r["accuracy/integer_exact"] for r in step.samples] == b.monitored[:8]
    # a verdict that varies, to see the metric follow it (a random model is never right)
    t.accuracy_monitor = WeightedReward("integer_exact",
                                        lambda p, c, **k: [float(i % 4 == 0) for i in range(len(c))],
                                        0.0)
    step = t.train_step()
    assert step.metrics["accuracy"] == 0.25
    # the monitor is not a reward: the reward is the digit reward alone
    assert step.metrics["reward/mean"] == pytest.approx(
        step.metrics["rewards/toy_rewards:digit_reward/mean"], abs=1e-6)
    assert step.metrics["rewards/toy_rewards:digit_reward/mean"] > 0
    # opted out: nothing scored, no accuracy logged
    t = GRPOTrainer(_cfg(tmp_path / "none", "train.max_steps=1", "rewards.accuracy_reward=none",
                         "train.report_to_tensorboard=false"), progress=False)
    step = t.train_step()
    assert t.accuracy_monitor is None and step.batch.monitored is None
    assert "accuracy" not in step.metrics


def test_batch_helpers_and_data_order():
    def fake(p, c, n, val):
        return dict(prompt_ids=torch.full((n, p), val), prompt_mask=torch.ones(n, p, dtype=torch.long),
                    completion_ids=torch.full((n, c), val),
                    completion_mask=torch.ones(n, c, dtype=torch.long),
                    texts=[str(val)] * n, truncated=torch.zeros(n, dtype=torch.bool),
                    rows=[{"i": val}] * n, prompts=["p"] * n, per_func=[[float(val)] * n])

    a, b = Batch(**fake(2, 3, 4, 1)), Batch(**fake(4, 1, 2, 2))
    c = cat_batches([a, b], pad_id=0)
    assert c.prompt_ids.shape == (6, 4) and c.completion_ids.shape == (6, 3)
    assert c.prompt_ids[0].tolist() == [0, 0, 1, 1] and c.prompt_mask[0].tolist() == [0, 0, 1, 1]
    assert c.completion_ids[5].tolist() == [2, 0, 0] and c.completion_mask[5].tolist() == [1, 0, 0]
    s = select_groups(c, [2], 2)
    assert s.texts == ["2", "2"] and s.per_func == [[2.0, 2.0]] and s.monitored is None
    # the monitored accuracy values travel with their rows
    a.monitored, b.monitored = [1.0, 0.0, 1.0, 0.0], [None, 1.0]
    c = cat_batches([a, b], pad_id=0)
    assert c.monitored == [1.0, 0.0, 1.0, 0.0, None, 1.0]
    assert select_groups(c, [2, 0], 2).monitored == [None, 1.0, 1.0, 0.0]
    o = DataOrder(5, seed=3)
    first = o.take(7)
    assert sorted(first[:5]) == list(range(5)) and o.state() == {"epoch": 1, "index": 2}
    o2 = DataOrder(5, seed=3, epoch=1, index=2)
    assert o2.take(3) == DataOrder(5, seed=3).take(10)[7:]


def test_lora_run_uses_adapters_and_merges_final(tmp_path):
    pytest.importorskip("peft")
    out = tmp_path / "lora"
    cfg = _cfg(out, "train.max_steps=2", "train.save_steps=1", "algo.beta=0.1", "lora.enabled=true",
               "lora.r=4", "lora.target_modules=[q_proj,v_proj]", "train.report_to_tensorboard=false")
    t = GRPOTrainer(cfg, progress=False)
    assert t.ref_model is None  # the reference is the base model with adapters disabled
    trainable = [n for n, p in t.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    t.train()
    recs = read_metrics(out / "metrics.jsonl")
    assert recs[1]["kl"] > 0
    assert (out / "checkpoint-2" / "adapter_model.safetensors").is_file()
    final = load_file(out / "final" / "model.safetensors")
    init = load_file(out / "init_model" / "model.safetensors")
    assert not any("lora" in k for k in final)
    assert any(not torch.equal(init[k], final[k]) for k in init if "q_proj" in k)
    # resume of a LoRA run restores the adapters (no steps left: final written again)
    t2 = GRPOTrainer(cfg, resume=True, progress=False)
    assert t2.step == 2
    a = {k: v for k, v in t.model.state_dict().items() if "lora_" in k}
    b = {k: v for k, v in t2.model.state_dict().items() if "lora_" in k}
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_skipping_zero_advantage_rows_gives_the_same_update(tmp_path):
    def half_flat(prompts, completions, **cols):  # groups of odd answers are flat (no signal)
        return [0.5 if int(a) % 2 else float(len(c) % 3 == 0)
                for c, a in zip(completions, cols["answer"])]

    weights = {}
    for skip in (True, False):
        cfg = _cfg(tmp_path / f"s{skip}", "train.max_steps=2", "train.save_steps=0",
                   f"algo.skip_zero_advantage={str(skip).lower()}", "algo.loss_type=bnpo",
                   "train.report_to_tensorboard=false")
        t = GRPOTrainer(cfg, reward_funcs=[WeightedReward("half_flat", half_flat)],
                        progress=False)
        ms = [t.train_step().metrics for _ in range(2)]
        weights[skip] = {k: v.clone() for k, v in t.model.state_dict().items()}
        fracs = [m["update/trained_rows_frac"] for m in ms]
        assert (min(fracs) < 1.0) if skip else fracs == [1.0, 1.0]
    for k in weights[True]:
        torch.testing.assert_close(weights[True][k], weights[False][k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("extra", [[], ["algo.beta=0.04", "algo.num_iterations=2"],
                                   ["train.use_fused_linear=true"]])
def test_shared_prompt_forward_gives_the_same_training(tmp_path, monkeypatch, extra):
    """The update runs each group's prompt once (forward_logits(share_prompts=True)); two steps
    with it end at the same weights and metrics as with the plain per-row forward."""
    import reasoner.models.forward as forward

    calls = {"shared": 0}
    real = forward._forward_shared_prompts

    def counting(*a, **k):
        out = real(*a, **k)
        calls["shared"] += out is not None
        return out

    weights, metrics = {}, {}
    for share in (True, False):
        monkeypatch.setattr(forward, "_forward_shared_prompts",
                            counting if share else (lambda *a, **k: None))
        cfg = _cfg(tmp_path / f"s{share}", "train.max_steps=2", "train.save_steps=0",
                   "train.report_to_tensorboard=false", *extra)
        t = GRPOTrainer(cfg, progress=False)
        metrics[share] = [t.train_step().metrics for _ in range(2)]
        weights[share] = {k: v.clone() for k, v in t.model.state_dict().items()}
    assert calls["shared"] > 0
    for k in weights[True]:
        # Adam steps of 1e-3: rounding-level gradient differences stay far below one step
        torch.testing.assert_close(weights[True][k], weights[False][k], rtol=1e-4, atol=2e-5)
    for a, b in zip(metrics[True], metrics[False]):
        for key in ("loss", "kl", "entropy", "grad_norm", "reward/mean"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-6), key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (Triton kernels)")
@pytest.mark.parametrize("kernel", ["train.loss_backend=triton", "train.use_fused_linear=true"])
def test_trainer_steps_with_kernels_equal_the_torch_path(tmp_path, kernel):
    """On CUDA, two fp32 GRPO steps through a Triton kernel give the torch path's weights and
    metrics within tolerance (same seed, same rollouts)."""
    common = ["train.device=cuda", "train.max_steps=2", "train.save_steps=0", "algo.beta=0.04",
              "train.report_to_tensorboard=false"]
    train(_cfg(tmp_path / "torch", *common, "train.loss_backend=torch"), progress=False)
    train(_cfg(tmp_path / "kernel", *common, kernel), progress=False)
    a, b = _weights(tmp_path / "torch" / "final"), _weights(tmp_path / "kernel" / "final")
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), k
    ma, mb = read_metrics(tmp_path / "torch" / "metrics.jsonl"), read_metrics(tmp_path / "kernel" / "metrics.jsonl")
    for x, y in zip(ma, mb):
        assert x["reward/mean"] == pytest.approx(y["reward/mean"])
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-3, abs=1e-5)


def test_triton_loss_takes_the_fused_forward_backward_mode_and_equals_the_torch_path(
        tmp_path, monkeypatch):
    """With the Triton backend (the interpreter here, CUDA on a GPU) the update hands the
    aggregation weights to the loss, which runs the kernels' fused forward+backward mode
    (`weighted_grpo_loss`: dlogits written in the forward); two steps with a reference and two
    epochs per step give the torch path's weights and metrics."""
    pytest.importorskip("triton")
    import reasoner_kernels

    calls = {"n": 0}
    fused = reasoner_kernels.weighted_grpo_loss

    def counting(*args, **kw):
        calls["n"] += 1
        return fused(*args, **kw)

    monkeypatch.setattr(reasoner_kernels, "weighted_grpo_loss", counting)
    common = ["algo.beta=0.04", "algo.num_iterations=2", "train.save_steps=0",
              "train.report_to_tensorboard=false"]
    weights, metrics = {}, {}
    for backend in ("torch", "triton"):
        cfg = _cfg(tmp_path / backend, *common, f"train.loss_backend={backend}")
        t = GRPOTrainer(cfg, progress=False)
        metrics[backend] = [t.train_step().metrics for _ in range(2)]
        weights[backend] = {k: v.clone() for k, v in t.model.state_dict().items()}
        if backend == "torch":
            assert calls["n"] == 0
    assert calls["n"] >= 4  # two steps x two epochs, at least one micro-batch each
    for k in weights["torch"]:
        torch.testing.assert_close(weights["triton"][k], weights["torch"][k], rtol=1e-4,
                                   atol=2e-5)
    for a, b in zip(metrics["triton"], metrics["torch"]):
        assert a["grad_norm"] > 0
        for key in ("loss", "kl", "entropy", "grad_norm", "clip/low", "clip/high"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


def test_max_prompt_length_leaves_long_rows_out_before_training(tmp_path, capsys):
    short = [{"question": f"{i}+1", "answer": str(i + 1)} for i in range(6)]
    long = [{"question": "1+" * 40 + "1", "answer": "41"} for _ in range(3)]
    cfg = _cfg(tmp_path / "a", "rollout.max_prompt_length=20", "train.max_steps=1")
    trainer = GRPOTrainer(cfg, rows=short + long, progress=False)
    assert trainer.rows == short
    assert "left out 3 of 9 rows" in capsys.readouterr().out
    trainer.train()  # and it trains on what is left
    with pytest.raises(ValueError, match="every prompt is longer than rollout.max_prompt_length=20"):
        GRPOTrainer(_cfg(tmp_path / "b", "rollout.max_prompt_length=20"), rows=long, progress=False)


def _count_engine_calls(t):
    calls = {"backward": 0, "step": 0}
    backward, step = t.engine.backward, t.engine.step

    def counting_backward(loss):
        calls["backward"] += 1
        return backward(loss)

    def counting_step(**kw):
        calls["step"] += 1
        return step(**kw)

    t.engine.backward, t.engine.step = counting_backward, counting_step
    return calls


def test_gradient_accumulation_steps_means_micro_batches_per_optimizer_step(tmp_path):
    """TRL's meaning: gradient_accumulation_steps micro-batches of per_device_train_batch_size
    completions make one optimizer step; the rollout batch is their product. With the dapo
    loss the split does not change the update: 4 x 2, 8 x 1 and 2 x 4 end at the same weights."""
    weights = {}
    for mb, ga in ((4, 2), (8, 1), (2, 4)):
        cfg = _cfg(tmp_path / f"mb{mb}", f"train.per_device_train_batch_size={mb}",
                   f"train.gradient_accumulation_steps={ga}", "algo.skip_zero_advantage=false",
                   "train.max_steps=1", "train.save_steps=0", "train.report_to_tensorboard=false")
        t = GRPOTrainer(cfg, progress=False)
        calls = _count_engine_calls(t)
        out = t.train_step()
        assert len(out.batch) == 8 and calls == {"backward": ga, "step": 1}
        weights[mb] = {k: v.clone() for k, v in t.model.state_dict().items()}
    for mb in (8, 2):
        for k in weights[4]:
            torch.testing.assert_close(weights[mb][k], weights[4][k], rtol=1e-4, atol=2e-5)


def test_none_from_one_reward_function_leaves_the_sample_to_the_others(tmp_path):
    """TRL's multi-task recipe: each function returns None on the other task's samples, and every
    sample trains on the function that applies to it."""
    def even(prompts, completions, answer, **cols):
        return [float(len(c) % 3 == 0) if int(a) % 2 == 0 else None
                for c, a in zip(completions, answer)]

    def odd(prompts, completions, answer, **cols):
        return [float("1" in c) if int(a) % 2 else None for c, a in zip(completions, answer)]

    cfg = _cfg(tmp_path / "mt", "train.max_steps=1", "train.save_steps=0",
               "train.report_to_tensorboard=false")
    t = GRPOTrainer(cfg, reward_funcs=[WeightedReward("even", even), WeightedReward("odd", odd)],
                    progress=False)
    out = t.train_step()
    assert out.metrics["skipped_samples"] == 0 and out.rewards.valid.all()
    want = [e if e is not None else o for e, o in zip(*out.batch.per_func)]
    assert out.rewards.total.tolist() == want
    assert out.metrics["update/trained_rows_frac"] > 0


def test_a_non_finite_reward_drops_that_sample_not_the_step(tmp_path):
    def flaky(prompts, completions, **cols):
        return [float("nan") if i == 0 else float(i % 2) for i in range(len(completions))]

    cfg = _cfg(tmp_path / "nf", "train.max_steps=1", "train.save_steps=0",
               "train.report_to_tensorboard=false")
    t = GRPOTrainer(cfg, reward_funcs=[WeightedReward("flaky", flaky)], progress=False)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    m = t.train_step().metrics
    assert m["skipped_samples"] == m["skipped_samples/non_finite"] == 1
    assert m["skipped_updates"] == 0 and math.isfinite(m["loss"]) and m["grad_norm"] > 0
    assert any(not torch.equal(before[k], v) for k, v in t.model.state_dict().items())


def test_lean_forward_off_runs_the_models_own_forward_everywhere(tmp_path, monkeypatch, capsys):
    """model.lean_forward: auto takes the lean path for decoding, scoring and the
    update; off never does, and the step's numbers are the same up to rounding. The metrics
    and the log say which path ran."""
    import reasoner.models.forward as forward
    import reasoner.rollout.decode as decode

    calls = {"lean": 0}
    for mod, name in ((forward, "lean_forward"), (decode, "lean_forward"), (decode, "lean_step")):
        real = getattr(mod, name)

        def spy(*a, _real=real, **k):
            calls["lean"] += 1
            return _real(*a, **k)

        monkeypatch.setattr(mod, name, spy)
    metrics = {}
    for mode in ("auto", "off"):
        calls["lean"] = 0
        cfg = _cfg(tmp_path / mode, f"model.lean_forward={mode}", "algo.beta=0.04",
                   "algo.num_iterations=2", "train.max_steps=1", "train.save_steps=0",
                   "train.report_to_tensorboard=false")
        metrics[mode] = GRPOTrainer(cfg, progress=False).train_step().metrics
        assert (calls["lean"] > 0) == (mode == "auto"), mode
        lean = float(mode == "auto")
        assert metrics[mode]["forward/lean_decode"] == metrics[mode]["forward/lean_update"] == lean
        said = "decode: lean; update: lean" if mode == "auto" else \
            "decode: transformers (model.lean_forward=off); update: transformers " \
            "(model.lean_forward=off)"
        assert f"forward paths: {said}\n" in capsys.readouterr().out
    for key in ("reward/mean", "completion_length/mean", "loss", "kl", "entropy", "grad_norm"):
        assert metrics["off"][key] == pytest.approx(metrics["auto"][key], rel=1e-3, abs=1e-6), key


def test_the_no_learning_signal_warning_needs_zero_advantages(capsys):
    """Equal rewards in every group warn after NO_SIGNAL_STEPS steps only when the advantages
    are zero too: REINFORCE++ (a batch baseline, G=1 allowed) or a per-token KL reward still
    learns from groups whose rewards are all equal."""
    from types import SimpleNamespace

    from reasoner.trainers.grpo import NO_SIGNAL_STEPS, GRPOTrainer

    fake = SimpleNamespace(_no_signal=0, is_main=True, step=0,
                           cfg=SimpleNamespace(rollout=SimpleNamespace(num_generations=1)))
    for advantage in (0.7, 0.0):
        fake._no_signal = 0
        for k in range(NO_SIGNAL_STEPS):
            fake.step = k + 1
            GRPOTrainer.warn_without_signal(fake, {"frac_zero_std_groups": 1.0,
                                                   "advantage/abs_mean": advantage,
                                                   "reward/mean": 0.0})
        said = capsys.readouterr().err
        assert ("does not learn" in said) == (advantage == 0.0), (advantage, said)
