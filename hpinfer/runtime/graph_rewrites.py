"""Equivalent rewrites of an ONNX graph that let OpenVINO fuse work it otherwise does as extra passes over
whole feature maps.

With dynamic input shapes (every page has its own size) OpenVINO's CPU plugin neither fuses a transposed
convolution with the per-channel affine and activation after it, nor fuses elementwise chains into one kernel
as it does for static shapes. DB text detectors end in two stride-2 transposed convolutions working at full
page resolution, so those unfused passes (on a single-channel map padded to 16 channels in OpenVINO's blocked
layout) cost DB detectors a noticeable share of their time (measured in benchmarks/RESULTS.md).

- ``deconv_as_depth_to_space``: a ConvTranspose whose kernel equals its stride (the outputs of the kernel taps
  don't overlap) is a 1x1 convolution to ``C_out * k * k`` channels followed by DepthToSpace. Its bias, a
  per-channel Add and BatchNormalization after it (Identity nodes between are dropped) fold into that convolution's weights and bias, and the
  Relu/Sigmoid after those move before the DepthToSpace (they are elementwise), where OpenVINO fuses them.
- ``residual_scale``: ``x + x * s`` (squeeze-and-excitation with a residual) becomes ``x * (s + 1)``, one pass
  over ``x`` instead of two; ``s`` is the small per-channel tensor.

Results move by float rounding only (max 1e-5 on PP-OCRv4 det's probability map, as OpenVINO's own fusions for
static shapes do); texts and boxes on the test images are unchanged. ``REVISION`` is part of the OpenVINO
engine's cache key: change it whenever a rewrite changes.
"""

from __future__ import annotations

import itertools
from typing import Dict, List, Optional

import numpy as np

REVISION = 1
_ELEMENTWISE_ACTIVATIONS = ("Relu", "Sigmoid")


def rewrite(model) -> Dict[str, int]:
    """Rewrites ``model`` (an ``onnx.ModelProto``) in place; returns how often each rewrite applied.
    Models with other than float32 inputs, or below opset 11, are left alone."""
    counts = {"deconv_as_depth_to_space": 0, "residual_scale": 0}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11 or any(i.type.tensor_type.elem_type != 1 for i in model.graph.input):  # 1: FLOAT
        return counts
    graph = _Graph(model.graph)
    counts["deconv_as_depth_to_space"] = graph.deconv_as_depth_to_space()
    counts["residual_scale"] = graph.residual_scale()
    return counts


def _attribute(node, name: str, default=None):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


