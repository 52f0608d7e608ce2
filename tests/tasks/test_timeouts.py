"""Every task has a time limit, so that no step can hold a run (or a work pool's slot) forever."""

from __future__ import annotations

import importlib
import pkgutil

from prefect import Task

import tasks


def test_every_task_has_a_timeout():
    found = {}
    for module in pkgutil.iter_modules(tasks.__path__):
        for value in vars(importlib.import_module(f"tasks.{module.name}")).values():
            if isinstance(value, Task):
                found[value.name] = value.timeout_seconds
    assert len(found) >= 19, sorted(found)
    assert all(limit and limit > 0 for limit in found.values()), {name: t for name, t in found.items() if not t}
