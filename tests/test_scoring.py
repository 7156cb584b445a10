"""Log-prob passes (`reasoner.scoring`): through reasoner_kernels' no-grad kernels (logits input,
and fused linear: the N x V logits never built), under TRITON_INTERPRET=1 in fp32 on the CPU,
equal to the torch path and to a plain log_softmax of the model's logits."""

import pytest
import reasoner_kernels
import torch

from reasoner.config import TrainConfig
from reasoner.engine import TorchEngine
from reasoner.rollout import generate_rollouts
from reasoner.scoring import ScoringSettings, completion_logprobs, token_logprobs

PROMPTS = ["1+2\n<think>", "123+456 is a longer prompt\n<think>", "7\n<think>"]


@pytest.fixture(scope="module")
def rollout(model_tok):
    model, tok = model_tok
    return generate_rollouts(model, tok, PROMPTS, num_generations=2, max_completion_length=5,
                             generator_seed=0)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("share", [False, True])
def test_kernel_passes_equal_the_torch_path(model_tok, rollout, fused, share, monkeypatch):
    model, _ = model_tok
    engine = TorchEngine(model, TrainConfig(), 1, torch.device("cpu"))
    calls = {"logprobs": 0, "fused_linear_logprobs": 0}
    for name in calls:  # count the kernel entry points the pass goes through
        real = getattr(reasoner_kernels, name)

        def spy(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(reasoner_kernels, name, spy)
    out = {}
    for backend in ("torch", "triton"):
        s = ScoringSettings(temperature=0.7, micro_batch_size=4, use_fused_linear=fused,
                            backend=backend, share_prompts=share)
        out[backend] = token_logprobs(model, rollout, s, engine)
    # 6 rows in micro-batches of 4: two calls per pass, of the kernel the settings ask for
    assert calls == ({"logprobs": 0, "fused_linear_logprobs": 4} if fused
                     else {"logprobs": 4, "fused_linear_logprobs": 0})
    m = rollout.completion_mask.bool()
    assert out["triton"].dtype == torch.float32 and out["triton"].shape == m.shape
    torch.testing.assert_close(out["triton"][m], out["torch"][m], rtol=1e-5, atol=1e-5)
    plain = completion_logprobs(model, rollout, temperature=0.7)
    torch.testing.assert_close(out["torch"][m], plain.detach()[m], rtol=1e-5, atol=1e-5)


def test_adapters_off_for_the_lora_reference(model_tok, rollout):
    peft = pytest.importorskip("peft")
    import copy

    model, _ = model_tok
    lora = peft.get_peft_model(copy.deepcopy(model),
                               peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # adapters that change the output
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    engine = TorchEngine(lora, TrainConfig(), 1, torch.device("cpu"))
    s = ScoringSettings(temperature=1.0, micro_batch_size=8, backend="torch")
    base = token_logprobs(model, rollout, s, engine)
    off = token_logprobs(lora, rollout, s, engine, disable_adapter=True)
    on = token_logprobs(lora, rollout, s, engine)
    m = rollout.completion_mask.bool()
    torch.testing.assert_close(off[m], base[m], rtol=1e-5, atol=1e-6)
    assert (on[m] - base[m]).abs().max() > 1e-3
