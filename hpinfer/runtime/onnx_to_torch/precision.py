"""Mixed-precision policy: which nodes of a graph compute in fp16/bf16 and which stay in float32.

Two rules. Ops whose result is sensitive to rounding or whose intermediates grow fast (reductions,
softmax, powers, square roots, erf: the layer norms and attention of the recognisers) always stay
float32. And a float32 calibration run records the magnitude of every value: a node that reads or
writes values beyond ``LARGE`` stays float32: fp16's largest value is 65504 and its step is 16 at
2e4, bf16's step 128 there. Example: PP-OCRv4 det's head convolution reaches ~2e4 on a real page and
the batch norm after it subtracts a mean of that size; unfused, plain fp16 turns the probability map
into garbage (error 1.0). Folding that batch norm into the convolution (``fuse``) removes the large
value; the seal detector still carries ~1e4-2.6e4 activations, which this rule keeps in float32.

The calibration inputs are task-agnostic stand-ins for a page: flat white, flat black and drawn text
(normalised to [-1, 1]). Random noise is a poor stand-in: it averages out, and showed 1.8e3 where a
real page showed 1.1e4.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import cv2
import numpy as np
import torch

from .graph import Graph

REDUCED = {"fp16": torch.float16, "bf16": torch.bfloat16}
KEEP_FP32_OPS = frozenset({"Softmax", "ReduceMean", "Pow", "Sqrt", "Erf"})
LARGE = 4096.0  # 16x under fp16's largest value: headroom over what the calibration input showed


def plan_dtypes(graph: Graph, precision: str, ranges: Optional[Mapping[str, float]] = None) -> Dict[int, torch.dtype]:
    """Node index → compute dtype for ``precision`` ("fp16" or "bf16")."""
    reduced = REDUCED[precision]
    ranges = ranges or {}
    plan = {}
    for index, node in enumerate(graph.nodes):
        peak = max((ranges.get(name, 0.0) for name in (*node.inputs, *node.outputs)), default=0.0)
        wide = node.op in KEEP_FP32_OPS or peak > LARGE
        plan[index] = torch.float32 if wide else reduced
    return plan


def calibration_inputs(shape: Sequence[int]) -> List[torch.Tensor]:
    """White, black and a drawn text page of ``shape`` (N, 3, H, W), each scaled to [-1, 1]."""
    n, channels, height, width = shape
    rng = np.random.default_rng(0)
    text = np.full((height, width, channels), 255, np.uint8)
    for y in range(min(36, height - 6), height, 48):
        words = ["".join(chr(c) for c in rng.integers(65, 91, rng.integers(2, 9))) for _ in range(max(1, width // 60))]
        cv2.putText(text, " ".join(words), (6, y), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    pages = [np.full_like(text, 255), np.zeros_like(text), text]
    return [torch.from_numpy(np.repeat(p.transpose(2, 0, 1)[None], n, 0).astype(np.float32) / 127.5 - 1) for p in pages]
