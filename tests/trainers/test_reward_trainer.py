"""`reasoner rm`: each completion of a ranking encoded once, all K(K-1)/2 pairs in one batch;
TRL RewardTrainer's loss (float64 oracle, and the real trl when installed); any micro-batch split
gives the same update; kill -9 and resume ends bit-identical; final/ loads with
AutoModelForSequenceClassification; eval.json; bad input names file and line; LoRA."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reasoner.config import load_config
from reasoner.metrics import read_metrics
from reasoner.models.reward import encode_sequence, load_reward_model, score_sequences
from reasoner.preferences.formats import read_preferences
from reasoner.trainers import train
from reasoner.trainers.reward import RewardTrainer, pair_losses, pair_weights

ROOT = Path(__file__).resolve().parents[2]
TINY_RM = ["model.path=tiny", "model.tiny_hidden_size=32", "model.tiny_num_layers=2",
           "model.tiny_num_heads=2", "model.tiny_num_kv_heads=1",
           "model.tiny_max_position_embeddings=128", "algo.name=rm", "train.device=cpu",
           "train.learning_rate=1e-3", "train.lr_scheduler_type=constant",
           "train.report_to_tensorboard=false", "train.save_steps=0", "train.logging_steps=1",
           "rm.eval_fraction=0.0"]


def write_rankings(path, n, seed=0, k=4):
    """Rankings of arithmetic answers: right ones first, then shorter wrong ones."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        outs = {f"{a}+{b}={a + b}</think><answer>{a + b}</answer>"}
        while len(outs) < k:
            w = a + b + rng.choice([-3, -2, -1, 1, 2, 3, 10])
            outs.add(f"{a}+{b}={w}</think><answer>{w}</answer>" + "!" * rng.randint(0, 3))
        best = sorted(outs, key=lambda c: (str(a + b) + "<" not in c.split(">")[-2] + "<",
                                           len(c)))
        lines.append({"prompt": f"{a}+{b}\n<think>", "completions": best})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def cfg_for(out, data, *extra):
    return load_config(None, [*TINY_RM, f"train.output_dir={out}", f"rm.dataset_path={data}",
                              *extra])


def test_a_ranking_is_encoded_once_and_gives_all_its_pairs_in_one_batch(tmp_path):
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in [
        {"prompt": "1+1\n<think>", "completions": ["a", "bb", ["c", "dd"]]},  # K=4, one tie
        {"prompt": "2+2\n<think>", "completions": ["x", "yy", "zzz"]},  # K=3
        {"prompt": "3+3\n<think>", "chosen": "6", "rejected": "7"},  # a TRL pair
    ]))
    cfg = cfg_for(tmp_path / "run", data, "train.per_device_train_batch_size=3",
                  "train.max_steps=1")
    t = RewardTrainer(cfg, progress=False)
    rows = []
    t.model.register_forward_hook(lambda m, args, kw, out: rows.append(kw["input_ids"].shape[0]),
                                  with_kwargs=True)
    m = t.train_step().metrics
    assert rows == [4 + 3 + 2]  # one forward: every completion once
    assert m["sequences"] == 9 and m["pairs"] == 5 + 3 + 1  # 6 + 3 + 1 pairs, the tie dropped
    t.cfg.rm.ties = "half"
    assert float(pair_weights(t.train_records[0].tie, "half").sum()) == 6


def _oracle(rc, rr, margin, coef):
    """TRL 1.16 RewardTrainer.compute_loss, written out in float64."""
    rc, rr, margin = (torch.as_tensor(x, dtype=torch.float64) for x in (rc, rr, margin))
    loss = -torch.nn.functional.logsigmoid(rc - rr - margin).mean()
    if coef is not None:
        loss = loss + coef * torch.mean((rc + rr) ** 2)
    return loss


@pytest.mark.parametrize("coef", [None, 0.01])
def test_pair_losses_are_trls_loss_float64(coef):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(10, generator=g, dtype=torch.float64) * 2
    first, second = torch.arange(0, 10, 2), torch.arange(1, 10, 2)
    margin = torch.rand(5, generator=g, dtype=torch.float64)
    tie = torch.zeros(5, dtype=torch.bool)
    ours = pair_losses(scores, first, second, tie, margin, center_rewards_coefficient=coef).mean()
    want = _oracle(scores[first], scores[second], margin, coef)
    assert float(ours) == pytest.approx(float(want), rel=1e-12)
    # a tie with ties=half: half a win each
    tie[0] = True
    d = scores[0] - scores[1]
    half = pair_losses(scores, first, second, tie, margin)[0]
    f = torch.nn.functional.logsigmoid
    assert float(half) == pytest.approx(float(-(f(d) + f(-d)) / 2), rel=1e-12)


