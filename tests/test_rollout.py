"""Rollouts: shapes, padding, EOS/truncation masks, seeding, and the left-padding log-prob identity."""

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from reasoner.models import build_tiny_model, load_model_and_tokenizer
from reasoner.rollout import (
    completion_logprobs,
    completion_masks,
    forward_logits,
    generate_rollouts,
)

PROMPTS = ["1+2\n<think>", "123+456 is a longer prompt\n<think>", "7\n<think>"]


@pytest.fixture(scope="module")
def model_tok(tmp_path_factory):
    d = build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, seed=1)
    return load_model_and_tokenizer(d)


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


def test_forward_logits_match_generate_and_unpadded(model_tok):
    model, tok = model_tok
    ro = generate_rollouts(model, tok, PROMPTS, num_generations=1, max_completion_length=10,
                           temperature=0.0, return_logits=True)
    # greedy: each token is the argmax of the generate-time logits
    assert torch.equal(ro.generation_logits.argmax(-1), ro.completion_ids)
    gen_lp = torch.log_softmax(ro.generation_logits.float(), -1)
    gen_lp = gen_lp.gather(-1, ro.completion_ids.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        lp = completion_logprobs(model, ro)
    m = ro.completion_mask.bool()
    assert torch.allclose(lp[m], gen_lp[m], atol=1e-4)
    for i in range(len(PROMPTS)):
        keep = ro.prompt_mask[i].bool()
        ids = torch.cat([ro.prompt_ids[i][keep], ro.completion_ids[i]]).unsqueeze(0)
        with torch.no_grad():
            logits = model(ids).logits[0, int(keep.sum()) - 1 : -1]
        single = torch.log_softmax(logits, -1).gather(-1, ro.completion_ids[i].unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(single, lp[i], atol=1e-4)


def test_forward_hidden_times_head_is_logits(model_tok):
    model, tok = model_tok
    ro = generate_rollouts(model, tok, PROMPTS, num_generations=2, max_completion_length=5,
                           generator_seed=0)
    args = (ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)
    with torch.no_grad():
        logits = forward_logits(model, *args)
        hidden = forward_logits(model, *args, return_hidden=True)
    n, c = ro.completion_ids.shape
    assert logits.shape == (n, c, model.config.vocab_size)
    assert hidden.shape == (n, c, model.config.hidden_size)
    assert torch.allclose(model.get_output_embeddings()(hidden), logits, atol=1e-5)


def test_gradients_flow(model_tok):
    model, tok = model_tok
    ro = generate_rollouts(model, tok, PROMPTS[:1], num_generations=2, max_completion_length=4,
                           generator_seed=0)
    lp = completion_logprobs(model, ro)
    (lp * ro.completion_mask).sum().backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0
    model.zero_grad()
