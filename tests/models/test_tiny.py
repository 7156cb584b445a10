"""The tiny model + char tokenizer: build, save, load, and the tokenizer's contract."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasoner.models import TAG_TOKENS, build_tiny_model, count_parameters, load_model_and_tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=32, num_layers=2,
                            num_heads=4, num_kv_heads=2)


def test_roundtrip_loads_same_weights_and_logits(tiny_dir):
    assert (tiny_dir / "model.safetensors").is_file()
    model, tok = load_model_and_tokenizer(tiny_dir)
    again = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.vocab_size == len(tok)
    ids = tok(["12+34\n<think>"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_build_is_seeded(tmp_path):
    a = build_tiny_model(tmp_path / "a", hidden_size=32, num_layers=1, seed=3)
    b = build_tiny_model(tmp_path / "b", hidden_size=32, num_layers=1, seed=3)
    c = build_tiny_model(tmp_path / "c", hidden_size=32, num_layers=1, seed=4)
    wa, wb, wc = (load_model_and_tokenizer(p)[0].model.embed_tokens.weight for p in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_llama_arch(tmp_path):
    model, _ = load_model_and_tokenizer(
        build_tiny_model(tmp_path, arch="llama", hidden_size=32, num_layers=1)
    )
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 10_000 < count_parameters(model) < 100_000


@pytest.mark.parametrize("loader", ["ours", "auto"])
def test_tokenizer_is_char_level_with_single_tag_tokens(tiny_dir, loader):
    tok = load_model_and_tokenizer(tiny_dir)[1] if loader == "ours" else AutoTokenizer.from_pretrained(tiny_dir)
    text = "12+34=46</think><answer>46 x\n</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    # 8 chars + 1 tag + 1 tag + "46 x\n" (5 chars) + 1 tag
    assert len(ids) == 8 + 1 + 1 + 5 + 1
    for tag in TAG_TOKENS:
        tag_ids = tok(tag, add_special_tokens=False)["input_ids"]
        assert len(tag_ids) == 1 and tok.convert_ids_to_tokens(tag_ids) == [tag]
    assert tok.decode(ids) == text
    # EOS/pad are dropped by skip_special_tokens, the tags are not
    assert tok.decode(ids + [tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == text
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"


def test_chat_template_ends_in_think(tiny_dir):
    _, tok = load_model_and_tokenizer(tiny_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "1+1"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.endswith("<think>") and "1+1" in text


def test_missing_dir_is_a_clear_error(tmp_path):
    from reasoner.config import ConfigError

    with pytest.raises(ConfigError, match="model directory '.*nope' does not exist; give a "
                       "local Hugging Face model directory"):
        load_model_and_tokenizer(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no config.json"):
        load_model_and_tokenizer(tmp_path)


def test_pad_falls_back_to_eos(tiny_dir, tmp_path):
    import json
    import shutil

    d = tmp_path / "nopad"
    shutil.copytree(tiny_dir, d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("pad_token", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    _, tok = load_model_and_tokenizer(d)
    assert tok.pad_token_id is not None


def test_dtype_option(tiny_dir):
    model, _ = load_model_and_tokenizer(tiny_dir, dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
