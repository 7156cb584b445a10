"""The lean forward (`reasoner.models.lean`) against the models' own Hugging Face forward, for
each architecture it covers (Qwen2, Llama, Mistral, Qwen3): same logits / hidden states and same
gradients, in float64, with left-padded prompts, GQA, Qwen2's q/k/v biases, Llama with attention
and MLP biases, Mistral's sliding window (while the sequence fits in it), Qwen3's q/k norms,
shared prompts and length buckets; and the cases where it must not run (peft, ZeRO-3, hooks,
checkpointing, a window the sequence passes, other architectures, ...)."""

import contextlib

import pytest
import torch

import reasoner.models.forward as forward
from reasoner.models import build_tiny_model, load_model_and_tokenizer
from reasoner.models.forward import forward_logits
from reasoner.models.lean import LEAN_ARCHS, _norm, forward_path, lean_allowed, lean_decoder
from reasoner.rollout import generate_rollouts

PROMPTS = ["1+2\n<think>", "123+456 is a longer prompt\n<think>", "7\n<think>"]


def _double(model):
    model = model.double()
    torch.manual_seed(7)
    with torch.no_grad():  # non-zero biases everywhere they exist (Qwen2 q/k/v, Llama's opts)
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import LlamaForCausalLM

    qwen, tok = load_model_and_tokenizer(build_tiny_model(
        tmp_path_factory.mktemp("q"), hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        seed=1))
    llama, _ = load_model_and_tokenizer(build_tiny_model(
        tmp_path_factory.mktemp("l"), arch="llama", hidden_size=64, num_layers=2, num_heads=4,
        num_kv_heads=1, seed=2))
    cfg = llama.config.__class__.from_dict({**llama.config.to_dict(), "attention_bias": True,
                                            "mlp_bias": True})
    torch.manual_seed(3)
    llama_bias = LlamaForCausalLM(cfg)
    mistral, _ = load_model_and_tokenizer(build_tiny_model(
        tmp_path_factory.mktemp("m"), arch="mistral", hidden_size=64, num_layers=2, num_heads=4,
        num_kv_heads=2, seed=4))
    # Mistral 7B v0.1's kind of config: a sliding window, here wider than the test sequences
    mistral.config.sliding_window = 64
    qwen3, _ = load_model_and_tokenizer(build_tiny_model(
        tmp_path_factory.mktemp("q3"), arch="qwen3", hidden_size=64, num_layers=2, num_heads=4,
        num_kv_heads=2, seed=5))
    torch.manual_seed(6)
    with torch.no_grad():  # q/k norm weights away from 1, so a skipped norm shows
        for layer in qwen3.model.layers:
            layer.self_attn.q_norm.weight.uniform_(0.5, 1.5)
            layer.self_attn.k_norm.weight.uniform_(0.5, 1.5)
    return {"qwen2": _double(qwen), "llama": _double(llama),
            "llama_bias": _double(llama_bias), "mistral": _double(mistral),
            "qwen3": _double(qwen3)}, tok


def _norm_classes():
    import importlib

    return [getattr(importlib.import_module(mod), norm) for mod, norm in LEAN_ARCHS.values()]


def _batch(model, tok, varied):
    ro = generate_rollouts(model, tok, PROMPTS, num_generations=3, max_completion_length=7,
                           generator_seed=0, temperature=1.0)
    assert len(set(ro.prompt_mask.sum(1).tolist())) == 3  # left padded: 3 prompt lengths
    c = ro.completion_ids.shape[1]
    lengths = torch.tensor([1, 7, 2, 7, 3, 7, 1, 2, 7]).clamp(max=c) if varied else \
        torch.full((9,), c)
    mask = (torch.arange(c)[None, :] < lengths[:, None]).long()
    ids = ro.completion_ids.masked_fill(mask == 0, tok.pad_token_id)
    return ro.prompt_ids, ro.prompt_mask, ids, mask


