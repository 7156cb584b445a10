"""SFT warm start: labels on completions only, the loss goes down, label smoothing; the
optimisation is the trainers' shared engine."""

import pytest
import torch

from reasoner.evaluate import evaluate
from reasoner.models import build_tiny_model, load_model_and_tokenizer
from reasoner.tasks import get_task
from reasoner.trainers.sft import IGNORE, collate, run_sft, tokenize_examples


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=64, num_layers=2,
                            num_heads=4, num_kv_heads=2, max_position_embeddings=64)


def test_labels_cover_only_solution_and_eos(tiny_dir):
    _, tok = load_model_and_tokenizer(tiny_dir)
    rows = [{"question": "1+2", "solution": "1+2=3</think><answer>3</answer>"},
            {"question": "10+20", "solution": "10+20=30</think><answer>30</answer>"}]
    ex = tokenize_examples(tok, rows)
    batch = collate(ex, tok.pad_token_id)
    prompt_len = len(tok("1+2\n<think>", add_special_tokens=False)["input_ids"])
    assert ex[0][1] == prompt_len
    labels = batch["labels"][0]
    assert (labels[:prompt_len] == IGNORE).all()
    sol = [t for t in labels.tolist() if t != IGNORE]
    assert sol[-1] == tok.eos_token_id
    assert tok.decode(sol[:-1]) == rows[0]["solution"]
    assert batch["attention_mask"][0].sum() == len(ex[0][0]) < batch["input_ids"].shape[1]
    assert (batch["labels"][0][len(ex[0][0]):] == IGNORE).all()


def test_sft_reduces_loss_and_learns_format(tiny_dir):
    torch.manual_seed(0)
    model, tok = load_model_and_tokenizer(tiny_dir)
    task = get_task("arithmetic", digits=1)
    rows = task.rows("train", 80, 0)
    r = run_sft(model, tok, rows, max_steps=120, batch_size=16, lr=3e-3, progress=False)
    assert r["steps"] == 120 and len(r["losses"]) == 120
    assert r["loss_last"] < 0.3 * r["loss_first"]
    ev = evaluate(model, tok, task.rows("test", 10, 0), task=task, max_new_tokens=16)
    assert ev["format_rate"] >= 0.9 and ev["truncated_rate"] == 0.0


def test_label_smoothing_loss(tiny_dir):
    from reasoner.trainers.sft import completion_loss

    model, tok = load_model_and_tokenizer(tiny_dir)
    rows = [{"question": "1+2", "solution": "1+2=3</think><answer>3</answer>"}]
    batch = collate(tokenize_examples(tok, rows), tok.pad_token_id)
    with torch.no_grad():
        logp = torch.log_softmax(model(batch["input_ids"]).logits[:, :-1].float(), -1)
        labels = batch["labels"][:, 1:]
        keep = labels != IGNORE
        nll = -logp[keep].gather(-1, labels[keep].unsqueeze(-1)).mean()
        uniform = -logp[keep].mean()
        eps = 0.1
        got = completion_loss(model, batch, label_smoothing=eps)
    assert got.item() == pytest.approx(((1 - eps) * nll + eps * uniform).item(), rel=1e-5)
    assert completion_loss(model, batch).item() == pytest.approx(nll.item(), rel=1e-5)


def test_on_step_sees_every_step_and_a_part_way_copy_is_that_steps_model(tiny_dir):
    """on_step(n) runs after the n-th update: a copy taken there equals a run of n steps of the
    same schedule (the RLHF demo keeps its policy part-way through its backbone's SFT run)."""
    task = get_task("arithmetic", digits=1)
    rows = task.rows("train", 40, 0)
    kw = dict(max_steps=6, batch_size=8, lr=3e-3, progress=False,
              lr_scheduler_type="constant_with_warmup", warmup_ratio=0.0)
    model, tok = load_model_and_tokenizer(tiny_dir)
    seen, copies = [], {}

    def on_step(n: int) -> None:
        seen.append(n)
        if n == 4:
            copies[n] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    run_sft(model, tok, rows, on_step=on_step, **kw)
    assert seen == [1, 2, 3, 4, 5, 6]
    short, _ = load_model_and_tokenizer(tiny_dir)
    run_sft(short, tok, rows, **{**kw, "max_steps": 4})
    state = short.state_dict()
    assert all(torch.allclose(copies[4][k], state[k], atol=1e-6) for k in state)
    assert any(not torch.equal(copies[4][k], v) for k, v in model.state_dict().items())
