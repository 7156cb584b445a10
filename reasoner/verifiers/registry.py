"""Verifiers by name, through the one registry helper (`reasoner.registry`).

Built-in verifiers are "module:attribute" strings imported on first use. Other packages add
theirs through the entry-point group ``reasoner.verifiers``::

    [project.entry-points."reasoner.verifiers"]
    chess = "my_pkg.chess:ChessVerifier"

A registered object is a factory: called with keyword options (workers=..., timeout=...), it
returns an object following ``reasoner.verifiers.base.Verifier``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reasoner.registry import Registry, UnknownNameError

ENTRY_POINT_GROUP = "reasoner.verifiers"

VERIFIERS: Registry[Callable[..., Any]] = Registry("verifier", ENTRY_POINT_GROUP, {
    "math": "reasoner.verifiers.math:MathVerifier",
    "code": "reasoner.verifiers.code:CodeVerifier",
    "countdown": "reasoner.tasks.countdown:CountdownVerifier",
})

# No verifier is registered under the requested name.
UnknownVerifierError = UnknownNameError
# the run-time registrations (tests take theirs out again through it)
_REGISTERED = VERIFIERS._registered


def register(name: str, factory: Callable[..., Any]) -> None:
    """Register a verifier factory under `name` at run time (tests, notebooks)."""
    VERIFIERS.register(name, factory)


def available() -> list[str]:
    return VERIFIERS.names()


def get_factory(name: str) -> Callable[..., Any]:
    return VERIFIERS.get(name)


def create(name: str, **options: Any) -> Any:
    """Instantiate the verifier called `name` with `options`."""
    return get_factory(name)(**options)
