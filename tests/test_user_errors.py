"""Ordinary mistakes are one line naming the field and the fix (exit status 2, no traceback), and
a run that fails while starting leaves nothing behind; an output directory holding an earlier run
is refused unless --resume or --overwrite; the prompt + completion budget is checked against the
model's positions; a step whose samples can't be judged warns, or stops the run, saying why."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reasoner.cli import app
from reasoner.models import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
QUICK = ["train.max_steps=1", "train.save_steps=0", "train.report_to_tensorboard=false"]


def _train(out, *overrides, flags=()):
    return CliRunner().invoke(app, ["train", "--config", TINY, "--output-dir", str(out),
                                    "--no-progress", *flags, *QUICK, *overrides])


def _one_line_error(res, *parts):
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [x for x in res.output.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, res.output
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert "Traceback" not in res.output
    return lines[0]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("gpt2"), arch="gpt2", hidden_size=32,
                            num_layers=1, num_heads=2, max_position_embeddings=64)


@pytest.fixture(scope="module")
def no_chat_dir(tmp_path_factory):
    """A tiny model whose tokenizer has no chat template."""
    from transformers import AutoTokenizer

    d = build_tiny_model(tmp_path_factory.mktemp("nochat"), hidden_size=32, num_layers=1,
                         num_heads=2, num_kv_heads=1)
    tok = AutoTokenizer.from_pretrained(d)
    tok.chat_template = None
    for f in d.glob("*chat_template*"):
        f.unlink()
    tok.save_pretrained(d)
    assert not AutoTokenizer.from_pretrained(d).chat_template
    return d


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_train_mistakes_are_one_line_and_leave_no_litter(tmp_path, no_chat_dir):
    out = tmp_path / "run"
    data = _jsonl(tmp_path / "mathy.jsonl", [{"problem": "1+1", "solution": "2"}] * 4)
    dataset = ["data.task=null", "data.task_options={}", f"data.dataset_path={data}",
               "rewards.names=[format_soft]"]
    cases = [
        (["model.path=/no/such/model"], ["model.path '/no/such/model' does not exist",
                                         "local Hugging Face model directory"]),
        (["data.task=null", "data.dataset_path=/no/such.jsonl", "rewards.names=[format_soft]"],
         ["data.task_options needs data.task (a dataset takes none): set data.task_options={}"]),
        (["data.task=null", "data.task_options={}", "data.dataset_path=/no/such.jsonl",
          "rewards.names=[format_soft]"], ["data.dataset_path '/no/such.jsonl' does not exist"]),
        (dataset, ["row 0 has no 'question' column", "['problem', 'solution']",
                   "data.column_map, ours on the left"]),
        (dataset + ["data.column_map={problem: question}"],
         ["data.column_map: unknown target column 'problem'",
          "reversed? {question: problem} would map your 'problem' to our 'question'"]),
        (dataset + ["data.column_map={question: problem, answer: answer}"],
         ["row 0 has no column 'answer' (data.column_map maps our 'answer' to it"]),
        ([f"model.path={no_chat_dir}", "data.template=chat"],
         ["data.template=chat: template 'chat' needs a tokenizer with a chat_template",
          "use the r1_zero or plain template"]),
        (["data.task=chess"], ["data.task: unknown task 'chess'; available: arithmetic"]),
        (["data.num_train_rows=1000"],  # 1-digit addition has 100 problems
         ["data.num_train_rows=1000: task 'arithmetic' could only make"]),
    ]
    if not torch.cuda.is_available():
        cases.append((["train.device=cuda"], ["train.device=cuda, but torch",
                                              "set train.device=cpu, or auto"]))
    for overrides, parts in cases:
        _one_line_error(_train(out, *overrides), *parts)
        assert not out.exists(), overrides  # nothing left behind
    # a directory that existed keeps what it had, and only that
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _one_line_error(_train(out, *dataset), "row 0 has no 'question' column")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_unreadable_datasets_are_one_line_naming_the_file(tmp_path, gpt2_dir):
    """A file that can't be read (not UTF-8, a line that is not JSON, a format we don't read,
    a datasets directory whose split is not chosen or not there): one line naming
    data.dataset_path and where, in train and eval alike, and nothing left behind."""
    import datasets

    out = tmp_path / "run"
    (tmp_path / "latin1.jsonl").write_bytes(b'{"question": "1+1", "answer": "2"}\n'
                                            b'{"question": "caf\xe9", "answer": "2"}\n')
    (tmp_path / "broken.jsonl").write_text('{"question": "1+1", "answer": "2"}\n{"question": \n')
    (tmp_path / "d.csv").write_text("question,answer\n1+1,2\n")
    rows = [{"question": "1+1", "answer": "2"}] * 2
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                          "test": datasets.Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "dd"))
    cases = [
        ("latin1.jsonl", [], ["latin1.jsonl:2: not UTF-8 text (byte 0xe9", "save the file as UTF-8"]),
        ("broken.jsonl", [], ["broken.jsonl:2: invalid JSON"]),
        ("d.csv", [], ["d.csv: unsupported dataset format"]),
        ("dd", [], ["holds splits ['test', 'train']; choose one with data.split"]),
        ("dd", ["data.split=dev"], ["has no split 'dev' (data.split); it has ['test', 'train']"]),
        ("broken.jsonl", ["data.split=test"], ["is a file, which has no splits; data.split "
                                               "('test') is for a datasets.save_to_disk"]),
    ]
    for name, extra, parts in cases:
        path = str(tmp_path / name)
        res = _train(out, "data.task=null", "data.task_options={}", f"data.dataset_path={path}",
                     "rewards.names=[format_soft]", *extra)
        _one_line_error(res, f"data.dataset_path '{path}': ", *parts)
        assert not out.exists(), name
        split = [f"--split={x.split('=')[1]}" for x in extra]
        res = CliRunner().invoke(app, ["eval", "--model", str(gpt2_dir), "--dataset", path,
                                       "--reward", "format_soft", *split])
        _one_line_error(res, f"data.dataset_path '{path}': ", *parts)


def test_conversational_prompts_take_the_chat_template(tmp_path):
    """TRL's conversational rows (a list of messages as the prompt) go through the model's chat
    template, never as the list's repr; under a text template, or with an empty question, the
    run is refused in one line."""
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3+4"}]
    data = _jsonl(tmp_path / "conv.jsonl", [{"prompt": conv, "answer": "7"}] * 4)
    common = ["data.task=null", "data.task_options={}", f"data.dataset_path={data}",
              "data.column_map={question: prompt}", "rewards.names=[math_accuracy]",
              "train.log_completions_steps=1"]
    _one_line_error(_train(tmp_path / "a", *common),
                    "data.template=r1_short: the question is a conversation (a list of "
                    "messages), which template 'r1_short' can't show", "data.template=chat")
    assert not (tmp_path / "a").exists()
    res = _train(tmp_path / "b", *common, "data.template=chat")
    assert res.exit_code == 0, res.output
    logged = [json.loads(x) for x in (tmp_path / "b" / "completions.jsonl").read_text().splitlines()]
    assert {r["prompt"] for r in logged} == {"Be brief.\nUser: 3+4\nAssistant: <think>"}
    empty = _jsonl(tmp_path / "empty.jsonl", [{"question": "1+1", "answer": "2"},
                                              {"question": None, "answer": "2"}])
    _one_line_error(_train(tmp_path / "c", *common[:2], f"data.dataset_path={empty}",
                           "rewards.names=[math_accuracy]"),
                    "row 1 has an empty 'question' (None); every row needs a prompt")


def test_a_buggy_reward_plugin_is_named_and_leaves_no_litter(tmp_path):
    """A reward function that returns the wrong number of values: one line naming it and where
    it is defined; one that raises: its own traceback, with a note naming it. Either way a run
    that fails in its first step leaves nothing behind."""
    import toy_rewards

    line = toy_rewards.short_reward.__code__.co_firstlineno
    _one_line_error(_train(tmp_path / "a", "rewards.names=[toy_rewards:short_reward]"),
                    f"error: rewards.names: reward function 'toy_rewards:short_reward' "
                    f"({toy_rewards.__file__}:{line}) returned 7 values for 8 completions")
    assert not (tmp_path / "a").exists()
    res = _train(tmp_path / "b", "rewards.names=[toy_rewards:raising_reward]")
    assert isinstance(res.exception, KeyError), res.output
    assert "raised by reward function 'toy_rewards:raising_reward'" in \
        res.exception.__notes__[0]
    assert not (tmp_path / "b").exists()


def test_lora_target_modules_on_gpt2(tmp_path, gpt2_dir):
    pytest.importorskip("peft")
    base = [f"model.path={gpt2_dir}", "lora.enabled=true", "rollout.max_completion_length=8"]
    _one_line_error(_train(tmp_path / "a", *base),
                    "lora.target_modules ['q_proj', 'k_proj', 'v_proj', 'o_proj'] match no "
                    "module of GPT2LMHeadModel; its linear layers are c_attn, c_proj, c_fc",
                    "all-linear")
    assert not (tmp_path / "a").exists()
    res = _train(tmp_path / "b", *base, "lora.target_modules=all-linear")
    assert res.exit_code == 0, res.output
    assert "forward paths: decode: transformers (PeftModelForCausalLM has no lean forward" \
        in res.output
    res = _train(tmp_path / "c", *base, "lora.target_modules=[c_attn]")
    assert res.exit_code == 0, res.output


def test_context_length_is_checked_before_the_first_step(tmp_path, gpt2_dir):
    # GPT-2's learned positions: 64 here; the longest 1-digit prompt is 5 tokens ("9+9\n<think>")
    line = _one_line_error(_train(tmp_path / "g", f"model.path={gpt2_dir}",
                                  "rollout.max_completion_length=60"),
                           "the longest prompt (5 tokens) + rollout.max_completion_length (60) = "
                           "65 tokens do not fit in the model's 64 positions (n_positions)",
                           "lower rollout.max_completion_length, or leave long prompts out with "
                           "rollout.max_prompt_length")
    assert line
    assert not (tmp_path / "g").exists()
    # a RoPE model (tiny.yaml: 128 positions) would run on silently past them
    _one_line_error(_train(tmp_path / "q", "rollout.max_completion_length=125"),
                    "do not fit in the model's 128 positions (max_position_embeddings)")
    res = _train(tmp_path / "ok", f"model.path={gpt2_dir}", "rollout.max_completion_length=59")
    assert res.exit_code == 0, res.output


def test_output_dir_holding_a_run_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    assert _train(out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    before = (out / "final" / "model.safetensors").stat().st_mtime_ns
    _one_line_error(_train(out), f"train.output_dir '{out}' holds an earlier run (",
                    "checkpoint-1", "--resume continues it, --overwrite replaces it")
    assert (out / "final" / "model.safetensors").stat().st_mtime_ns == before  # untouched
    res = _train(out, flags=["--resume"])  # finished: nothing left to do, final/ rewritten
    assert res.exit_code == 0 and "done: 1 steps" in res.output, res.output
    final_mtime = (out / "final" / "model.safetensors").stat().st_mtime_ns
    # --overwrite with a start that fails, in setup (a file that is not JSON) or in the first
    # step (no sample judged): the earlier run is put back as it was, nothing else is left
    log = (out / "metrics.jsonl").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    data = ["data.task=null", "data.task_options={}", "rewards.names=[integer_exact]"]
    _one_line_error(_train(out, *data, f"data.dataset_path={bad}", flags=["--overwrite"]),
                    "bad.jsonl:1")
    unjudged = _jsonl(tmp_path / "gsm.jsonl", [{"question": f"{i}+1", "answer": "####"}
                                              for i in range(8)])
    _one_line_error(_train(out, *data, f"data.dataset_path={unjudged}", flags=["--overwrite"]),
                    "could not be judged")
    assert (out / "final" / "model.safetensors").stat().st_mtime_ns == final_mtime
    assert (out / "metrics.jsonl").read_text() == log
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert not list(out.glob(".overwritten-*")), sorted(p.name for p in out.iterdir())
    res = _train(out, "train.max_steps=2", flags=["--overwrite"])  # a start that succeeds
    assert res.exit_code == 0, res.output
    assert not list(out.glob(".overwritten-*"))  # the earlier run is gone
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2]  # a new run, not the old one's log continued
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite deletes only a run's files


def test_overwrite_and_resume_never_lose_what_the_run_needs(tmp_path):
    out = tmp_path / "run"
    assert _train(out).exit_code == 0
    # --overwrite would delete final/, which this run starts from: refused, nothing deleted
    _one_line_error(_train(out, f"model.path={out / 'final'}", flags=["--overwrite"]),
                    f"model.path '{out / 'final'}' lies in '{out}', in what --overwrite "
                    "would delete")
    assert (out / "final" / "model.safetensors").is_file() and (out / "checkpoint-1").is_dir()
    # a run that left no checkpoint (stopped before its first save): --resume would start over
    # and truncate its metrics
    for cp in out.glob("checkpoint-*"):
        shutil.rmtree(cp)
    log = (out / "metrics.jsonl").read_text()
    _one_line_error(_train(out, flags=["--resume"]), "--resume: ", "holds an earlier run but no "
                    "checkpoint to resume from", "--overwrite starts it over")
    assert (out / "metrics.jsonl").read_text() == log
    # --resume continues the run as configured: a changed learning rate or algorithm would be
    # ignored (the optimizer comes back from the checkpoint) or mixed in, so it is refused;
    # going further (train.max_steps) is what --resume is for
    out2 = tmp_path / "run2"
    assert _train(out2).exit_code == 0
    _one_line_error(_train(out2, "train.max_steps=2", "train.learning_rate=0.5", "algo.name=rloo",
                           flags=["--resume"]),
                    f"--resume continues the run in '{out2}' as its config.yaml says; these "
                    "differ: ", "train.learning_rate", "-> 0.5", "algo.name 'grpo' -> 'rloo'",
                    "--overwrite starts a new run with them")
    res = _train(out2, "train.max_steps=2", flags=["--resume"])
    assert res.exit_code == 0 and "done: 2 steps" in res.output, res.output
    # an older version wrote data.num_train_rows: 10000 where null now means the same rows
    out3 = tmp_path / "run3"
    assert _train(out3, "data.num_train_rows=null").exit_code == 0
    saved = (out3 / "config.yaml").read_text()
    assert "num_train_rows: null" in saved
    (out3 / "config.yaml").write_text(saved.replace("num_train_rows: null",
                                                    "num_train_rows: 10000"))
    res = _train(out3, "data.num_train_rows=null", "train.max_steps=2", flags=["--resume"])
    assert res.exit_code == 0 and "done: 2 steps" in res.output, res.output
    # --resume of a folder with no run at all says it starts a new one
    res = _train(tmp_path / "fresh", flags=["--resume"])
    assert res.exit_code == 0 and "--resume: no earlier run in" in res.output, res.output


def test_a_step_whose_samples_cannot_be_judged(tmp_path):
    """Data whose gold can't be parsed (a worked solution cut before its final answer): a step
    with no judged sample is an error naming the reward function, its reason and an example
    gold, and the run leaves nothing behind; most of a step unjudged is a loud warning."""
    bad = "Natalia sold 48/2 = 24 clips in May. ####"
    rows = [{"question": f"{i}+1", "answer": bad} for i in range(8)]
    data = _jsonl(tmp_path / "gsm.jsonl", rows)
    common = ["data.task=null", "data.task_options={}", f"data.dataset_path={data}",
              "rewards.names=[integer_exact,format_soft]", "rewards.reward_weights=[1.0,0.0]",
              "data.template=r1_short"]
    # format_soft judges every sample: only integer_exact's None count
    res = _train(tmp_path / "ok", *common)
    assert res.exit_code == 0 and "WARNING" not in res.output, res.output
    common[3] = "rewards.names=[integer_exact]"
    del common[4]
    _one_line_error(_train(tmp_path / "all", *common),
                    "step 1: 8 of 8 samples could not be judged: integer_exact returned None "
                    "for 8 of 8 (unparseable gold; answer='Natalia sold 48/2 = 24 clips in May. "
                    "####')", "nothing to learn from", "data.column_map")
    assert not (tmp_path / "all").exists()
    # 4 rows, 3 unparseable: step 1 takes all 4 prompts x G=2, 6 of its 8 samples unjudged
    rows = rows[:3] + [{"question": "2+2", "answer": "4"}]
    common[2] = f"data.dataset_path={_jsonl(tmp_path / 'gsm2.jsonl', rows)}"
    res = _train(tmp_path / "most", *common, "rollout.num_generations=2")
    assert res.exit_code == 0, res.output
    assert "WARNING: step 1: 6 of 8 samples could not be judged: integer_exact returned None " \
        "for 6 of 8 (unparseable gold; answer='Natalia" in res.output


def test_a_run_without_a_learning_signal_says_so(tmp_path):
    """Golds the model never hits (judged, always 0): after 10 steps in a row whose groups all
    got equal rewards, one warning says the policy does not learn and what to do."""
    data = _jsonl(tmp_path / "hard.jsonl", [{"question": f"{i}+1", "answer": "987654"}
                                            for i in range(8)])
    res = _train(tmp_path / "run", "data.task=null", "data.task_options={}",
                 f"data.dataset_path={data}", "rewards.names=[integer_exact]",
                 "data.template=r1_short", "train.max_steps=11", "rollout.max_completion_length=4")
    assert res.exit_code == 0, res.output
    warnings = [x for x in res.output.splitlines() if x.startswith("WARNING")]
    assert warnings == ["WARNING: steps 1-10: in every group all 4 samples got the same reward "
                        "(this step's mean 0.000), so the advantages are zero and the policy "
                        "does not learn; the model never (or always) earns the reward: check it "
                        "with reasoner eval, warm-start it (reasoner sft), sample more "
                        "(rollout.num_generations, rollout.temperature) or add a denser reward "
                        "(rewards.names)"], res.output


def test_unjudged_samples_are_explained_with_the_verifiers_reason():
    """math_accuracy's reason comes from the math verifier (GSM8K-like gold with its final
    answer cut off); a function without `reasons` still shows its example gold."""
    from reasoner.verifiers.rewards import WeightedReward, explain_unjudged, get_reward

    rows = [{"question": "q", "answer": "Natalia sold 48/2 = 24 clips in May. ####"},
            {"question": "q", "answer": "72"}]
    completions = ["<answer>72</answer>", "<answer>72</answer>"]
    funcs = [WeightedReward("math_accuracy", get_reward("math_accuracy")),
             WeightedReward("plain", lambda p, c, **k: [None, None])]
    per_func = [f.func(["q", "q"], completions, **{"answer": [r["answer"] for r in rows]})
                for f in funcs]
    assert per_func[0] == [None, 1.0]
    why = explain_unjudged(funcs, per_func, ["q", "q"], completions, rows)
    assert why == ("math_accuracy returned None for 1 of 2 (unparseable gold; answer='Natalia "
                   "sold 48/2 = 24 clips in May. ####'); plain returned None for 2 of 2 "
                   "(answer='Natalia sold 48/2 = 24 clips in May. ####')")


def test_eval_and_sft_mistakes_are_one_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--model", str(tmp_path / "nope"), "--task", "arithmetic"])
    _one_line_error(res, "--model '", "nope' does not exist")
    res = runner.invoke(app, ["eval", "--model", str(tmp_path), "--task", "chess"])
    _one_line_error(res, "data.task: unknown task 'chess'; available: arithmetic, countdown")
    res = runner.invoke(app, ["sft", "--model", "tiny", "--task", "chess", "--output-dir",
                              str(tmp_path / "s"), "--max-steps", "1"])
    _one_line_error(res, "--task: unknown task 'chess'; available: arithmetic, countdown")
    res = runner.invoke(app, ["sft", "--model", "tiny", "--task", "arithmetic", "--output-dir",
                              str(tmp_path / "s"), "--max-steps", "1",
                              "--lr-scheduler-type", "constant_warmup"])
    _one_line_error(res, "--lr-scheduler-type: 'constant_warmup' is not one of ['linear', "
                         "'cosine', 'constant', 'constant_with_warmup']")
    assert not (tmp_path / "s").exists()  # refused before anything was built
    res = runner.invoke(app, ["eval", "--model", str(tmp_path), "--dataset", "x.jsonl"])
    _one_line_error(res, "rewards.names must be set when data.task is null")
