"""OpenVINO on Intel/AMD/Arm CPUs: faster than ONNX Runtime on PP-OCR here (benchmarks/RESULTS.md).

ONNX models are first rewritten into equivalent graphs OpenVINO fuses better (``graph_rewrites``). Its cached artifact is the model as OpenVINO IR (rewritten, reshaped to the ``dynamic_shapes``
bounds, int8 already converted from QDQ) plus OpenVINO's own compiled-blob cache (``CACHE_DIR``) beside it, so a warm start
imports the compiled model instead of converting and compiling it.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ...config import BackendConfig
from ...device import Device
from .. import graph_rewrites
from ..hardware import cpu_count, cpu_has_fast_bf16, cpu_has_fast_fp16
from ..shapes import ShapeBounds
from .base import Engine, EngineSession, TensorInfo, best_of

# OpenVINO's own names for inference precision hints; an int8 model keeps its float parts in f32.
_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
IR_MODEL = "model.xml"
log = logging.getLogger("hpinfer.runtime")
BLOB_CACHE = "ov_cache"


def _tensor_info(port) -> TensorInfo:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    return TensorInfo(port.get_any_name(), shape, port.get_element_type().to_dtype().name)


def _rewritten_onnx(model_path: Path) -> bytes:
    import onnx

    model = onnx.load(str(model_path))
    applied = graph_rewrites.rewrite(model)
    if any(applied.values()):
        log.info("%s: graph rewritten for OpenVINO (%s)", model_path.name, ", ".join(f"{k} x{v}" for k, v in applied.items() if v))
    return model.SerializeToString()


def _copies(outputs: List[np.ndarray]) -> List[np.ndarray]:
    return [o.copy() for o in outputs]


class _RequestPool:
    """Infer requests of one compiled model. A request is not thread-safe: a small pool lets concurrent callers
    run in parallel."""

    def __init__(self, compiled, size: int):
        self.compiled = compiled
        self._free: "queue.Queue" = queue.Queue()
        for _ in range(size):
            self._free.put(compiled.create_infer_request())

    def run(self, feeds: Mapping[Any, np.ndarray], read: Callable[[List[np.ndarray]], List[np.ndarray]] = _copies,
            ) -> List[np.ndarray]:
        """``read`` gets the outputs in the request's own buffers, which the next call reuses: it returns what
        may outlive the call (by default copies of them all)."""
        request = self._free.get()
        try:
            request.infer(dict(feeds), share_inputs=True)
            return read([request.get_output_tensor(i).data for i in range(len(self.compiled.outputs))])
        finally:
            self._free.put(request)


class OpenVINOSession(EngineSession):
    backend = "openvino"

    def __init__(self, model, compiled, properties: Dict[str, Any], settings: str, pool_size: int):
        super().__init__([_tensor_info(p) for p in compiled.inputs], [_tensor_info(p) for p in compiled.outputs], settings)
        self._model, self._properties, self._pool_size = model, properties, pool_size
        self._pool = _RequestPool(compiled, pool_size)
        self._image_runners: Dict[Tuple[float, ...], Callable[[np.ndarray], List[np.ndarray]]] = {}
        self._image_lock = threading.Lock()

    def _run(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        return self._pool.run(feeds)

    def _run_best(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        """Reduced straight from the request's output buffer: recognition's scores (N x T x 6625 float32, 1 MB per
        line of 40 steps) are never copied."""
        return self._pool.run(feeds, lambda outputs: best_of(outputs[0]))

    def image_runner(self, scale: np.ndarray, shift: np.ndarray) -> Optional[Callable[[np.ndarray], List[np.ndarray]]]:
        """Pre-processing inside OpenVINO for image models: a function of one resized uint8 HxWx3 image (or an
        NxHxWx3 batch) that hands it over as is; the model, compiled once more for this entry (~0.25 s at first
        use), converts it to float32, normalises it per channel and lays it out for its first layer in the one
        pass over the input that it makes anyway: PP-OCRv4 det on the shared images took 2 % (fp32) and 3 % (bf16)
        longer than on a ready float tensor, against 10 % and 12 % for normalising on the host. Results move by
        float rounding only. None where it does not apply."""
        if self._model is None or not self._takes_images(scale):
            return None
        key = (*map(float, scale), *map(float, shift))
        with self._image_lock:
            runner = self._image_runners.get(key)
            if runner is None:
                pool = _RequestPool(self._compile_image_entry(scale, shift), self._pool_size)

                def runner(image: np.ndarray) -> List[np.ndarray]:
                    batch = self._image_batch(image)
                    with self.timer.stage("infer"):
                        return pool.run({0: batch})

                self._image_runners[key] = runner
        return runner

    def _compile_image_entry(self, scale: np.ndarray, shift: np.ndarray):
        import openvino as ov
        from openvino.preprocess import PrePostProcessor

        ppp = PrePostProcessor(self._model.clone())
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        # x * scale + shift as (x - mean) / std in pixel units: OpenVINO folds that form into its input reorder
        # (a multiply and an add written out cost 9 % of PP-OCRv4 det's time, this 2 %).
        scale64, shift64 = np.asarray(scale, np.float64), np.asarray(shift, np.float64)
        ppp.input().preprocess().convert_element_type(ov.Type.f32).mean((-shift64 / scale64).tolist()).scale((1 / scale64).tolist())
        # A core of its own, without the model cache's CACHE_DIR: a cache entry never changes after it is written.
        return ov.Core().compile_model(ppp.build(), "CPU", self._properties)

    def close(self) -> None:
        self._pool = None
        self._image_runners = {}
        self._model = None


class OpenVINOEngine(Engine):
    name = "openvino"
    module = "openvino"
    pip_name = "openvino"
    # Measured on PP-OCRv4 det (benchmarks/RESULTS.md): fastest with only Conv/MatMul quantized; quantizing
    # every op, ONNX Runtime's way, made it slower than fp32.
    int8_op_types = ("Conv", "MatMul")

    @classmethod
    def version(cls) -> Optional[str]:
        """The package's version and our graph rewrites' revision: a cached IR holds the rewritten graph."""
        version = super().version()
        return version and f"{version}+rewrites{graph_rewrites.REVISION}"

    @classmethod
    def unsupported_reason(cls, device: Device, precision: str) -> Optional[str]:
        if device.is_gpu:
            return "hpinfer uses OpenVINO on CPUs only (NVIDIA GPUs: tensorrt, onnxruntime-gpu or torch)"
        if precision == "bf16" and not cpu_has_fast_bf16():
            return "bf16 needs a CPU with AVX512-BF16 or AMX"
        if precision == "fp16" and not cpu_has_fast_fp16():
            return "fp16 needs a CPU with AVX512-FP16 (or an Arm CPU)"
        return None

    @classmethod
    def load(cls, model_path: Path, config: BackendConfig, device: Device) -> EngineSession:
        import openvino as ov

        return cls._compile(ov.Core(), cls._prepare(model_path, config), config)

    @classmethod
    def build(cls, model_path: Path, config: BackendConfig, device: Device, out_dir: Path) -> None:
        import openvino as ov

        ov.save_model(cls._prepare(model_path, config), str(out_dir / IR_MODEL), compress_to_fp16=False)
        cls.open(out_dir, config, device).close()  # compiling once fills OpenVINO's blob cache

    @classmethod
    def open(cls, artifact_dir: Path, config: BackendConfig, device: Device) -> EngineSession:
        import openvino as ov

        core = ov.Core()
        core.set_property({"CACHE_DIR": str(artifact_dir / BLOB_CACHE)})
        # A model object, not its path: OpenVINO then keys its blob on the content, and the blob compiled in
        # the build's staging folder is found again after the folder is renamed into place.
        return cls._compile(core, core.read_model(str(artifact_dir / IR_MODEL)), config)

    @staticmethod
    def _prepare(model_path: Path, config: BackendConfig):
        """Read the model (ONNX: rewritten first) and apply the dynamic_shapes bounds, so OpenVINO compiles for
        that range only."""
        import openvino as ov

        model = ov.Core().read_model(_rewritten_onnx(model_path) if model_path.suffix == ".onnx" else str(model_path))
        bounds = ShapeBounds.from_config(config, [_tensor_info(p) for p in model.inputs], model_path)
        if bounds is not None:
            model.reshape({
                name: ov.PartialShape([ov.Dimension(lo, hi) for lo, hi in zip(b.min, b.max)])
                for name, b in bounds.inputs.items()
            })
        return model

    @staticmethod
    def _compile(core, model, config: BackendConfig) -> "OpenVINOSession":
        import openvino as ov

        threads = config.cpu_num_threads or cpu_count()
        streams = config.cpu_num_streams
        properties = {
            "INFERENCE_NUM_THREADS": threads,
            # Explicit, because OpenVINO silently defaults to bf16 on AMX CPUs.
            "INFERENCE_PRECISION_HINT": _PRECISION_HINT[config.precision],
        }
        if streams is None:
            # One stream with every thread. Concurrent requests on it run one after another, and so do those of
            # other models compiled alike (they share one CPU executor): pipeline stage threads never oversubscribe.
            properties["PERFORMANCE_HINT"] = "LATENCY"
        else:
            # Each stream runs one request at a time on its share of the threads; a stream has at least one.
            properties["NUM_STREAMS"] = min(streams, threads)
            # Unpinned: each model pins its streams to the same first cores, so two models' requests running at
            # once (pipeline stages, or callers on several threads) would share one core while another idles.
            properties["ENABLE_CPU_PINNING"] = False
        compiled = core.compile_model(model, "CPU", properties)
        got = int(compiled.get_property("NUM_STREAMS"))
        settings = f"openvino {ov.__version__} CPU threads={threads}" + (f" streams={got}" if streams else "") + (
            f" precision={config.precision}"
        )
        return OpenVINOSession(model, compiled, properties, settings, pool_size=max(2, got))
