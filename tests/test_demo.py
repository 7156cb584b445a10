"""`reasoner demo` at tiny settings: the summary's fields, the plots, the log, an honest warm start
(correct solutions, plain cross-entropy, a constant learning rate); the command line with --seed
and no third-party noise; the plotting and schedule helpers it uses."""

import copy
import json
import subprocess
import sys
from io import StringIO

import pytest
import torch
import yaml
from typer.testing import CliRunner

from reasoner.cli import app
from reasoner.config import ConfigError
from reasoner.demo import DEMO_MARK, DEMO_RECIPE, prepare_demo_dir, run_demo
from reasoner.metrics import smooth
from reasoner.models import build_tiny_model, load_model_and_tokenizer
from reasoner.tasks import get_task
from reasoner.tasks.arithmetic import integer_exact_reward
from reasoner.trainers import sft as sft_module

PNG = b"\x89PNG\r\n\x1a\n"
NOISE = ("Setting accelerator", "Loading weights", "Writing model shards", "real_accelerator",
         "Traceback")


def tiny_recipe() -> dict:
    r = copy.deepcopy(DEMO_RECIPE)
    r["demo"].update(sft_rows=48, sft_steps=4, sft_batch_size=8, eval_rows=5, eval_samples=2)
    r["model"].update(tiny_hidden_size=32, tiny_num_layers=1, tiny_num_heads=2,
                      tiny_num_kv_heads=1)
    r["data"]["num_train_rows"] = 32
    r["rollout"]["num_generations"] = 4
    r["train"].update(max_steps=3, per_device_train_batch_size=8, save_steps=0, logging_steps=1,
                      log_completions_steps=0, warmup_steps=1, report_to_tensorboard=False)
    return r


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny demo run (progress on, as a user runs it), its SFT call recorded."""
    d = tmp_path_factory.mktemp("demo")
    (d / "recipe.yaml").write_text(yaml.safe_dump(tiny_recipe()))
    calls = []
    real = sft_module.run_sft

    def recording_run_sft(model, tokenizer, rows, **kw):
        calls.append({"rows": rows, **kw})
        return real(model, tokenizer, rows, **kw)

    threads = torch.get_num_threads()
    mp = pytest.MonkeyPatch()
    mp.setattr(sft_module, "run_sft", recording_run_sft)
    err = StringIO()
    mp.setattr(sys, "stderr", err)
    try:
        summary = run_demo(d / "out", config_path=d / "recipe.yaml", progress=True, seed=3)
    finally:
        mp.undo()
    assert torch.get_num_threads() == threads  # the recipe's torch_threads: 1, undone
    return {"dir": d / "out", "summary": summary, "sft_calls": calls, "log": err.getvalue()}


def test_summary_fields_and_values(demo_run):
    s = demo_run["summary"]
    assert json.loads((demo_run["dir"] / "summary.json").read_text()) == s
    assert s["pass_k"] == 2
    for key in ("accuracy_before", "accuracy_after", "greedy_accuracy_before",
                "greedy_accuracy_after", "pass_at_k_before", "pass_at_k_after"):
        assert 0.0 <= s[key] <= 1.0, key
    for when in ("before", "after"):
        ev = s[f"eval_{when}"]
        assert ev["greedy"]["num_samples"] == 1 and ev["sampled"]["num_samples"] == 2
        assert ev["greedy"]["n_rows"] == ev["sampled"]["n_rows"] == 5
        # the top-level figures are the evaluations' own
        assert s[f"accuracy_{when}"] == ev["sampled"]["accuracy"]
        assert s[f"greedy_accuracy_{when}"] == ev["greedy"]["accuracy"]
        assert s[f"pass_at_k_{when}"] == ev["sampled"]["pass@2"]
        assert s[f"pass_at_k_{when}"] >= ev["sampled"]["pass@1"]
        assert s[f"mean_length_{when}"] == ev["sampled"]["mean_length"]
        assert 1.0 <= s[f"mean_length_{when}"] <= 24.0  # eval_max_new_tokens
    assert s["grpo_steps"] == 3 and s["sft"]["steps"] == 4
    assert s["wall_seconds"] >= s["grpo_seconds"] > 0.0
    # --seed replaced both seeds of the recipe
    assert s["config"]["train"]["seed"] == 3 and s["config"]["model"]["tiny_seed"] == 3
    assert len((demo_run["dir"] / "metrics.jsonl").read_text().splitlines()) == 3


def test_plots_are_written(demo_run):
    names = {"reward.png", "accuracy.png", "length.png", "heldout.png", "demo.png"}
    assert set(demo_run["summary"]["plots"]) == names
    for name in names:
        data = (demo_run["dir"] / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name


def test_warm_start_is_honest_sft(demo_run):
    (call,) = demo_run["sft_calls"]
    assert call.get("label_smoothing", 0.0) == 0.0
    assert call["lr_scheduler_type"] == "constant_with_warmup"
    # it stopped at the peak learning rate (no decay)
    assert demo_run["summary"]["sft"]["lr_last"] == pytest.approx(DEMO_RECIPE["demo"]["sft_lr"])
    rows = call["rows"]
    assert len(rows) == 48
    # every worked solution ends in the right answer
    assert integer_exact_reward([""] * len(rows), [r["solution"] for r in rows],
                                answer=[r["answer"] for r in rows]) == [1.0] * len(rows)
    # easier problems than GRPO's: 1-3 digit operands, some shorter than 3 digits
    ops = [int(x) for r in rows for x in r["question"].split("+")]
    assert max(ops) <= 999 and min(ops) < 100


def test_log_says_what_happens(demo_run):
    log = demo_run["log"]
    assert "warm start: 4 SFT steps on 48 correct worked solutions" in log
    assert "held-out before GRPO (5 problems): greedy" in log
    assert "held-out after GRPO" in log and "sft step 4/4" in log


def test_cli_seed_and_a_quiet_log(tmp_path):
    """The command as a user runs it (console entry, progress on): its one-line result, --seed,
    and nothing from other libraries in the log."""
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(tiny_recipe()))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "reasoner", "demo", "--config",
                        str(tmp_path / "recipe.yaml"), "--output-dir", str(out), "--seed", "5"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["train"]["seed"] == 5 and s["config"]["model"]["tiny_seed"] == 5
    assert (f"held-out accuracy before -> after GRPO: greedy {s['greedy_accuracy_before']:.3f} "
            f"-> {s['greedy_accuracy_after']:.3f}, sampled (T=1) {s['accuracy_before']:.3f}"
            in r.stdout)
    log = r.stdout + r.stderr
    for noise in NOISE:
        assert noise not in log, noise


def test_unknown_demo_and_rejected_recipes(tmp_path):
    res = CliRunner().invoke(app, ["demo", "nosuch", "--output-dir", str(tmp_path / "x")])
    assert res.exit_code == 2 and "unknown demo 'nosuch'; choose one of ['grpo', 'rlhf']" in res.output
    assert not (tmp_path / "x").exists()
    # the warm start of the recipe is correct solutions and plain cross-entropy: the old
    # recipe's label smoothing and injected wrong answers are unknown keys
    assert not {"sft_label_smoothing", "sft_wrong_answer_frac"} & set(DEMO_RECIPE["demo"])
    for key, value in (("sft_label_smoothing", 0.1), ("sft_wrong_answer_frac", 0.2)):
        r = tiny_recipe()
        r["demo"][key] = value
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
        with pytest.raises(ConfigError, match=f"unknown demo keys \\['{key}'\\]"):
            run_demo(tmp_path / "out", config_path=tmp_path / "r.yaml", progress=False)
    res = CliRunner().invoke(app, ["demo", "--config", str(tmp_path / "r.yaml"), "--output-dir",
                                   str(tmp_path / "cli")])
    assert res.exit_code == 2 and "unknown demo keys ['sft_wrong_answer_frac']" in res.output
    r = tiny_recipe()
    del r["demo"]["eval_rows"]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    with pytest.raises(ConfigError, match="missing \\['eval_rows'\\]"):
        run_demo(tmp_path / "out", config_path=tmp_path / "r.yaml", progress=False)
    with pytest.raises(ConfigError, match="config file '.*nope.yaml' does not exist"):
        run_demo(tmp_path / "out", config_path=tmp_path / "nope.yaml", progress=False)
    r = tiny_recipe()
    r["demo"]["sft_task_options"] = {"digits": [3, 1]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r))
    with pytest.raises(ConfigError, match="demo.sft_task_options"):
        run_demo(tmp_path / "out", config_path=tmp_path / "r.yaml", progress=False)


def test_smooth_hand_values():
    assert smooth([1.0, 0.0], 0.5) == pytest.approx([1.0, 1 / 3])  # (0.25 + 0) / (1 - 0.25)
    assert smooth([2.0] * 5, 0.9) == pytest.approx([2.0] * 5)  # debiased: no pull towards 0
    assert smooth([0.0, 1.0, 1.0], 0.0) == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="smoothing weight"):
        smooth([1.0], 1.0)


@pytest.mark.parametrize("schedule,factor", [("linear", 1 / 3), ("constant_with_warmup", 1.0)])
def test_sft_schedule_reaches_the_last_step(tmp_path, schedule, factor):
    """4 steps, warmup 1 (ceil(0.25 * 4)): linear's last step runs at 1 - 2/3 of the peak,
    constant_with_warmup's at the peak."""
    model, tok = load_model_and_tokenizer(build_tiny_model(
        tmp_path / "m", hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1))
    rows = get_task("arithmetic", ops=["+"], digits=1).rows("train", 8, 0)
    r = sft_module.run_sft(model, tok, rows, max_steps=4, batch_size=4, lr=1e-3,
                           warmup_ratio=0.25, progress=False, lr_scheduler_type=schedule)
    assert r["lr_last"] == pytest.approx(1e-3 * factor)
    with pytest.raises(ValueError, match="lr_scheduler_type must be one of"):
        sft_module.run_sft(model, tok, rows, max_steps=1, lr_scheduler_type="cosine_typo")


