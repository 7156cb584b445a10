"""SFT warm start (loss on completions, loss goes down) and evaluation (pass@k, metrics, CLI)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from reasoner.cli import app
from reasoner.evaluate import evaluate, pass_at_k
from reasoner.models import build_tiny_model, load_model_and_tokenizer
from reasoner.sft import IGNORE, collate, run_sft, tokenize_examples
from reasoner.tasks import get_task
from reasoner.tasks.base import Task
from reasoner.verifiers.rewards import register_reward


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=64, num_layers=2,
                            num_heads=4, num_kv_heads=2, max_position_embeddings=64)


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0  # fewer than k wrong samples
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


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


class _ScriptedTask(Task):
    """Its accuracy reward returns a fixed script of rewards, in order."""

    def __init__(self, script):
        super().__init__(name="scripted", accuracy_reward="scripted_reward")
        self.script = list(script)

        def reward(prompts, completions, **columns):
            out, self.script = self.script[: len(completions)], self.script[len(completions):]
            return out

        register_reward("scripted_reward", reward)


def test_evaluate_pass_at_k_and_accuracy(tiny_dir):
    model, tok = load_model_and_tokenizer(tiny_dir)
    rows = [{"question": "1+1", "answer": "2"}, {"question": "2+2", "answer": "4"},
            {"question": "3+3", "answer": "6"}]
    # row 0: 1 of 4 right, row 1: 2 of 4, row 2: unjudged sample -> left out of pass@k
    task = _ScriptedTask([1, 0, 0, 0, 1, 1, 0, 0, None, 1, 1, 1])
    ev = evaluate(model, tok, rows, task=task, num_samples=4, temperature=1.0,
                  max_new_tokens=4, batch_size=8, k_values=(1, 2, 4))
    assert ev["accuracy"] == pytest.approx(6 / 11)
    assert ev["unjudged"] == 1
    assert ev["pass@1"] == pytest.approx((0.25 + 0.5) / 2)
    assert ev["pass@2"] == pytest.approx(((1 - 3 / 6) + (1 - 1 / 6)) / 2)
    assert ev["pass@4"] == pytest.approx(1.0)
    assert 1.0 <= ev["mean_length"] <= 4.0 and 0.0 <= ev["truncated_rate"] <= 1.0
    with pytest.raises(ValueError, match="pass@8"):
        evaluate(model, tok, rows, task=task, num_samples=2, k_values=(8,), max_new_tokens=2)


def test_cli_sft_then_eval(tiny_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "sft"
    res = runner.invoke(app, ["sft", "--model", str(tiny_dir), "--task", "arithmetic",
                              "--output-dir", str(out), "--max-steps", "3", "--n-train", "50",
                              "--batch-size", "4", "--task-option", "digits=[1,2]", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    js = tmp_path / "eval.json"
    res = runner.invoke(app, ["eval", "--model", str(out), "--task", "countdown", "--n", "4",
                              "--num-samples", "2", "--temperature", "1.0", "--max-new-tokens", "8",
                              "--json", str(js)])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "pass@2" in res.output
    r = json.loads(js.read_text())
    assert r["n_rows"] == 4 and r["num_samples"] == 2 and 0.0 <= r["accuracy"] <= 1.0


def test_label_smoothing_loss(tiny_dir):
    from reasoner.sft import completion_loss

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
