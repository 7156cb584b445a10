"""Against the real TRL PPO trainer (trl.experimental.ppo, in TRL up to 1.12: removed in 1.13,
so this is skipped with the TRL the GRPO parity test uses and when trl is not installed; run it
with ``pip install trl==1.12.0``, or with TRL 1.12 put first on PYTHONPATH).

One PPO update of TRL's PPOTrainer.train() and one PPOTrainer.train_step() of ours on identical
inputs: the same policy, reference and value model weights (the reference perturbed away from
the policy, so the KL penalty is not 0; the value head randomised, so the critic's trunk gets
gradients from the first step), the same 8 prompts and completions (TRL's
generation is replaced by ours: the completions and the policy's logits over them; some end with
EOS, some do not: TRL's missing_eos_penalty), the same scores (TRL's reward model call is
replaced by the scores), the same AdamW. With num_ppo_epochs=2 the second optimizer step is off
policy: ratios leave 1 and both clips act. Compared: the gradients of the policy and of the value
model at each of the two optimizer steps, and the weights after them. This covers TRL's
per-token rewards (k1 KL penalty, the score on the last token), GAE, advantage whitening, the
clipped policy and value losses and vf_coef. The completions fill max_completion_length: for a
completion that ends earlier TRL puts the score one position past its EOS and trains its value
there (padding_mask_p1); ours ends the episode at the EOS."""

import copy
from pathlib import Path

import pytest
import torch

ppo_mod = pytest.importorskip("trl.experimental.ppo.ppo_trainer",
                              reason="TRL's PPO trainer (trl <= 1.12)")

from reasoner.config import load_config  # noqa: E402
from reasoner.engine.optim import build_optimizer  # noqa: E402
from reasoner.trainers.batch import Batch  # noqa: E402
from reasoner.trainers.ppo import PPOTrainer  # noqa: E402
from reasoner.verifiers.rewards import WeightedReward  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N, P, C = 8, 5, 6
LR, KL_COEF, CLIP, CLIP_V, VF_COEF, PENALTY = 3e-3, 0.05, 0.2, 0.05, 0.1, 1.0


def recording(opt, log):
    """Record the gradients `opt` is about to apply at each step."""
    opt.register_step_pre_hook(lambda o, args, kwargs: log.append(
        {id(p): p.grad.detach().clone() for g in o.param_groups for p in g["params"]
         if p.grad is not None}))


