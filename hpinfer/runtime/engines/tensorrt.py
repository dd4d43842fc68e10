"""TensorRT through its Python API (TensorRT 10): ONNX parser → builder → serialized engine → execution context.

``build`` parses the ONNX file, makes one optimization profile from ``dynamic_shapes`` (else the model's
default bounds, ``shapes.bounds_for``; else ``DEFAULT_RANGE`` for dynamic dimensions), sets the precision
flags and builds a serialized engine into the model cache; a timing cache per GPU in the user cache dir
makes later builds faster. int8 uses explicit quantization: the builder hands this engine the QDQ model
the shared quantizer made from the calibration set (TensorRT 10 deprecates its implicit calibrators).
Device memory and streams come from torch; each input shape gets static buffers and, after its first run,
a captured CUDA graph of ``execute_async_v3``: kept for the ``MAX_SHAPES`` most recently used shapes (OCR feeds a
new shape per image). Cache entries are keyed by the GPU model and driver (``builder.hardware_fields``); an entry
TensorRT cannot deserialize is rebuilt (``loader``). int8 is quantized symmetric (zero points 0), as TensorRT needs.

Not run in this repository's CI nor on the GPU lent to it (no tensorrt package there): the tests skip
without it.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...config import BackendConfig
from ...device import Device
from ..shapes import bounds_for
from .base import Engine, EngineSession, TensorInfo
from .lru import LRU

ENGINE_FILE = "model.engine"
# min, opt, max for a dynamic dimension without dynamic_shapes: the batch, then image sides.
DEFAULT_RANGE = {0: (1, 1, 32), "other": (32, 640, 2048)}
MAX_SHAPES = 64  # input shapes whose buffers and CUDA graph are kept (the torch engine's max_graphs default)


def _profile_shapes(shape: Sequence[int], bounds: Optional[Sequence[Sequence[int]]]) -> Tuple[Tuple[int, ...], ...]:
    if bounds is not None:
        return tuple(tuple(b) for b in bounds)
    ranges = [(d, d, d) if d > 0 else DEFAULT_RANGE[0 if i == 0 else "other"] for i, d in enumerate(shape)]
    return tuple(tuple(r[k] for r in ranges) for k in range(3))


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


class _Bound:
    """Static device buffers for one input shape, and the CUDA graph that runs the engine on them."""

    def __init__(self, context, engine, names: List[str], shapes: Sequence[Tuple[int, ...]], stream):
        import tensorrt as trt
        import torch

        for name, shape in zip(names, shapes):
            context.set_input_shape(name, shape)
        self.tensors: Dict[str, torch.Tensor] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = context.get_tensor_shape(name)
            dtype = torch.from_numpy(np.empty(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
            self.tensors[name] = torch.empty(tuple(shape), dtype=dtype, device=stream.device)
            context.set_tensor_address(name, self.tensors[name].data_ptr())
        context.execute_async_v3(stream.cuda_stream)  # first run applies the shapes; graphs capture later runs
        stream.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=stream):
            context.execute_async_v3(stream.cuda_stream)


class TensorRTSession(EngineSession):
    backend = "tensorrt"

    def __init__(self, engine, device: Device, settings: str):
        import tensorrt as trt
        import torch

        self._engine = engine
        self._context = engine.create_execution_context()
        self._stream = torch.cuda.Stream(torch.device(f"cuda:{device.index}"))
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        info = [
            TensorInfo(n, tuple(d if d > 0 else None for d in engine.get_tensor_shape(n)), np.dtype(trt.nptype(engine.get_tensor_dtype(n))).name)
            for n in names
        ]
        is_input = [engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names]
        super().__init__([t for t, i in zip(info, is_input) if i], [t for t, i in zip(info, is_input) if not i], settings)
        self._bound: LRU[_Bound] = LRU(MAX_SHAPES)
        self._lock = threading.Lock()  # one execution context: one run at a time

    def _run(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        import torch

        names = [t.name for t in self.inputs]
        shapes = tuple(tuple(feeds[n].shape) for n in names)
        with self._lock, torch.cuda.stream(self._stream):
            bound = self._bound.get(shapes)
            if bound is None:
                bound = _Bound(self._context, self._engine, names, shapes, self._stream)
                self._bound.put(shapes, bound)  # a dropped shape's graph and buffers go back to torch's allocator
            for name in names:
                bound.tensors[name].copy_(torch.from_numpy(np.ascontiguousarray(feeds[name])).pin_memory(), non_blocking=True)
            bound.graph.replay()
            outputs = [bound.tensors[t.name].to("cpu", non_blocking=True) for t in self.outputs]
            self._stream.synchronize()
        return [o.numpy() for o in outputs]

    def close(self) -> None:
        self._bound.clear()
        self._context = self._engine = None


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
        import tensorrt as trt
        import torch

        from ..cache import user_cache_dir

        logger = _logger()
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: every network has an explicit batch dimension
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(model_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse {model_path.name}: {errors}")
        builder_config = builder.create_builder_config()
        builder_config.builder_optimization_level = 3
        flags = {"fp16": trt.BuilderFlag.FP16, "bf16": trt.BuilderFlag.BF16, "int8": trt.BuilderFlag.INT8}
        if config.precision in flags:
            builder_config.set_flag(flags[config.precision])
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            bounds = bounds_for(config, tensor.name, i, tuple(tensor.shape))  # dynamic_shapes, else the model's defaults
            profile.set_shape(tensor.name, *_profile_shapes(tuple(tensor.shape), bounds))
        builder_config.add_optimization_profile(profile)
        major, minor = torch.cuda.get_device_capability(device.index)
        timing_path = user_cache_dir() / f"tensorrt-{trt.__version__}-sm{major}{minor}.timing"
        timing = builder_config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
        builder_config.set_timing_cache(timing, ignore_mismatch=False)
        with torch.cuda.device(device.index):
            serialized = builder.build_serialized_network(network, builder_config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine for {model_path.name} (see its log above)")
        (out_dir / ENGINE_FILE).write_bytes(bytes(serialized))
        timing_path.parent.mkdir(parents=True, exist_ok=True)
        timing_path.write_bytes(bytes(builder_config.get_timing_cache().serialize()))

    @classmethod
    def open(cls, artifact_dir: Path, config: BackendConfig, device: Device) -> EngineSession:
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

