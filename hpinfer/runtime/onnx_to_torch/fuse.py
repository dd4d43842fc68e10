"""Graph fusions that cut the launch count (CUDA) and memory passes (CPU) of Paddle exports.

PP-LCNet/PP-HGNet backbones follow most convolutions with a batch norm or a "learnable affine" block
(``Mul`` by a scalar, ``Add`` a scalar) and spell hard-swish as ``x * clip(x + 3, 0, 6) / 6``: four
elementwise passes each. Here per-channel affine ops fold into the convolution's weights and bias
(as ONNX Runtime's optimizer does), and the spelled-out hard-swish becomes one ``HardSwish`` node.
Results change only by float rounding.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Dict, List, Optional

import numpy as np

from .graph import Graph, Node


def fuse(graph: Graph) -> Graph:
    nodes = _fold_conv_affine(graph, _hard_swish(graph, graph.nodes))
    return replace(graph, nodes=nodes)


def _uses(graph: Graph, nodes: List[Node]) -> Counter:
    uses = Counter(i for n in nodes for i in n.inputs)
    uses.update(graph.outputs)
    return uses


def _const_equals(graph: Graph, name: str, value: float) -> bool:
    c = graph.constants.get(name)
    return c is not None and c.size == 1 and float(c.reshape(())) == value


def _hard_swish(graph: Graph, nodes: List[Node]) -> List[Node]:
    """``Div(Mul(x, Clip(Add(x, 3), 0, 6)), 6)`` → ``HardSwish(x)``."""
    producer = {o: n for n in nodes for o in n.outputs}
    uses = _uses(graph, nodes)
    dropped, replaced = set(), {}
    for div in nodes:
        if div.op != "Div" or not _const_equals(graph, div.inputs[1], 6.0):
            continue
        mul = producer.get(div.inputs[0])
        if mul is None or mul.op != "Mul":
            continue
        for x, clipped in (mul.inputs, mul.inputs[::-1]):
            clip = producer.get(clipped)
            if clip is None or clip.op != "Clip" or len(clip.inputs) != 3:
                continue
            add = producer.get(clip.inputs[0])
            if not (_const_equals(graph, clip.inputs[1], 0.0) and _const_equals(graph, clip.inputs[2], 6.0)):
                continue
            if add is None or add.op != "Add" or x not in add.inputs:
                continue
            other = add.inputs[1] if add.inputs[0] == x else add.inputs[0]
            if not _const_equals(graph, other, 3.0) or any(uses[v.outputs[0]] != 1 for v in (add, clip, mul)):
                continue
            dropped.update(id(v) for v in (add, clip, mul))
            replaced[id(div)] = Node("HardSwish", (x,), div.outputs, {}, div.opset, div.name)
            break
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped]


def _channel_vector(graph: Graph, name: str, rank: int, channels: int) -> Optional[np.ndarray]:
    """A constant that broadcasts along axis 1 only of a rank-``rank`` output (or a scalar), as a C vector."""
    c = graph.constants.get(name)
    if c is None or not np.issubdtype(c.dtype, np.floating) or c.ndim > rank:
        return None
    if c.size == 1:
        return np.full(channels, float(c.reshape(())), dtype=np.float32)
    shape = (1,) * (rank - c.ndim) + c.shape
    if shape[1] == channels and all(d == 1 for i, d in enumerate(shape) if i != 1):
        return c.reshape(-1).astype(np.float32)
    return None


def _fold_conv_affine(graph: Graph, nodes: List[Node]) -> List[Node]:
    """Conv followed by BatchNormalization / per-channel Mul / per-channel Add → one Conv."""
    uses = _uses(graph, nodes)
    consumer: Dict[str, Node] = {i: n for n in nodes for i in n.inputs}
    dropped, replaced = set(), {}
    for conv in nodes:
        if conv.op != "Conv" or conv.inputs[1] not in graph.constants or (len(conv.inputs) > 2 and conv.inputs[2] not in graph.constants):
            continue
        weight = graph.constants[conv.inputs[1]].astype(np.float32)
        channels = weight.shape[0]
        bias = graph.constants[conv.inputs[2]].astype(np.float32) if len(conv.inputs) > 2 and conv.inputs[2] else np.zeros(channels, np.float32)
        out, folded = conv.outputs[0], []
        while uses[out] == 1 and out in consumer:
            nxt = consumer[out]
            other = [i for i in nxt.inputs if i != out]
            if nxt.op == "BatchNormalization" and len(nxt.outputs) == 1 and all(i in graph.constants for i in other):
                scale, shift, mean, var = (graph.constants[i].astype(np.float32) for i in nxt.inputs[1:5])
                k = scale / np.sqrt(var + nxt.attrs.get("epsilon", 1e-5))
                weight, bias = weight * k.reshape(-1, *[1] * (weight.ndim - 1)), (bias - mean) * k + shift
            elif nxt.op in ("Mul", "Add") and len(other) == 1 and (v := _channel_vector(graph, other[0], weight.ndim, channels)) is not None:
                if nxt.op == "Mul":
                    weight, bias = weight * v.reshape(-1, *[1] * (weight.ndim - 1)), bias * v
                else:
                    bias = bias + v
            else:
                break
            folded.append(nxt)
            out = nxt.outputs[0]
        if not folded:
            continue
        w_name, b_name = f"{out}::fused_weight", f"{out}::fused_bias"
        graph.constants[w_name], graph.constants[b_name] = weight, bias
        dropped.update(id(n) for n in folded)
        replaced[id(conv)] = Node("Conv", (conv.inputs[0], w_name, b_name), (out,), conv.attrs, conv.opset, conv.name)
    return [replaced.get(id(n), n) for n in nodes if id(n) not in dropped]
