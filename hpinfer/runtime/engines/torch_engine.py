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

Options come from ``backend_config.torch`` (``hpinfer.config.TorchConfig``): ``compile`` (a torch.compile
mode, opt-in: 10-20 s of compiling per model and shape on an H100, at every start), ``aot`` (torch.export +
AOTInductor with dynamic shapes, compiled once and kept in the model cache next to the engine entry, keyed by GPU
architecture, CUDA, driver and torch versions: the second start loads the package instead of compiling; a new
package is first loaded and run in a child process and refused if that fails, see ``_check_package_in_child``),
``cuda_graphs``, ``tf32``, ``contexts``, ``channels_last``, ``cudnn_benchmark`` and ``device_preprocess`` (detectors
hand over the resized uint8 image and it is normalised on the GPU, see ``image_runner``).

Thread safety: ``run`` may be called from any number of threads. Each call takes a free execution context
(or waits for one); a context's stream, graphs and shape counts are only touched by the thread holding it;
captures exclude every other torch-engine run in the process (``_GPU_LOCK``); an AOTInductor runner loaded in
single-threaded mode (needed for graph capture) is serialised by a lock for its eager runs.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import inspect
import json
import logging
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...config import BackendConfig, TorchConfig
from ...device import Device
from ...errors import EngineUnavailableError
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


# The engine's options are ``BackendConfig.torch``; the old name stays for callers of ``load(..., options)``.
TorchOptions = TorchConfig
AOT_PACKAGE = "model.pt2"
AOT_KIND = "torch_aoti"


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


Key = Tuple[object, ...]  # (variant tag, padded input shapes...)


class _CudaContext:
    """A stream with its own captured graphs; used by one caller at a time."""

    def __init__(self, session: "TorchSession"):
        import torch

        self.session = session
        self.stream = torch.cuda.Stream(session.torch_device)
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: "collections.OrderedDict[Key, _Captured]" = collections.OrderedDict()
        self.seen: Dict[Key, int] = collections.Counter()
        self.uncapturable: set = set()

    def run(self, arrays: Sequence[np.ndarray], fn: Optional[Callable] = None, tag: str = "") -> List[np.ndarray]:
        """``fn`` (default: the session's model) on ``arrays``: staged through pinned memory, replayed from a
        graph when this shape has one. ``tag`` names the variant (e.g. the uint8-image entry) in graph keys."""
        import torch

        s = self.session
        fn = s.fn if fn is None else fn  # not ``fn or``: a compiled module has no truth value
        n = arrays[0].shape[0]
        shapes = tuple(s.padded_shape(a.shape) for a in arrays)
        key: Key = (tag, *shapes)
        with torch.cuda.stream(self.stream):
            if self._should_capture(key):
                with _GPU_LOCK.exclusive():
                    self._capture(key, fn, _pinned(arrays))
            with _GPU_LOCK.shared():
                staged = _pinned(arrays)
                captured = self.graphs.get(key)
                if captured is None:
                    outputs = fn(*[x.to(s.torch_device, non_blocking=True) for x in staged])
                else:
                    self.graphs.move_to_end(key)
                    for static, x in zip(captured.inputs, staged):
                        static[: x.shape[0]].copy_(x, non_blocking=True)
                    captured.graph.replay()
                    outputs = [o[:n] if o.shape[0] == shapes[0][0] else o for o in captured.outputs]
                host = [torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in outputs]
                for h, o in zip(host, outputs):
                    h.copy_(o, non_blocking=True)
                self.stream.synchronize()
        return [h.numpy() for h in host]

    def _should_capture(self, key: Key) -> bool:
        """True once a shape without a graph has been seen ``capture_after`` times (graphs enabled)."""
        if not self.session.own_graphs or key in self.graphs or key in self.uncapturable:
            return False
        self.seen[key] += 1
        return self.seen[key] >= self.session.capture_after

    def _capture(self, key: Key, fn: Callable, staged: List["torch.Tensor"]) -> None:
        import torch

        s = self.session
        shapes = key[1:]
        statics = [torch.zeros(shape, dtype=x.dtype, device=s.torch_device) for shape, x in zip(shapes, staged)]
        for static, x in zip(statics, staged):
            static[: x.shape[0]].copy_(x, non_blocking=True)
        del self.seen[key]
        try:
            captured = _Captured(fn, statics, self.stream, self.pool)
        except Exception as err:  # e.g. a compiled or AOT function that can't be captured: run it eagerly
            log.warning("%s: CUDA graph capture of %s failed (%s); this shape runs without a graph", s.settings, key, err)
            self.uncapturable.add(key)
            self.stream.synchronize()
            return
        if any(o.shape[0] != shapes[0][0] for o in captured.outputs) and shapes[0][0] != staged[0].shape[0]:
            log.info("%s: outputs are not batch-major; shape %s runs without batch padding", s.settings, key)
            s.pad_batch = False
            return
        self.graphs[key] = captured
        if len(self.graphs) > s.options.max_graphs:
            self.graphs.popitem(last=False)


