"""Rollouts: shapes, padding, EOS/truncation masks, seeding; our decode loop against HF generate
(with and without the lean decoder); sampling."""

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from reasoner.models.lean import lean_decoder
from reasoner.rollout import completion_masks, generate_rollouts

PROMPTS = ["1+2\n<think>", "123+456 is a longer prompt\n<think>", "7\n<think>"]


class ForceTokens(LogitsProcessor):
    """Row r emits forced[r] (a token list) first, then samples freely."""

    def __init__(self, forced, prompt_len):
        self.forced, self.prompt_len = forced, prompt_len

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        for r, seq in enumerate(self.forced):
            if step < len(seq):
                scores[r] = float("-inf")
                scores[r, seq[step]] = 0.0
        return scores


def test_shapes_groups_and_left_padding(model_tok):
    model, tok = model_tok
    ro = generate_rollouts(model, tok, PROMPTS, num_generations=4, max_completion_length=6,
                           temperature=1.0, generator_seed=0)
    n = len(PROMPTS) * 4
    assert ro.prompt_ids.shape[0] == ro.completion_ids.shape[0] == n
    assert ro.completion_ids.shape == ro.completion_mask.shape and ro.completion_ids.shape[1] <= 6
    assert ro.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ro.num_generations == 4 and len(ro.completion_texts) == n
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS]
    assert ro.prompt_ids.shape[1] == max(lengths)
    for g, length in enumerate(lengths):
        row = g * 4
        assert ro.prompt_mask[row].tolist() == [0] * (max(lengths) - length) + [1] * length
        assert (ro.prompt_ids[row][: max(lengths) - length] == tok.pad_token_id).all()
        assert torch.equal(ro.prompt_ids[row], ro.prompt_ids[row + 3])


def test_eos_masks_truncation_and_texts(model_tok):
    model, tok = model_tok
    eos = tok.eos_token_id
    ans, close = tok.convert_tokens_to_ids(["<answer>", "</answer>"])
    seven = tok("7", add_special_tokens=False)["input_ids"][0]
    forced = [[ans, seven, close, eos], [seven, eos], [seven] * 8, [eos]]
    prompt_len = max(len(tok(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS[:2])
    ro = generate_rollouts(
        model, tok, PROMPTS[:2], num_generations=2, max_completion_length=8, temperature=1.0,
        generator_seed=0,
        generate_kwargs={"logits_processor": LogitsProcessorList([ForceTokens(forced, prompt_len)])},
    )
    assert ro.completion_texts[0] == "<answer>7</answer>"
    assert ro.completion_texts[1] == "7"
    assert ro.completion_texts[2] == "7" * 8
    assert ro.completion_texts[3] == ""
    assert ro.completion_mask.sum(1).tolist() == [4, 2, 8, 1]
    assert ro.truncated.tolist() == [False, False, True, False]
    assert ro.completion_ids.shape[1] == 8
    assert ro.completion_ids[0].tolist() == [ans, seven, close, eos] + [tok.pad_token_id] * 4
    assert ro.completion_ids[3].tolist() == [eos] + [tok.pad_token_id] * 7


def test_completion_masks_first_eos_only():
    ids = torch.tensor([[5, 1, 5, 1], [5, 5, 5, 5], [1, 1, 1, 1], [5, 5, 5, 9]])
    mask, truncated = completion_masks(ids, [1, 9])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1]]
    assert truncated.tolist() == [False, True, False, False]


def test_seeding_and_train_mode_restored(model_tok):
    model, tok = model_tok
    model.train()
    kw = dict(num_generations=3, max_completion_length=8, temperature=1.0)
    a = generate_rollouts(model, tok, PROMPTS, generator_seed=7, **kw)
    assert model.training
    b = generate_rollouts(model, tok, PROMPTS, generator_seed=7, **kw)
    c = generate_rollouts(model, tok, PROMPTS, generator_seed=8, **kw)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    model.eval()


# ---------------------------------------------------------------- our decode loop (engine="loop")


@pytest.fixture(scope="module")
def more_archs(tmp_path_factory):
    """Tiny random Mistral (with a sliding window wider than the test) and Qwen3."""
    from reasoner.models import build_tiny_model, load_model_and_tokenizer

    out = {}
    for arch, seed in (("mistral", 4), ("qwen3", 5)):
        out[arch] = load_model_and_tokenizer(build_tiny_model(
            tmp_path_factory.mktemp(arch), arch=arch, hidden_size=64, num_layers=2,
            num_heads=4, num_kv_heads=2, seed=seed))
    out["mistral"][0].config.sliding_window = 256
    return out


