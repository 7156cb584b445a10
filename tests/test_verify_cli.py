"""`reasoner verify` contract: order, fields, bad lines named, nothing scored is lost, resume."""

import json

import pytest

from reasoner.verifiers import registry
from reasoner.verifiers.base import Verdict
from reasoner.verify_cli import InputError, verify_file


class EchoVerifier:
    """Correct iff completion == answer; no answer -> cannot judge. Records the batches it saw."""

    name = "echo"
    batches: list[int] = []

    def __init__(self, workers=None, timeout=None):
        self.workers = workers

    def score(self, records):
        EchoVerifier.batches.append(len(records))
        for r in records:
            if "answer" not in r:
                yield Verdict(0.0, None, "no gold")
            elif r["completion"] == r["answer"]:
                yield Verdict(1.0, True, "ok")
            else:
                yield Verdict(0.0, False, "wrong")

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(autouse=True)
def echo_registered():
    registry.register("echo", EchoVerifier)
    EchoVerifier.batches = []
    yield
    registry._REGISTERED.pop("echo", None)


def write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_line_per_record_in_order_with_fields(tmp_path):
    recs = [{"id": i, "completion": str(i % 3), "answer": "1"} for i in range(600)]
    recs[5] = {"id": 5, "completion": "x"}  # cannot judge
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(inp, [json.dumps(r) for r in recs] + [""])  # trailing blank line is not a record
    s = verify_file("echo", inp, out, progress=False)
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == list(range(600))
    assert rows[1] == {"id": 1, "completion": "1", "answer": "1", "reward": 1.0, "correct": True,
                       "reason": "ok"}
    assert rows[2]["correct"] is False and rows[2]["reward"] == 0.0
    assert rows[5]["correct"] is None
    assert (s.scored, s.unjudged) == (600, 1)
    assert s.correct == sum(1 for r in recs if r.get("answer") == r["completion"])
    assert EchoVerifier.batches == [256, 256, 88]


def test_bad_line_is_named_and_earlier_results_are_kept(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = [json.dumps({"completion": "1", "answer": "1"})] * 3
    write_jsonl(inp, good + ["{not json"] + good)
    with pytest.raises(InputError, match=r"in\.jsonl:4: invalid JSON"):
        verify_file("echo", inp, out, progress=False)
    assert len(read_jsonl(out)) == 3


@pytest.mark.parametrize(
    "line, message",
    [("[1, 2]", "expected a JSON object, got list"), ('{"answer": "1"}', "field 'completion' is missing")],
)
def test_wrong_record_shapes_are_named(tmp_path, line, message):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(inp, ['{"completion": "a", "answer": "a"}', line])
    with pytest.raises(InputError, match=f":2: {message}"):
        verify_file("echo", inp, out, progress=False)


def test_resume_scores_only_the_rest_and_drops_a_torn_line(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(inp, [json.dumps({"id": i, "completion": "a", "answer": "a"}) for i in range(10)])
    verify_file("echo", inp, out, progress=False)
    full = out.read_text()
    lines = full.splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:7])  # a crash mid-write of line 5
    s = verify_file("echo", inp, out, resume=True, progress=False)
    assert (s.skipped_existing, s.scored) == (4, 6)
    assert out.read_text() == full


def test_unknown_task_and_missing_input_are_clear(tmp_path):
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, ['{"completion": "a"}'])
    with pytest.raises(registry.UnknownVerifierError, match="unknown verifier 'nope'.*echo"):
        verify_file("nope", inp, tmp_path / "o.jsonl", progress=False)
    with pytest.raises(InputError, match="input file not found"):
        verify_file("echo", tmp_path / "missing.jsonl", tmp_path / "o.jsonl", progress=False)


def test_an_option_the_verifier_does_not_take_is_named(tmp_path):
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, ['{"completion": "a"}'])
    with pytest.raises(InputError, match="verifier 'echo' takes no --all-or-nothing \\(its "
                       "constructor's options: workers, timeout\\)"):
        verify_file("echo", inp, tmp_path / "o.jsonl", progress=False, all_or_nothing=True)
    assert not (tmp_path / "o.jsonl").exists()
    s = verify_file("echo", inp, tmp_path / "o.jsonl", progress=False, workers=2, timeout=1.0)
    assert s.scored == 1