class TorchSession(EngineSession):
    backend = "torch"

    def __init__(
        self, module: "OnnxModule", graph: "Graph", device: Device, config: BackendConfig, settings: str,
        fn: Optional[Callable[..., Sequence["torch.Tensor"]]] = None,
    ):
        """``fn`` runs the model (compiled, AOT-loaded or channels-last); default: ``module`` itself."""
        import torch

        inputs = [TensorInfo(name, shape, dtype) for name, shape, dtype in graph.inputs]
        outputs = [TensorInfo(name, shape, dtype) for name, shape, dtype in graph.output_info]
        super().__init__(inputs, outputs, settings)
        options = config.torch
        self.module = module
        self.options = options
        self.torch_device = torch.device(f"cuda:{device.index}") if device.is_gpu else torch.device("cpu")
        self.fn: Callable[..., Sequence[torch.Tensor]] = module if fn is None else fn  # (a compiled module has no truth value)
        self.own_graphs = device.is_gpu and options.own_cuda_graphs
        self.aot: Optional[Dict[str, object]] = None  # AOTInductor package: path, built or loaded, seconds
        self._image_runners: Dict[Tuple[float, ...], Callable[[np.ndarray], List[np.ndarray]]] = {}
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
        if self.torch_device.type == "cpu":
            with torch.inference_mode():
                return [o.numpy() for o in self.fn(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])]
        return self._run_on_gpu(arrays)

    def _run_best(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        """On the GPU, the arg-max and its score are taken there (ties: the first index, as numpy's argmax), so
        the host gets N x T indices and scores, not N x T x C float32 scores (PP-OCR rec at batch 32 and width
        640: 68 MB to copy and scan on one CPU core)."""
        if self.torch_device.type == "cpu":
            return super()._run_best(feeds)
        return self._run_on_gpu([feeds[name] for name in self._names], self._best, "best")

    def _best(self, *inputs: "torch.Tensor") -> Tuple["torch.Tensor", "torch.Tensor"]:
        score, index = self.fn(*inputs)[0].max(dim=-1)
        return index, score

    def _run_on_gpu(self, arrays: Sequence[np.ndarray], fn: Optional[Callable] = None, tag: str = "") -> List[np.ndarray]:
        """``_CudaContext.run`` on a free context."""
        import torch

        with torch.inference_mode():
            context = self._acquire()
            try:
                return context.run(arrays, fn, tag)
            finally:
                self._contexts.put(context)

    def image_runner(self, scale: np.ndarray, shift: np.ndarray) -> Optional[Callable[[np.ndarray], List[np.ndarray]]]:
        """GPU pre-processing for image models: a function of one resized uint8 HxWx3 image (or an NxHxWx3 batch of
        them) that uploads it as is
        (a quarter of the float32 bytes), computes ``x * scale + shift`` per channel in float32 on the device (the
        same two roundings as the host path's numpy multiply and add, so fp32 results are unchanged) and runs
        the model. None where it does not apply (CPU, ``device_preprocess`` off, not one NCHW input of 3 channels)."""
        if self.torch_device.type != "cuda" or not self.options.device_preprocess or not self._takes_images(scale):
            return None
        factors = (*map(float, scale), *map(float, shift))
        runner = self._image_runners.get(factors)
        if runner is None:  # one per normalisation, built at first use (a benign race builds it twice)
            fn = self._normalising(np.asarray(scale, np.float32), np.asarray(shift, np.float32))
            tag = "u8:" + ",".join(f"{f:.9g}" for f in factors)

            def runner(image: np.ndarray) -> List[np.ndarray]:
                batch = self._image_batch(image)
                with self.timer.stage("infer"):
                    return self._run_on_gpu([batch], fn, tag)

            self._image_runners[factors] = runner
        return runner

    def _normalising(self, scale: np.ndarray, shift: np.ndarray) -> Callable:
        import torch

        scale_t = torch.tensor(scale, device=self.torch_device).view(1, 3, 1, 1)  # a copy: norm_factors are read-only
        shift_t = torch.tensor(shift, device=self.torch_device).view(1, 3, 1, 1)
        model = self.fn

        def fn(image: "torch.Tensor") -> Sequence["torch.Tensor"]:
            x = image.permute(0, 3, 1, 2).float()  # N x H x W x 3 uint8 → N x 3 x H x W float32
            x = x * scale_t  # two separate kernels: no fused multiply-add, exactly numpy's rounding
            x = x + shift_t
            return model(x.contiguous())

        return fn

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
        """Where the time goes, from the torch profiler over ``iters`` eager runs of the translated module: a table
        per ONNX op type (each node in a range named by its op) and, on a GPU, a table per CUDA kernel; both sorted
        by device time (CPU time on a CPU), ``rows`` rows each. Eager, because a captured graph or a compiled
        module hides the per-op split; the replayed graph runs the same kernels with the launch gaps removed."""
        import torch
        from torch.profiler import ProfilerActivity, profile, record_function

        arrays = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.torch_device) for n in self._names]
        cuda = self.torch_device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with torch.inference_mode():
            for _ in range(2):
                self.module(*arrays)
            if cuda:
                torch.cuda.synchronize(self.torch_device)
            with profile(activities=activities) as prof:
                for _ in range(iters):
                    with record_function("model"):
                        self.module.labelled(*arrays)
                if cuda:
                    torch.cuda.synchronize(self.torch_device)
        events = prof.key_averages()
        if not cuda:
            return f"per ONNX op type and aten op, CPU time, {iters} runs:\n" + events.table(sort_by="cpu_time_total", row_limit=rows)
        ops = _table(events, "device_time_total", "cuda_time_total", rows)
        kernels = _table(events, "self_device_time_total", "self_cuda_time_total", rows)
        return (f"per ONNX op type (and aten op), total CUDA time, {iters} runs:\n{ops}\n\n"
                f"per CUDA kernel, self CUDA time, {iters} runs:\n{kernels}")

    def close(self) -> None:
        self._contexts = queue.LifoQueue()
        self._image_runners = {}
        self.module = self.fn = None


