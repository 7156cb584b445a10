"""The scoring forward (`reasoner.models.forward.forward_logits`): the left-padding log-prob
identity, hidden states times the head, gradients, and the shared-prompt forward."""

import pytest
import torch

from reasoner.models.forward import _length_buckets, forward_logits
from reasoner.rollout import generate_rollouts
from reasoner.scoring import completion_logprobs

PROMPTS = ["1+2\n<think>", "123+456 is a longer prompt\n<think>", "7\n<think>"]


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


def test_length_buckets_split_only_when_it_saves_columns():
    one = _length_buckets(torch.tensor([6, 6, 5, 6]), 6)
    assert len(one) == 1 and one[0][1] == 6 and one[0][0].tolist() == [0, 1, 2, 3]
    two = _length_buckets(torch.tensor([2, 9, 3, 9, 1, 2]), 9)
    assert [(sorted(i.tolist()), w) for i, w in two] == [([0, 2, 4, 5], 3), ([1, 3], 9)]


@pytest.mark.parametrize("varied", [False, True])
@pytest.mark.parametrize("hidden", [False, True])
def test_shared_prompt_forward_matches_plain_forward_and_grads(model_tok, hidden, varied):
    model, tok = model_tok
    ro = generate_rollouts(model, tok, PROMPTS, num_generations=3, max_completion_length=6,
                           generator_seed=0)
    if varied:  # completions of lengths 1..6: rows are split into two length buckets
        lengths = torch.tensor([1, 6, 2, 6, 3, 6, 1, 2, 6])
        ro.completion_mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
        ro.completion_ids = ro.completion_ids.masked_fill(ro.completion_mask == 0, 0)
    args = (ro.prompt_ids, ro.prompt_mask, ro.completion_ids, ro.completion_mask)
    m = ro.completion_mask.bool()
    outs, grads = [], []
    for share in (False, True):
        model.zero_grad()
        y = forward_logits(model, *args, return_hidden=hidden, share_prompts=share)
        (y[m].float() ** 2).sum().backward()
        outs.append(y.detach()[m])
        grads.append([p.grad.clone() for p in model.parameters()])
    model.zero_grad()
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    for a, b in zip(*grads):
        assert (a - b).abs().max() <= 2e-4 * a.abs().max() + 1e-6
