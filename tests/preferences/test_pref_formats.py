"""Preference formats: TRL pairs (plain, conversational, implicit prompt, margin), rankings with
ties (K(K-1)/2 pairs, each completion listed once), comparisons grouped by prompt, and bad lines
naming file:line."""

import json

import pytest

from reasoner.preferences.formats import (
    PreferenceDataError,
    read_preferences,
    record_to_pairs,
)


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_pairs_plain_conversational_implicit_prompt_and_margin(tmp_path):
    conv_p = [{"role": "user", "content": "2+2?"}]
    recs = read_preferences(write(tmp_path / "p.jsonl", [
        {"prompt": "Q: ", "chosen": "4", "rejected": "5", "margin": 1.5},
        {"prompt": conv_p, "chosen": [{"role": "assistant", "content": "4"}],
         "rejected": [{"role": "assistant", "content": "22"}]},
        {"chosen": "Q: sky? A: blue", "rejected": "Q: sky? A: green"},  # TRL's implicit prompt
        {"prompt": "Q: ", "chosen": "", "rejected": "no"},  # an empty answer is an answer
    ]))
    assert [r.format for r in recs] == ["pairs"] * 4
    assert recs[0].completions == ["4", "5"] and recs[0].prompt == "Q: "
    (c,) = recs[0].comparisons
    assert (c.first, c.second, c.tie, c.margin) == (0, 1, False, 1.5)
    assert recs[1].prompt == conv_p and recs[1].completions[1][0]["content"] == "22"
    assert recs[1].comparisons[0].margin is None
    assert recs[2].prompt == "" and recs[2].num_pairs == 1
    assert recs[0].source.endswith("p.jsonl:1") and recs[3].lines == [4]


def test_ranking_of_k_gives_all_pairs_with_ties_and_each_completion_once(tmp_path):
    recs = read_preferences(write(tmp_path / "r.jsonl", [
        {"prompt": "p", "completions": ["best", ["tie1", "tie2"], "worst"]},
        {"prompt": "q", "completions": ["a", "b", "c", "d", "e"]},
    ]))
    r = recs[0]
    assert r.completions == ["best", "tie1", "tie2", "worst"]
    got = {(c.first, c.second, c.tie) for c in r.comparisons}
    assert got == {(0, 1, False), (0, 2, False), (0, 3, False), (1, 2, True), (1, 3, False),
                   (2, 3, False)}
    assert len(r.comparisons) == 4 * 3 // 2 and r.num_pairs == 5
    k5 = recs[1]
    assert len(k5.completions) == 5 and len(k5.comparisons) == 10 == k5.num_pairs
    # best first: every pair's first index is the better one
    assert all(c.first < c.second for c in k5.comparisons)
    assert [p["chosen"] for p in record_to_pairs(r)] == ["best"] * 3 + ["tie1", "tie2"]


def test_comparisons_are_grouped_by_prompt_with_distinct_completions(tmp_path):
    recs = read_preferences(write(tmp_path / "c.jsonl", [
        {"prompt": "p", "a": "x", "b": "y", "winner": "a"},
        {"prompt": "q", "a": "u", "b": "v", "winner": "tie"},
        {"prompt": "p", "a": "z", "b": "x", "winner": "b", "margin": 0.5},
        {"prompt": "p", "a": "y", "b": "z", "winner": "a"},
    ]))
    assert [r.prompt for r in recs] == ["p", "q"]
    p = recs[0]
    assert p.completions == ["x", "y", "z"] and p.lines == [1, 3, 4]
    assert [(c.first, c.second, c.tie, c.margin) for c in p.comparisons] == [
        (0, 1, False, None), (0, 2, False, 0.5), (1, 2, False, None)]
    assert recs[1].comparisons[0].tie and recs[1].num_pairs == 0


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "completions": ["only one"]}, "at least two completions"),
    ({"prompt": "p", "completions": []}, "at least two completions"),
    ({"prompt": "p", "completions": ["a", "a"]}, "identical to completion 0"),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, "chosen is identical to rejected"),
    ({"prompt": "p", "chosen": "x"}, "missing rejected"),
    ({"prompt": "p", "a": "x", "b": "y"}, "missing winner"),
    ({"prompt": "p", "a": "x", "b": "y", "winner": "c"}, "winner must be one of a, b, tie"),
    ({"prompt": "p", "a": "x", "b": "x", "winner": "a"}, "a is identical to b"),
    ({"prompt": "p", "chosen": "x", "rejected": "y", "margin": "big"}, "margin must be"),
    ({"prompt": "p", "completions": ["a", "b"], "margin": 1}, "margin is for pairs"),
    ({"prompt": "p", "chosen": 3, "rejected": "y"}, "chosen must be a string"),
    ({"prompt": "p", "chosen": [{"role": "assistant", "content": "x"}], "rejected": "y"},
     "mix plain text and messages"),
    ({"question": "p", "answer": "x"}, "not a preference line"),
    # a margin beyond float32 is inf in the loss: every step it lands in would be skipped
    ({"prompt": "p", "chosen": "x", "rejected": "y", "margin": 1e40}, "within float32's range"),
    ({"prompt": "p", "completions": ["a", "b"], "utilities": [float("nan"), 1.0],
      "noise_temperature": 0.05}, "utilities must be a list of 2 finite numbers"),
    ({"prompt": "p", "completions": ["a", "b"], "utilities": [0.0, 1.0],
      "noise_temperature": float("inf")}, "noise_temperature > 0"),
    ({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"content": "x"}],
      "rejected": [{"role": "assistant", "content": "y"}]}, "chosen\\[0\\] \\(a message\\) has no role"),
    ({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant",
                                                                "content": None}],
      "rejected": [{"role": "assistant", "content": "y"}]},
     "chosen\\[0\\].content must be a string, got NoneType"),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "completions": ["c", "d"]},
     "keys of two formats \\(pairs and rankings\\) on one line"),
])
def test_bad_lines_name_the_file_and_line(tmp_path, row, message):
    path = write(tmp_path / "bad.jsonl", [{"prompt": "ok", "chosen": "a", "rejected": "b"},
                                          "", row])
    with pytest.raises(PreferenceDataError, match=message) as e:
        read_preferences(path)
    assert f"{path}:3:" in str(e.value)


def test_not_json_and_missing_file_and_forced_format(tmp_path):
    path = write(tmp_path / "x.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"},
                                        "{not json"])
    with pytest.raises(PreferenceDataError, match=r"x.jsonl:2: invalid JSON"):
        read_preferences(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_preferences(tmp_path / "nope.jsonl")
    ranking = write(tmp_path / "r.jsonl", [{"prompt": "p", "completions": ["a", "b"]}])
    with pytest.raises(PreferenceDataError, match=r"r.jsonl:1: a pairs line needs"):
        read_preferences(ranking, fmt="pairs")
    assert read_preferences(ranking, fmt="rankings")[0].num_pairs == 1


def test_encodings_and_folders(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "p", "chosen": "a",
                                                    "rejected": "b"}).encode() + b"\n")
    assert read_preferences(bom)[0].completions == ["a", "b"]  # a BOM is skipped
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n'
                      + '{"prompt": "caf\u00e9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1"))
    with pytest.raises(PreferenceDataError, match=r"latin.jsonl:2: not UTF-8 text \(byte 0xe9"):
        read_preferences(latin)
    with pytest.raises(PreferenceDataError, match="is a folder; give a JSONL file"):
        read_preferences(tmp_path)
