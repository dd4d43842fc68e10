"""One small function per ONNX operator, for the op set of the models hpinfer ships.

Each entry of ``OPS`` takes the ``Node`` (attributes already decoded) and its compute dtype, and
returns a callable over the node's inputs. Values are torch tensors or *host values*: Python ints,
floats and lists of them. Shape arithmetic (``Shape`` → ``Slice`` → ``Concat`` → ``Reshape``) stays
in host values, so it never touches the GPU, is fixed inside a captured CUDA graph, and traces
cleanly under ``torch.compile``/``torch.export`` (a tensor-valued shape would need ``.tolist()``,
a data-dependent graph break). ``HOST_INPUTS`` lists the parameter-like input positions that are
always given as host values (a Clip bound, a Slice start), never as device tensors.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, FrozenSet, List, Sequence, Union

import torch
import torch.nn.functional as F

from .graph import Node

Host = Union[int, float, List[Any]]
Value = Union[torch.Tensor, Host, None]
Op = Callable[..., Any]

HOST_INPUTS: Dict[str, FrozenSet[int]] = {
    "Clip": frozenset({1, 2}),
    "Pow": frozenset({1}),
    "Reshape": frozenset({1}),
    "Resize": frozenset({1, 2, 3}),
    "ReduceMean": frozenset({1}),
    "Slice": frozenset({1, 2, 3, 4}),
    "Split": frozenset({1}),
    "Squeeze": frozenset({1}),
    "Unsqueeze": frozenset({1}),
}

ONNX_DTYPES = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
    9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16,
}


def is_host(v: Value) -> bool:
    return not isinstance(v, torch.Tensor)


def ints(v: Value) -> List[int]:
    """A shape-like input as a list of ints (a CPU tensor is accepted from user graphs)."""
    if isinstance(v, torch.Tensor):
        v = v.tolist()
    return [_int(x) for x in v] if isinstance(v, list) else [_int(v)]


def _int(x: Any) -> Any:
    """``int(x)``, except that a symbolic size (``torch.export`` with dynamic shapes) stays symbolic: casting it
    would specialise the exported program to the example's size."""
    return x if isinstance(x, torch.SymInt) else int(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, torch.SymInt)) and not isinstance(x, bool)


def scalar(v: Value) -> Any:
    while isinstance(v, list):
        (v,) = v
    return v.item() if isinstance(v, torch.Tensor) else v


def as_tensor(v: Value, like: torch.Tensor) -> torch.Tensor:
    """A host value next to a tensor operand: ONNX requires both to have one type, so take ``like``'s."""
    return v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=like.dtype, device=like.device)


def _host_map(fn: Callable[[Any, Any], Any], a: Host, b: Host) -> Host:
    """Elementwise over host scalars and 1-D lists, with length-1 broadcasting."""
    if not isinstance(a, list) and not isinstance(b, list):
        return fn(a, b)
    a_list = a if isinstance(a, list) else [a]
    b_list = b if isinstance(b, list) else [b]
    n = max(len(a_list), len(b_list))
    a_list, b_list = a_list * (n // len(a_list)), b_list * (n // len(b_list))
    return [fn(x, y) for x, y in zip(a_list, b_list)]


def _host_div(x: Any, y: Any) -> Any:
    if isinstance(x, torch.SymInt) or isinstance(y, torch.SymInt):
        return x // y  # sizes: non-negative, so floor = truncation
    return int(x / y) if isinstance(x, int) and isinstance(y, int) else x / y  # ONNX integer Div truncates


def _binary(tensor_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], host_fn: Callable[[Any, Any], Any]):
    def factory(node: Node, dtype: torch.dtype) -> Op:
        def run(a: Value, b: Value) -> Value:
            if is_host(a) and is_host(b):
                return _host_map(host_fn, a, b)
            if is_host(a):
                a = as_tensor(a, b)
            elif is_host(b):
                b = as_tensor(b, a)
            return tensor_fn(a, b)

        return run

    return factory


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point() or b.is_floating_point():
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc")


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]):
    return lambda node, dtype: fn


def hard_sigmoid(node: Node, dtype: torch.dtype) -> Op:
    alpha, beta = node.attrs.get("alpha", 0.2), node.attrs.get("beta", 0.5)
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return F.hardsigmoid  # one fused kernel for Paddle's hard-sigmoid; same function to rounding
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


