"""ONNX Runtime: the standard engine (CPU; CUDA when onnxruntime-gpu is installed).

Its cached artifact is the graph ONNX Runtime optimized for this machine (``optimized_model_filepath``), so a
warm start skips graph optimization; int8 runs a static QDQ model (``hpinfer.runtime.quantize``), which ONNX
Runtime fuses into integer kernels.
"""

from __future__ import annotations

import functools
import logging
import queue
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

import numpy as np

from ...config import BackendConfig
from ...device import Device
from ...errors import EngineUnavailableError
from ..hardware import cpu_count
from ..shapes import current_defaults
from .base import Engine, EngineSession, TensorInfo

log = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def _shape(dims) -> tuple:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in dims)


OPTIMIZED_MODEL = "model.optimized.onnx"


class OnnxRuntimeSession(EngineSession):
    backend = "onnxruntime"

    def __init__(self, session, settings: str, more: Sequence[Any] = (), run_options: Any = None):
        self._session = session
        self._run_options = run_options
        # cpu_num_streams > 1: one session per stream, each with its share of the threads (an ONNX Runtime session
        # runs concurrent calls on one shared intra-op pool, so they would only contend).
        self._pool: Optional["queue.Queue"] = None
        if more:
            self._pool = queue.Queue()
            for one in (session, *more):
                self._pool.put(one)
        inputs = [TensorInfo(i.name, _shape(i.shape), _ORT_TYPES.get(i.type, i.type)) for i in session.get_inputs()]
        outputs = [TensorInfo(o.name, _shape(o.shape), _ORT_TYPES.get(o.type, o.type)) for o in session.get_outputs()]
        super().__init__(inputs, outputs, settings)
        self._output_names = [o.name for o in outputs]

    def _run(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        if self._pool is None:
            return self._session.run(self._output_names, dict(feeds), self._run_options)
        session = self._pool.get()
        try:
            return session.run(self._output_names, dict(feeds), self._run_options)
        finally:
            self._pool.put(session)

    def metadata(self) -> dict:
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def close(self) -> None:
        self._session = None
        self._pool = None


_exact_arena = False  # return_memory_after_runs switches it on


def return_memory_after_runs() -> None:
    """From now on, sessions of models whose input size varies hand back each run's memory once its tensors are
    freed (``_register_exact_arena``): what a server wants, whose memory must come back after a large request.
    It costs page faults on every run: in-process OCR of batches of 8 images was ~20 % slower on 2 busy cores
    (benchmarks/RESULTS.md, "serving under hostile input"), so the CLI and Python API keep the default."""
    global _exact_arena
    _exact_arena = True


def _sized_by_input() -> bool:
    """Whether the model being opened takes images whose size varies (a detector's pages, a recogniser's lines
    of any width; not a classifier's fixed crops), as its task's default input bounds say (``model_defaults``)."""
    shapes = current_defaults()
    return bool(shapes) and len(shapes[0]) == 4 and shapes[0][2:] != shapes[2][2:]


@functools.lru_cache(maxsize=1)
def _register_exact_arena() -> None:
    """A process-wide CPU arena that grows by exactly what a run asks (kSameAsRequested), for the sessions of
    models whose input size varies. With a session's own arena (kNextPowerOfTwo) the shrinkage after a run
    keeps the first region and every region that still holds the run's outputs, which the next run's outputs
    often land in again: after one large page a detector kept ~440 MB (one 4000 px input's working set) for
    good. With regions of exactly the size asked, each is freed once its tensors are (benchmarks/RESULTS.md,
    "serving under hostile input", the soak)."""
    import onnxruntime as ort

    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, _SAME_AS_REQUESTED, -1, -1))


_SAME_AS_REQUESTED = 1  # OrtArenaCfg's arena_extend_strategy: 0 next power of two, 1 same as requested


