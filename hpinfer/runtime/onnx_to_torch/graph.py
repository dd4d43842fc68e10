"""ONNX graph normalisation before translation to torch.

Paddle exports keep every weight in ``Constant`` nodes, wrap values in ``Identity`` nodes and compute
reshape targets at run time from ``Shape``. ``normalize`` turns that into a plain list of compute
nodes over named values plus a table of constants: constants and initializers become one dict,
identities become aliases, nodes whose inputs are all known are evaluated once (constant folding;
``Shape`` of a statically known shape counts as known, through ONNX shape inference), and nodes
that no output needs are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass(frozen=True)
class Node:
    op: str
    inputs: Tuple[str, ...]  # "" marks an omitted optional input
    outputs: Tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    opset: int = 13
    name: str = ""


Port = Tuple[str, Tuple[Optional[int], ...], str]  # name, shape (None: dynamic dimension), numpy dtype name


@dataclass
class Graph:
    nodes: List[Node]
    inputs: List[Port]
    outputs: List[str]  # value names (after Identity aliasing)
    output_info: List[Port]  # as the model declares its outputs
    constants: Dict[str, np.ndarray]
    metadata: Dict[str, str]


Evaluator = Callable[[Node, Sequence[Optional[np.ndarray]]], List[np.ndarray]]


def _attr(a: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    (a,) = node.attribute
    value = _attr(a)
    if a.name == "value":
        return value
    if a.name in ("value_float", "value_floats"):
        return np.asarray(value, dtype=np.float32)
    if a.name in ("value_int", "value_ints"):
        return np.asarray(value, dtype=np.int64)
    raise NotImplementedError(f"Constant node {node.name!r} with attribute {a.name!r}")


def _static_shapes(model: onnx.ModelProto) -> Dict[str, Tuple[int, ...]]:
    """Fully known shapes of intermediate values, from ONNX shape inference (best effort)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is an optimisation here; a model it can't handle still converts
        return {}
    shapes = {}
    for info in inferred.graph.value_info:
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes


def load_model(model: Union[str, Path, onnx.ModelProto]) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def normalize(model: Union[str, Path, onnx.ModelProto], evaluate: Evaluator) -> Graph:
    """The model as compute nodes and constants; ``evaluate`` runs one node on numpy arrays (folding)."""
    model = load_model(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    g = model.graph
    constants: Dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    static = _static_shapes(model)
    alias: Dict[str, str] = {}
    nodes: List[Node] = []
    for proto in g.node:
        if proto.domain not in ("", "ai.onnx"):
            raise NotImplementedError(f"node {proto.name!r}: operator domain {proto.domain!r} ({proto.op_type})")
        if proto.op_type == "Constant":
            constants[proto.output[0]] = _constant_value(proto)
            continue
        inputs = tuple(alias.get(i, i) for i in proto.input)
        if proto.op_type == "Identity":
            alias[proto.output[0]] = inputs[0]
            continue
        node = Node(proto.op_type, inputs, tuple(proto.output), {a.name: _attr(a) for a in proto.attribute}, opset, proto.name)
        if node.op == "Shape" and inputs[0] in static:
            start, end = node.attrs.get("start", 0), node.attrs.get("end")
            constants[node.outputs[0]] = np.asarray(static[inputs[0]][start:end], dtype=np.int64)
        elif all(i == "" or i in constants for i in inputs):
            for name, value in zip(node.outputs, evaluate(node, [constants.get(i) for i in inputs])):
                constants[name] = value
        else:
            nodes.append(node)
    outputs = [alias.get(o.name, o.name) for o in g.output]
    inputs = [_port(i) for i in g.input if i.name not in constants]
    metadata = {p.key: p.value for p in model.metadata_props}
    return Graph(_live(nodes, outputs), inputs, outputs, [_port(o) for o in g.output], constants, metadata)


def _port(info: onnx.ValueInfoProto) -> Port:
    t = info.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim)
    return info.name, shape, np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name


def _live(nodes: List[Node], outputs: Sequence[str]) -> List[Node]:
    """The nodes some graph output depends on, in their original (topological) order."""
    needed = set(outputs)
    kept = []
    for node in reversed(nodes):
        if needed.intersection(node.outputs):
            kept.append(node)
            needed.update(i for i in node.inputs if i)
    return kept[::-1]