def test_the_demo_refuses_a_folder_it_did_not_write(tmp_path):
    """A training run (or anything else) in --output-dir is never replaced without --overwrite;
    an earlier run of the same demo is the demo's to replace."""
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text("mine")
    for which in ("grpo", "rlhf"):
        res = CliRunner().invoke(app, ["demo", which, "--output-dir", str(run), "--no-progress"])
        assert res.exit_code == 2, res.output
        assert "holds files no demo wrote (config.yaml, final)" in res.output
        assert "--overwrite" in res.output
    assert (run / "config.yaml").read_text() == "mine" and (run / "final").is_dir()
    assert not (run / DEMO_MARK).exists()
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        prepare_demo_dir(f, "grpo")
    d = prepare_demo_dir(tmp_path / "new" / "d", "grpo")  # made, parents too
    (d / "summary.json").write_text("{}")
    assert prepare_demo_dir(d, "grpo") == d  # a rerun of the same demo
    with pytest.raises(ConfigError, match="holds the grpo demo's output \\(summary.json\\)"):
        prepare_demo_dir(d, "rlhf")
    # --overwrite: the demo writes there, nothing else is removed here
    assert prepare_demo_dir(run, "rlhf", overwrite=True) == run
    assert (run / DEMO_MARK).read_text() == "rlhf\n" and (run / "config.yaml").read_text() == "mine"
