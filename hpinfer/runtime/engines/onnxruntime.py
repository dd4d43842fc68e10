"""ONNX Runtime: the standard engine (CPU; CUDA when onnxruntime-gpu is installed)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Mapping, Optional

import numpy as np

from ...config import BackendConfig
from ...device import Device
from ..hardware import cpu_count
from .base import Engine, EngineSession, TensorInfo, check_dynamic_shapes

log = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def _shape(dims) -> tuple:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in dims)


class OnnxRuntimeSession(EngineSession):
    backend = "onnxruntime"

    def __init__(self, session, settings: str):
        self._session = session
        inputs = [TensorInfo(i.name, _shape(i.shape), _ORT_TYPES.get(i.type, i.type)) for i in session.get_inputs()]
        outputs = [TensorInfo(o.name, _shape(o.shape), _ORT_TYPES.get(o.type, o.type)) for o in session.get_outputs()]
        super().__init__(inputs, outputs, settings)
        self._output_names = [o.name for o in outputs]

    def _run(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        return self._session.run(self._output_names, dict(feeds))

    def metadata(self) -> dict:
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def close(self) -> None:
        self._session = None


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    module = "onnxruntime"
    pip_name = "onnxruntime"

    @classmethod
    def _providers(cls) -> List[str]:
        import onnxruntime as ort

        return ort.get_available_providers()

    @classmethod
    def unsupported_reason(cls, device: Device, precision: str) -> Optional[str]:
        if device.is_gpu and "CUDAExecutionProvider" not in cls._providers():
            return "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
        if precision != "fp32":
            return f"precision {precision} is not supported by onnxruntime here (fp32 only)"
        return None

    @classmethod
    def load(cls, model_path: Path, config: BackendConfig, device: Device) -> EngineSession:
        import onnxruntime as ort

        options = ort.SessionOptions()
        threads = config.cpu_num_threads or cpu_count()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if device.is_gpu:
            providers = [("CUDAExecutionProvider", {"device_id": device.index}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        settings = f"onnxruntime {ort.__version__} {'CUDA' if device.is_gpu else 'CPU'} threads={threads}"
        result = OnnxRuntimeSession(session, settings)
        check_dynamic_shapes(config, result.inputs, model_path)
        return result
