"""PPO with a critic, A2C, RLOO and REINFORCE++ on configs/ppo_tiny.yaml: metrics, checkpoints
with the critic, exact kill -9 resume, the value head on the policy's trunk, LoRA on policy and
critic, critic warm-up, PPO-ptx, the adaptive KL controller, and the critic learning."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reasoner.config import ConfigError, load_config
from reasoner.metrics import read_metrics
from reasoner.trainers import ALGORITHMS, train
from reasoner.trainers.ppo import PPOTrainer
from reasoner.verifiers.rewards import WeightedReward

ROOT = Path(__file__).resolve().parents[2]
PPO_TINY = ROOT / "configs" / "ppo_tiny.yaml"
TESTS = ROOT / "tests"
DIGITS = "rewards.names=[toy_rewards:digit_reward]"  # a reward a random model varies on
QUIET = ["train.report_to_tensorboard=false", "train.log_completions_steps=0"]


def _cfg(out, *extra):
    return load_config(PPO_TINY, [f"train.output_dir={out}", DIGITS, *extra])


def _weights(path):
    return load_file(Path(path) / "model.safetensors")


def _changed(a, b):
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_ppo_tiny_run_metrics_checkpoints_final_critic_and_eval(tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    out = tmp_path / "run"
    cfg = _cfg(out, "algo.adap_kl_ctrl=true", "algo.kl_target=0.01", "algo.kl_horizon=100",
               "train.report_to_tensorboard=false")
    summary = train(cfg, progress=False)
    assert summary["steps"] == 4
    recs = read_metrics(out / "metrics.jsonl")
    for key in ("reward/mean", "accuracy", "loss", "value_loss", "value_clipfrac",
                "explained_variance", "returns/mean", "values/mean", "kl", "kl_coef",
                "non_score_reward", "rlhf_reward", "clip/low", "clip/high", "entropy",
                "grad_norm", "critic/grad_norm", "lr", "time/update", "memory/peak_gb"):
        assert key in recs[0], key
    assert recs[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first rollout is the reference's
    assert recs[-1]["kl"] != 0.0
    # Ziegler's controller, step by step from the logged KL: 16 completions per step
    for a, b in zip(recs, recs[1:]):
        err = min(max(a["kl"] / 0.01 - 1, -0.2), 0.2)
        assert b["kl_coef"] == pytest.approx(a["kl_coef"] * (1 + err * 8 / 100), rel=1e-12)
    assert recs[-1]["kl_coef"] != 0.05
    # 2 epochs x 2 mini-batches: ratios leave 1 after the first optimizer step
    assert sum(r["clip/low"] + r["clip/high"] for r in recs) > 0
    assert all(r["grad_norm"] > 0 and r["critic/grad_norm"] > 0 for r in recs)
    # the non-score reward is -kl_coef * KL, the RLHF reward the score plus it
    for r in recs:
        assert r["non_score_reward"] == pytest.approx(-r["kl_coef"] * r["kl"], rel=1e-9,
                                                      abs=1e-12)
        assert r["rlhf_reward"] == pytest.approx(r["reward/mean"] + r["non_score_reward"])
    ck = out / "checkpoint-4"
    for f in ("model.safetensors", "engine.pt", "critic/model.safetensors", "critic/engine.pt"):
        assert (ck / f).is_file(), f
    state = json.loads((ck / "trainer_state.json").read_text())
    assert state["kl_controller"]["value"] == pytest.approx(
        recs[-1]["kl_coef"] * (1 + min(max(recs[-1]["kl"] / 0.01 - 1, -0.2), 0.2) * 8 / 100))
    init, final = _weights(out / "init_model"), _weights(out / "final")
    assert init.keys() == final.keys() and _changed(init, final)
    critic = _weights(out / "final_critic")
    assert critic["score.weight"].abs().sum() > 0  # the fresh head started at zero
    assert AutoModelForSequenceClassification.from_pretrained(out / "final_critic").num_labels == 1
    AutoModelForCausalLM.from_pretrained(out / "final")
    assert (out / "value.png").stat().st_size > 1000 and (out / "kl.png").stat().st_size > 1000

    from reasoner.evaluate import eval_main

    r = eval_main(model=str(out / "final"), task="arithmetic", n=6,
                  task_options={"ops": ["+"], "digits": 1}, max_new_tokens=12)
    assert r["n_rows"] == 6 and 0.0 <= r["accuracy"] <= 1.0


def test_ppo_kill_9_then_resume_matches_uninterrupted_run_bitwise(tmp_path):
    """Policy, critic, both optimizers and schedules, the adaptive KL coefficient and the data
    order come back from checkpoint-2 after a SIGKILL half-way through checkpoint-4."""
    extra = ["train.max_steps=5", "algo.adap_kl_ctrl=true", "algo.kl_target=0.01",
             "algo.kl_horizon=100", "train.lr_scheduler_type=linear", "train.warmup_steps=2",
             "algo.whiten_rewards=true", *QUIET]
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    train(_cfg(ref_out, *extra), progress=False)
    env = dict(os.environ, REASONER_DEBUG_KILL="save:4",
               OMP_NUM_THREADS=str(torch.get_num_threads()),
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "reasoner", "train", "--config", str(PPO_TINY), "--output-dir",
           str(out), "--no-progress", DIGITS, *extra]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    assert (out / "checkpoint-2" / "critic" / "engine.pt").is_file()
    assert not (out / "checkpoint-4").exists()
    summary = train(_cfg(out, *extra), resume=True, progress=False)
    assert summary["resumed_from"] == 2 and summary["steps"] == 5
    for d in ("final", "final_critic"):
        a, b = _weights(ref_out / d), _weights(out / d)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (d, k)
    strip = lambda rs: [{k: v for k, v in r.items()  # noqa: E731
                         if not any(w in k for w in ("time", "per_second", "memory"))}
                        for r in rs]
    m_ref, m_cut = read_metrics(ref_out / "metrics.jsonl"), read_metrics(out / "metrics.jsonl")
    assert strip(m_cut) == strip(m_ref)
    assert len({r["kl_coef"] for r in m_ref}) == 5  # the controller moved every step


def test_value_head_on_the_policys_trunk_trains_and_exports(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from reasoner.models.value import forward_values

    out = tmp_path / "shared"
    cfg = _cfg(out, "critic.shared_trunk=true", "train.max_steps=2", "train.save_steps=0",
               *QUIET)
    t = PPOTrainer(cfg, progress=False)
    assert t.critic_engine is None and t.extra_engines == {}
    head = t.model.score.weight
    assert head.shape == (1, 32) and head.abs().sum() == 0 and head.requires_grad
    assert any(p is head for p in t.engine.params)  # one optimizer for trunk and head
    ms = [t.train_step().metrics for _ in range(2)]
    t.save_final()
    assert "critic/grad_norm" not in ms[0] and ms[1]["value_loss"] > 0
    assert head.abs().sum() > 0
    final, init = _weights(out / "final"), _weights(out / "init_model")
    assert final.keys() == init.keys()  # the head is not part of the exported policy
    vm = AutoModelForSequenceClassification.from_pretrained(out / "final_critic").eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    one = torch.ones_like(ids)
    with torch.no_grad():
        want = forward_values(t.model, ids[:, :2], one[:, :2], ids[:, 2:], one[:, 2:],
                              share_prompts=False, allow_lean=True)
        got = vm.score(vm.model(input_ids=ids[:, :3]).last_hidden_state)[:, 1:, 0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared", [False, True])
def test_lora_on_policy_and_critic_checkpoints_resumes_and_merges(tmp_path, shared):
    pytest.importorskip("peft")
    out = tmp_path / "lora"
    cfg = _cfg(out, "lora.enabled=true", "lora.r=4", "lora.target_modules=[q_proj,v_proj]",
               f"critic.shared_trunk={str(shared).lower()}", "train.max_steps=2",
               "train.save_steps=1", *QUIET)
    t = PPOTrainer(cfg, progress=False)
    assert t.ref_model is None  # the reference: the policy with its adapters off
    models = [t.model] if shared else [t.model, t.critic_model]
    for model in models:
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n or "score" in n for n in trainable), trainable
        assert any("score" in n for n in trainable) == (shared or model is t.critic_model)
    t.train()
    recs = read_metrics(out / "metrics.jsonl")
    assert recs[1]["kl"] != 0 and all(r["value_loss"] > 0 for r in recs)
    ck = out / "checkpoint-2"
    assert (ck / "adapter_model.safetensors").is_file()
    assert (ck / "critic" / "adapter_model.safetensors").is_file() != shared
    for d in ("final", "final_critic"):
        assert not any("lora" in k for k in _weights(out / d)), d
    assert "score.weight" not in _weights(out / "final")
    t2 = PPOTrainer(cfg, resume=True, progress=False)
    assert t2.step == 2
    for m1, m2 in ((t.model, t2.model), (t.critic_model, t2.critic_model)):
        a = {k: v for k, v in m1.state_dict().items() if "lora_" in k or "score" in k}
        b = {k: v for k, v in m2.state_dict().items() if "lora_" in k or "score" in k}
        assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_critic_warmup_trains_only_the_critic(tmp_path):
    cfg = _cfg(tmp_path / "warm", "critic.critic_warmup_steps=1", "train.max_steps=2",
               "train.save_steps=0", "train.lr_scheduler_type=linear", *QUIET)
    t = PPOTrainer(cfg, progress=False)
    # the policy's schedule spans the steps it trains: 1 step x 2 epochs x 2 mini-batches
    assert t.num_optimizer_steps() == 4
    policy0 = {k: v.clone() for k, v in t.model.state_dict().items()}
    critic0 = {k: v.clone() for k, v in t.critic_model.state_dict().items()}
    m1 = t.train_step().metrics
    assert m1["critic/warmup"] == 1.0 and "lr" not in m1 and m1["critic/grad_norm"] > 0
    assert not _changed(policy0, t.model.state_dict())
    assert _changed(critic0, t.critic_model.state_dict())
    assert t.engine.scheduler.last_epoch == 0 and t.critic_engine.scheduler.last_epoch == 4
    m2 = t.train_step().metrics
    assert m2["critic/warmup"] == 0.0 and m2["grad_norm"] > 0
    assert _changed(policy0, t.model.state_dict())


def test_a2c_makes_one_unclipped_step_per_batch(tmp_path):
    cfg = _cfg(tmp_path / "a2c", "algo.name=a2c", "train.max_steps=2", "train.save_steps=0",
               *QUIET)
    t = ALGORITHMS.get("a2c")(cfg, progress=False)
    assert t.optimizer_steps_per_step() == 1 and t.num_optimizer_steps() == 2
    ms = [t.train_step().metrics for _ in range(2)]
    assert t.engine.scheduler.last_epoch == 2 and t.critic_engine.scheduler.last_epoch == 2
    for m in ms:  # one on-policy pass: nothing to clip
        assert m["clip/low"] == m["clip/high"] == m["value_clipfrac"] == 0.0
        assert m["grad_norm"] > 0 and m["critic/grad_norm"] > 0


@pytest.mark.parametrize("name,extra", [
    ("rloo", []),
    ("reinforce_plus_plus", ["algo.beta=0.05", "algo.kl_in_reward=true", "algo.gamma=0.9"]),
])
def test_rloo_and_reinforce_plus_plus_train_on_grpos_trainer(tmp_path, name, extra):
    cfg = load_config(ROOT / "configs" / "tiny.yaml",
                      [f"train.output_dir={tmp_path / name}", DIGITS, f"algo.name={name}",
                       "train.max_steps=2", "train.save_steps=0", *QUIET, *extra])
    t = ALGORITHMS.get(name)(cfg, progress=False)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    out = t.train_step()
    adv, mask = out.advantages, out.batch.completion_mask.bool().cpu()
    if name == "rloo":  # one advantage per completion, zero-sum in each group of 4
        assert adv.shape == (8,)
        assert adv.view(-1, 4).sum(1).abs().max() < 1e-9
    else:  # per token, whitened over the batch's tokens
        assert adv.shape == mask.shape
        assert float(adv[mask].mean()) == pytest.approx(0.0, abs=1e-9)
        assert float(adv[mask].std()) == pytest.approx(1.0, abs=1e-4)
        assert (adv[~mask] == 0).all()
    assert out.metrics["grad_norm"] > 0
    assert _changed(before, t.model.state_dict())


def test_explained_variance_rises_on_a_fixed_task(tmp_path):
    """One fixed batch (16 completions of 8 prompts), trained on step after step, whose score is
    the prompt's first digit / 9: the critic learns to predict the returns, and its explained
    variance climbs from 0 (a fresh head predicts 0 everywhere) to near 1."""
    from reasoner.trainers.base import PhaseTimer

    def first_digit(prompts, completions, **cols):
        return [int(q.split("+")[0]) / 9.0 for q in cols["question"]]

    cfg = _cfg(tmp_path / "ev", "train.max_steps=16", "train.save_steps=0",
               "critic.critic_warmup_steps=15", "algo.kl_coef=0", "critic.learning_rate=3e-3",
               "algo.num_mini_batches=1", "train.per_device_train_batch_size=16",
               "train.gradient_accumulation_steps=1", "rollout.num_generations=2", *QUIET)
    t = PPOTrainer(cfg, reward_funcs=[WeightedReward("first_digit", first_digit)],
                   progress=False)
    fixed = t.collect(PhaseTimer())
    assert len({r["question"] for r in fixed[0].rows}) == 8
    t.collect = lambda timer: fixed  # the same rollouts every step
    ms = [t.train_step().metrics for _ in range(16)]
    ev = [m["explained_variance"] for m in ms]
    assert ev[0] == 0.0 and max(ev[:3]) < 0.1, ev
    assert sum(ev[-3:]) / 3 > 0.8, ev
    assert ms[-1]["value_loss"] < ms[0]["value_loss"] / 10


def test_ppo_ptx_mixes_in_an_sft_loss_that_falls(tmp_path):
    cfg = _cfg(tmp_path / "ptx", "algo.ptx_coef=1.0", "algo.ptx_batch_size=8",
               "train.max_steps=4", "train.save_steps=0", "train.learning_rate=3e-3", *QUIET)
    t = PPOTrainer(cfg, progress=False)
    assert len(t.ptx_examples) == len(t.rows)  # the task's worked solutions
    ptx = [t.train_step().metrics["ptx_loss"] for _ in range(4)]
    assert ptx[-1] < ptx[0] - 0.5, ptx
    bad = _cfg(tmp_path / "bad", "algo.ptx_coef=1.0", "data.task=null", "data.task_options={}",
               f"data.dataset_path={tmp_path / 'rows.jsonl'}", *QUIET)
    (tmp_path / "rows.jsonl").write_text('{"question": "1+1", "answer": "2"}\n')
    with pytest.raises(ValueError, match="algo.ptx_coef .PPO-ptx.: row 0 has no 'solution'"):
        PPOTrainer(bad, progress=False)
    missing = _cfg(tmp_path / "bad2", "algo.ptx_coef=1.0",
                   f"algo.ptx_dataset_path={tmp_path / 'nope.jsonl'}", *QUIET)
    with pytest.raises(ConfigError, match="algo.ptx_dataset_path: .*nope.jsonl"):
        PPOTrainer(missing, progress=False)
    # more mini-batches than completions: one would be empty (and Adam would still step)
    cfg = _cfg(tmp_path / "mb", "algo.num_mini_batches=64", *QUIET)
    with pytest.raises(ConfigError, match=r"algo.num_mini_batches \(64\) exceeds the "
                                          r"completions per step \(\d+\)"):
        PPOTrainer(cfg, progress=False)
    assert not (tmp_path / "mb").exists()


def test_mini_batches_split_the_rows_of_every_rank_the_same_way():
    """Each epoch's mini-batches partition the global batch with one seeded permutation, so two
    ranks' mini-batch k together are exactly one process's mini-batch k."""
    cfg = load_config(PPO_TINY, ["algo.num_ppo_epochs=3", "algo.num_mini_batches=4"])

    def plan(world, rank, n):
        fake = types.SimpleNamespace(cfg=cfg, world=world, rank=rank, step=7,
                                     device=torch.device("cpu"), epochs_and_mini_batches=(3, 4))
        return PPOTrainer.mini_batch_plan(fake, n)

    one = plan(1, 0, 16)
    two = [plan(2, r, 8) for r in range(2)]
    for e in range(3):
        assert sorted(torch.cat(one[e]).tolist()) == list(range(16))
        assert [len(mb) for mb in one[e]] == [4, 4, 4, 4]
        for k in range(4):
            glob = torch.cat([two[0][e][k], two[1][e][k] + 8]).sort().values
            assert torch.equal(glob, one[e][k])
    assert one[0][0].tolist() != one[1][0].tolist()  # a fresh shuffle per epoch


def test_critic_starts_from_a_reward_model_directory_with_its_head(tmp_path):
    """critic.model_path: a reward model saved as AutoModelForSequenceClassification keeps its
    trained score head (a causal LM gets a fresh one, at zero); a missing directory is named."""
    from transformers import AutoModelForSequenceClassification

    from reasoner.models import build_tiny_model

    path = build_tiny_model(tmp_path / "lm", hidden_size=32, num_layers=2, num_heads=2,
                            num_kv_heads=1, seed=5)
    rm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    torch.nn.init.normal_(rm.score.weight, std=0.5)
    rm.save_pretrained(tmp_path / "rm")
    cfg = _cfg(tmp_path / "run", f"critic.model_path={tmp_path / 'rm'}", "train.max_steps=1",
               "train.save_steps=0", *QUIET)
    t = PPOTrainer(cfg, progress=False)
    assert torch.equal(t.critic_model.score.weight, rm.score.weight)
    assert torch.equal(t.critic_model.model.norm.weight, rm.model.norm.weight)
    assert not torch.equal(t.critic_model.model.embed_tokens.weight,
                           t.model.model.embed_tokens.weight)  # not the policy's weights
    m = t.train_step().metrics
    assert m["values/mean"] != 0.0  # a trained head predicts from the first step
    bad = _cfg(tmp_path / "bad", f"critic.model_path={tmp_path / 'nowhere'}", *QUIET)
    with pytest.raises(FileNotFoundError, match="critic.model_path .*nowhere"):
        PPOTrainer(bad, progress=False)
    # the critic reads the policy's token ids: another tokenizer, or fewer embeddings, is
    # refused before the first step (it indexed past the embeddings, or read other tokens)
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(path)
    other.add_tokens(["<not-the-policys>"])
    other.save_pretrained(tmp_path / "rm")
    with pytest.raises(ConfigError, match="has another tokenizer than model.path"):
        PPOTrainer(_cfg(tmp_path / "v1", f"critic.model_path={tmp_path / 'rm'}", *QUIET),
                   progress=False)
    conf = json.loads((tmp_path / "rm" / "config.json").read_text())
    conf["vocab_size"] = 10
    (tmp_path / "rm" / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ConfigError, match="has 10 token embeddings, fewer than the policy's"):
        PPOTrainer(_cfg(tmp_path / "v2", f"critic.model_path={tmp_path / 'rm'}", *QUIET),
                   progress=False)


def _spy_on_passes(monkeypatch) -> list[tuple[str, int]]:
    """Record PPO's no-grad passes as (name, rows): the old / reference log-probs and values."""
    import reasoner.trainers.grpo as grpo
    import reasoner.trainers.ppo as ppo

    calls: list[tuple[str, int]] = []

    def spy(name, real):
        def f(model, seqs, *a, **kw):
            calls.append((name, seqs.completion_ids.shape[0]))
            return real(model, seqs, *a, **kw)
        return f

    monkeypatch.setattr(ppo, "token_logprobs", spy("logprobs", ppo.token_logprobs))
    # the reference's pass: GRPOTrainer.reference_logprobs, shared with GRPO
    monkeypatch.setattr(grpo, "token_logprobs", spy("logprobs", grpo.token_logprobs))
    monkeypatch.setattr(ppo, "token_values", spy("values", ppo.token_values))
    return calls


