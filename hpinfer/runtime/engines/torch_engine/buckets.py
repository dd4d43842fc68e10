"""Image sides and line widths padded up to a few sizes (``TorchConfig.shape_buckets``), so that a GPU sees a
bounded set of input shapes: each new shape costs a cuDNN autotuning pass and a CUDA-graph capture (seconds for a
detector), and OCR's detector otherwise sees a new shape for almost every image.

Padding is with zeros in the model's input space (what the convolutions' own padding adds) at the bottom and right;
outputs with the input's spatial size (a detector's probability map) are cropped back. Results are not bit-exact:
receptive fields near the bottom and right edges now see zeros where the unpadded run saw the convolutions' border
handling, so the option is off by default and its effect is measured, not assumed (tests/test_torch_buckets.py,
the accuracy guard).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

Shape = Tuple[int, ...]


def _ladder(top: int = 4096, step: float = 1.15, multiple: int = 32) -> Tuple[int, ...]:
    """Multiples of 32 (every detector input side is one) growing by 15 % (20 % among the small ones): padding adds at most that
    much per side, a few dozen sizes in all."""
    sides, side = [], multiple
    while side <= top:
        sides.append(side)
        side = max(side + multiple, int(side * step) // multiple * multiple)
    return tuple(sides)


SIDES = _ladder()


def bucket(size: int) -> int:
    """The smallest ladder size >= ``size`` (sizes past the ladder stay as they are)."""
    return next((s for s in SIDES if s >= size), size)


def padded(shape: Sequence[int], axes: Sequence[int]) -> Shape:
    """``shape`` with each of ``axes`` raised to its bucket."""
    return tuple(bucket(d) if i in axes else d for i, d in enumerate(shape))


def pad(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``array`` at the top left of zeros of ``shape`` (itself when it already has that shape)."""
    if tuple(array.shape) == tuple(shape):
        return array
    out = np.zeros(shape, array.dtype)
    out[tuple(slice(0, d) for d in array.shape)] = array
    return out


def crop(outputs: Sequence[np.ndarray], original: Sequence[int], padded_shape: Sequence[int], axes: Sequence[int]) -> List[np.ndarray]:
    """Outputs whose trailing spatial dimensions are the padded input's, cut back to the original's."""
    sizes = tuple(padded_shape[a] for a in axes)
    keep = tuple(slice(0, original[a]) for a in axes)
    return [o[(..., *keep)] if o.ndim >= len(axes) and tuple(o.shape[-len(axes):]) == sizes else o for o in outputs]


def spatial_axes(shape: Sequence[object]) -> Tuple[int, ...]:
    """The dynamic spatial axes of an NCHW input (H and/or W where the model leaves them free)."""
    if len(shape) != 4:
        return ()
    return tuple(a for a in (2, 3) if shape[a] is None)
