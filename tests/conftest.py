"""Session-wide test settings, applied before any test module is imported.

- Without CUDA, Triton kernels run under the interpreter. TRITON_INTERPRET is read when a kernel
  is decorated, so it must be set before the first module that imports the kernels (the trainer's
  tests import them too), not only in the kernel test files.
- One torch thread: the CPU tests are small, and two threads slow down badly when the machine is
  shared; results do not depend on it.
- tests/ is on sys.path (this file's folder), so the tests in the sub-folders import the helper
  modules here (toy_rewards, dist_worker).
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_tok(tmp_path_factory):
    """A tiny random Qwen2 (64 wide, 2 layers) and its char tokenizer, built once per module."""
    from reasoner.models import build_tiny_model, load_model_and_tokenizer

    d = build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, seed=1)
    return load_model_and_tokenizer(d)


@pytest.fixture(scope="module")
def llama_tok(tmp_path_factory):
    """The same as a Llama."""
    from reasoner.models import build_tiny_model, load_model_and_tokenizer

    d = build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), arch="llama", hidden_size=64,
                         num_layers=2, num_heads=4, num_kv_heads=2, seed=3)
    return load_model_and_tokenizer(d)
