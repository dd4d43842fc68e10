"""PyTorch engine: ONNX models through hpinfer's own translator (``runtime.onnx_to_torch``), CPU or CUDA.

On CUDA a run stages its input through pinned host memory (torch's caching host allocator), copies
and computes on a dedicated stream, and replays a captured CUDA graph when one exists for the shape:
the PP-OCR models are hundreds of small kernels, so eager execution is launch-bound. A session can
keep several *execution contexts* (stream, graphs, memory pool each) so that concurrent callers
overlap, one context's copies running while another computes: with fixed shapes, 2 contexts served
rec 32x48x320 batches 11-22% faster from 2 threads on an H100. The default is one context, because
with varying shapes every context captures its own graphs: the OCR pipeline shared by 2 threads ran
9x slower with 2 contexts (captures and eager first runs repeated per context, each capture stalling
the process; see benchmarks/RESULTS.md).

Which shapes get a graph: the batch dimension is padded up to a bucket (powers of two within
``dynamic_shapes`` min..max) and the padding cut from the outputs, which is exact because batch
items are independent. Other dimensions are never padded: padding a detector's image or a
recogniser's line width changes results near the padded edge (measured: detection boxes move at the
border; 5 of 80 recognised lines changed), so each exact shape gets its own graph, captured once it
has been seen ``capture_after`` times (least recently used graphs are dropped past ``max_graphs``).
A capture runs alone in the process (``_GPU_LOCK``): other threads' runs wait for it.

Precision: fp32 keeps TF32 off unless asked (fidelity with the CPU path); fp16/bf16 use the
translator's mixed policy, calibrated on page-like inputs of the ``dynamic_shapes`` opt shape.
``torch.compile`` is opt-in (``TorchOptions.compile``): 10-20 s of compiling per model and shape on an H100.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...config import BackendConfig
from ...device import Device
from ..hardware import cpu_count, cpu_has_fast_bf16
from ..shapes import bounds_for
from .base import Engine, EngineSession, TensorInfo

if TYPE_CHECKING:
    import torch

    from ..onnx_to_torch import Graph, OnnxModule

log = logging.getLogger(__name__)

Shape = Tuple[int, ...]
# Calibration shapes tried in turn when dynamic_shapes gives none: a page, then a text line.
CALIBRATION_SIZES = ((640, 640), (48, 320))


@dataclass(frozen=True)
class TorchOptions:
    """Engine settings beyond ``BackendConfig``; the defaults are what ``load`` uses."""

    cuda_graphs: bool = True
    compile: bool = False  # torch.compile (Inductor) the module; compiled once per shape
    tf32: bool = False  # TF32 convolutions/matmuls in fp32: faster, ~1e-3 relative error
    contexts: int = 1  # execution contexts, each with its own stream, graphs and memory (see above)
    capture_after: int = 2  # sightings of a shape before its graph is captured (1 with dynamic_shapes)
    max_graphs: int = 64  # per context; they share one memory pool, so mostly their outputs add up


def batch_buckets(lo: int, hi: int) -> List[int]:
    """Batch sizes that graphs are captured for: powers of two from ``lo``, and ``hi`` itself."""
    sizes, size = [], max(lo, 1)
    while size < hi:
        sizes.append(size)
        size *= 2
    return sizes + [hi]


def calibration_shapes(shape: Sequence[Optional[int]], bounds: Optional[Sequence[Sequence[int]]]) -> List[Shape]:
    """Batch 1 at the ``dynamic_shapes`` opt shape; else a page and a text line for the dynamic H, W."""
    if bounds is not None:
        return [(1, *bounds[1][1:])]
    n, c, h, w = shape
    return [(1, c or 3, h or size_h, w or size_w) for size_h, size_w in CALIBRATION_SIZES]


def _convert(graph: "Graph", precision: str, bounds: Optional[Sequence[Sequence[int]]]) -> "OnnxModule":
    """The module at ``precision``, calibrated at the first shape the model runs; else by op type alone."""
    from ..onnx_to_torch import calibration_inputs, convert

    if precision == "fp32" or len(graph.inputs) != 1 or len(graph.inputs[0][1]) != 4:
        return convert(graph, precision)
    for shape in calibration_shapes(graph.inputs[0][1], bounds):
        try:
            return convert(graph, precision, calibration_inputs(shape))
        except RuntimeError as err:  # this shape doesn't fit the model (e.g. a recogniser wants height 48)
            log.debug("calibration at %s failed: %s", shape, err)
    log.warning("reduced-precision calibration failed at every shape tried; give dynamic_shapes to calibrate at yours")
    return convert(graph, precision)


class _SharedExclusiveLock:
    """Runs share it; a CUDA-graph capture holds it alone. A capture fails ("operation not permitted when stream
    is capturing") if another thread of the process does CUDA work meanwhile, e.g. a pinned-memory allocation
    or another session's run (measured: a pipeline shared by 2-4 threads). Waiting captures go first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._capturing = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._capturing and not self._waiting)
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._capturing and not self._active)
            self._waiting -= 1
            self._capturing = True
        try:
            yield
        finally:
            with self._cond:
                self._capturing = False
                self._cond.notify_all()


