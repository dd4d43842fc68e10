"""CUDA graphs for the torch engine: execution contexts (a stream, captured graphs and a memory pool each).

On CUDA a run stages its input through pinned host memory (torch's caching host allocator), copies
and computes on a dedicated stream, and replays a captured CUDA graph when one exists for the shape:
the PP-OCR models are hundreds of small kernels, so eager execution is launch-bound. A session can
keep several *execution contexts* so that concurrent callers overlap, one context's copies running
while another computes. The default is one context, because with varying shapes every context
captures its own graphs (captures and eager first runs repeated per context, each capture stalling
the process; see benchmarks/RESULTS.md).

Which shapes get a graph: the batch dimension is padded up to a bucket (powers of two within
``dynamic_shapes`` min..max) and the padding cut from the outputs, which is exact because batch
items are independent. Image sides and line widths are padded only where ``TorchConfig.shape_buckets`` asks
(``buckets.py``: padding changes results near the padded edge). Each (padded) shape gets its own graph, captured
once it has been seen ``capture_after`` times; least recently used graphs are dropped past ``max_graphs``.
A capture runs alone in the process (``_GPU_LOCK``): other threads' runs wait for it.

Thread safety: each call takes a free execution context (or waits for one); a context's stream, graphs and
shape counts are only touched by the thread holding it; captures exclude every other torch-engine run in the
process (``_GPU_LOCK``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..lru import LRU

if TYPE_CHECKING:
    import torch

    from .session import TorchSession

log = logging.getLogger(__name__)

Shape = Tuple[int, ...]


def batch_buckets(lo: int, hi: int) -> List[int]:
    """Batch sizes that graphs are captured for: powers of two from ``lo``, and ``hi`` itself."""
    sizes, size = [], max(lo, 1)
    while size < hi:
        sizes.append(size)
        size *= 2
    return sizes + [hi]



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
        self.graphs: LRU[_Captured] = LRU(session.options.max_graphs)
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
        self.graphs.put(key, captured)
