"""HTTP serving of hpinfer pipelines with PaddleX-compatible endpoints (``hpinfer serve``), and a client.

Kept import-light: ``hpinfer.serving.cli`` is imported by ``hpinfer``'s CLI, so FastAPI, uvicorn and
httpx load only when a name below is first used (they come with ``pip install 'hpinfer[serving]'``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AsyncClient": "client", "Client": "client", "ServingError": "client",
    "ServeSettings": "settings", "create_app": "app",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hpinfer.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
