"""All engines by name. One file per engine; this dict is the only registry."""

from __future__ import annotations

from typing import Dict, Type

from .base import Engine, EngineSession, TensorInfo
from .onnxruntime import OnnxRuntimeEngine
from .openvino import OpenVINOEngine

ENGINES: Dict[str, Type[Engine]] = {
    OnnxRuntimeEngine.name: OnnxRuntimeEngine,
    OpenVINOEngine.name: OpenVINOEngine,
}

__all__ = ["ENGINES", "Engine", "EngineSession", "TensorInfo"]