_GPU_LOCK = _SharedExclusiveLock()  # one per process: captures exclude every torch-engine run


class _Captured:
    """One CUDA graph with its static input and output tensors."""

    def __init__(self, fn: Callable[..., Sequence["torch.Tensor"]], inputs: List["torch.Tensor"], stream, pool):
        import torch

        self.inputs = inputs
        with torch.cuda.stream(stream):
            fn(*inputs)  # warm-up outside capture: cuDNN autotuning, lazy initialisation, compilation
        stream.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
            self.outputs = fn(*inputs)


def _pinned(arrays: Sequence[np.ndarray]) -> List["torch.Tensor"]:
    """Host staging copies in pinned memory (torch's caching host allocator), so uploads are asynchronous."""
    import torch

    return [torch.from_numpy(np.ascontiguousarray(a)).pin_memory() for a in arrays]


class _CudaContext:
    """A stream with its own captured graphs; used by one caller at a time."""

    def __init__(self, session: "TorchSession"):
        import torch

        self.session = session
        self.stream = torch.cuda.Stream(session.torch_device)
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: "collections.OrderedDict[Tuple[Shape, ...], _Captured]" = collections.OrderedDict()
        self.seen: Dict[Tuple[Shape, ...], int] = collections.Counter()

    def run(self, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        import torch

        s = self.session
        n = arrays[0].shape[0]
        key = tuple(s.padded_shape(a.shape) for a in arrays)
        with torch.cuda.stream(self.stream):
            if self._should_capture(key):
                with _GPU_LOCK.exclusive():
                    self._capture(key, _pinned(arrays))
            with _GPU_LOCK.shared():
                staged = _pinned(arrays)
                captured = self.graphs.get(key)
                if captured is None:
                    outputs = s.fn(*[x.to(s.torch_device, non_blocking=True) for x in staged])
                else:
                    self.graphs.move_to_end(key)
                    for static, x in zip(captured.inputs, staged):
                        static[: x.shape[0]].copy_(x, non_blocking=True)
                    captured.graph.replay()
                    outputs = [o[:n] if o.shape[0] == key[0][0] else o for o in captured.outputs]
                host = [torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in outputs]
                for h, o in zip(host, outputs):
                    h.copy_(o, non_blocking=True)
                self.stream.synchronize()
        return [h.numpy() for h in host]

    def _should_capture(self, key: Tuple[Shape, ...]) -> bool:
        """True once a shape without a graph has been seen ``capture_after`` times (graphs enabled)."""
        if not self.session.options.cuda_graphs or key in self.graphs:
            return False
        self.seen[key] += 1
        return self.seen[key] >= self.session.capture_after

    def _capture(self, key: Tuple[Shape, ...], staged: List["torch.Tensor"]) -> None:
        import torch

        s = self.session
        statics = [torch.zeros(shape, dtype=x.dtype, device=s.torch_device) for shape, x in zip(key, staged)]
        for static, x in zip(statics, staged):
            static[: x.shape[0]].copy_(x, non_blocking=True)
        captured = _Captured(s.fn, statics, self.stream, self.pool)
        del self.seen[key]
        if any(o.shape[0] != key[0][0] for o in captured.outputs) and key[0][0] != staged[0].shape[0]:
            log.info("%s: outputs are not batch-major; shape %s runs without batch padding", s.settings, key)
            s.pad_batch = False
            return
        self.graphs[key] = captured
        if len(self.graphs) > s.options.max_graphs:
            self.graphs.popitem(last=False)


class TorchSession(EngineSession):
    backend = "torch"

    def __init__(self, module: "OnnxModule", graph: "Graph", device: Device, config: BackendConfig, options: TorchOptions, settings: str):
        import torch

        inputs = [TensorInfo(name, shape, dtype) for name, shape, dtype in graph.inputs]
        outputs = [TensorInfo(name, shape, dtype) for name, shape, dtype in graph.output_info]
        super().__init__(inputs, outputs, settings)
        self.module = module
        self.options = options
        self.torch_device = torch.device(f"cuda:{device.index}") if device.is_gpu else torch.device("cpu")
        self.fn: Callable[..., Sequence[torch.Tensor]] = torch.compile(module, dynamic=False, fullgraph=True) if options.compile else module
        self._names = [t.name for t in inputs]
        bounds = bounds_for(config, self._names[0], 0, inputs[0].shape)  # dynamic_shapes, else the model's defaults
        self.buckets = batch_buckets(bounds[0][0], bounds[2][0]) if bounds else []
        self.pad_batch = bool(self.buckets)
        self.capture_after = 1 if config.dynamic_shapes else options.capture_after
        self._contexts: "queue.LifoQueue[_CudaContext]" = queue.LifoQueue()
        self._context_count = 0
        self._context_lock = threading.Lock()

    def padded_shape(self, shape: Shape) -> Shape:
        """``shape`` with the batch raised to its bucket (inputs share the batch dimension)."""
        if not self.pad_batch or shape[0] > self.buckets[-1]:
            return tuple(shape)
        return (next(b for b in self.buckets if b >= shape[0]), *shape[1:])

    def _run(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        import torch

        arrays = [feeds[name] for name in self._names]
        with torch.inference_mode():
            if self.torch_device.type == "cpu":
                return [o.numpy() for o in self.fn(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])]
            context = self._acquire()
            try:
                return context.run(arrays)
            finally:
                self._contexts.put(context)

    def _acquire(self) -> _CudaContext:
        """A free context; a new one while fewer than ``options.contexts`` exist, else wait for one."""
        try:
            return self._contexts.get_nowait()
        except queue.Empty:
            pass
        with self._context_lock:
            if self._context_count < self.options.contexts:
                self._context_count += 1
                return _CudaContext(self)
        return self._contexts.get()

    def profile(self, feeds: Mapping[str, np.ndarray], iters: int = 10, rows: int = 25) -> str:
        """Per-op time table (torch profiler, one label per ONNX op type) over ``iters`` eager runs."""
        import torch
        from torch.profiler import ProfilerActivity, profile, record_function

        arrays = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.torch_device) for n in self._names]
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.torch_device.type == "cuda" else [])
        with torch.inference_mode():
            self.module(*arrays)
            with profile(activities=activities) as prof:
                for _ in range(iters):
                    with record_function("model"):
                        self.module.labelled(*arrays)
                if self.torch_device.type == "cuda":
                    torch.cuda.synchronize(self.torch_device)
        sort = "cuda_time_total" if self.torch_device.type == "cuda" else "cpu_time_total"
        return prof.key_averages().table(sort_by=sort, row_limit=rows)

    def close(self) -> None:
        self._contexts = queue.LifoQueue()
        self.module = self.fn = None