def test_a_step_is_trls_loss_and_any_micro_batch_split_gives_the_same_update(tmp_path):
    data = tmp_path / "pairs.jsonl"
    rng = random.Random(0)
    data.write_text("".join(json.dumps({"prompt": f"{i}+1\n<think>", "chosen": f"{i + 1}",
                                        "rejected": f"{i + rng.randint(2, 9)}!",
                                        "margin": rng.random()}) + "\n" for i in range(8)))
    finals = []
    for bs, ga in [(8, 1), (2, 4)]:
        cfg = cfg_for(tmp_path / f"r{bs}", data, f"train.per_device_train_batch_size={bs}",
                      f"train.gradient_accumulation_steps={ga}", "train.max_steps=1",
                      "rm.center_rewards_coefficient=0.01", "train.max_grad_norm=0")
        t = RewardTrainer(cfg, progress=False)
        # the oracle on the step's own records, scored by the initial model in float64
        recs = [t.train_records[i] for i in t.order.take(8)]
        t.order = type(t.order)(len(t.train_records), cfg.train.seed)
        model64 = load_reward_model(tmp_path / f"r{bs}" / "init_model")[0].double()
        model64.load_state_dict({k: v.double() for k, v in t.model.state_dict().items()})
        s = [score_sequences(model64, r.seqs, t.tokenizer.pad_token_id, batch_size=2,
                             device="cpu") for r in recs]
        want = _oracle([x[0] for x in s], [x[1] for x in s], [float(r.margin[0]) for r in recs],
                       0.01)
        m = t.train_step().metrics
        assert m["loss"] == pytest.approx(float(want), rel=1e-5)
        finals.append({k: v.clone() for k, v in t.model.state_dict().items()})
    for k in finals[0]:  # float32 rounding: the lean forward packs each micro-batch's tokens,
        # so different splits run GEMMs of different shapes (one element moves ~1e-6 after Adam)
        torch.testing.assert_close(finals[0][k], finals[1][k], rtol=1e-5, atol=5e-6)


def test_trl_reward_trainer_compute_loss_gives_our_loss(tmp_path):
    trl = pytest.importorskip("trl")
    from types import SimpleNamespace

    from trl.trainer.reward_trainer import DataCollatorForPreference

    data = write_rankings(tmp_path / "r.jsonl", 6, k=2)
    cfg = cfg_for(tmp_path / "run", data, "train.per_device_train_batch_size=6",
                  "train.max_steps=1", "rm.center_rewards_coefficient=0.01")
    t = RewardTrainer(cfg, progress=False)
    recs = [t.train_records[i] for i in t.order.take(6)]
    t.order = type(t.order)(len(t.train_records), cfg.train.seed)
    batch = DataCollatorForPreference(pad_token_id=t.tokenizer.pad_token_id)(
        [{"chosen_ids": r.seqs[0], "rejected_ids": r.seqs[1]} for r in recs])
    acc = SimpleNamespace(gather_for_metrics=lambda x: x, gather=lambda x: x)
    from collections import defaultdict

    stub = SimpleNamespace(model=t.model, args=SimpleNamespace(center_rewards_coefficient=0.01),
                           accelerator=acc, _total_train_tokens=0, _tp_size=1,
                           _metrics={"train": defaultdict(list), "eval": defaultdict(list)})
    t.model.train()
    theirs = trl.RewardTrainer.compute_loss(stub, t.model, dict(batch))
    ours = t.train_step().metrics["loss"]
    assert ours == pytest.approx(float(theirs), rel=1e-5)
    # and TRL's text encoding is ours: prompt + completion + EOS
    rec = recs[0].record
    assert recs[0].seqs[0] == t.tokenizer(rec.prompt + rec.completions[0]
                                          + t.tokenizer.eos_token)["input_ids"]


