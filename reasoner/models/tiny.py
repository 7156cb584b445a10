"""The tiny model used by the demo and the tests, built by our own code.

The tiny model is a randomly initialised Qwen2 (or Llama, Mistral, Qwen3, GPT-2: the tests build
each architecture this way) with a character-level tokenizer:
every ASCII character is one token, and the R1 tags ``<think>``, ``</think>``, ``<answer>``,
``</answer>`` are one added token each, so a worked solution like
``12+34=46</think><answer>46</answer>`` is 8 + 1 + 1 + 2 + 1 = 13 tokens. Nothing is downloaded.
Vocabulary: 262 tokens (pad, eos, 256 byte symbols, 4 tags).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from reasoner.data.templates import TAG_TOKENS

ARCHS = ("qwen2", "llama", "mistral", "qwen3", "gpt2")
# the Llama-style decoders: arch -> transformers class prefix
_DECODERS = {"qwen2": "Qwen2", "llama": "Llama", "mistral": "Mistral", "qwen3": "Qwen3"}
PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"
# A plain chat template for the tiny tokenizer: "User: ...\nAssistant:" with an optional system line.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}" + EOS_TOKEN + "\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant: <think>{% endif %}"
)


def build_char_tokenizer() -> Any:
    """A character-level PreTrainedTokenizerFast (byte-level BPE without merges).

    The vocabulary is the 256 byte symbols of GPT-2's byte-level alphabet, so every ASCII character
    is exactly one token (others are one token per UTF-8 byte) and nothing is ever unknown; plus
    the pad/eos special tokens and the four tags as single added tokens. Being a merge-free
    byte-level BPE, it reloads identically through AutoTokenizer, which rebuilds Qwen2 tokenizers
    from vocab + merges.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate([PAD_TOKEN, EOS_TOKEN, *alphabet])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    # The tags are added (not special) tokens: single ids, kept by skip_special_tokens=True.
    fast.add_tokens(list(TAG_TOKENS), special_tokens=False)
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def build_tiny_model(
    out_dir: str | Path,
    *,
    arch: str = "qwen2",
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    seed: int = 0,
) -> Path:
    """Build a randomly initialised (seeded) tiny causal LM + char tokenizer and save both to
    `out_dir` in Hugging Face format (safetensors). Returns the directory. `arch`: one of
    `ARCHS` (gpt2 has no grouped-query attention: `num_kv_heads` is not used; mistral gets no
    sliding window)."""
    from reasoner.distributed import quiet_deepspeed_accelerator

    quiet_deepspeed_accelerator()  # before transformers imports deepspeed (to save)
    import transformers

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads={num_heads} is not divisible by num_kv_heads={num_kv_heads}")
    out = Path(out_dir)
    tokenizer = build_char_tokenizer()
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    inner = intermediate_size or 4 * hidden_size
    if arch == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=len(tokenizer), n_embd=hidden_size, n_layer=num_layers, n_head=num_heads,
            n_inner=inner, n_positions=max_position_embeddings, **ids)
        cls = transformers.GPT2LMHeadModel
    elif arch in _DECODERS:
        extra: dict[str, Any] = {}
        if arch in ("mistral", "qwen3"):  # their default head_dim is 128, not hidden / heads
            extra["head_dim"] = hidden_size // num_heads
        if arch == "mistral":
            extra["sliding_window"] = None
        cls = getattr(transformers, _DECODERS[arch] + "ForCausalLM")
        config = getattr(transformers, _DECODERS[arch] + "Config")(
            vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
            intermediate_size=inner, max_position_embeddings=max_position_embeddings,
            **ids, **extra)
    else:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_from_config(cfg: Any, out_dir: str | Path) -> Path:
    """`build_tiny_model` with the ``model.tiny_*`` fields of the config (`ModelConfig`)."""
    return build_tiny_model(
        out_dir, arch=cfg.tiny_arch, hidden_size=cfg.tiny_hidden_size,
        num_layers=cfg.tiny_num_layers, num_heads=cfg.tiny_num_heads,
        num_kv_heads=cfg.tiny_num_kv_heads, intermediate_size=cfg.tiny_intermediate_size,
        max_position_embeddings=cfg.tiny_max_position_embeddings, seed=cfg.tiny_seed,
    )