def clip(node: Node, dtype: torch.dtype) -> Op:
    lo_attr, hi_attr = node.attrs.get("min"), node.attrs.get("max")  # opset < 11

    def run(x: torch.Tensor, lo: Value = None, hi: Value = None) -> torch.Tensor:
        lo, hi = scalar(lo) if lo is not None else lo_attr, scalar(hi) if hi is not None else hi_attr
        return torch.clamp(x, lo, hi)

    return run


def cast(node: Node, dtype: torch.dtype) -> Op:
    target = ONNX_DTYPES[node.attrs["to"]]
    if target.is_floating_point:
        target = dtype  # under mixed precision a float cast lands in the node's compute dtype

    def run(x: Value) -> Value:
        if is_host(x):
            convert = float if target.is_floating_point else (bool if target == torch.bool else _int)
            return [convert(v) for v in x] if isinstance(x, list) else convert(x)
        return x.to(target)

    return run


def concat(node: Node, dtype: torch.dtype) -> Op:
    axis = node.attrs["axis"]

    def run(*xs: Value) -> Value:
        if all(is_host(x) for x in xs):
            return [v for x in xs for v in (x if isinstance(x, list) else [x])]
        like = next(x for x in xs if not is_host(x))
        return torch.cat([as_tensor(x, like) for x in xs], dim=axis)

    return run


def _same_pads(node: Node, x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> List[int]:
    """Explicit [begin..., end...] pads for auto_pad SAME_UPPER/SAME_LOWER at this input size."""
    begins, ends = [], []
    for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begins.append(small if node.attrs["auto_pad"] == "SAME_UPPER" else total - small)
        ends.append(total - begins[-1])
    return begins + ends


def _pads(node: Node, x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> List[int]:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(node, x, kernel, strides, dilations)
    if auto_pad == "VALID":
        return [0] * (2 * len(kernel))
    return list(node.attrs.get("pads", [0] * (2 * len(kernel))))


def _torch_pad(pads: Sequence[int]) -> List[int]:
    """ONNX [b1, b2, e1, e2] → F.pad's (b_last, e_last, ..., b_first, e_first)."""
    n = len(pads) // 2
    return [p for i in reversed(range(n)) for p in (pads[i], pads[i + n])]


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv(node: Node, dtype: torch.dtype) -> Op:
    a = node.attrs

    def run(x: torch.Tensor, w: torch.Tensor, b: Value = None) -> torch.Tensor:
        n = w.dim() - 2
        strides, dilations = a.get("strides", [1] * n), a.get("dilations", [1] * n)
        pads = _pads(node, x, w.shape[2:], strides, dilations)
        if pads[:n] != pads[n:]:
            x, pads = F.pad(x, _torch_pad(pads)), [0] * (2 * n)
        return _CONV[n](x, w, b, strides, pads[:n], dilations, a.get("group", 1))

    return run


def conv_transpose(node: Node, dtype: torch.dtype) -> Op:
    a = node.attrs
    if "output_shape" in a or a.get("auto_pad", "NOTSET") != "NOTSET":
        raise NotImplementedError("ConvTranspose with output_shape or auto_pad")

    def run(x: torch.Tensor, w: torch.Tensor, b: Value = None) -> torch.Tensor:
        n = w.dim() - 2
        strides, dilations = a.get("strides", [1] * n), a.get("dilations", [1] * n)
        pads, extra = a.get("pads", [0] * (2 * n)), a.get("output_padding", [0] * n)
        if pads[:n] == pads[n:]:
            return _CONV_T[n](x, w, b, strides, pads[:n], extra, a.get("group", 1), dilations)
        y = _CONV_T[n](x, w, b, strides, 0, extra, a.get("group", 1), dilations)
        return y[(..., *(slice(pads[i], y.shape[2 + i] - pads[i + n]) for i in range(n)))]

    return run


def batch_norm(node: Node, dtype: torch.dtype) -> Op:
    eps = node.attrs.get("epsilon", 1e-5)
    if node.attrs.get("training_mode", 0):
        raise NotImplementedError("BatchNormalization in training mode")
    return lambda x, scale, bias, mean, var: F.batch_norm(x, mean, var, scale, bias, False, 0.0, eps)


def global_average_pool(node: Node, dtype: torch.dtype) -> Op:
    return lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


def _pool_args(node: Node, x: torch.Tensor):
    kernel = node.attrs["kernel_shape"]
    strides = node.attrs.get("strides", [1] * len(kernel))
    dilations = node.attrs.get("dilations", [1] * len(kernel))
    return kernel, strides, dilations, _pads(node, x, kernel, strides, dilations)


def average_pool(node: Node, dtype: torch.dtype) -> Op:
    include_pad, ceil = bool(node.attrs.get("count_include_pad", 0)), bool(node.attrs.get("ceil_mode", 0))
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}

    def run(x: torch.Tensor) -> torch.Tensor:
        kernel, strides, dilations, pads = _pool_args(node, x)
        n = len(kernel)
        if pads[:n] != pads[n:] or any(d != 1 for d in dilations):
            raise NotImplementedError("AveragePool with asymmetric pads or dilations")
        return pool[n](x, kernel, strides, pads[:n], ceil, include_pad)

    return run


def max_pool(node: Node, dtype: torch.dtype) -> Op:
    if len(node.outputs) > 1:
        raise NotImplementedError("MaxPool with an Indices output")
    ceil = bool(node.attrs.get("ceil_mode", 0))
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}

    def run(x: torch.Tensor) -> torch.Tensor:
        kernel, strides, dilations, pads = _pool_args(node, x)
        n = len(kernel)
        if pads[:n] != pads[n:]:  # padded cells never win a max: pad with -inf, pool unpadded
            x, pads = F.pad(x, _torch_pad(pads), value=-math.inf), [0] * (2 * n)
        return pool[n](x, kernel, strides, pads[:n], dilations, ceil)

    return run


