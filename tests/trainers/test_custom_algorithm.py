"""A new algorithm is one registered function named in the config: REINFORCE with a mean
baseline, as a user would add it."""

from pathlib import Path

import torch
from reasoner_kernels import selective_logp

from reasoner.algos import register_adv_est
from reasoner.algos.aggregation import token_weights
from reasoner.config import load_config
from reasoner.models.forward import forward_logits
from reasoner.trainers import ALGORITHMS

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"


@register_adv_est("reinforce_mean_baseline")
def reinforce_mean_baseline(batch, cfg):
    """REINFORCE with a mean baseline: each completion's reward minus the batch's mean reward."""
    return batch.rewards - batch.rewards[batch.valid].mean()


def test_a_registered_advantage_estimator_named_in_the_config_trains(tmp_path):
    cfg = load_config(TINY, [f"train.output_dir={tmp_path}",
                             "rewards.names=[toy_rewards:digit_reward]",
                             "algo.adv_estimator=reinforce_mean_baseline", "train.max_steps=1",
                             "train.save_steps=0", "train.report_to_tensorboard=false",
                             "train.max_grad_norm=0"])
    trainer = ALGORITHMS.get(cfg.algo.name)(cfg, progress=False)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    grads = {}
    step = trainer.engine.step

    def record(**kw):  # the gradient the update accumulated, before the optimizer uses it
        grads.update({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
        return step(**kw)

    trainer.engine.step = record
    out = trainer.train_step()

    # the estimator ran: advantages are the rewards minus their mean (no group, no std)
    r = out.shaped
    torch.testing.assert_close(out.advantages, r - r.mean(), rtol=0, atol=1e-12)
    assert len(set(out.advantages.tolist())) > 1
    # and the update is REINFORCE's gradient: -sum_t w A grad log p (on-policy, the clipped
    # surrogate's ratio is 1), with the dapo token weights, on the starting weights
    model = type(trainer.model)(trainer.model.config)
    model.load_state_dict(start)
    b = out.batch
    logits = forward_logits(model, b.prompt_ids, b.prompt_mask, b.completion_ids,
                            b.completion_mask)
    logp = selective_logp(logits, b.completion_ids, cfg.rollout.temperature)
    w = token_weights("dapo", b.completion_mask, micro_batch_size=4, max_completion_length=12)
    (-(out.advantages.float()[:, None] * logp * w).sum()).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)
    assert any(g.abs().sum() > 0 for g in grads.values())