def test_one_ppo_update_equals_trls(tmp_path, monkeypatch):
    from datasets import Dataset

    trl_ppo = pytest.importorskip("trl.experimental.ppo")
    cfg = load_config(
        ROOT / "configs" / "ppo_tiny.yaml",
        [f"train.output_dir={tmp_path / 'ours'}", "rollout.num_generations=1",
         f"rollout.max_completion_length={C}", "train.per_device_train_batch_size=8",
         "train.gradient_accumulation_steps=1", "algo.num_ppo_epochs=2",
         "algo.num_mini_batches=1", f"algo.kl_coef={KL_COEF}", "algo.kl_estimator=k1",
         f"algo.cliprange={CLIP}", f"algo.cliprange_value={CLIP_V}", f"algo.vf_coef={VF_COEF}",
         "algo.gamma=1.0", "algo.lam=0.95", f"algo.missing_eos_penalty={PENALTY}",
         f"train.learning_rate={LR}", f"critic.learning_rate={LR}", "train.max_grad_norm=0",
         "train.adam_epsilon=1e-6", "train.lr_scheduler_type=constant", "train.save_steps=0",
         "train.report_to_tensorboard=false", "train.log_completions_steps=0",
         "rollout.temperature=1.0"])
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(N, generator=g, dtype=torch.float64) * 2 - 0.5

    def fixed(prompts, completions, **cols):
        return [float(scores[int(r)]) for r in cols["idx"]]

    t = PPOTrainer(cfg, reward_funcs=[WeightedReward("fixed", fixed)], progress=False)
    tok = t.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    with torch.no_grad():  # a random value head: the critic's trunk learns from step 1
        t.critic_model.score.weight.normal_(0.0, 0.3, generator=g)
        for p in t.ref_model.parameters():  # a reference apart from the policy: KL_t != 0
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    policy0 = copy.deepcopy(t.model)
    critic0 = copy.deepcopy(t.critic_model)

    # 8 distinct prompts of P tokens, completions of C tokens (rows 0, 3, 5 end with EOS)
    digits = [i for i in range(10, 120) if i not in (eos, pad)]
    prompts = torch.tensor([[digits[(7 * i + j) % len(digits)] for j in range(P)]
                            for i in range(N)])
    comps = torch.tensor([[digits[(11 * i + 3 * j + 5) % len(digits)] for j in range(C)]
                          for i in range(N)])
    ends = [0, 3, 5]
    comps[ends, -1] = eos
    truncated = torch.ones(N, dtype=torch.bool)
    truncated[ends] = False
    rows = [{"question": f"q{i}", "answer": "0", "idx": i} for i in range(N)]
    batch = Batch(prompt_ids=prompts, prompt_mask=torch.ones(N, P, dtype=torch.long),
                  completion_ids=comps, completion_mask=torch.ones(N, C, dtype=torch.long),
                  texts=[f"c{i}" for i in range(N)], truncated=truncated, rows=rows,
                  prompts=[f"q{i}" for i in range(N)],
                  per_func=[[float(s) for s in scores]])
    monkeypatch.setattr(t, "collect", lambda timer: (batch, {}))

    # ---- TRL: its trainer on copies of the same models; generation and reward replaced
    policy, ref, value = copy.deepcopy(policy0), copy.deepcopy(t.ref_model), copy.deepcopy(critic0)
    rm = copy.deepcopy(critic0)
    by_prompt = {tuple(prompts[i].tolist()): i for i in range(N)}

    def batch_generation(model, queries, bs, pad_token_id, gen_cfg):
        idx = [by_prompt[tuple(q.tolist())] for q in queries]
        qr = torch.cat([queries, comps[idx]], 1)
        with torch.no_grad():
            logits = model(input_ids=qr, attention_mask=torch.ones_like(qr)).logits
        return qr, logits[:, P - 1:-1] / (gen_cfg.temperature)

    real_get_reward = ppo_mod.get_reward

    def get_reward(model, qr, pad_token_id, context_length):
        if model is rm:
            idx = [by_prompt[tuple(q.tolist())] for q in qr[:, :P]]
            return None, scores[idx].float(), None
        return real_get_reward(model, qr, pad_token_id, context_length)

    monkeypatch.setattr(ppo_mod, "batch_generation", batch_generation)
    monkeypatch.setattr(ppo_mod, "get_reward", get_reward)
    args = trl_ppo.PPOConfig(
        output_dir=str(tmp_path / "trl"), per_device_train_batch_size=N,
        gradient_accumulation_steps=1, num_mini_batches=1, num_ppo_epochs=2, total_episodes=N,
        response_length=C, stop_token="eos", missing_eos_penalty=PENALTY, kl_coef=KL_COEF,
        kl_estimator="k1", cliprange=CLIP, cliprange_value=CLIP_V, vf_coef=VF_COEF, gamma=1.0,
        lam=0.95, whiten_rewards=False, temperature=1.0, learning_rate=LR, use_cpu=True,
        report_to="none", bf16=False, num_sample_generations=0, seed=0,
        lr_scheduler_type="constant", local_rollout_forward_batch_size=N,
        per_device_eval_batch_size=N)
    trl_opt = build_optimizer(list(policy.parameters()) + list(value.parameters()), cfg.train)
    trl_grads: list[dict] = []
    recording(trl_opt, trl_grads)
    ds = Dataset.from_list([{"input_ids": prompts[i].tolist()} for i in range(N)])
    trainer = trl_ppo.PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref,
                                 reward_model=rm, train_dataset=ds, value_model=value,
                                 eval_dataset=ds, optimizers=(trl_opt, None))
    trainer.train()

    # ---- ours
    ours_p, ours_v = [], []
    recording(t.engine.optimizer, ours_p)
    recording(t.critic_engine.optimizer, ours_v)
    m = t.train_step().metrics
    assert m["clip/low"] + m["clip/high"] > 0 and m["value_clipfrac"] > 0  # clips acted
    assert abs(m["non_score_reward"]) > 1e-3  # the KL penalty is in the rewards

    assert len(trl_grads) == len(ours_p) == len(ours_v) == 2  # two epochs, one step each
    pairs = [(policy, t.model, ours_p), (value, t.critic_model, ours_v)]
    for k in range(2):
        for theirs, mine, log in pairs:
            for (name, p), q in zip(theirs.named_parameters(), mine.parameters()):
                a, b = trl_grads[k][id(p)], log[k][id(q)]
                torch.testing.assert_close(b, a, rtol=1e-4, atol=2e-6,
                                           msg=lambda s, n=name, k=k: f"step {k} {n}: {s}")
    for theirs, mine, _ in pairs:
        for (name, p), q in zip(theirs.named_parameters(), mine.parameters()):
            torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-4, atol=5e-6,
                                       msg=lambda s, n=name: f"{n}: {s}")
        assert any(not torch.equal(p, p0) for p, p0 in
                   zip(theirs.parameters(), (policy0 if theirs is policy else critic0)
                       .parameters()))