def _hf_norm_in_input_precision(self, x):
    """HF's RMSNorm normalises in float32 even for float64 input; the lean path uses the wider
    of the two. For a 1e-10-tight float64 comparison the reference does the same here."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    return self.weight * xf.to(x.dtype)


@contextlib.contextmanager
def _spied_lean_forward(calls, *, hf_reference):
    """Inside, every `lean_forward` call appends its `keep` to `calls`; with `hf_reference`, HF's
    norms run in the input's precision (the float64 reference of the value / reward tests)."""
    real = forward.lean_forward

    def spy(base, blocks, **kw):
        calls.append(kw.get("keep"))
        return real(base, blocks, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(forward, "lean_forward", spy)
        if hf_reference:
            for cls in _norm_classes():
                mp.setattr(cls, "forward", _hf_norm_in_input_precision)
        yield


def _run(model, args, *, fast, **kw):
    calls = []
    real = forward.lean_forward

    def spy(base, blocks, **kw):
        calls.append(len(blocks))
        return real(base, blocks, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(forward, "lean_forward", spy)
        if not fast:  # model.lean_forward=off
            for cls in _norm_classes():
                mp.setattr(cls, "forward", _hf_norm_in_input_precision)
        model.train()
        model.zero_grad(set_to_none=True)
        y = forward_logits(model, *args, allow_lean=fast, **kw)
        m = args[3].bool()
        (y[m] ** 2).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        model.eval()
    return y.detach()[m], grads, calls


@pytest.mark.parametrize("which", ["qwen2", "llama", "llama_bias", "mistral", "qwen3"])
@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("varied", [False, True])
def test_lean_forward_equals_hf_forward_and_gradients(models, which, share, hidden, varied):
    ms, tok = models
    model = ms[which]
    args = _batch(model, tok, varied)
    y_hf, g_hf, _ = _run(model, args, fast=False, share_prompts=share, return_hidden=hidden)
    y, g, calls = _run(model, args, fast=True, share_prompts=share, return_hidden=hidden)
    assert not _run(model, args, fast=False, share_prompts=share)[2]
    # one packed call: the prompts, then one block per length bucket (two when varied)
    assert calls == ([1 + (2 if varied else 1)] if share else [1])
    assert y.dtype == torch.float64 and y.shape == y_hf.shape
    torch.testing.assert_close(y, y_hf, rtol=1e-10, atol=1e-10)
    assert g.keys() == g_hf.keys()
    for name in g:
        torch.testing.assert_close(g[name], g_hf[name], rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("which", ["qwen2", "qwen3"])
@pytest.mark.parametrize("share", [False, True])
def test_packed_lean_forward_skips_padding_with_the_same_numbers(models, which, share):
    """Padding (left in prompts, right in completions) is left out of the projections, norms
    and MLPs, and the last layer runs only the positions whose outputs are wanted: fewer rows
    go through them, and the hidden states at real tokens and every gradient equal the unpacked
    forward's in float64; padded positions come back as zeros."""
    import reasoner.models.lean as lean

    ms, tok = models
    model = ms[which]
    args = _batch(model, tok, varied=True)
    rows_seen, last_seen = [], []
    hook = model.model.layers[0].mlp.up_proj.weight  # every token row meets this weight
    last = model.model.layers[-1].mlp.up_proj.weight  # only the rows whose outputs are wanted

    def spy(real, record):
        def f(x, w, b=None):
            if w is hook or w is last:
                record.append((w is last, x.reshape(-1, x.shape[-1]).shape[0]))
            return real(x, w, b)
        return f

    outs = {}
    for packed in (False, True):
        seen: list[int] = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.nn.functional, "linear", spy(torch.nn.functional.linear, seen))
            if not packed:
                mp.setattr(lean, "PACK_MIN_PADDING", 2.0)  # never pack
            y, g, calls = _run(model, args, fast=True, share_prompts=share, return_hidden=True)
        assert calls
        rows_seen.append(sum(r for is_last, r in seen if not is_last))
        last_seen.append(sum(r for is_last, r in seen if is_last))
        outs[packed] = y, g
    (y0, g0), (y1, g1) = outs[False], outs[True]
    real = int(args[1].sum()) + int(args[3][:, :-1].sum())  # fed tokens: prompt + completion
    n, c = args[2].shape
    if not share:  # one block: exactly the real tokens, instead of every padded slot
        assert rows_seen == [args[0].numel() + args[2][:, :-1].numel(), real]
        # the last layer: only the positions predicting completion tokens (the last prompt
        # token and the fed completion tokens), the real ones of them when packed
        assert last_seen == [n * c, n + int(args[3][:, :-1].sum())]
    else:  # distinct prompts once, completions in length buckets: still fewer rows
        assert rows_seen[1] < rows_seen[0]
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    assert g1.keys() == g0.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-10, atol=1e-12, msg=name)
    # padded positions are zeros in the packed forward
    with torch.no_grad():
        h = forward_logits(model, *args, return_hidden=True, share_prompts=share)
    pad = ~args[3].bool()
    pad[:, 0] = False  # completion token 0 is predicted by the (real) last prompt token
    pad[torch.arange(len(pad)), args[3].sum(1).clamp(max=args[3].shape[1] - 1)] = False
    assert pad.any() and h[pad].abs().max() == 0


@pytest.mark.parametrize("which", ["qwen2", "llama", "mistral", "qwen3"])
@pytest.mark.parametrize("share", [False, True])
def test_value_models_hidden_states_take_the_lean_forward(models, which, share):
    """A value / reward model (the same decoder under a ``score`` head, as PPO's critic and
    `reasoner rm` build it) takes the lean path for its hidden states: the same values and
    gradients as its own forward in float64, and the path says so."""
    from transformers import AutoModelForSequenceClassification

    from reasoner.models.value import forward_values

    ms, tok = models
    policy = ms[which]
    cfg = policy.config.__class__.from_dict({**policy.config.to_dict(), "num_labels": 1})
    cfg.pad_token_id = tok.pad_token_id
    value = AutoModelForSequenceClassification.from_config(cfg).double()
    missing = value.load_state_dict(policy.state_dict(), strict=False).missing_keys
    assert missing == ["score.weight"]
    torch.nn.init.normal_(value.score.weight, std=0.5)
    args = _batch(policy, tok, varied=True)
    width = args[0].shape[1] + args[2].shape[1]  # Mistral's window holds the sequences
    assert forward_path(value, True, width) == "lean"
    assert lean_decoder(value, width) is value.model
    outs = {}
    for fast in (False, True):
        calls = []
        with _spied_lean_forward(calls, hf_reference=not fast):
            value.train()
            value.zero_grad(set_to_none=True)
            v = forward_values(value, *args, share_prompts=share, allow_lean=fast)
            m = args[3].bool()
            (v[m] ** 2).sum().backward()
            grads = {n: p.grad.clone() for n, p in value.named_parameters()
                     if p.grad is not None}
            value.eval()
        assert bool(calls) == fast
        outs[fast] = v.detach()[m], grads
    (v_hf, g_hf), (v, g) = outs[False], outs[True]
    torch.testing.assert_close(v, v_hf, rtol=1e-9, atol=1e-10)
    assert g.keys() == g_hf.keys() and "score.weight" in g
    for name in g:
        torch.testing.assert_close(g[name], g_hf[name], rtol=1e-8, atol=1e-10, msg=name)



@pytest.mark.parametrize("which", ["qwen2", "llama", "qwen3"])
def test_reward_model_scores_take_the_lean_forward(models, which):
    """`sequence_scores` (what `reasoner rm` trains and every reward-model score uses) pools the
    same token as the model's own forward (the rightmost one that is not the pad id, even when
    a sequence ends in it) and gives the same scores and gradients in float64 through the lean
    forward, over right-padded rows of different lengths."""
    from transformers import AutoModelForSequenceClassification

    from reasoner.models.reward import sequence_scores

    ms, tok = models
    policy = ms[which]
    cfg = policy.config.__class__.from_dict({**policy.config.to_dict(), "num_labels": 1})
    cfg.pad_token_id = tok.pad_token_id
    rm = AutoModelForSequenceClassification.from_config(cfg).double()
    rm.load_state_dict(policy.state_dict(), strict=False)
    torch.nn.init.normal_(rm.score.weight, std=0.5)
    g = torch.Generator().manual_seed(0)
    pad = tok.pad_token_id
    lengths = [3, 11, 7, 1, 11, 5]
    ids = torch.full((len(lengths), 11), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(3, 60, (n,), generator=g)
        mask[r, :n] = 1
    ids[2, 6] = pad  # a row that ends in the pad id (an EOS used as padding): pooled at 5
    outs = {}
    for fast in (False, True):
        calls = []
        with _spied_lean_forward(calls, hf_reference=not fast):
            rm.train()
            rm.zero_grad(set_to_none=True)
            s = sequence_scores(rm, ids, mask, allow_lean=fast)
            (s * torch.arange(1.0, len(lengths) + 1, dtype=s.dtype)).sum().backward()
            grads = {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None}
            rm.eval()
        assert calls == ([[1]] if fast else [])  # the last layer for the pooled position only
        outs[fast] = s.detach(), grads
    (s_hf, g_hf), (s, g) = outs[False], outs[True]
    with torch.no_grad():
        own = rm(input_ids=ids, attention_mask=mask).logits[:, 0].float()
    torch.testing.assert_close(s_hf, own)
    torch.testing.assert_close(s, s_hf, rtol=1e-6, atol=1e-7)
    assert len(set(s.tolist())) == len(lengths)
    assert g.keys() == g_hf.keys() and "score.weight" in g
    for name in g:
        torch.testing.assert_close(g[name], g_hf[name], rtol=1e-8, atol=1e-10, msg=name)

def test_lean_forward_is_used_for_the_decode_prefill_and_matches_float32(models):
    """fp32 too: the generation-time logits of the lean decode match HF's forward logits."""
    ms, tok = models
    model = ms["qwen2"].float()
    try:
        ro = generate_rollouts(model, tok, PROMPTS, num_generations=2, max_completion_length=6,
                               generator_seed=1, return_logits=True)
        args = (ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)
        with torch.no_grad():
            ref = forward_logits(model, *args, allow_lean=False)
        m = ro.completion_mask.bool()
        torch.testing.assert_close(ro.generation_logits[m], ref[m], rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            lean = forward_logits(model, *args, share_prompts=True)
        torch.testing.assert_close(lean[m], ref[m], rtol=1e-4, atol=1e-4)
    finally:
        model.double()


def test_mistral_window_the_sequence_passes_runs_the_plain_forward(models):
    """HF's sliding window counts key slots (padding included); the lean path does not model
    it, so it runs only while the window cannot bite: prompt + completion <= the window."""
    ms, tok = models
    model = ms["mistral"]
    args = _batch(model, tok, varied=False)
    width = args[0].shape[1] + args[2].shape[1]
    assert width <= 64 and lean_decoder(model, width) is model.model
    assert lean_decoder(model, 65) is None and lean_decoder(model) is None
    assert "sliding window of 64" in forward_path(model, True, 65)
    y_hf = _run(model, args, fast=False)[0]
    model.config.sliding_window = width - 4  # now the window bites: the model's own forward
    try:
        y, _, calls = _run(model, args, fast=True)
        assert not calls
        assert not torch.allclose(y, y_hf)  # (and it is a different function: HF's window)
    finally:
        model.config.sliding_window = 64


def test_forward_path_says_what_runs(models, tmp_path):
    ms, _ = models
    for name in ("qwen2", "llama", "mistral", "qwen3"):
        assert forward_path(ms[name], True, 32) == "lean"
    assert forward_path(ms["qwen2"], False) == "transformers (model.lean_forward=off)"
    gpt2, _ = load_model_and_tokenizer(build_tiny_model(tmp_path / "g", arch="gpt2",
                                                        hidden_size=32, num_layers=1,
                                                        num_heads=2))
    assert forward_path(gpt2, True) == ("transformers (GPT2LMHeadModel has no lean forward (it "
                                        "has: Qwen2, Llama, Mistral, Qwen3))")


def test_lean_forward_switch():
    assert lean_allowed("auto") and not lean_allowed("off")
    with pytest.raises(ValueError, match="lean_forward must be one of auto, off"):
        lean_allowed("on")


def test_fast_path_predicate_refuses_what_it_cannot_reproduce(models, tmp_path):
    from transformers import Qwen2ForCausalLM

    ms, _ = models
    model = ms["qwen2"]
    assert lean_decoder(model) is model.model

    # a subclass (it may override forward) is not "exactly" a supported arch
    class Custom(Qwen2ForCausalLM):
        pass

    assert lean_decoder(Custom(model.config)) is None

    # DeepSpeed ZeRO-3 partitions parameters (ds_id); module hooks gather them
    p = model.model.layers[0].mlp.up_proj.weight
    p.ds_id = 3
    try:
        assert lean_decoder(model) is None
    finally:
        del p.ds_id

    # any forward hook (accelerate offload, user code) must see the module called
    h = model.model.layers[1].self_attn.register_forward_pre_hook(lambda mod, args: None)
    try:
        assert lean_decoder(model) is None
    finally:
        h.remove()
    assert lean_decoder(model) is model.model

    # gradient checkpointing / attention dropout: only while training
    def dropout(on: bool) -> None:
        model.config.attention_dropout = 0.1 if on else 0.0

    for turn_on in (lambda on: model.gradient_checkpointing_enable() if on
                    else model.gradient_checkpointing_disable(), dropout):
        turn_on(True)
        try:
            model.train()
            assert lean_decoder(model) is None
            model.eval()
            assert lean_decoder(model) is model.model
        finally:
            turn_on(False)
            model.eval()

    # sliding-window attention is not reproduced
    cfg = model.config.__class__.from_dict({**model.config.to_dict(), "use_sliding_window": True,
                                            "sliding_window": 4})
    assert lean_decoder(Qwen2ForCausalLM(cfg)) is None


def test_peft_model_runs_its_own_forward(models):
    peft = pytest.importorskip("peft")
    ms, tok = models
    base = ms["qwen2"]
    args = _batch(base, tok, varied=True)
    lora = peft.get_peft_model(
        Qwen2Copy(base), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert lean_decoder(lora) is None
    y_fast, _, calls = _run(base, args, fast=True, share_prompts=True)
    _, g_lora, calls_lora = _run(lora, args, fast=True, share_prompts=True)
    assert calls and not calls_lora  # the peft model ran its own modules
    assert any("lora_" in n and g.abs().sum() > 0 for n, g in g_lora.items())
    # LoRA's B starts at zero: the adapted model scores exactly like the base model (its
    # forward with the norm in float64, as in the comparison above)
    y_lora = _run(lora, args, fast=False, share_prompts=True)[0]
    torch.testing.assert_close(y_lora, y_fast, rtol=1e-10, atol=1e-10)


def Qwen2Copy(model):  # noqa: N802 (a fresh copy, so peft's in-place wrapping spares the fixture)
    import copy

    return copy.deepcopy(model)


@pytest.mark.parametrize("x_dtype,w_dtype,tol", [
    (torch.float32, torch.float32, 1e-6), (torch.bfloat16, torch.float32, 1e-2),
    (torch.bfloat16, torch.bfloat16, 1e-2)])
def test_rms_norm_node_equals_the_hf_module_in_every_dtype(x_dtype, w_dtype, tol):
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    torch.manual_seed(0)
    norm = Qwen2RMSNorm(48, eps=1e-6).to(w_dtype)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.5)
    x0 = (torch.randn(5, 7, 48) * 3).to(x_dtype)
    g = torch.randn(5, 7, 48)
    outs = []
    for lean in (False, True):
        x = x0.clone().requires_grad_()
        norm.zero_grad()
        y = _norm(norm, x) if lean else norm(x)
        y.backward(g.to(y.dtype))
        outs.append((y.detach(), x.grad, norm.weight.grad.clone()))
    (y_hf, gx_hf, gw_hf), (y, gx, gw) = outs
    assert y.dtype == y_hf.dtype and gx.dtype == x_dtype and gw.dtype == w_dtype
    assert torch.equal(y, y_hf)  # the same ops in the same order
    torch.testing.assert_close(gx.float(), gx_hf.float(), rtol=tol, atol=tol)
    torch.testing.assert_close(gw.float(), gw_hf.float(), rtol=tol, atol=tol)


def test_lean_forward_under_bf16_autocast_matches_hf(models):
    """The trainer's bf16 mode: the same ops under torch.autocast give the same dtypes and
    values (up to bf16 rounding) as the HF forward."""
    ms, tok = models
    model = ms["qwen2"].float()
    try:
        args = _batch(model, tok, varied=True)
        outs = []
        for fast in (False, True):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outs.append(_run(model, args, fast=fast, share_prompts=True))
        (y_hf, g_hf, _), (y, g, calls) = outs
        assert calls and y.dtype == y_hf.dtype
        torch.testing.assert_close(y.float(), y_hf.float(), rtol=0.05, atol=0.05)
        for name in g:
            scale = g_hf[name].abs().max()
            assert (g[name] - g_hf[name]).abs().max() <= 0.05 * scale + 1e-6, name
    finally:
        model.double()
