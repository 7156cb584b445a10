"""Procedural tasks by name: ``get_task(name, **options) -> Task``.

Tasks are found in `TASKS` (the one registry helper, `reasoner.registry`): the built-ins below,
other packages' through the entry-point group ``reasoner.tasks``, or a ``module:Class`` path.
A task's reward functions are registered by name in `reasoner.verifiers.rewards.REWARDS`.
"""

from __future__ import annotations

from typing import Any

from reasoner.registry import Registry
from reasoner.tasks.base import Task, extract_answer

TASKS: Registry[type[Task]] = Registry("task", "reasoner.tasks", {
    "arithmetic": "reasoner.tasks.arithmetic:ArithmeticTask",
    "countdown": "reasoner.tasks.countdown:CountdownTask",
})


def get_task(name: str, **options: Any) -> Task:
    """The task `name` ("arithmetic", "countdown", ...) configured with `options`; a bad option
    raises ValueError naming the task and the option."""
    cls = TASKS.get(name)
    try:
        return cls(**options)
    except TypeError as e:
        raise ValueError(f"bad option for task {name!r}: {e}") from None


def parse_task_options(items: list[str] | None) -> dict[str, Any]:
    """``["digits=[1,2]", "ops=[+,*]"]`` -> ``{"digits": [1, 2], "ops": ["+", "*"]}`` (YAML values)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"task option {item!r} is not KEY=VALUE")
        parsed = yaml.safe_load(value)
        out[key.strip()] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


__all__ = ["TASKS", "Task", "extract_answer", "get_task", "parse_task_options"]