def test_run_writes_final_eval_and_plots_and_final_loads_as_sequence_classification(tmp_path):
    data = write_rankings(tmp_path / "train.jsonl", 40)
    held = write_rankings(tmp_path / "test.jsonl", 12, seed=1)
    out = tmp_path / "run"
    summary = train(cfg_for(out, data, f"rm.eval_dataset_path={held}", "train.max_steps=6",
                            "train.per_device_train_batch_size=4", "rm.eval_steps=3",
                            "train.save_steps=3"), progress=False)
    assert summary["steps"] == 6
    recs = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in recs] == list(range(1, 7))
    assert "eval/accuracy" in recs[2] and "eval/accuracy" not in recs[1]
    assert all(r["pairs"] == 4 * 6 and r["sequences"] == 16 for r in recs)
    ev = json.loads((out / "eval.json").read_text())
    assert ev["num_pairs"] == 12 * 6 and ev["num_records"] == 12 and ev["step"] == 6
    assert sum(b["count"] for b in ev["calibration"]) == ev["num_pairs"]
    assert 0 <= ev["ece"] <= 1 and "bayes_accuracy" not in ev
    for png in ("calibration.png", "loss.png", "accuracy.png", "margin.png"):
        assert (out / png).stat().st_size > 1000, png
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(out / "final")
    assert hf.config.num_labels == 1 and hf.config.pad_token_id is not None
    model, tok = load_reward_model(out / "final")
    rec = read_preferences(held)[0]
    seqs = [encode_sequence(tok, rec.prompt, c) for c in rec.completions]
    ours = score_sequences(model, seqs, tok.pad_token_id, batch_size=4, device="cpu")
    theirs = [float(hf(input_ids=torch.tensor([s])).logits[0, 0]) for s in seqs]
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_kill_9_then_resume_ends_bit_identical(tmp_path):
    data = write_rankings(tmp_path / "train.jsonl", 30)
    extra = ["train.max_steps=5", "train.save_steps=2", "train.per_device_train_batch_size=3",
             "train.gradient_accumulation_steps=2", "rm.eval_fraction=0.2",
             "train.lr_scheduler_type=linear", "train.warmup_steps=2"]
    ref, out = tmp_path / "ref", tmp_path / "killed"
    train(cfg_for(ref, data, *extra), progress=False)
    env = dict(os.environ, REASONER_DEBUG_KILL="save:4",
               OMP_NUM_THREADS=str(torch.get_num_threads()))
    cmd = [sys.executable, "-m", "reasoner", "rm", "--output-dir", str(out), "--no-progress",
           *[x for x in TINY_RM if not x.startswith("algo.")], f"rm.dataset_path={data}", *extra]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-4").exists()
    summary = train(cfg_for(out, data, *extra), resume=True, progress=False)
    assert summary["resumed_from"] == 2 and summary["steps"] == 5
    a, b = load_file(ref / "final" / "model.safetensors"), load_file(out / "final" /
                                                                     "model.safetensors")
    assert a.keys() == b.keys() and "score.weight" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda rs: [{k: v for k, v in r.items()  # noqa: E731
                         if not any(w in k for w in ("time", "per_second", "memory"))}
                        for r in rs]
    assert strip(read_metrics(out / "metrics.jsonl")) == strip(read_metrics(ref / "metrics.jsonl"))
    assert json.loads((out / "eval.json").read_text())["accuracy"] == \
        json.loads((ref / "eval.json").read_text())["accuracy"]