def reduce_mean(node: Node, dtype: torch.dtype) -> Op:
    keep = bool(node.attrs.get("keepdims", 1))

    def run(x: torch.Tensor, axes: Value = None) -> torch.Tensor:
        dims = ints(axes) if axes is not None else node.attrs.get("axes")
        if not dims:
            if node.attrs.get("noop_with_empty_axes", 0):
                return x
            dims = list(range(x.dim()))
        return x.mean(dim=tuple(dims), keepdim=keep)

    return run


def reshape(node: Node, dtype: torch.dtype) -> Op:
    allow_zero = bool(node.attrs.get("allowzero", 0))

    def run(x: Value, shape: Value) -> Value:
        target = ints(shape)
        if not allow_zero:
            target = [x_dim if d == 0 else d for d, x_dim in zip(target, _shape(x) + [0] * len(target))]
        if is_host(x):
            return (x if isinstance(x, list) else [x]) if target else scalar(x)
        return x.reshape(target)

    return run


def _shape(x: Value) -> List[int]:
    if is_host(x):
        return [len(x)] if isinstance(x, list) else []
    return list(x.shape)


def resize(node: Node, dtype: torch.dtype) -> Op:
    mode = node.attrs.get("mode", "nearest")
    coords = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        if (coords, node.attrs.get("nearest_mode", "round_prefer_floor")) != ("asymmetric", "floor"):
            raise NotImplementedError(f"Resize nearest with {coords} coordinates and {node.attrs.get('nearest_mode')} rounding")
        kwargs: Dict[str, Any] = {"mode": "nearest"}
    elif mode == "linear" and coords in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        kwargs = {"align_corners": coords == "align_corners"}
    else:
        raise NotImplementedError(f"Resize mode {mode!r} with {coords!r} coordinates")
    linear = {3: "linear", 4: "bilinear", 5: "trilinear"}

    def run(x: torch.Tensor, roi: Value = None, scales: Value = None, sizes: Value = None) -> torch.Tensor:
        if node.opset < 11:  # Resize-10: (X, scales)
            scales = roi
        mode_kwargs = kwargs if mode == "nearest" else {"mode": linear[x.dim()], **kwargs}
        if sizes is not None and len(ints(sizes)):
            return F.interpolate(x, size=ints(sizes)[2:], **mode_kwargs)
        factors = [float(s) for s in scales]
        if factors[:2] != [1.0, 1.0]:
            raise NotImplementedError("Resize of the batch or channel dimension")
        return F.interpolate(x, scale_factor=factors[2:], recompute_scale_factor=False, **mode_kwargs)

    return run


