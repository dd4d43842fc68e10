"""Host work of the OCR pipeline written as torch ops, so that it can run on the GPU next to the models (issue 16:
the pipeline is host-bound at ~35 images/s whatever the model precision).

- ``db_mask``: DB post-processing's threshold and 2x2 dilation of the probability map, bit-exact with the numpy /
  OpenCV path (a comparison and a max), so only a uint8 mask needs to come back for the contour search.
- ``warp_quads``: the perspective crops of text lines for recognition, all lines of an image in one batched
  ``grid_sample`` (bicubic, border replicated, as ``cv2.warpPerspective(INTER_CUBIC, BORDER_REPLICATE)``).
  Not bit-exact: OpenCV quantises sample positions to 1/32 pixel and its cubic weights to fixed point, so pixels
  differ by a grey level here and there (tests/test_device_ops.py bounds it); it stays off the default path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:
    import torch


def db_mask(prob: "torch.Tensor", thresh: float, dilate: bool) -> "torch.Tensor":
    """N x H x W probabilities → N x H x W uint8 0/1 mask: ``prob > thresh``, then, if asked, dilated by OpenCV's
    2x2 kernel (anchor at its centre (1, 1): each pixel takes the max of itself and its up, left and up-left
    neighbours)."""
    import torch
    import torch.nn.functional as F

    mask = (prob > thresh).to(torch.float32)
    if dilate:
        mask = F.max_pool2d(F.pad(mask[:, None], (1, 0, 1, 0)), kernel_size=2, stride=1)[:, 0]
    return mask.to(torch.uint8)


def quad_sizes(quads: np.ndarray) -> List[Tuple[int, int]]:
    """Each quadrilateral's crop (width, height): its longer opposite sides, as ``pipelines.ocr.crop_quad``."""
    sizes = []
    for q in quads:
        width = int(max(np.linalg.norm(q[0] - q[1]), np.linalg.norm(q[2] - q[3])))
        height = int(max(np.linalg.norm(q[0] - q[3]), np.linalg.norm(q[1] - q[2])))
        sizes.append((width, height))
    return sizes


def warp_quads(image: "torch.Tensor", quads: np.ndarray, sizes: Sequence[Tuple[int, int]]) -> List["torch.Tensor"]:
    """Perspective crops of one H x W x 3 uint8 image: quad k (4 x 2, corners clockwise from top left) mapped to a
    ``sizes[k]`` (width, height) rectangle; one ``grid_sample`` over a batch padded to the largest crop."""
    import cv2
    import torch
    import torch.nn.functional as F

    if len(quads) == 0:
        return []
    h, w = image.shape[:2]
    top_w, top_h = max(s[0] for s in sizes), max(s[1] for s in sizes)
    ys, xs = torch.meshgrid(torch.arange(top_h, dtype=torch.float64), torch.arange(top_w, dtype=torch.float64), indexing="ij")
    ones = torch.ones_like(xs)
    grids = []
    for quad, (cw, ch) in zip(quads, sizes):
        target = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], dtype=np.float32)
        inverse = torch.from_numpy(cv2.getPerspectiveTransform(target, quad.astype(np.float32)))  # crop → image
        src = torch.einsum("ij,jhw->ihw", inverse, torch.stack([xs, ys, ones]))
        sx, sy = src[0] / src[2], src[1] / src[2]
        grids.append(torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], dim=-1))  # pixel centres, align_corners=False
    grid = torch.stack(grids).to(device=image.device, dtype=torch.float32)
    batch = image.permute(2, 0, 1)[None].float().expand(len(quads), -1, -1, -1)
    out = F.grid_sample(batch, grid, mode="bicubic", padding_mode="border", align_corners=False)
    out = out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return [out[k, :ch, :cw] for k, (cw, ch) in enumerate(sizes)]