def test_bad_input_names_file_and_line_before_anything_is_trained(tmp_path):
    data = write_rankings(tmp_path / "train.jsonl", 5)
    with data.open("a") as f:
        f.write(json.dumps({"prompt": "p", "completions": ["lonely"]}) + "\n")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "reasoner", "rm", "--output-dir", str(out), "--no-progress",
           *[x for x in TINY_RM if not x.startswith("algo.")], f"rm.dataset_path={data}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert f"{data}:6: a ranking needs at least two completions" in p.stderr
    assert not list(out.glob("checkpoint-*")) and not (out / "final").exists()
    p = subprocess.run([*cmd, "rm.ties=sometimes"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2 and "rm.ties must be one of drop, half" in p.stderr
    p = subprocess.run([*cmd[:-1]], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "rm.dataset_path must be set" in p.stderr


def test_lora_reward_model_trains_adapters_and_the_head_and_exports_merged(tmp_path):
    pytest.importorskip("peft")
    data = write_rankings(tmp_path / "train.jsonl", 12)
    out = tmp_path / "lora"
    train(cfg_for(out, data, "lora.enabled=true", "lora.r=4", "train.max_steps=2",
                  "train.per_device_train_batch_size=4", "train.save_steps=2"), progress=False)
    init = load_file(out / "init_model" / "model.safetensors")
    final = load_file(out / "final" / "model.safetensors")
    assert "score.weight" in final and not any("lora" in k for k in final)
    changed = [k for k in init if k in final and not torch.equal(init[k], final[k])]
    assert any("q_proj" in k for k in changed)  # the adapters, merged
    assert json.loads((out / "eval.json").read_text())["num_pairs"] > 0 \
        if (out / "eval.json").exists() else True


def test_data_that_leaves_nothing_to_train_on_or_no_prompt_to_split_by(tmp_path, capsys):
    from reasoner.config import ConfigError
    from reasoner.trainers.reward import in_eval_split

    longs = tmp_path / "long.jsonl"
    longs.write_text(json.dumps({"prompt": "p", "chosen": "x " * 200, "rejected": "y"}) + "\n"
                     + json.dumps({"prompt": "q", "completions": [["a", "b"]]}) + "\n")
    cfg = load_config(None, [*TINY_RM, f"train.output_dir={tmp_path / 'run'}",
                             f"rm.dataset_path={longs}", "rm.max_length=64",
                             "train.max_steps=1"])
    with pytest.raises(ConfigError, match=r"no preference records to train on: of 2 left for "
                                          r"training, 1 have a sequence longer than "
                                          r"rm.max_length=64 tokens and 1 no pair left in "
                                          r"the loss \(only ties"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()  # a failed start leaves nothing
    # pairs without a prompt (the conversation in chosen and rejected): split by their text,
    # not all held out or all kept by the hash of one empty prompt
    hh = [read_preferences(_write_line(tmp_path / f"hh{i}.jsonl", {
        "chosen": f"Human: q{i}? Assistant: good {i}",
        "rejected": f"Human: q{i}? Assistant: bad {i}"}))[0] for i in range(200)]
    held = sum(in_eval_split(r, 0.1) for r in hh)
    assert 8 <= held <= 35, held
    # an evaluation whose metrics hold no number (ties only, with rm.ties=half): eval.json is
    # still valid JSON (null, not NaN)
    data = write_rankings(tmp_path / "train.jsonl", 4)
    ties = _write_line(tmp_path / "ties.jsonl", {"prompt": "t", "completions": [["a", "b"]]})
    cfg = load_config(None, [*TINY_RM, f"train.output_dir={tmp_path / 'run2'}",
                             f"rm.dataset_path={data}", f"rm.eval_dataset_path={ties}",
                             "rm.ties=half", "train.max_steps=1"])
    train(cfg, progress=False)
    text = (tmp_path / "run2" / "eval.json").read_text()
    assert "NaN" not in text and json.loads(text)["accuracy"] is None


def _write_line(path, row):
    path.write_text(json.dumps(row) + "\n")
    return path


def test_pairs_whose_sides_encode_to_the_same_tokens_are_left_out(tmp_path, capsys):
    """A completion with the EOS the encoding appends anyway is the same token ids as one
    without: such a pair has a reward difference of 0 whatever the model, so it would add log 2
    to the loss and a miss to the accuracy. It is left out of training and evaluation and
    counted; a record left with no pair is left out, and a file of nothing else is an error."""
    from reasoner.config import ConfigError

    eos = "<|endoftext|>"  # the tiny model's
    data = tmp_path / "same.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in [
        {"prompt": "1+1\n<think>", "completions": ["2", "2" + eos, "3"]},  # 1 of 3 pairs same
        {"prompt": "2+2\n<think>", "chosen": "4" + eos, "rejected": "4"},  # nothing left
        {"prompt": "3+3\n<think>", "chosen": "6", "rejected": "7"},
    ]))
    cfg = cfg_for(tmp_path / "run", data, "train.per_device_train_batch_size=2",
                  "train.max_steps=1")
    t = RewardTrainer(cfg, progress=False)
    out = capsys.readouterr().out
    assert "left out 2 pairs whose two completions encode to the same token ids" in out
    assert "the first at" in out and "same.jsonl:1" in out
    assert len(t.train_records) == 2
    first = t.train_records[0]
    assert [(int(a), int(b)) for a, b in zip(first.first, first.second)] == [(0, 2), (1, 2)]
    assert [(c.first, c.second) for c in first.record.comparisons] == [(0, 2), (1, 2)]
    m = t.train_step().metrics
    assert m["pairs"] == 3
    # evaluation counts the same pairs: 3, not 5
    t.eval_records = t.train_records
    t.last_eval = None
    assert t.evaluate()["num_pairs"] == 3
    only = tmp_path / "only.jsonl"
    only.write_text(json.dumps({"prompt": "p", "chosen": "x" + eos, "rejected": "x"}) + "\n")
    with pytest.raises(ConfigError, match=r"only pairs whose two sides encode to the same token "
                                          r"ids: 1 such pairs"):
        RewardTrainer(cfg_for(tmp_path / "run2", only, "train.max_steps=1"), progress=False)
