"""The only registry of model kinds: every module of this package that defines ``TASK`` is one.

Adding a model kind is one file here (a ``Task`` subclass and ``TASK = ...``) plus a built-in model or pipeline
YAML entry; the runtime, the models layer and the CLI find it through ``TASKS``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Dict, Mapping, Optional

from .base import HelperModel, Params, ShapeTriple, Task, validate_params


def _discover() -> Dict[str, Task]:
    found: Dict[str, Task] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        task = getattr(importlib.import_module(f"{__name__}.{info.name}"), "TASK", None)
        if task is not None:
            found[task.name] = task
    return found


TASKS: Dict[str, Task] = _discover()


def default_shapes(kind: str, values: Mapping[str, Any]) -> Optional[ShapeTriple]:
    """[min, opt, max] of the image input a model of ``kind`` gets from its pre-processing with ``values`` (its
    params; defaults for what they leave out); None for an unknown kind or one without bounds."""
    task = TASKS.get(kind)
    return None if task is None else task.default_shapes(task.params(values, kind))


__all__ = ["HelperModel", "Params", "TASKS", "Task", "default_shapes", "validate_params"]
