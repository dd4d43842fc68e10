"""A deserialized TensorRT engine on one GPU: each input shape gets static device buffers and, after its first
run, a captured CUDA graph of ``execute_async_v3``, kept for the ``MAX_SHAPES`` most recently used shapes (OCR
feeds a new shape per image: unbounded, they would fill the GPU's memory). Device memory and streams come from
torch."""

from __future__ import annotations

import threading
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ....device import Device
from ..base import EngineSession, TensorInfo
from ..lru import LRU

MAX_SHAPES = 64  # input shapes whose buffers and CUDA graph are kept (the torch engine's max_graphs default)


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