@pytest.mark.parametrize("which", ["qwen2", "llama", "mistral", "qwen3"])
@pytest.mark.parametrize("lean", [True, False])
def test_greedy_loop_equals_hf_generate_token_for_token(model_tok, llama_tok, more_archs, which,
                                                       lean):
    model, tok = {"qwen2": model_tok, "llama": llama_tok, **more_archs}[which]
    assert lean_decoder(model, 64) is not None  # every arch takes the lean decode step
    # model.lean_forward=off: the loop runs the model's own forward
    kw = dict(num_generations=2, max_completion_length=12, temperature=0.0, return_logits=True,
              allow_lean=lean)
    hf = generate_rollouts(model, tok, PROMPTS, engine="hf", **kw)
    loop = generate_rollouts(model, tok, PROMPTS, engine="loop", **kw)
    assert torch.equal(hf.prompt_ids, loop.prompt_ids)  # left padded: 3 prompt lengths
    assert len(set(loop.prompt_mask.sum(1).tolist())) == 3
    assert torch.equal(hf.completion_ids, loop.completion_ids)
    assert torch.equal(hf.completion_mask, loop.completion_mask)
    assert torch.equal(hf.truncated, loop.truncated)
    assert hf.completion_texts == loop.completion_texts
    m = loop.completion_mask.bool()
    assert torch.allclose(hf.generation_logits[m], loop.generation_logits[m], atol=1e-4)


def test_plain_path_uses_the_current_cache_argument(model_tok):
    """The model's own forward (model.lean_forward=off) gets its KV cache by the current
    keyword: no deprecation warning from transformers (``past_key_values`` goes in 5.40)."""
    import warnings

    from reasoner.models.forward import forward_logits

    model, tok = model_tok
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ro = generate_rollouts(model, tok, PROMPTS, num_generations=2, max_completion_length=4,
                               generator_seed=0, allow_lean=False)
        forward_logits(model, ro.prompt_ids, ro.prompt_mask, ro.completion_ids,
                       ro.completion_mask, share_prompts=True, allow_lean=False)


def test_fast_decode_step_keeps_llama_biases(llama_tok):
    """Llama with attention_bias and mlp_bias: the fast decode step must use every bias."""
    from transformers import LlamaForCausalLM

    base, tok = llama_tok
    cfg = base.config.__class__.from_dict({**base.config.to_dict(), "attention_bias": True,
                                           "mlp_bias": True})
    torch.manual_seed(5)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.5)
    kw = dict(num_generations=1, max_completion_length=8, temperature=0.0, return_logits=True)
    hf = generate_rollouts(model, tok, PROMPTS, engine="hf", **kw)
    loop = generate_rollouts(model, tok, PROMPTS, engine="loop", **kw)
    m = loop.completion_mask.bool()
    assert torch.allclose(hf.generation_logits[m], loop.generation_logits[m], atol=1e-4)
    assert torch.equal(hf.completion_ids, loop.completion_ids)


def test_greedy_loop_with_eos_stops_rows_and_compacts(model_tok):
    """With a second EOS id that greedy decoding emits in some rows, rows end at different
    steps: every row is still the HF greedy decode, with or without dropping finished rows."""
    import copy

    from reasoner.rollout import decode_loop

    base, tok = model_tok
    model = copy.deepcopy(base)
    with torch.no_grad():  # larger weights: the random model's greedy output varies per row
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10)
    kw = dict(num_generations=2, max_completion_length=10, temperature=0.0)
    free = generate_rollouts(model, tok, PROMPTS, engine="hf", **kw).completion_ids
    # a token some rows emit early and others never do
    extra = next(t for t in free[:, :5].flatten().tolist()
                 if 0 < sum(t in row for row in free.tolist()) < len(free))
    model.generation_config.eos_token_id = [tok.eos_token_id, extra]
    hf = generate_rollouts(model, tok, PROMPTS, engine="hf", **kw)
    loop = generate_rollouts(model, tok, PROMPTS, engine="loop", **kw)
    lengths = loop.completion_lengths.tolist()
    assert torch.equal(hf.completion_ids, loop.completion_ids)
    assert lengths == hf.completion_lengths.tolist()
    assert torch.equal(hf.truncated, loop.truncated)
    assert len(set(lengths)) > 1 and loop.truncated.any() and not loop.truncated.all()
    for i, n in enumerate(lengths):  # the first EOS ends the row, pads after it
        row = loop.completion_ids[i].tolist()
        if not loop.truncated[i]:
            assert row[n - 1] == extra and extra not in row[: n - 1]
        assert all(t == tok.pad_token_id for t in row[n:])
    eos = [tok.eos_token_id, extra]
    a, _ = decode_loop(model, loop.prompt_ids, loop.prompt_mask, max_new_tokens=10,
                       eos_ids=eos, pad_id=tok.pad_token_id, sample=False, compact=True)
    b, _ = decode_loop(model, loop.prompt_ids, loop.prompt_mask, max_new_tokens=10,
                       eos_ids=eos, pad_id=tok.pad_token_id, sample=False, compact=False)
    assert torch.equal(a, b)


