"""hpinfer's own ONNX → PyTorch translator for the models it ships (and user models in the same op set).

``convert(path)`` normalises the graph (constants, identities, folding; see ``graph``), fuses
convolutions with the affine ops after them (``fuse``), and returns an
``OnnxModule`` that runs it with torch ops (``ops``), in fp32 or with a mixed fp16/bf16 policy
(``precision``). Why not onnx2torch: Paddle exports keep weights in Constant nodes, and its
converted modules copy CPU constants to the device inside ``forward``, which breaks CUDA graphs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

import onnx
import torch

from .fuse import fuse
from .graph import Graph, Node, normalize
from .module import OnnxModule, fold, unsupported_ops
from .precision import KEEP_FP32_OPS, REDUCED, calibration_inputs, plan_dtypes


def load_graph(model: Union[str, Path, onnx.ModelProto]) -> Graph:
    """Normalised and fused: the form ``OnnxModule`` runs."""
    return fuse(normalize(model, fold))


def calibrated_ranges(graph: Graph, calibration: Sequence[torch.Tensor]) -> Dict[str, float]:
    """Each tensor's largest magnitude over the ``calibration`` inputs (float32): what the mixed plan decides by."""
    ranges: Dict[str, float] = {}
    reference = OnnxModule(graph)
    for x in calibration:
        for name, peak in reference.value_ranges(x).items():
            ranges[name] = max(ranges.get(name, 0.0), peak)
    return ranges


def convert(
    model: Union[str, Path, onnx.ModelProto, Graph],
    precision: str = "fp32",
    calibration: Optional[Sequence[torch.Tensor]] = None,
    ranges: Optional[Mapping[str, float]] = None,
) -> OnnxModule:
    """A CPU module for ``model``; fp16/bf16 run each ``calibration`` input (float32) to find large-valued nodes,
    unless their ``ranges`` are given (kept from an earlier calibration)."""
    graph = model if isinstance(model, Graph) else load_graph(model)
    if precision == "fp32":
        return OnnxModule(graph)
    if precision not in REDUCED:
        raise ValueError(f"precision must be fp32, fp16 or bf16, got {precision!r}")
    return OnnxModule(graph, plan_dtypes(graph, precision, calibrated_ranges(graph, calibration or ()) if ranges is None else ranges))


__all__ = [
    "Graph", "KEEP_FP32_OPS", "Node", "OnnxModule", "calibrated_ranges", "calibration_inputs", "convert", "load_graph", "plan_dtypes",
    "unsupported_ops",
]
