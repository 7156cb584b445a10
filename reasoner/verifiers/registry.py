"""Verifiers by name.

Built-in verifiers are listed here as "module:attribute" strings and imported on first use.
Other packages add theirs through the entry-point group ``reasoner.verifiers``::

    [project.entry-points."reasoner.verifiers"]
    chess = "my_pkg.chess:ChessVerifier"

A registered object is a factory: called with keyword options (workers=..., timeout=...), it
returns an object following ``reasoner.verifiers.base.Verifier``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "reasoner.verifiers"

_BUILTIN: dict[str, str] = {
    "math": "reasoner.verifiers.math:MathVerifier",
    "code": "reasoner.verifiers.code:CodeVerifier",
    "countdown": "reasoner.tasks.countdown:CountdownVerifier",
}
_REGISTERED: dict[str, Callable[..., Any]] = {}


class UnknownVerifierError(KeyError):
    """No verifier is registered under the requested name."""


def register(name: str, factory: Callable[..., Any]) -> None:
    """Register a verifier factory under `name` at run time (tests, notebooks)."""
    _REGISTERED[name] = factory


def _load(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def available() -> list[str]:
    names = set(_BUILTIN) | set(_REGISTERED)
    names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def get_factory(name: str) -> Callable[..., Any]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        return _load(_BUILTIN[name])
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    raise UnknownVerifierError(f"unknown verifier {name!r}; available: {', '.join(available())}")


def create(name: str, **options: Any) -> Any:
    """Instantiate the verifier called `name` with `options`."""
    return get_factory(name)(**options)