def shape(node: Node, dtype: torch.dtype) -> Op:
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    return lambda x: _shape(x)[start:end]


def slice_(node: Node, dtype: torch.dtype) -> Op:
    def run(x: Value, starts: Value = None, ends: Value = None, axes: Value = None, steps: Value = None) -> Value:
        if node.opset < 10:
            starts, ends, axes = node.attrs["starts"], node.attrs["ends"], node.attrs.get("axes")
        starts, ends = ints(starts), ints(ends)
        axes = ints(axes) if axes is not None else list(range(len(starts)))
        steps = ints(steps) if steps is not None else [1] * len(starts)
        if is_host(x):
            (start,), (end,), (step,) = starts, ends, steps
            return x[start:end:step]
        index = [slice(None)] * x.dim()
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if step < 1:
                raise NotImplementedError("Slice with a negative step on a tensor")
            index[axis] = slice(start, end, step)
        return x[tuple(index)]

    return run


def softmax(node: Node, dtype: torch.dtype) -> Op:
    axis = node.attrs.get("axis", -1 if node.opset >= 13 else 1)

    def run(x: torch.Tensor) -> torch.Tensor:
        dim = axis % x.dim()
        if node.opset >= 13 or dim == x.dim() - 1:
            return torch.softmax(x, dim)
        # Before opset 13, softmax runs over everything from ``axis`` on, flattened.
        return torch.softmax(x.flatten(dim), dim).reshape(x.shape)

    return run


def split(node: Node, dtype: torch.dtype) -> Op:
    axis = node.attrs.get("axis", 0)

    def run(x: torch.Tensor, sizes: Value = None) -> Sequence[torch.Tensor]:
        parts = ints(sizes) if sizes is not None else node.attrs.get("split")
        if not parts:
            count = len(node.outputs)
            parts = [math.ceil(x.shape[axis] / count)] * count
        return torch.split(x, parts, dim=axis)

    return run


def squeeze(node: Node, dtype: torch.dtype) -> Op:
    def run(x: Value, axes: Value = None) -> Value:
        dims = ints(axes) if axes is not None else node.attrs.get("axes")
        if is_host(x):
            return scalar(x)
        if dims is None:
            return x.squeeze()
        return x.squeeze(tuple(dims))

    return run


def unsqueeze(node: Node, dtype: torch.dtype) -> Op:
    def run(x: Value, axes: Value = None) -> Value:
        dims = ints(axes) if axes is not None else node.attrs["axes"]
        if is_host(x) and not isinstance(x, list) and len(dims) == 1:
            return [x]
        if is_host(x):
            x = torch.tensor(x)
        rank = x.dim() + len(dims)
        for d in sorted(d % rank for d in dims):
            x = x.unsqueeze(d)
        return x

    return run


def transpose(node: Node, dtype: torch.dtype) -> Op:
    perm = node.attrs.get("perm")
    return lambda x: x.permute(perm if perm is not None else list(reversed(range(x.dim()))))


OPS: Dict[str, Callable[[Node, torch.dtype], Op]] = {
    "Add": _binary(torch.add, lambda x, y: x + y),
    "Sub": _binary(torch.sub, lambda x, y: x - y),
    "Mul": _binary(torch.mul, lambda x, y: x * y),
    "Div": _binary(_div, _host_div),
    "Pow": lambda node, dtype: lambda x, y: torch.pow(x, scalar(y) if is_host(y) else y),
    "MatMul": _unary(torch.matmul),
    "Sqrt": _unary(torch.sqrt),
    "Erf": _unary(torch.erf),
    "Relu": _unary(torch.relu),
    "Sigmoid": _unary(torch.sigmoid),
    "HardSwish": _unary(F.hardswish),
    "HardSigmoid": hard_sigmoid,
    "Clip": clip,
    "Cast": cast,
    "Concat": concat,
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "BatchNormalization": batch_norm,
    "GlobalAveragePool": global_average_pool,
    "AveragePool": average_pool,
    "MaxPool": max_pool,
    "ReduceMean": reduce_mean,
    "Reshape": reshape,
    "Resize": resize,
    "Shape": shape,
    "Slice": slice_,
    "Softmax": softmax,
    "Split": split,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Transpose": transpose,
}
