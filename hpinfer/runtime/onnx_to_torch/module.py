"""``OnnxModule``: a torch module that executes a normalised ONNX graph, one op function per node.

The graph is compiled once into a flat program over integer slots (inputs, constants, each node's
outputs); ``forward`` walks it, frees each intermediate after its last use, and never moves data to
the host, so the same module runs eagerly, inside a captured CUDA graph, or under ``torch.compile``
and ``torch.export``. Weights are buffers, so ``module.to(device)`` moves them.

Mixed precision is a per-node compute dtype: float inputs are cast to the node's dtype on entry
(weights are stored already cast, once per dtype that uses them) and float outputs of the graph
come back as float32.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from .graph import Graph, Node
from .ops import HOST_INPUTS, OPS, Host, Value

# Ops that also compute on host values (shape arithmetic) when their data inputs are host values.
_HOST_CAPABLE = frozenset({"Add", "Sub", "Mul", "Div", "Cast", "Concat", "Reshape", "Slice", "Squeeze", "Unsqueeze"})

Observer = Callable[[str, torch.Tensor], None]


def unsupported_ops(graph: Graph) -> List[str]:
    return sorted({n.op for n in graph.nodes} - OPS.keys())


def _host(array: np.ndarray) -> Host:
    return array.tolist()


def _is_host_position(node: Node, index: int) -> bool:
    return index in HOST_INPUTS.get(node.op, ())


def fold(node: Node, arrays: Sequence[Optional[np.ndarray]]) -> List[np.ndarray]:
    """Evaluate one node on constants, on the CPU in float32 (graph normalisation's constant folding)."""
    if node.op not in OPS:
        raise NotImplementedError(f"no torch translation for ONNX op {node.op}")
    args: List[Value] = []
    for i, a in enumerate(arrays):
        if a is None:
            args.append(None)
        elif _is_host_position(node, i) or (a.ndim <= 1 and not np.issubdtype(a.dtype, np.floating)):
            args.append(_host(a))
        else:
            args.append(torch.from_numpy(np.array(a)))
    result = OPS[node.op](node, torch.float32)(*args)
    results = list(result) if isinstance(result, (tuple, list)) and len(node.outputs) > 1 else [result]
    return [r.numpy() if isinstance(r, torch.Tensor) else np.asarray(r, dtype=np.int64 if _all_ints(r) else np.float32) for r in results]


def _all_ints(value: Host) -> bool:
    return all(isinstance(v, int) for v in (value if isinstance(value, list) else [value]))


def host_values(graph: Graph) -> Set[str]:
    """Values computed as host data: shapes, small integer constants, and shape arithmetic on them."""
    host = {
        name for name, a in graph.constants.items() if a.ndim <= 1 and not np.issubdtype(a.dtype, np.floating)
    }
    for node in graph.nodes:
        for i, name in enumerate(node.inputs):
            if name in graph.constants and _is_host_position(node, i):
                host.add(name)
    for node in graph.nodes:
        data = [name for i, name in enumerate(node.inputs) if name and not _is_host_position(node, i)]
        if node.op == "Shape" or (node.op in _HOST_CAPABLE and all(name in host for name in data)):
            host.update(node.outputs)
    return host


class OnnxModule(torch.nn.Module):
    """Executes ``graph``; ``dtypes`` maps node index → compute dtype (absent: plain float32, no casts)."""

    def __init__(self, graph: Graph, dtypes: Optional[Mapping[int, torch.dtype]] = None):
        super().__init__()
        missing = unsupported_ops(graph)
        if missing:
            raise NotImplementedError(f"no torch translation for ONNX ops: {', '.join(missing)}")
        self.input_names = [name for name, _, _ in graph.inputs]
        self.output_names = list(graph.outputs)
        self.mixed = dtypes is not None
        host = host_values(graph)
        slots: Dict[object, int] = {}
        template: List[Value] = [None]  # slot 0 stays None: omitted optional inputs
        self._buffer_slots: List[Tuple[int, str]] = []

        def slot(key: object, value: Value = None) -> int:
            if key not in slots:
                slots[key] = len(template)
                template.append(value)
            return slots[key]

        def constant_slot(name: str, dtype: Optional[torch.dtype], as_host: bool) -> int:
            array = graph.constants[name]
            if as_host:
                return slot(name, _host(array))
            tensor = torch.from_numpy(np.array(array))
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            key = (name, tensor.dtype)
            if key not in slots:
                buffer = f"c{len(self._buffer_slots)}"
                self.register_buffer(buffer, tensor, persistent=False)
                self._buffer_slots.append((slot(key), buffer))
            return slots[key]

        self._input_slots = [slot(name) for name in self.input_names]
        steps = []
        for index, node in enumerate(graph.nodes):
            dtype = dtypes.get(index, torch.float32) if dtypes is not None else None
            on_host = node.outputs[0] in host  # shape arithmetic: constants join as host values
            inputs = [
                0 if not name
                else constant_slot(name, dtype, on_host or _is_host_position(node, i)) if name in graph.constants
                else slots[name]
                for i, name in enumerate(node.inputs)
            ]
            outputs = [slot(name) for name in node.outputs]
            steps.append((OPS[node.op](node, dtype or torch.float32), inputs, outputs, dtype, (node.op, *node.outputs)))
        self._output_slots = [
            constant_slot(name, None, False) if name in graph.constants else slots[name] for name in self.output_names
        ]
        self._template = template
        self._steps = self._with_frees(steps)

    def _with_frees(self, steps):
        """Attach to each step the slots whose last reader it is, so intermediates die early."""
        keep = set(self._output_slots) | {s for s, _ in self._buffer_slots}
        computed = set(self._input_slots) | {s for step in steps for s in step[2]}
        last: Dict[int, int] = {}
        for i, (_, inputs, _, _, _) in enumerate(steps):
            for s in inputs:
                last[s] = i
        frees: List[List[int]] = [[] for _ in steps]
        for s, i in last.items():
            if s in computed and s not in keep:
                frees[i].append(s)
        return [(fn, ins, outs, dtype, names, tuple(frees[i])) for i, (fn, ins, outs, dtype, names) in enumerate(steps)]

    def forward(self, *inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self._execute(inputs, None)

    def labelled(self, *inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``forward`` with each node in a profiler range named by its op type (for per-op profiles)."""
        return self._execute(inputs, None, label=True)

    def _execute(self, inputs: Sequence[torch.Tensor], observe: Optional[Observer], label: bool = False) -> Tuple[torch.Tensor, ...]:
        env = list(self._template)
        buffers = self._buffers
        for s, name in self._buffer_slots:
            env[s] = buffers[name]
        for s, x in zip(self._input_slots, inputs):
            env[s] = x
        for fn, ins, outs, dtype, (op, *names), frees in self._steps:
            args = [env[i] for i in ins]
            if dtype is not None:
                args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
            if label:
                with torch.profiler.record_function(op):
                    result = fn(*args)
            else:
                result = fn(*args)
            if len(outs) == 1:
                env[outs[0]] = result
            else:
                for s, r in zip(outs, result):
                    env[s] = r
            if observe is not None:
                for name, s in zip(names, outs):
                    if isinstance(env[s], torch.Tensor):
                        observe(name, env[s])
            for s in frees:
                env[s] = None
        outputs = [env[s] for s in self._output_slots]
        if self.mixed:
            outputs = [o.float() if o.is_floating_point() else o for o in outputs]
        return tuple(outputs)

    @torch.no_grad()
    def value_ranges(self, *inputs: torch.Tensor) -> Dict[str, float]:
        """Largest magnitude of every float value on these inputs (for the fp16 precision plan)."""
        ranges: Dict[str, float] = {}

        def observe(name: str, t: torch.Tensor) -> None:
            if t.is_floating_point() and t.numel():
                ranges[name] = max(ranges.get(name, 0.0), float(t.detach().abs().amax()))

        for name, x in zip(self.input_names, inputs):
            observe(name, x)
        self._execute(inputs, observe)
        return ranges
