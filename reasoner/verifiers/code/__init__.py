"""Code verifier: run the completion's program against unit tests in the bubblewrap sandbox.

Records: ``{"completion": str, "tests": [{"input": str, "output": str}, ...]}`` (stdin/stdout
pairs) and/or ``{"completion": str, "test_list": ["assert f(1) == 2", ...]}`` (MBPP assert lines).
Reward = passed / total tests (``all_or_nothing``: 1 if all pass else 0); ``correct`` = all passed;
no tests or an assert line the parent can't judge: ``correct=None`` (the reason names the line).

Pass/fail is decided in the trusted parent, never inside the sandbox. By concern:

- ``program``: finding the program in a completion (one linear pass over its lines);
- ``asserts``: parsing assert lines into the expressions the sandbox evaluates and the
  judgement the parent makes from their serialized values;
- ``values``: the hash-free representation of those values and Python's rules on them;
- ``channel``: the result channel, both sides (the encoder the harness uses, the parser here);
- ``harness``: the trusted code that runs first inside the sandbox (a real module, shipped as
  package data, compiled once by the sandbox's interpreter and loaded by a short ``-c``
  bootstrap);
- ``verifier``: ``CodeVerifier``, the thread pool and the verdicts.

See docs/verifiers-code.md for the rules, the sandbox, the limits and the threat model.
"""

from reasoner.verifiers.code.asserts import AssertTest, UnsupportedTest, check_assert, parse_assert
from reasoner.verifiers.code.channel import BadValue, decode_value, parse_channel
from reasoner.verifiers.code.program import extract_program
from reasoner.verifiers.code.values import values_equal
from reasoner.verifiers.code.verifier import (
    DEFAULT_TIMEOUT,
    STDIO_BATCH,
    CodeVerifier,
    normalize_output,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "STDIO_BATCH",
    "AssertTest",
    "BadValue",
    "CodeVerifier",
    "UnsupportedTest",
    "check_assert",
    "decode_value",
    "extract_program",
    "normalize_output",
    "parse_assert",
    "parse_channel",
    "values_equal",
]
