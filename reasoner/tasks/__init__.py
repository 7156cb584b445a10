"""Built-in procedural tasks: ``get_task(name, **options) -> Task``.

Importing this package registers the task rewards ("integer_exact", "countdown") with
`reasoner.verifiers.rewards`, so `get_reward` finds them by name.
"""

from __future__ import annotations

from typing import Any

from reasoner.tasks.arithmetic import ArithmeticTask
from reasoner.tasks.base import Task, extract_answer
from reasoner.tasks.countdown import CountdownTask

TASKS: dict[str, type[Task]] = {"arithmetic": ArithmeticTask, "countdown": CountdownTask}


def get_task(name: str, **options: Any) -> Task:
    """The built-in task `name` ("arithmetic", "countdown") configured with `options`."""
    try:
        cls = TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}") from None
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


__all__ = ["TASKS", "ArithmeticTask", "CountdownTask", "Task", "extract_answer", "get_task", "parse_task_options"]
