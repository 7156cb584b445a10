"""The README's sections on training, data and evaluation, followed literally: each command of
their bash blocks runs (in this process, through the CLI) on small local files, with a tiny
model where the README says /models/my-model and one training step / a few rows appended."""

import json
from pathlib import Path

import pytest
from readme_blocks import blocks, commands, section
from typer.testing import CliRunner

from reasoner.cli import app
from reasoner.models import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
SHORT_TRAIN = ["--max-steps", "1", "train.save_steps=0", "train.report_to_tensorboard=false"]
SHORT_EVAL = ["--n", "3", "--num-samples", "1", "--max-new-tokens", "8"]


def _run(argv: list[str], extra: list[str], model: Path) -> str:
    assert argv[0] == "reasoner"
    args = [a.replace("/models/my-model", str(model)).replace("configs/", f"{ROOT}/configs/")
            for a in argv[1:]]
    res = CliRunner().invoke(app, args + extra)
    assert res.exit_code == 0, f"{argv}\n{res.output[-3000:]}"
    return res.output


def test_readme_training_data_and_eval_commands(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.chdir(tmp_path)
    # "your model": a tiny random Qwen2 with room for the r1_zero prompt of a dataset
    model = build_tiny_model(tmp_path / "my-model", hidden_size=32, num_layers=1, num_heads=2,
                             num_kv_heads=1, max_position_embeddings=512)
    gsm8k = [{"question": f"Natalia had {i} clips and sold 2. How many are left?",
              "answer": f"She has {i} - 2 = {i - 2} clips left.\n#### {i - 2}"} for i in (5, 7, 9)]
    Path("gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gsm8k))
    pq.write_table(pa.Table.from_pylist([{"problem": f"What is {i}+{i}?",
                                          "solution": f"It is $\\boxed{{{2 * i}}}$."}
                                         for i in range(4)]), "math.parquet")
    Path("my.yaml").write_text(
        "data: {task: null, dataset_path: math.parquet, column_map: {question: problem, "
        "answer: solution}}\nrewards: {names: [math_accuracy]}\n")

    train_cmds = commands(blocks(section("Training"), "bash")[0])
    data_cmds = commands(blocks(section("Your model, your data"), "bash")[0])
    eval_cmds = commands(blocks(section("Evaluation"), "bash")[0])
    assert len(train_cmds) == 2 and len(data_cmds) == 2 and len(eval_cmds) == 4
    out = _run(train_cmds[0], SHORT_TRAIN, model)  # runs/tiny, then its resume (nothing left)
    assert "done: 1 steps" in out
    assert "done: 1 steps" in _run(train_cmds[1], SHORT_TRAIN, model)
    for cmd in data_cmds:
        _run(cmd, SHORT_TRAIN, model)
    for name in ("gsm8k", "math"):
        rec = json.loads((Path("runs") / name / "metrics.jsonl").read_text().splitlines()[0])
        assert rec["skipped_samples"] == 0  # every gold parsed (GSM8K's "#### x" included)
        assert "rewards/math_accuracy/mean" in rec
    results = []
    for cmd in eval_cmds:
        out = _run(cmd, SHORT_EVAL + ["--json", "e.json"], model)
        results.append(json.loads(Path("e.json").read_text()))
    assert [r["n_rows"] for r in results] == [3, 3, 3, 3]
    assert all(r["unjudged"] == 0 for r in results)
    # the dataset given by flags and by the training config's sections: the same evaluation
    assert results[2] == pytest.approx(results[3])
