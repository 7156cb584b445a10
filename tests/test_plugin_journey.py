"""The README's "Adding a verifier task", followed literally: its code block becomes a package
(`my_pkg.reverse`) with a real dist-info and entry_points.txt (from its toml block) in a temp
site directory, and the commands of its step 5 run on it: `reasoner verify`, `reasoner train`
and `reasoner eval` through the installed console script (plugin verifier, reward and task found
through entry points; a `module:function` reward from the working directory; no third-party
noise; --no-progress keeps the step lines), then the dataset variant in process."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from readme_blocks import blocks, commands, section
from typer.testing import CliRunner

SCRIPT = Path(sys.executable).with_name("reasoner")
NOISE = ("Setting accelerator", "Loading weights", "Writing model shards", "deprecated",
         "Traceback")

MY_YAML = """\
model: {path: tiny, tiny_hidden_size: 32, tiny_num_layers: 2, tiny_num_heads: 2,
        tiny_num_kv_heads: 1, tiny_max_position_embeddings: 128}
data: {task: reverse, template: r1_short, num_train_rows: 200}
rewards: {names: [reverse, format_soft, "my_rewards:brevity"], accuracy_reward: reverse}
rollout: {num_generations: 4, max_completion_length: 12}
train: {output_dir: runs/default, max_steps: 2, device: cpu, per_device_train_batch_size: 8,
        learning_rate: 1.0e-3, save_steps: 0, report_to_tensorboard: false,
        log_completions_steps: 0}
"""
# a reward in the working directory, named module:function (README: "imports too")
MY_REWARDS = "def brevity(prompts, completions, **columns):\n" \
             "    return [-len(c) / 100 for c in completions]\n"


def install_plugin(site: Path) -> None:
    """The README's package, installed the way pip would leave it: the module and a dist-info
    with the entry points of its pyproject block."""
    text = section("Adding a verifier task")
    (site / "my_pkg").mkdir(parents=True)
    (site / "my_pkg" / "__init__.py").write_text("")
    (site / "my_pkg" / "reverse.py").write_text(blocks(text, "python")[0])
    groups: dict[str, list[str]] = {}
    group = None
    for line in blocks(text, "toml")[0].splitlines():
        m = re.fullmatch(r'\[project\.entry-points\."(.+)"\]', line.strip())
        if m:
            group = groups.setdefault(m.group(1), [])
        elif "=" in line and group is not None:
            name, value = (x.strip() for x in line.split("=", 1))
            group.append(f"{name} = {json.loads(value)}")
    assert set(groups) == {"reasoner.verifiers", "reasoner.rewards", "reasoner.tasks"}
    info = site / "my_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "".join(f"[{g}]\n" + "\n".join(eps) + "\n\n" for g, eps in groups.items()))


@pytest.mark.skipif(not SCRIPT.is_file(), reason="the reasoner console script is not installed")
def test_readme_plugin_walkthrough_end_to_end(tmp_path, monkeypatch):
    site, work = tmp_path / "site", tmp_path / "work"
    install_plugin(site)
    work.mkdir()
    (work / "my.yaml").write_text(MY_YAML)
    (work / "my_rewards.py").write_text(MY_REWARDS)
    samples = [{"completion": "<answer>cba</answer>", "answer": "cba"},
               {"completion": "<answer>abc</answer>", "answer": "cba"},
               {"completion": "no tags", "answer": "cba"},
               {"completion": "<answer>x</answer>", "answer": ""}]
    (work / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    env = {k: v for k, v in os.environ.items() if k not in ("DS_ACCELERATOR", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        assert argv[0] == "reasoner"
        r = subprocess.run([str(SCRIPT), *argv[1:]], cwd=work, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, f"{argv}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        for noise in NOISE:
            assert noise not in r.stderr + r.stdout, (argv, noise, r.stderr[-3000:])
        return r

    step5 = blocks(section("Adding a verifier task"), "bash")
    verify, train, evaluate = commands(step5[0])
    run(verify)
    scored = [json.loads(x) for x in (work / "scored.jsonl").read_text().splitlines()]
    assert [(r["correct"], r["reason"]) for r in scored] == [
        (True, "ok"), (False, "wrong"), (False, "no answer"), (None, "unparseable gold")]
    assert [r["reward"] for r in scored] == [1.0, 0.0, 0.0, 0.0]

    r = run(train + ["--no-progress"])
    out = work / "runs" / "reverse"
    assert "step 1: reward" in r.stdout and "step 2: reward" in r.stdout  # kept by --no-progress
    assert "forward paths: decode: lean; update: lean" in r.stdout
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs] == [1, 2]
    for name in ("reverse", "format_soft", "my_rewards:brevity"):
        assert f"rewards/{name}/mean" in recs[0], name
    assert recs[0]["rewards/my_rewards:brevity/mean"] < 0
    assert (out / "final" / "model.safetensors").is_file()

    r = run(evaluate)
    assert re.search(r"n_rows\s*│\s*100\b", r.stdout), r.stdout
    assert re.search(r"accuracy\s*│\s*0\.\d{4}", r.stdout), r.stdout

    # the dataset variant, in this process (the temp site on sys.path, as PYTHONPATH did)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.chdir(work)
    words = [{"prompt": f"reverse {w}", "target": w[::-1]} for w in ("abc", "bad", "cafe")]
    (work / "words.jsonl").write_text("".join(json.dumps(r) + "\n" for r in words))
    from reasoner.cli import app

    train_words, eval_words = commands(step5[1])
    res = CliRunner().invoke(app, train_words[1:] + ["train.max_steps=1"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in (work / "runs/words/metrics.jsonl").read_text().splitlines()]
    assert list(recs[0]).count("rewards/reverse/mean") == 1 and "accuracy" in recs[0]
    res = CliRunner().invoke(app, eval_words[1:] + ["--max-new-tokens", "8", "--json", "e.json"])
    assert res.exit_code == 0, res.output
    ev = json.loads((work / "e.json").read_text())
    assert ev["n_rows"] == 3 and ev["unjudged"] == 0 and 0.0 <= ev["accuracy"] <= 1.0