def test_reasoner_verify_command_end_to_end_with_the_math_verifier(tmp_path):
    """The installed CLI, the real math verifier, the contract's fields, and exit code 2 on bad input."""
    import subprocess
    import sys

    recs = [
        {"id": 0, "completion": r"so \boxed{\frac{1}{2}}", "answer": "0.5"},
        {"id": 1, "completion": "<answer>7</answer>", "answer": "8"},
        {"id": 2, "completion": "no final answer", "answer": "1"},
        {"id": 3, "completion": r"\boxed{3}", "answer": r"\frac{"},
    ]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(inp, [json.dumps(r) for r in recs])
    # --all-or-nothing is every verifier's option; a math verdict is all or nothing anyway
    cmd = [sys.executable, "-m", "reasoner", "verify", "--task", "math", "--input", str(inp),
           "--output", str(out), "--workers", "1", "--all-or-nothing"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rows = read_jsonl(out)
    assert [(r["id"], r["reward"], r["correct"]) for r in rows] == [
        (0, 1.0, True), (1, 0.0, False), (2, 0.0, False), (3, 0.0, None)]
    assert rows[2]["reason"] == "no answer" and rows[3]["reason"] == "unparseable gold"
    assert "correct 1/3" in res.stdout

    write_jsonl(inp, [json.dumps(recs[0]), "oops"])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "in.jsonl:2: invalid JSON" in res.stderr
    assert len(read_jsonl(out)) == 1


def test_a_verifier_from_another_package_is_found_through_the_entry_point_group(tmp_path,
                                                                                 monkeypatch):
    """A package that declares `[project.entry-points."reasoner.verifiers"]` is picked up by
    name, by the registry and by `reasoner verify`, without importing it ourselves."""
    (tmp_path / "plug_pkg.py").write_text(
        "from reasoner.verifiers.base import Verdict\n"
        "class LengthVerifier:\n"
        "    def __init__(self, workers=None, timeout=None): pass\n"
        "    def score(self, records):\n"
        "        for r in records:\n"
        "            ok = len(r['completion']) == int(r['answer'])\n"
        "            yield Verdict(float(ok), ok, 'ok' if ok else 'wrong')\n"
        "    def close(self): pass\n"
        "    def __enter__(self): return self\n"
        "    def __exit__(self, *exc): pass\n"
    )
    dist = tmp_path / "plug_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plug-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[reasoner.verifiers]\nlength = plug_pkg:LengthVerifier\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "length" in registry.available()
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(inp, [json.dumps({"completion": "abc", "answer": "3"}),
                      json.dumps({"completion": "ab", "answer": "3"})])
    verify_file("length", inp, out, progress=False)
    assert [r["correct"] for r in read_jsonl(out)] == [True, False]


@pytest.mark.skipif(__import__("shutil").which("bwrap") is None, reason="needs bubblewrap")
def test_code_records_that_used_to_abort_the_run_get_a_reason_and_resume_works(tmp_path):
    """A lone surrogate in a completion crashed the output writer (and --resume again at the same
    line); one in a stdio input, or 1000 chained subscripts in a test line, crashed scoring."""
    prog = "```python\ndef f():\n    return 1\n```"
    lines = [
        json.dumps({"id": 0, "completion": "\ud800\n" + prog, "test_list": ["assert f() == 1"]}),
        json.dumps({"id": 1, "completion": "```python\nprint(len(input()))\n```",
                    "tests": [{"input": "a\udfffb", "output": "3"}]}),
        json.dumps({"id": 2, "completion": prog, "test_list": ["assert f()" + "[0]" * 1000 + " == 1"]}),
        json.dumps({"id": 3, "completion": prog, "test_list": ["assert f() == 1"]}),
    ]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(inp, lines)
    s = verify_file("code", inp, out, progress=False, workers=2, timeout=2.0)
    rows = [json.loads(line) for line in out.read_bytes().decode("utf-8").splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2, 3] and s.scored == 4
    assert rows[0]["completion"].startswith("\ud800") and rows[0]["reason"] == "ok"
    assert rows[1]["reason"] in ("ok", "wrong")  # judged, whatever the interpreter made of it
    assert rows[2]["correct"] is None and rows[2]["reason"].startswith("unsupported test: ")
    assert rows[3]["reason"] == "ok"
    full = out.read_text(encoding="utf-8")
    out.write_text("".join(full.splitlines(keepends=True)[:1]), encoding="utf-8")
    s = verify_file("code", inp, out, resume=True, progress=False, workers=2, timeout=2.0)
    assert (s.skipped_existing, s.scored) == (1, 3)
    assert out.read_text(encoding="utf-8") == full