def test_sampled_loop_is_deterministic_per_seed_and_leaves_global_rng(model_tok):
    model, tok = model_tok
    kw = dict(num_generations=4, max_completion_length=10, temperature=1.0, engine="loop")
    state = torch.get_rng_state()
    a = generate_rollouts(model, tok, PROMPTS, generator_seed=11, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    b = generate_rollouts(model, tok, PROMPTS, generator_seed=11, **kw)
    c = generate_rollouts(model, tok, PROMPTS, generator_seed=12, **kw)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.completion_texts == b.completion_texts
    assert not torch.equal(a.completion_ids, c.completion_ids)
    # masks and truncation follow the tokens as with HF generate
    from reasoner.rollout import completion_masks, eos_token_ids

    mask, truncated = completion_masks(a.completion_ids, eos_token_ids(model, tok))
    assert torch.equal(mask, a.completion_mask) and torch.equal(truncated, a.truncated)
    assert a.completion_ids[a.completion_mask == 0].eq(tok.pad_token_id).all()


def test_filter_logits_top_k_top_p_by_hand_and_against_hf_warpers():
    from transformers import TopKLogitsWarper, TopPLogitsWarper

    from reasoner.rollout import filter_logits

    inf = float("-inf")
    # probs of row 0: [0.1, 0.2, 0.3, 0.4] (log-probs as logits)
    x = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]))
    assert filter_logits(x, top_k=2)[0].isinf().tolist() == [True, True, False, False]
    assert filter_logits(x, top_k=0).isinf().sum() == 0
    # top_p=0.65: keep 0.4 + 0.3 (ascending cumsum 0.1, 0.3 <= 0.35 removed)
    assert filter_logits(x, top_p=0.65)[0].isinf().tolist() == [True, True, False, False]
    assert filter_logits(x, top_p=0.75)[0].isinf().tolist() == [True, False, False, False]
    assert filter_logits(x, top_p=0.01)[0].isinf().tolist() == [True, True, True, False]
    assert filter_logits(torch.tensor([[0.0, inf]]), top_p=0.5).tolist() == [[0.0, inf]]
    g = torch.Generator().manual_seed(0)
    for k, p in [(5, 1.0), (0, 0.9), (7, 0.8), (50, 0.5)]:
        y = torch.randn(6, 40, generator=g) * 3
        ref = y.clone()
        if k:
            ref = TopKLogitsWarper(k)(None, ref)
        if p < 1:
            ref = TopPLogitsWarper(p)(None, ref)
        assert torch.equal(filter_logits(y, top_k=k, top_p=p).isinf(), ref.isinf())


def test_sample_tokens_follows_the_filtered_softmax():
    from reasoner.rollout import sample_tokens

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    logits = torch.log(probs).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    tok = sample_tokens(logits, generator=g)
    freq = torch.bincount(tok, minlength=5).float() / len(tok)
    assert freq[4] == 0  # a zero-probability token is never drawn
    assert torch.allclose(freq, probs, atol=0.015)
    tok = sample_tokens(logits, top_k=2, generator=g)
    freq = torch.bincount(tok, minlength=5).float() / len(tok)
    assert freq[2:].sum() == 0 and abs(float(freq[0]) - 0.625) < 0.015
    t2 = sample_tokens(logits, temperature=0.5, generator=g)  # p^2 renormalised
    freq = torch.bincount(t2, minlength=5).float() / len(t2)
    sharp = probs**2 / (probs**2).sum()
    assert torch.allclose(freq, sharp, atol=0.015)


def test_engine_option_is_checked(model_tok):
    model, tok = model_tok
    with pytest.raises(ValueError, match="engine"):
        generate_rollouts(model, tok, PROMPTS, num_generations=1, max_completion_length=2,
                          engine="vllm")
    with pytest.raises(ValueError, match="generate_kwargs"):
        generate_rollouts(model, tok, PROMPTS, num_generations=1, max_completion_length=2,
                          engine="loop", generate_kwargs={"bad_words_ids": [[5]]})
