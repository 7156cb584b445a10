"""Session-wide test settings, applied before any test module is imported.

- Without CUDA, Triton kernels run under the interpreter. TRITON_INTERPRET is read when a kernel
  is decorated, so it must be set before the first module that imports the kernels (the trainer's
  tests import them too), not only in the kernel test files.
- One torch thread: the CPU tests are small, and two threads slow down badly when the machine is
  shared; results do not depend on it.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
torch.set_num_threads(1)