class _Graph:
    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.outputs = {o.name for o in graph.output}
        self._names = (f"hpinfer_rewrite_{i}" for i in itertools.count())

    def users(self, name: str) -> List:
        return [node for node in self.graph.node if name in node.input]

    def only_user(self, name: str):
        users = self.users(name)
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def producer(self, name: str):
        return next((node for node in self.graph.node if name in node.output), None)

    def add_constant(self, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = next(self._names)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def replace(self, old: List, new: List) -> None:
        """Removes the ``old`` nodes and puts the ``new`` ones where the first of them was (inputs come earlier)."""
        nodes = self.graph.node
        at = min(list(nodes).index(node) for node in old)
        for node in old:
            nodes.remove(node)
        for offset, node in enumerate(new):
            nodes.insert(at + offset, node)

    def _per_channel(self, name: str, channels: int, broadcast: bool = True) -> Optional[np.ndarray]:
        """A constant of one value per NCHW channel, as float64: for an elementwise op (``broadcast``) shaped
        (C,1,1) or (1,C,1,1), else (BatchNormalization's parameters) of C values."""
        value = self.constants.get(name)
        if value is None or value.size != channels:
            return None
        if broadcast and channels > 1 and (value.ndim < 3 or value.shape[-2:] != (1, 1)):
            return None
        return value.astype(np.float64).reshape(-1)

    def deconv_as_depth_to_space(self) -> int:
        from onnx import helper

        done = 0
        for deconv in [n for n in self.graph.node if n.op_type == "ConvTranspose"]:
            kernel, strides = _attribute(deconv, "kernel_shape"), _attribute(deconv, "strides")
            weights = self.constants.get(deconv.input[1])
            if (
                weights is None or weights.ndim != 4 or not kernel or list(kernel) != list(strides or [])
                or kernel[0] != kernel[1] or weights.shape[2:] != tuple(kernel)
                or any(_attribute(deconv, "pads", [0])) or _attribute(deconv, "group", 1) != 1
                or any(d != 1 for d in _attribute(deconv, "dilations", [1, 1]))
                or _attribute(deconv, "output_padding") or _attribute(deconv, "output_shape")
                or _attribute(deconv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
            ):
                continue
            block, channels_out = kernel[0], weights.shape[1]
            weights = weights.astype(np.float64)
            bias = np.zeros(channels_out)
            if len(deconv.input) > 2 and deconv.input[2]:
                given = self.constants.get(deconv.input[2])
                if given is None:
                    continue
                bias = given.astype(np.float64).reshape(-1)
            absorbed, activations, output = [], [], deconv.output[0]
            while (user := self.only_user(output)) is not None:
                if user.op_type == "Identity":
                    pass
                elif user.op_type == "Add" and not activations:
                    other = self._per_channel(user.input[1] if user.input[0] == output else user.input[0], channels_out)
                    if other is None:
                        break
                    bias = bias + other
                elif user.op_type == "BatchNormalization" and not activations and len(user.output) == 1:
                    gamma, beta, mean, var = (self._per_channel(name, channels_out, False) for name in user.input[1:5])
                    if any(v is None for v in (gamma, beta, mean, var)):
                        break
                    scale = gamma / np.sqrt(var + _attribute(user, "epsilon", 1e-5))
                    weights = weights * scale.reshape(1, -1, 1, 1)
                    bias = (bias - mean) * scale + beta
                elif user.op_type in _ELEMENTWISE_ACTIVATIONS:
                    activations.append(user.op_type)
                else:
                    break
                absorbed.append(user)
                output = user.output[0]
            # Output channel (c, dy, dx) of the 1x1 convolution is c * k * k + dy * k + dx: DepthToSpace's CRD order.
            conv_weights = weights.transpose(1, 2, 3, 0).reshape(channels_out * block * block, weights.shape[0], 1, 1)
            names = [next(self._names) for _ in range(len(activations) + 1)]
            new = [helper.make_node(
                "Conv", [deconv.input[0], self.add_constant(conv_weights.astype(np.float32)),
                         self.add_constant(np.repeat(bias, block * block).astype(np.float32))],
                [names[0]], name=names[0], kernel_shape=[1, 1])]
            for op_type, src, dst in zip(activations, names, names[1:]):
                new.append(helper.make_node(op_type, [src], [dst], name=dst))
            new.append(helper.make_node("DepthToSpace", [names[-1]], [output], name=next(self._names), blocksize=block, mode="CRD"))
            self.replace([deconv, *absorbed], new)
            done += 1
        return done

    def residual_scale(self) -> int:
        from onnx import helper

        done = 0
        for add in [n for n in self.graph.node if n.op_type == "Add"]:
            for x, scaled in (add.input, reversed(add.input)):
                mul = self.producer(scaled)
                if mul is None or mul.op_type != "Mul" or x not in mul.input or self.only_user(scaled) is not add:
                    continue
                scale = mul.input[1] if mul.input[0] == x else mul.input[0]
                scale_plus_one = next(self._names)
                self.replace([mul, add], [
                    helper.make_node("Add", [scale, self.add_constant(np.ones((), np.float32))], [scale_plus_one], name=scale_plus_one),
                    helper.make_node("Mul", [x, scale_plus_one], [add.output[0]], name=next(self._names)),
                ])
                done += 1
                break
        return done
