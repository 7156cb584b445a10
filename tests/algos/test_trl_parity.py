"""Against the real TRL (skipped when `trl` is not installed; CI does not install it): TRL 1.16's
GRPOTrainer._compute_loss on the same per-token log-probs, advantages, old and reference
log-probs, micro-batch by micro-batch, gives our loss and gradient for every loss type, delta,
use_bias_correction_kl and beta."""

import pytest
import torch
from reasoner_kernels import selective_logp

from reasoner.algos import PolicyLossInput, get_policy_loss
from reasoner.algos.aggregation import token_weights
from reasoner.config import AlgoConfig

trl = pytest.importorskip("trl")

T = 0.9
N, C, V, MB = 8, 6, 13, 4  # gradient_accumulation_steps = 2


@pytest.fixture(scope="module")
def trl_trainer(model_tok, tmp_path_factory):
    from datasets import Dataset

    model, tok = model_tok
    args = trl.GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trl")), per_device_train_batch_size=MB,
        gradient_accumulation_steps=N // MB, num_generations=2, max_completion_length=C,
        use_cpu=True, report_to="none", bf16=False, beta=0.0, temperature=T)
    return trl.GRPOTrainer(model=model, reward_funcs=[lambda prompts, completions, **k: [0.0]
                                                      * len(completions)],
                           args=args, train_dataset=Dataset.from_list([{"prompt": "1+1"}] * 8),
                           processing_class=tok)


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, C, V, generator=g, dtype=torch.float64)
    ids = torch.randint(0, V, (N, C), generator=g)
    lengths = torch.tensor([6, 3, 1, 5, 2, 6, 4, 6])
    mask = (torch.arange(C)[None, :] < lengths[:, None]).long()
    adv = torch.randn(N, generator=g, dtype=torch.float64)
    lp = selective_logp(logits, ids, T)
    old = lp + 0.8 * torch.randn(N, C, generator=g, dtype=torch.float64)  # ratios far from 1
    ref = lp + 0.5 * torch.randn(N, C, generator=g, dtype=torch.float64)
    return logits, ids, mask, adv, old, ref


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("delta,bias_correction,beta", [
    (None, False, 0.0), (None, True, 0.04), (2.0, True, 0.04), (2.0, False, 0.1)])
def test_loss_and_gradient_equal_trls_compute_loss(trl_trainer, monkeypatch, loss_type, delta,
                                                   bias_correction, beta):
    tr = trl_trainer
    logits, ids, mask, adv, old, ref = _inputs(3)
    eps, eps_high = 0.2, 0.28
    for name, value in (("loss_type", loss_type), ("beta", beta), ("epsilon_low", eps),
                        ("epsilon_high", eps_high), ("current_gradient_accumulation_steps",
                                                     N // MB)):
        monkeypatch.setattr(tr, name, value, raising=False)
    monkeypatch.setattr(tr.args, "delta", delta)
    monkeypatch.setattr(tr.args, "use_bias_correction_kl", bias_correction)
    monkeypatch.setattr(tr.args, "steps_per_generation", N // MB)
    tr.model.train()

    # TRL: one _compute_loss per micro-batch, its per-token log-probs ours (from the same leaf)
    x = logits.clone().requires_grad_(True)
    total = 0.0
    for k in range(N // MB):
        s = slice(k * MB, (k + 1) * MB)
        lp = selective_logp(x[s], ids[s], T)
        monkeypatch.setattr(tr, "_get_per_token_logps_and_entropies",
                            lambda *a, _lp=lp, **kw: (_lp, torch.zeros_like(_lp), None))
        inputs = {"prompt_ids": torch.zeros(MB, 1, dtype=torch.long),
                  "prompt_mask": torch.ones(MB, 1, dtype=torch.long),
                  "completion_ids": ids[s], "completion_mask": mask[s], "advantages": adv[s],
                  "old_per_token_logps": old[s], "ref_per_token_logps": ref[s],
                  "num_items_in_batch": mask.sum()}
        loss = tr._compute_loss(tr.model, inputs)
        loss.backward()
        total += float(loss.detach())
    # ours: the registered clipped loss, token weights over the whole step
    cfg = AlgoConfig(loss_type=loss_type, beta=beta, epsilon=eps, epsilon_high=eps_high,
                     delta=delta, use_bias_correction_kl=bias_correction,
                     scale_rewards="none" if loss_type == "dr_grpo" else "group")
    y = logits.clone().requires_grad_(True)
    out = get_policy_loss("clipped")(PolicyLossInput(ids, adv[:, None], mask, old,
                                                     ref if beta else None, T, "torch",
                                                     logits=y), cfg)
    w = token_weights(loss_type, mask, micro_batch_size=MB, max_completion_length=C).double()
    ours = (out.loss * w).sum()
    ours.backward()
    assert float(ours) == pytest.approx(total, rel=1e-6, abs=1e-9)
    torch.testing.assert_close(y.grad, x.grad, rtol=1e-6, atol=1e-9)
