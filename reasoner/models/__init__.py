"""Models: loading a local Hugging Face causal LM (`loading`), the tiny model built by our own
code (`tiny`), the lean Qwen2/Llama/Mistral/Qwen3 forward (`lean`) and the one forward that
scores completions
for training and log-probs (`forward`)."""

from reasoner.models.loading import (
    DTYPES,
    StartingModels,
    add_lora,
    count_parameters,
    disable_dropout,
    hidden_size_of,
    load_model_and_tokenizer,
    load_starting_models,
    resolve_model_path,
)
from reasoner.models.tiny import (
    ARCHS,
    EOS_TOKEN,
    PAD_TOKEN,
    TAG_TOKENS,
    TINY_CHAT_TEMPLATE,
    build_char_tokenizer,
    build_tiny_from_config,
    build_tiny_model,
)

__all__ = ["ARCHS", "DTYPES", "EOS_TOKEN", "PAD_TOKEN", "TAG_TOKENS", "TINY_CHAT_TEMPLATE",
           "StartingModels", "add_lora", "build_char_tokenizer", "build_tiny_from_config",
           "build_tiny_model", "count_parameters", "disable_dropout", "hidden_size_of",
           "load_model_and_tokenizer", "load_starting_models", "resolve_model_path"]
