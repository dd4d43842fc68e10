"""All engines by name. One module (file, or folder for the big ones) per engine; this dict is the only registry."""

from __future__ import annotations

from typing import Dict, Type

from .base import Engine, EngineSession, TensorInfo
from .onnxruntime import OnnxRuntimeEngine
from .openvino import OpenVINOEngine
from .tensorrt import TensorRTEngine
from .torch_engine import TorchEngine

ENGINES: Dict[str, Type[Engine]] = {
    OnnxRuntimeEngine.name: OnnxRuntimeEngine,
    OpenVINOEngine.name: OpenVINOEngine,
    TorchEngine.name: TorchEngine,
    TensorRTEngine.name: TensorRTEngine,
}

__all__ = ["ENGINES", "Engine", "EngineSession", "TensorInfo"]
