"""The plain-torch engine: a non-finite step is skipped, a step without backward is a zero-gradient
step, a bad DeepSpeed file is named."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from reasoner.config import TrainConfig
from reasoner.engine import build_engine


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)

    def save_pretrained(self, path, safe_serialization=True):
        save_file({k: v.contiguous() for k, v in self.state_dict().items()},
                  str(path / "model.safetensors"))


def _engine(model):
    cfg = TrainConfig(learning_rate=0.1, warmup_steps=2, lr_scheduler_type="linear")
    return build_engine(model, cfg, 10, torch.device("cpu"))


def test_non_finite_grad_norm_skips_update():
    model = TinyModel()
    eng = _engine(model)
    before = model.lin.weight.detach().clone()
    (model.lin(torch.ones(1, 3)).sum() * float("inf")).backward()
    res = eng.step()
    assert not res.applied and not np.isfinite(res.grad_norm)
    assert torch.equal(model.lin.weight, before)
    assert all(p.grad is None for p in model.parameters())


def test_deepspeed_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        build_engine(TinyModel(), TrainConfig(), 1, torch.device("cpu"), tmp_path / "nope.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="list.json.*JSON object"):
        build_engine(TinyModel(), TrainConfig(), 1, torch.device("cpu"), tmp_path / "list.json")


def test_a_step_without_backward_is_a_zero_gradient_step():
    """A rank with nothing to learn from still steps: Adam's moments decay and the schedule
    advances, as with an all-zero gradient."""
    model = TinyModel()
    eng = _engine(model)
    model.lin(torch.ones(1, 3)).sum().backward()
    eng.step()
    eng.step()  # warmup step 1 of 2 (lr 0.05): only the momentum of step 0 moves the weights
    before = model.lin.weight.detach().clone()
    res = eng.step()  # no backward at all
    assert res.applied and res.grad_norm == 0.0 and res.lr == pytest.approx(0.1)
    assert not torch.equal(model.lin.weight, before)  # momentum keeps moving the weights
    assert eng.scheduler.last_epoch == 3


def _lm_steps(model, steps, lr):
    """`steps` optimizer steps of next-token cross-entropy on a fixed random batch; returns the
    engine."""
    cfg = TrainConfig(learning_rate=lr, lr_scheduler_type="constant", max_grad_norm=0.0)
    eng = build_engine(model, cfg, steps, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (4, 16), generator=gen)
    for _ in range(steps):
        logits = model(input_ids=ids).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 ids[:, 1:].reshape(-1))
        eng.backward(loss)
        assert eng.step().applied
    return eng


def test_bf16_weights_train_through_fp32_masters(tmp_path):
    """model.dtype=bfloat16 at lr 1e-6: the weights the optimizer holds change as many entries
    as in float32 (an update of 1e-6 is far below half a bf16 ulp of most weights, so without
    fp32 masters almost none would move), the optimizer state is fp32, the model's weights are
    the masters rounded to bf16, and a checkpoint restores the masters exactly."""
    from reasoner.models import build_tiny_model, load_model_and_tokenizer

    d = build_tiny_model(tmp_path / "m", hidden_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, seed=0)
    changed = {}
    for dtype in ("float32", "bfloat16"):
        model, _ = load_model_and_tokenizer(d, dtype=dtype)
        before = [p.detach().float().clone() for p in model.parameters()]
        eng = _lm_steps(model, 3, 1e-6)
        held = eng.optimizer.param_groups[0]["params"]  # what the optimizer updates
        assert all(p.dtype == torch.float32 for p in held)
        assert all(v.dtype == torch.float32 for st in eng.optimizer.state.values()
                   for v in st.values() if v.dim() > 0)
        changed[dtype] = sum(int((h.detach() != b).sum()) for h, b in zip(held, before))
        for p, h in zip(model.parameters(), held):
            assert p.dtype == getattr(torch, dtype)
            assert torch.equal(p.detach(), h.detach().to(p.dtype))
    total = sum(p.numel() for p in model.parameters())
    assert changed["float32"] > 0.8 * total
    assert abs(changed["bfloat16"] - changed["float32"]) < 0.05 * changed["float32"], changed
    # save / load: the masters come back exactly (not the rounded weights)
    eng.save(tmp_path / "ck")
    model2, _ = load_model_and_tokenizer(d, dtype="bfloat16")
    eng2 = build_engine(model2, TrainConfig(learning_rate=1e-6), 3, torch.device("cpu"))
    eng2.load(tmp_path / "ck")
    for a, b in zip(eng.master_params, eng2.master_params):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)


def test_a_resumed_run_with_more_steps_follows_the_longer_schedule():
    """train.max_steps raised on --resume: the next step takes the new schedule's rate, not
    the restored one (0 at the end of the old linear schedule); the same length restores the
    rate to the bit."""
    cfg = TrainConfig(learning_rate=0.1, warmup_steps=0, lr_scheduler_type="linear")
    model = TinyModel()
    eng = build_engine(model, cfg, 2, torch.device("cpu"))
    for _ in range(2):
        model.lin(torch.ones(1, 3)).sum().backward()
        eng.step()
    state = eng.state_dict()
    assert eng.optimizer.param_groups[0]["lr"] == 0.0  # the end of the 2-step schedule
    longer = build_engine(TinyModel(), cfg, 4, torch.device("cpu"))
    longer.load_state_dict(state)
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # step 2 of 4
    assert longer.step().lr == pytest.approx(0.05)
    same = build_engine(TinyModel(), cfg, 2, torch.device("cpu"))
    same.load_state_dict(state)
    assert same.optimizer.param_groups[0]["lr"] == 0.0