def _table(events, sort: str, legacy_sort: str, rows: int) -> str:
    """``events.table`` sorted by ``sort``, or by its older name on torch versions that lack it."""
    try:
        return events.table(sort_by=sort, row_limit=rows)
    except (AttributeError, KeyError, ValueError):
        return events.table(sort_by=legacy_sort, row_limit=rows)


class TorchEngine(Engine):
    name = "torch"
    module = "torch"
    pip_name = "torch"
    bakes_shape_bounds = True

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
    def load(cls, model_path: Path, config: BackendConfig, device: Device, options: Optional[TorchConfig] = None) -> TorchSession:
        """``options`` (if given) replaces ``config.torch``. An AOT package goes to the model cache beside the model."""
        if options is not None:
            config = config.model_copy(update={"torch": options})
        return cls._load(model_path, config, device, None)

    @classmethod
    def open(cls, artifact_dir: Path, config: BackendConfig, device: Device) -> TorchSession:
        """From the engine's cache entry (the ONNX file); an AOT package is a sibling entry of the same model."""
        return cls._load(artifact_dir / "model.onnx", config, device, artifact_dir.parent)

    @classmethod
    def _load(cls, model_path: Path, config: BackendConfig, device: Device, aot_home: Optional[Path]) -> TorchSession:
        import torch

        from ..onnx_to_torch import load_graph

        options = config.torch
        graph = load_graph(model_path)
        module = _convert(graph, config.precision, (config.dynamic_shapes or {}).get(graph.inputs[0][0])).eval()
        if device.is_gpu:
            torch.backends.cudnn.benchmark = options.cudnn_benchmark  # process-wide too
            torch.backends.cudnn.allow_tf32 = options.tf32  # process-wide in torch: the last session loaded sets it
            torch.backends.cuda.matmul.allow_tf32 = options.tf32
            module = module.to(f"cuda:{device.index}")
            where = f"CUDA {torch.cuda.get_device_name(device.index)}"
        else:
            torch.set_num_threads(config.cpu_num_threads or cpu_count())
            where = f"CPU threads={torch.get_num_threads()}"
        entry = _Entry(module, options.channels_last)
        if options.channels_last:
            module.to(memory_format=torch.channels_last)
        fn: Callable = entry if options.channels_last else module
        aot = None
        if options.aot:
            fn, aot = _aot(entry, graph, model_path, config, device, aot_home)
        elif options.compile != "none":
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * options.max_graphs)
            mode = None if options.compile == "default" else options.compile
            fn = torch.compile(fn, mode=mode, dynamic=False, fullgraph=True)
        own_graphs = device.is_gpu and options.own_cuda_graphs
        features = [
            f for f, on in (
                ("cuda-graphs", own_graphs), (f"compile={options.compile}", options.compile != "none"),
                ("aot", options.aot), ("tf32", options.tf32), ("channels-last", options.channels_last),
                (f"contexts={options.contexts}", device.is_gpu and options.contexts > 1),
                ("no-cudnn-benchmark", device.is_gpu and not options.cudnn_benchmark),
            ) if on
        ]
        settings = f"torch {torch.__version__} {where} precision={config.precision} {' '.join(features)}".strip()
        session = TorchSession(module, graph, device, config, settings, fn)
        session.aot = aot
        return session