def _check_providers(session, device: Device) -> None:
    """ONNX Runtime that cannot start its CUDA provider (missing CUDA/cuDNN libraries, a CPU-only build next to
    onnxruntime-gpu) only warns and runs the model on the CPU: a GPU request that got no GPU is refused, so that
    safe mode moves on to the next engine and a user's choice fails with the reason."""
    got = session.get_providers()
    if device.is_gpu and "CUDAExecutionProvider" not in got:
        raise EngineUnavailableError(
            f"onnxruntime asked for CUDAExecutionProvider on {device} but its session got {got} (it would run on "
            f"the CPU); install onnxruntime-gpu with the CUDA and cuDNN libraries it needs, or use backend torch"
        )


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    module = "onnxruntime"
    pip_name = "onnxruntime"
    # Other ops quantized too, so QDQ fuses into integer kernels; but int8 elementwise Mul/Add raised PP-OCRv4
    # rec's held-back CER from 0.02 to 0.11 (benchmarks/RESULTS.md).
    int8_float_op_types = ("Mul", "Add")

    @classmethod
    def _providers(cls) -> List[str]:
        import onnxruntime as ort

        return ort.get_available_providers()

    @classmethod
    def unsupported_reason(cls, device: Device, precision: str) -> Optional[str]:
        if device.is_gpu and "CUDAExecutionProvider" not in cls._providers():
            return "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
        if precision == "int8" and device.is_gpu:
            return "int8 on onnxruntime is CPU-only here (static QDQ quantization)"
        if precision not in ("fp32", "int8"):
            return f"precision {precision} is not supported by onnxruntime here (fp32 and int8 only)"
        return None

    @classmethod
    def load(cls, model_path: Path, config: BackendConfig, device: Device) -> EngineSession:
        return cls._session(model_path, config, device, optimize=True)

    @classmethod
    def build(cls, model_path: Path, config: BackendConfig, device: Device, out_dir: Path) -> None:
        cls._session(model_path, config, device, optimize=True, save_to=out_dir / OPTIMIZED_MODEL).close()

    @classmethod
    def open(cls, artifact_dir: Path, config: BackendConfig, device: Device) -> EngineSession:
        return cls._session(artifact_dir / OPTIMIZED_MODEL, config, device, optimize=False)

    @classmethod
    def _session(
        cls, model_path: Path, config: BackendConfig, device: Device, optimize: bool, save_to: Optional[Path] = None
    ) -> "OnnxRuntimeSession":
        import onnxruntime as ort

        options = ort.SessionOptions()
        threads = config.cpu_num_threads or cpu_count()
        streams = min(config.cpu_num_streams or 1, threads) if save_to is None else 1  # building needs one
        options.intra_op_num_threads = max(1, threads // streams)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # A saved optimized graph is already optimized (for this machine: the cache key holds its CPU).
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        if save_to is not None:
            options.optimized_model_filepath = str(save_to)
        options.log_severity_level = 3
        # A pipeline holds several sessions, each with its own thread pool: threads left spinning after one
        # model's run steal the cores from the next model's (measured in benchmarks/RESULTS.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if _exact_arena and not device.is_gpu and save_to is None and _sized_by_input():
            _register_exact_arena()
            options.add_session_config_entry("session.use_env_allocators", "1")
        if device.is_gpu:
            providers = [("CUDAExecutionProvider", {"device_id": device.index}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
        _check_providers(session, device)
        more = [ort.InferenceSession(str(model_path), sess_options=options, providers=providers) for _ in range(streams - 1)]
        settings = (
            f"onnxruntime {ort.__version__} {'CUDA' if device.is_gpu else 'CPU'} threads={threads} "
            + (f"streams={streams} " if config.cpu_num_streams else "")
            + f"precision={config.precision}"
        )
        # The CPU arena hands back what one run needed once the run ends: without it, one large input (a detector
        # input of 4000 px) keeps the process gigabytes larger for good; the cost is within noise (benchmarks/RESULTS.md).
        run_options = ort.RunOptions()
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        return OnnxRuntimeSession(session, settings, more, run_options)