@pytest.mark.parametrize("k,shared,lora", [(1, False, False), (1, True, False), (2, False, False),
                                           (1, False, True)])
def test_first_micro_batch_forward_gives_the_old_logprobs_and_values(tmp_path, monkeypatch, k,
                                                                     shared, lora):
    """The update's first micro-batch runs its forward before the step's targets and gives the
    old log-probs and the values of its rows (no optimizer step has run: they are the old
    policy's and the critic's), instead of no-grad passes: the same old log-probs, values,
    advantages, returns, first-epoch losses and gradient norms as with the passes, and the
    passes run only over the rows it does not hold (none with one mini-batch). With LoRA the
    reference pass (the same model, adapters off) runs between that forward and its backward."""
    calls = _spy_on_passes(monkeypatch)
    out = {}
    for fold in (False, True):
        calls.clear()
        cfg = _cfg(tmp_path / f"f{fold}", "train.per_device_train_batch_size=8",
                   f"train.gradient_accumulation_steps={k}", f"algo.num_mini_batches={k}",
                   f"critic.shared_trunk={str(shared).lower()}", "train.save_steps=0",
                   f"lora.enabled={str(lora).lower()}", *QUIET)
        t = PPOTrainer(cfg, progress=False)
        t.fold_first_forward = fold
        with torch.no_grad():  # the reference away from the policy: the old log-probs count
            for name, p in t.model.named_parameters() if lora else t.ref_model.named_parameters():
                if not lora:
                    p.mul_(1.1)
                elif "lora_B" in name:  # (LoRA's reference is the model without adapters)
                    p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
        s = t.train_step()
        n = len(s.batch)
        kept = int((s.advantages.abs().sum(1) > 0).sum())
        out[fold] = s, list(calls), kept
    (s0, calls0, _), (s1, calls1, kept) = out[False], out[True]
    assert n == 8 * k
    assert calls0 == [("logprobs", n), ("values", n), ("logprobs", n)]  # old, values, ref
    if k == 1:  # every row in the first micro-batch: only the reference's pass is left
        assert calls1 == [("logprobs", n)]
    else:  # the rows of the other mini-batch (with loss tokens) through the passes
        assert [c for c, _ in calls1] == ["values", "logprobs", "logprobs"]
        assert calls1[0][1] == calls1[1][1] == kept - 8 and calls1[2] == ("logprobs", n)
    assert torch.equal(s0.batch.completion_ids, s1.batch.completion_ids)
    m = s0.batch.completion_mask.bool()
    torch.testing.assert_close(s1.values[m], s0.values[m], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s1.advantages, s0.advantages, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s1.returns, s0.returns, rtol=1e-5, atol=1e-6)
    for key in ("kl", "loss", "value_loss", "grad_norm") + (() if shared else
                                                              ("critic/grad_norm",)):
        assert s1.metrics[key] == pytest.approx(s0.metrics[key], rel=1e-4, abs=1e-7), key
    assert abs(s0.metrics["kl"]) > 1e-3



def test_lora_dropout_keeps_the_no_grad_passes(tmp_path, monkeypatch):
    """With LoRA dropout a training forward is not the old policy's, so the first micro-batch's
    forward is not folded in: the old log-probs and the values come from the no-grad passes
    (old, values, reference: three passes over the batch), as without the fold."""
    calls = _spy_on_passes(monkeypatch)
    for dropout, passes in ((0.1, ["logprobs", "values", "logprobs"]), (0.0, ["logprobs"])):
        calls.clear()
        cfg = _cfg(tmp_path / f"d{dropout}", "train.per_device_train_batch_size=8",
                   "train.gradient_accumulation_steps=1", "algo.num_mini_batches=1",
                   "lora.enabled=true", f"lora.dropout={dropout}", "train.save_steps=0", *QUIET)
        t = PPOTrainer(cfg, progress=False)
        t.train_step()
        assert [c for c, _ in calls] == passes, dropout