def _entry_class():
    import torch

    class Entry(torch.nn.Module):
        """The model with one positional input per ONNX input; NHWC (channels-last) inputs when asked."""

        def __init__(self, module: "OnnxModule", channels_last: bool):
            super().__init__()
            self.module = module
            self.channels_last = channels_last

        def forward(self, *inputs: "torch.Tensor"):
            if self.channels_last:
                inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs)
            return self.module(*inputs)

    class One(torch.nn.Module):
        """One named positional input: what ``torch.export``'s ``dynamic_shapes`` can describe."""

        def __init__(self, entry: "torch.nn.Module"):
            super().__init__()
            self.entry = entry

        def forward(self, x: "torch.Tensor"):
            return self.entry(x)

    Entry.One = One
    return Entry


def _Entry(module: "OnnxModule", channels_last: bool):
    return _entry_class()(module, channels_last)


# ------------------------------------------------------------------------------------------ AOTInductor packages


def _translator_digest() -> str:
    """The translator's source: a changed op translation must not load an old package."""
    digest = hashlib.sha256()
    for path in sorted((Path(__file__).resolve().parents[1] / "onnx_to_torch").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def aot_fields(model_path: Path, config: BackendConfig, device: Device) -> Dict[str, object]:
    """Everything that changes an AOTInductor package: the model, translator, precision and shapes, and the
    machine it was compiled for (GPU architecture, CUDA, driver and torch versions)."""
    import torch

    from ..cache import CACHE_FORMAT, file_sha256
    from ..hardware import cpu_name, driver_version

    if device.is_gpu:
        props = torch.cuda.get_device_properties(device.index)
        target = {"gpu": props.name, "arch": f"sm_{props.major}{props.minor}", "cuda": torch.version.cuda, "driver": driver_version()}
    else:
        target = {"cpu": cpu_name()}
    return {
        "format": CACHE_FORMAT, "model_sha256": file_sha256(model_path), "translator": _translator_digest(),
        "torch": torch.__version__, "precision": config.precision, "dynamic_shapes": config.dynamic_shapes,
        "channels_last": config.torch.channels_last, **target,
    }


def _example_shapes(shape: Sequence[Optional[int]], bounds: Optional[Sequence[Sequence[int]]]) -> List[Shape]:
    """Example inputs to export with: batch 2 (batch 1 would be specialised), at the opt shape or page/line sizes."""
    return [(max(2, s[0]) if shape[0] is None else s[0], *s[1:]) for s in calibration_shapes(shape, bounds)]


def _export(entry, graph: "Graph", device: Device, bounds) -> Tuple[object, Dict[str, object]]:
    """``torch.export`` with the model's dynamic axes left dynamic (``Dim.AUTO``: torch keeps static what the
    graph needs static). Tried in turn: all dynamic axes, batch and width, batch alone, none."""
    import torch
    from torch.export import Dim

    (name, shape, _), = graph.inputs
    dynamic = [i for i, d in enumerate(shape) if d is None]
    last = len(shape) - 1
    axis_sets = [dynamic, [a for a in dynamic if a in (0, last)], [a for a in dynamic if a == 0], []]
    errors = []
    target = f"cuda:{device.index}" if device.is_gpu else "cpu"
    for example in _example_shapes(shape, bounds):
        x = torch.rand(example, device=target) * 2 - 1
        for axes in dict.fromkeys(map(tuple, axis_sets)):
            try:
                program = torch.export.export(entry.One(entry), (x,), dynamic_shapes=({a: Dim.AUTO for a in axes},), strict=False)
            except Exception as err:  # unsolvable shape constraints on this axis set: try fewer dynamic axes
                errors.append(f"{example} axes {axes}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                continue
            placeholder = [n for n in program.graph.nodes if n.op == "placeholder"][-1]
            exported_shape = [d if isinstance(d, int) else str(d) for d in placeholder.meta["val"].shape]
            return program, {"example": list(example), "exported_shape": exported_shape}
    raise RuntimeError(f"torch.export failed for {name}: " + "; ".join(errors))


# Loads a fresh package and runs it once on zeros of the export's example shape: argv = package, device, shape,
# aoti_load_package's keyword arguments (JSON: the engine's own, so the package is loaded as the engine will).
_PACKAGE_CHECK = """
import json, sys, torch
torch.zeros(1, device=sys.argv[2])  # a CUDA context first, as the engine has one when it loads
runner = torch._inductor.aoti_load_package(sys.argv[1], **json.loads(sys.argv[4]))
with torch.inference_mode():
    runner(torch.zeros(*map(int, sys.argv[3].split(",")), device=sys.argv[2]))
torch.cuda.synchronize() if sys.argv[2].startswith("cuda") else None
"""


def _check_package_in_child(package: Path, example: Sequence[int], device: Device, load_kwargs: Mapping[str, object]) -> None:
    """Load and run a new package in a child process before the cache keeps it. On an H100 with torch 2.11
    (2026-11-26) every package built there (line classifier, rec, det; fp32 and fp16) killed a fresh process
    that loaded it with a segmentation fault inside ``aoti_load_package``: such a package must cost a refusal
    with a reason, never the caller's process."""
    import torch

    target = f"cuda:{device.index}" if device.is_gpu else "cpu"
    try:
        done = subprocess.run([sys.executable, "-c", _PACKAGE_CHECK, str(package), target, ",".join(map(str, example)),
                               json.dumps(dict(load_kwargs))], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise EngineUnavailableError("the AOTInductor package did not load and run within 600 s in a check process")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        how = "a segmentation fault" if done.returncode == -11 else f"exit code {done.returncode}: {last}"
        raise EngineUnavailableError(
            f"torch {torch.__version__} built an AOTInductor package that fails to load and run on {device} "
            f"({how}, in a check process); use compile instead of aot")


def _aot(entry, graph: "Graph", model_path: Path, config: BackendConfig, device: Device, home: Optional[Path]):
    """The model as an AOTInductor package from the model cache (built there once): a callable and facts about it."""
    import torch

    from ..cache import ModelCache, cache_root, key_of

    fields = aot_fields(model_path, config, device)
    cache = ModelCache(cache_root(model_path))
    if home is None:
        entry_dir = cache.entry_dir(model_path, AOT_KIND, fields)
    else:
        entry_dir = home / f"{AOT_KIND}-{key_of(fields)[:24]}"
    bounds = (config.dynamic_shapes or {}).get(graph.inputs[0][0])

    kwargs: Dict[str, object] = {}
    parameters = inspect.signature(torch._inductor.aoti_load_package).parameters
    single = "run_single_threaded" in parameters and device.is_gpu and config.torch.own_cuda_graphs
    if single:
        kwargs["run_single_threaded"] = True  # no internal locking: what CUDA-graph capture needs
    if "device_index" in parameters and device.is_gpu:
        kwargs["device_index"] = device.index

    def build(folder: Path) -> Dict[str, object]:
        start = time.perf_counter()
        program, info = _export(entry, graph, device, bounds)
        info["export_seconds"] = round(time.perf_counter() - start, 2)
        with torch.inference_mode():
            torch._inductor.aoti_compile_and_package(program, package_path=str(folder / AOT_PACKAGE))
        _check_package_in_child(folder / AOT_PACKAGE, info["example"], device, kwargs)
        return info

    found = cache.get_or_build(entry_dir, fields, build, model_path.stem)
    start = time.perf_counter()
    runner = torch._inductor.aoti_load_package(str(found.path / AOT_PACKAGE), **kwargs)
    lock = threading.Lock() if single else contextlib.nullcontext()

    def fn(*inputs: "torch.Tensor") -> Tuple["torch.Tensor", ...]:
        with lock:
            out = runner(*inputs)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)

    info = {
        "path": str(found.path), "built": found.built, "build_seconds": found.info.get("build_seconds") if found.built else None,
        "load_seconds": round(time.perf_counter() - start + (0.0 if found.built else found.seconds), 3),
        **{k: v for k, v in found.info.items() if k in ("example", "exported_shape", "export_seconds")},
    }
    log.info("%s: AOTInductor package %s (%s)", model_path.stem, "built" if found.built else "loaded from cache", info)
    return fn, info
