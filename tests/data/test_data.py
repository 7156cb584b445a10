"""Dataset loading (jsonl, parquet, datasets dir) with column mapping, and prompt templates."""

import json

import pytest

from reasoner.data import R1_ZERO_SYSTEM, load_rows, render_prompt

ROWS = [
    {"problem": "1+1", "solution_text": "2", "id": 0},
    {"problem": "2+3", "solution_text": "5", "id": 1},
]
MAPPING = {"question": "problem", "answer": "solution_text"}
EXPECTED = [{"question": "1+1", "answer": "2", "id": 0}, {"question": "2+3", "answer": "5", "id": 1}]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_with_mapping(tmp_path):
    p = _jsonl(tmp_path / "d.jsonl", ROWS)
    assert load_rows(p, columns=MAPPING) == EXPECTED
    assert load_rows(p) == ROWS


def test_parquet_with_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), p)
    assert load_rows(p, columns=MAPPING) == EXPECTED


def test_datasets_dir_with_mapping_and_splits(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    assert load_rows(tmp_path / "one", columns=MAPPING) == EXPECTED
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                               "test": datasets.Dataset.from_list(ROWS[:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_rows(tmp_path / "dd", columns=MAPPING, split="test") == EXPECTED[:1]
    with pytest.raises(ValueError, match="choose one with data.split"):
        load_rows(tmp_path / "dd")
    with pytest.raises(ValueError, match="no split .dev. \\(data.split\\)"):
        load_rows(tmp_path / "dd", split="dev")


def test_bad_jsonl_line_is_named(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"question": "a"}\n\n{"question": "b"}\n{"question": oops}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:4: invalid JSON"):
        load_rows(p)
    p.write_text('{"question": "a"}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r":2: expected a JSON object"):
        load_rows(p)


def test_missing_mapped_column_is_named(tmp_path):
    p = _jsonl(tmp_path / "d.jsonl", [ROWS[0], {"problem": "x"}])
    with pytest.raises(ValueError, match="row 1 has no column 'solution_text' \\(data.column_map "
                       "maps our 'answer' to it: {our name: your column}\\)"):
        load_rows(p, columns=MAPPING)
    with pytest.raises(ValueError, match="data.column_map: unknown target column 'prompt'"):
        load_rows(p, columns={"prompt": "problem"})
    # the map written the other way round: the message says which way it goes
    with pytest.raises(ValueError, match="reversed\\? {question: problem} would map your "
                       "'problem' to our 'question'"):
        load_rows(p, columns={"problem": "question"})


def test_missing_file_and_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_rows(tmp_path / "none.jsonl")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported dataset format"):
        load_rows(tmp_path / "d.csv")
    # a split of a file: refused, not all of the file read as that split
    p = _jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(ValueError, match=r"d\.jsonl is a file, which has no splits; data.split "
                       r"\('test'\) is for a datasets.save_to_disk directory"):
        load_rows(p, split="test")


def test_templates():
    r1 = render_prompt("What is 2+2?", template="r1_zero")
    assert r1.startswith(R1_ZERO_SYSTEM) and r1.endswith("User: What is 2+2?\nAssistant: <think>")
    assert "<answer> </answer>" in r1
    assert render_prompt("12+34", template="r1_short") == "12+34\n<think>"
    assert render_prompt("q", template="r1_short", system_prompt="S") == "S\nq\n<think>"
    assert render_prompt("q", template="plain") == "q"
    with pytest.raises(ValueError, match="unknown prompt template"):
        render_prompt("q", template="r2")


def test_chat_template(tmp_path):
    from reasoner.models import build_char_tokenizer

    tok = build_char_tokenizer()
    text = render_prompt("12+34", template="chat", tokenizer=tok, system_prompt="Be brief.")
    assert text == "Be brief.\nUser: 12+34\nAssistant: <think>"
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat_template"):
        render_prompt("q", template="chat", tokenizer=tok)
    with pytest.raises(ValueError, match="chat_template"):
        render_prompt("q", template="chat")


def test_a_conversation_goes_through_the_chat_template_as_it_is():
    """TRL's conversational prompt (a list of messages) is the chat template's messages, the
    system prompt first unless it has its own; the text templates refuse it rather than show
    the model the list's repr."""
    from reasoner.models import build_char_tokenizer

    tok = build_char_tokenizer()
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "12+34"}]
    assert render_prompt(conv, template="chat", tokenizer=tok) == \
        "Be brief.\nUser: 12+34\nAssistant: <think>"
    assert render_prompt(conv, template="chat", tokenizer=tok, system_prompt="Other.") == \
        "Be brief.\nUser: 12+34\nAssistant: <think>"
    assert render_prompt(conv[1:], template="chat", tokenizer=tok, system_prompt="S.") == \
        "S.\nUser: 12+34\nAssistant: <think>"
    for template in ("r1_zero", "r1_short", "plain"):
        with pytest.raises(ValueError, match=f"a conversation .a list of messages., which "
                           f"template '{template}' can't show; use the chat template"):
            render_prompt(conv, template=template, tokenizer=tok)
    with pytest.raises(ValueError, match="a list but not a conversation"):
        render_prompt(["12+34"], template="chat", tokenizer=tok)
    assert render_prompt(7, template="r1_short") == "7\n<think>"
