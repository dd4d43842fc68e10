"""``TensorRTEngine``: public methods validate what they are given, ``_impl`` methods do the work (``builder``
builds, ``session`` runs)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

from ....config import BackendConfig
from ....device import Device
from ..base import Engine, EngineSession
from .builder import ENGINE_FILE, _logger, build_engine_file
from .session import TensorRTSession


class TensorRTEngine(Engine):
    name = "tensorrt"
    module = "tensorrt"
    pip_name = "tensorrt"
    bakes_shape_bounds = True
    int8_op_types = ("Conv", "ConvTranspose", "MatMul")  # where TensorRT runs QDQ layers in int8
    int8_symmetric = True  # TensorRT rejects QDQ with non-zero zero points

    @classmethod
    def unsupported_reason(cls, device: Device, precision: str) -> Optional[str]:
        import importlib.util

        if not device.is_gpu:
            return "TensorRT runs on NVIDIA GPUs only"
        if importlib.util.find_spec("torch") is None:
            return "the tensorrt engine uses torch for CUDA memory and streams (pip install torch)"
        import torch

        if not torch.cuda.is_available() or device.index >= torch.cuda.device_count():
            return f"{device} is not a visible CUDA device"
        return None


    @classmethod
    def build(cls, model_path: Path, config: BackendConfig, device: Device, out_dir: Path) -> None:
        cls._validate(model_path, config, device)
        build_engine_file(model_path, config, device, out_dir)

    @classmethod
    def open(cls, artifact_dir: Path, config: BackendConfig, device: Device) -> EngineSession:
        cls._validate(artifact_dir / ENGINE_FILE, config, device)
        return cls._open_impl(artifact_dir, config, device)

    @classmethod
    def _open_impl(cls, artifact_dir: Path, config: BackendConfig, device: Device) -> EngineSession:
        import tensorrt as trt
        import torch

        with torch.cuda.device(device.index):
            engine = trt.Runtime(_logger()).deserialize_cuda_engine((artifact_dir / ENGINE_FILE).read_bytes())
            if engine is None:  # TensorRT returns None (and logs why) for an engine of another build or GPU
                raise RuntimeError(f"TensorRT {trt.__version__} cannot deserialize {artifact_dir / ENGINE_FILE} (see its log above)")
            return TensorRTSession(engine, device, f"tensorrt {trt.__version__} {device} precision={config.precision}")

    @classmethod
    def load(cls, model_path: Path, config: BackendConfig, device: Device) -> EngineSession:
        """Build without the model cache (minutes for large models): ``build`` then ``open`` in a scratch folder."""
        with tempfile.TemporaryDirectory(prefix="hpinfer-trt-") as scratch:
            cls.build(model_path, config, device, Path(scratch))
            return cls.open(Path(scratch), config, device)