class TorchEngine(Engine):
    name = "torch"
    module = "torch"
    pip_name = "torch"

    @classmethod
    def unsupported_reason(cls, device: Device, precision: str) -> Optional[str]:
        import torch

        if precision == "int8":
            return "int8 is not supported by the torch engine (fp32, fp16 on GPU, bf16)"
        if not device.is_gpu:
            if precision == "fp16":
                return "fp16 on CPU is slower than fp32 in torch; use fp32, or bf16 on a CPU with AVX512-BF16/AMX"
            if precision == "bf16" and not cpu_has_fast_bf16():
                return "bf16 needs a CPU with AVX512-BF16 or AMX"
            return None
        if not torch.cuda.is_available():
            return f"this torch build ({torch.__version__}) has no CUDA, or no NVIDIA GPU is visible"
        if device.index >= torch.cuda.device_count():
            return f"{device} does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return f"{torch.cuda.get_device_name(device.index)} has no bf16 support"
        return None

    @classmethod
    def load(cls, model_path: Path, config: BackendConfig, device: Device, options: Optional[TorchOptions] = None) -> TorchSession:
        import torch

        from ..onnx_to_torch import load_graph

        options = options or TorchOptions()
        graph = load_graph(model_path)
        module = _convert(graph, config.precision, (config.dynamic_shapes or {}).get(graph.inputs[0][0])).eval()
        if device.is_gpu:
            torch.backends.cudnn.benchmark = True  # picks the fastest algorithm per shape; graphs replay it
            torch.backends.cudnn.allow_tf32 = options.tf32
            torch.backends.cuda.matmul.allow_tf32 = options.tf32
            module = module.to(f"cuda:{device.index}")
            where = f"CUDA {torch.cuda.get_device_name(device.index)}"
        else:
            torch.set_num_threads(config.cpu_num_threads or cpu_count())
            where = f"CPU threads={torch.get_num_threads()}"
        if options.compile:
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * options.max_graphs)
        features = [f for f, on in (("cuda-graphs", device.is_gpu and options.cuda_graphs), ("compile", options.compile), ("tf32", options.tf32)) if on]
        settings = f"torch {torch.__version__} {where} precision={config.precision} {' '.join(features)}".strip()
        session = TorchSession(module, graph, device, config, options, settings)
        return session
