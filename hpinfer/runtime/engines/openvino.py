"""OpenVINO on Intel/AMD/Arm CPUs: measured 1.5-2.1x faster than ONNX Runtime on PP-OCR here."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import List, Mapping, Optional

import numpy as np

from ...config import BackendConfig
from ...device import Device
from ..hardware import cpu_count, cpu_has_fast_bf16, cpu_has_fast_fp16
from .base import Engine, EngineSession, TensorInfo, check_dynamic_shapes

# OpenVINO's own names for inference precision hints.
_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def _tensor_info(port) -> TensorInfo:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorInfo(port.get_any_name(), shape, port.get_element_type().to_dtype().name)


class OpenVINOSession(EngineSession):
    backend = "openvino"

    def __init__(self, compiled, settings: str, pool_size: int):
        self._compiled = compiled
        super().__init__([_tensor_info(p) for p in compiled.inputs], [_tensor_info(p) for p in compiled.outputs], settings)
        # An infer request is not thread-safe: a small pool lets concurrent callers run in parallel.
        self._requests: "queue.Queue" = queue.Queue()
        for _ in range(pool_size):
            self._requests.put(compiled.create_infer_request())

    def _run(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        request = self._requests.get()
        try:
            request.infer(dict(feeds), share_inputs=True)
            # The request's buffers are reused by the next call: hand out copies.
            return [request.get_output_tensor(i).data.copy() for i in range(len(self.outputs))]
        finally:
            self._requests.put(request)

    def close(self) -> None:
        self._requests = queue.Queue()
        self._compiled = None


class OpenVINOEngine(Engine):
    name = "openvino"
    module = "openvino"
    pip_name = "openvino"

    @classmethod
    def unsupported_reason(cls, device: Device, precision: str) -> Optional[str]:
        if device.is_gpu:
            return "hpinfer uses OpenVINO on CPUs only (NVIDIA GPUs: tensorrt, onnxruntime-gpu or torch)"
        if precision == "bf16" and not cpu_has_fast_bf16():
            return "bf16 needs a CPU with AVX512-BF16 or AMX"
        if precision == "fp16" and not cpu_has_fast_fp16():
            return "fp16 needs a CPU with AVX512-FP16 (or an Arm CPU)"
        if precision == "int8":
            return "int8 on openvino needs a quantized model (not available yet)"
        return None

    @classmethod
    def load(cls, model_path: Path, config: BackendConfig, device: Device) -> EngineSession:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(model_path))
        threads = config.cpu_num_threads or cpu_count()
        properties = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            # Explicit, because OpenVINO silently defaults to bf16 on AMX CPUs.
            "INFERENCE_PRECISION_HINT": _PRECISION_HINT[config.precision],
        }
        compiled = core.compile_model(model, "CPU", properties)
        settings = f"openvino {ov.__version__} CPU threads={threads} precision={config.precision}"
        session = OpenVINOSession(compiled, settings, pool_size=2)
        check_dynamic_shapes(config, session.inputs, model_path)
        return session
