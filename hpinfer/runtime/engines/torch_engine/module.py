"""The translated model as the callable a session runs: converted at a precision, and wrapped so that
torch.export and channels-last inputs see one positional input per ONNX input."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from ...onnx_to_torch import Graph, OnnxModule

log = logging.getLogger(__name__)

Shape = Tuple[int, ...]
# Calibration shapes tried in turn when dynamic_shapes gives none: a page, then a text line.
CALIBRATION_SIZES = ((640, 640), (48, 320))
RANGES_FILE = "value_ranges.json"  # a reduced-precision cache entry's calibrated ranges


def calibration_shapes(shape: Sequence[Optional[int]], bounds: Optional[Sequence[Sequence[int]]]) -> List[Shape]:
    """Batch 1 at the ``dynamic_shapes`` opt shape; else a page and a text line for the dynamic H, W."""
    if bounds is not None:
        return [(1, *bounds[1][1:])]
    n, c, h, w = shape
    return [(1, c or 3, h or size_h, w or size_w) for size_h, size_w in CALIBRATION_SIZES]


def value_ranges(graph: "Graph", bounds: Optional[Sequence[Sequence[int]]]) -> Dict[str, float]:
    """What the mixed fp16/bf16 plan decides by, from float32 runs at the first shape the model runs (seconds on a
    CPU for a detector: the engine's build keeps them in its cache entry, ``RANGES_FILE``); empty (the plan then goes
    by op type alone) where no shape fits."""
    from ...onnx_to_torch import calibrated_ranges, calibration_inputs

    if len(graph.inputs) != 1 or len(graph.inputs[0][1]) != 4:
        return {}
    for shape in calibration_shapes(graph.inputs[0][1], bounds):
        try:
            return calibrated_ranges(graph, calibration_inputs(shape))
        except RuntimeError as err:  # this shape doesn't fit the model (e.g. a recogniser wants height 48)
            log.debug("calibration at %s failed: %s", shape, err)
    log.warning("reduced-precision calibration failed at every shape tried; give dynamic_shapes to calibrate at yours")
    return {}


def _convert(graph: "Graph", precision: str, bounds: Optional[Sequence[Sequence[int]]],
             ranges: Optional[Mapping[str, float]] = None) -> "OnnxModule":
    """The module at ``precision``: mixed by ``ranges`` (calibrated now if not given)."""
    from ...onnx_to_torch import convert

    if precision == "fp32":
        return convert(graph)
    return convert(graph, precision, ranges=value_ranges(graph, bounds) if ranges is None else ranges)


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

