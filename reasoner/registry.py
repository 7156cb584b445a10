"""One registry helper for every named variant: verifiers, reward functions, tasks, algorithms,
advantage estimators, policy losses.

A `Registry` finds a name in this order:

1. objects registered at run time with `register` (a notebook, a test, your own package's
   import);
2. the built-in table: ``name -> "module:attribute"`` strings, imported on first use, so nothing
   is registered as a side effect of importing a module;
3. the registry's entry-point group, so another package adds a variant without touching ours::

       [project.entry-points."reasoner.rewards"]
       chess = "my_pkg.chess:chess_reward"

4. a ``"module:attribute"`` path given as the name itself (``my_pkg.chess:chess_reward``).

An unknown name raises `UnknownNameError` (a KeyError) listing what is available.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class UnknownNameError(KeyError):
    """No variant is registered under the requested name (the message lists the known ones)."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


def load_path(path: str) -> Any:
    """The object at ``"package.module:attribute"`` (attribute may be dotted)."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"{path!r} is not a 'module:attribute' path")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Named variants of one kind (see the module docstring for the lookup order)."""

    def __init__(self, kind: str, group: str, builtins: Mapping[str, str] | None = None) -> None:
        self.kind = kind  # "reward function", "task", ... (for messages)
        self.group = group  # the entry-point group
        self._builtins = dict(builtins or {})
        self._registered: dict[str, T] = {}

    # ------------------------------------------------------------------ registration

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: Any = None) -> Any:
        """Register `obj` under `name` (a later registration of the same name wins). Without
        `obj`, a decorator: ``@REWARDS.register("chess")``."""
        if not name or ":" in name:
            raise ValueError(f"a {self.kind} name must be non-empty and without ':', got {name!r}")
        if obj is None:
            def deco(o: T) -> T:
                self._registered[name] = o
                return o

            return deco
        self._registered[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        """Forget a run-time registration (built-ins and entry points stay)."""
        self._registered.pop(name, None)

    # ------------------------------------------------------------------ lookup

    def _eps(self) -> dict[str, Any]:
        # read each time (a few ms): a package installed while the process runs is seen
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        """Every name `get` accepts (module paths aside), sorted."""
        return sorted(set(self._registered) | set(self._builtins) | set(self._eps()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._registered or name in self._builtins
                                          or name in self._eps())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The variant called `name` (see the lookup order above)."""
        if name in self._registered:
            return self._registered[name]
        if name in self._builtins:
            return load_path(self._builtins[name])
        eps = self._eps()
        if name in eps:
            return eps[name].load()
        if ":" in name:
            try:
                return load_path(name)
            except (ImportError, AttributeError, ValueError) as e:
                raise UnknownNameError(f"{self.kind} {name!r}: cannot import it ({e})") from None
        raise UnknownNameError(f"unknown {self.kind} {name!r}; available: "
                               f"{', '.join(self.names())} (or module:attribute)")

    def builtin_path(self, name: str) -> str | None:
        """The "module:attribute" of a built-in name (None for other names)."""
        return self._builtins.get(name)
