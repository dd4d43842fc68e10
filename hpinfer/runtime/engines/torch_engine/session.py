"""A translated model loaded on the CPU or a CUDA device: runs, arg-max heads, GPU pre-processing, profiles."""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ....config import BackendConfig
from ....device import Device
from ...shapes import bounds_for
from ..base import EngineSession, TensorInfo
from . import buckets
from .graphs import Shape, _CudaContext, batch_buckets

if TYPE_CHECKING:
    import torch

    from ...onnx_to_torch import Graph, OnnxModule

log = logging.getLogger(__name__)


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
        # Image sides / line widths padded to a few sizes (TorchConfig.shape_buckets): the model's free H/W axes.
        self.spatial_axes = buckets.spatial_axes(inputs[0].shape) if options.shape_buckets and len(inputs) == 1 else ()
        self._contexts: "queue.LifoQueue[_CudaContext]" = queue.LifoQueue()
        self._context_count = 0
        self._context_lock = threading.Lock()

    def padded_shape(self, shape: Shape) -> Shape:
        """``shape`` with the batch raised to its bucket (inputs share the batch dimension)."""
        if not self.pad_batch or shape[0] > self.buckets[-1]:
            return tuple(shape)
        return (next(b for b in self.buckets if b >= shape[0]), *shape[1:])

    def _run(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        return self._bucketed([feeds[name] for name in self._names], self._run_arrays)

    def _run_arrays(self, arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
        import torch

        if self.torch_device.type == "cpu":
            with torch.inference_mode():
                return [o.numpy() for o in self.fn(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])]
        return self._run_on_gpu(arrays)

    def _bucketed(self, arrays: Sequence[np.ndarray], run: Callable[[Sequence[np.ndarray]], List[np.ndarray]]) -> List[np.ndarray]:
        """``run(arrays)``, with the input padded to its size bucket and the outputs cropped back, if asked."""
        if not self.spatial_axes:
            return run(arrays)
        original = arrays[0].shape
        target = buckets.padded(original, self.spatial_axes)
        return buckets.crop(run([buckets.pad(arrays[0], target)]), original, target, self.spatial_axes)

    def _run_best(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        """On the GPU, the arg-max and its score are taken there (ties: the first index, as numpy's argmax), so
        the host gets N x T indices and scores, not N x T x C float32 scores (PP-OCR rec at batch 32 and width
        640: 68 MB to copy and scan on one CPU core)."""
        if self.torch_device.type == "cpu":
            return super()._run_best(feeds)
        return self._bucketed([feeds[name] for name in self._names], lambda a: self._run_on_gpu(a, self._best, "best"))

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
                    if not self.spatial_axes:
                        return self._run_on_gpu([batch], fn, tag)
                    return self._padded_images(batch, fn, tag)

            self._image_runners[factors] = runner
        return runner

    def _padded_images(self, batch: np.ndarray, fn: Callable, tag: str) -> List[np.ndarray]:
        """An NHWC uint8 batch padded to its size bucket, with each image's true height and width beside it: the
        normaliser zeros what lies outside them after normalising (uint8 zeros would normalise to -mean/std)."""
        n, h, w, _ = batch.shape
        target = buckets.padded((n, 3, h, w), self.spatial_axes)
        sizes = np.tile(np.array([[h, w]], np.int64), (n, 1))
        outputs = self._run_on_gpu([buckets.pad(batch, (n, target[2], target[3], 3)), sizes], fn, tag)
        return buckets.crop(outputs, (n, 3, h, w), target, self.spatial_axes)

    def _normalising(self, scale: np.ndarray, shift: np.ndarray) -> Callable:
        import torch

        scale_t = torch.tensor(scale, device=self.torch_device).view(1, 3, 1, 1)  # a copy: norm_factors are read-only
        shift_t = torch.tensor(shift, device=self.torch_device).view(1, 3, 1, 1)
        model = self.fn

        def fn(image: "torch.Tensor", sizes: Optional["torch.Tensor"] = None) -> Sequence["torch.Tensor"]:
            x = image.permute(0, 3, 1, 2).float()  # N x H x W x 3 uint8 → N x 3 x H x W float32
            x = x * scale_t  # two separate kernels: no fused multiply-add, exactly numpy's rounding
            x = x + shift_t
            if sizes is not None:  # padded to a bucket: zeros beyond each image's own height and width
                rows = torch.arange(x.shape[2], device=x.device).view(1, 1, -1, 1) < sizes[:, 0].view(-1, 1, 1, 1)
                cols = torch.arange(x.shape[3], device=x.device).view(1, 1, 1, -1) < sizes[:, 1].view(-1, 1, 1, 1)
                x = torch.where(rows & cols, x, torch.zeros((), device=x.device))
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

