"""Text detection with DB (differentiable binarisation) models: PP-OCRv4/v5/v6 det, PP-OCRv4 seal det.

resize (limit_side_len / limit_type, multiples of 32) → normalise → probability map →
threshold → contours → min-area quadrilaterals scored on the map → unclip → reading order.
``box_type: poly`` (seal text, which curves) keeps each contour's simplified outline instead of its
min-area quadrilateral, as PaddleOCR's DBPostProcess does, and orders the polygons top to bottom.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import pyclipper
from pydantic import Field

from ..runtime import accuracy
from ..runtime.calibration import CalibrationSet, variant
from ..runtime.task import Measured, Outputs
from ..visualize import draw_polygons
from .base import HelperModel, Params, ShapeTriple, Task
from .normalize import normalize_to_nchw, run_normalized


class DetParams(Params):
    limit_side_len: int = Field(736, ge=32)
    limit_type: Literal["min", "max"] = "min"
    max_side_limit: Optional[int] = Field(None, ge=32)  # hard cap on the longer side after resizing
    thresh: float = Field(0.3, ge=0, le=1)
    box_thresh: float = Field(0.5, ge=0, le=1)
    unclip_ratio: float = Field(1.6, gt=0)
    max_candidates: int = Field(1000, ge=1)
    use_dilation: bool = True
    score_mode: Literal["fast", "slow"] = "fast"
    mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    box_type: Literal["quad", "poly"] = "quad"  # poly: curved outlines (seal text), N x 2 points each
    # Images whose resized inputs have the same shape go through the engine together (``detect_many``, used
    # when a server batches requests), this many at a time: speed only, results unchanged. None: 8 on a GPU,
    # 1 on a CPU, where batching pages gained nothing (benchmarks/RESULTS.md).
    max_batch_size: Optional[int] = Field(None, ge=1, le=64)


# quad: an N x 4 x 2 array; poly: one P x 2 array per text, P >= 4 varying
Boxes = Union[np.ndarray, List[np.ndarray]]

MIN_BOX_SIDE = 3  # DB's min_size: shorter sides below this are noise


def resize_for_det(image: np.ndarray, p: DetParams) -> Optional[np.ndarray]:
    """Scale so the min (or max) side meets ``limit_side_len``, both sides rounded to multiples of 32."""
    h, w = image.shape[:2]
    if p.limit_type == "min":
        ratio = p.limit_side_len / min(h, w) if min(h, w) < p.limit_side_len else 1.0
    else:
        ratio = p.limit_side_len / max(h, w) if max(h, w) > p.limit_side_len else 1.0
    if p.max_side_limit and max(h, w) * ratio > p.max_side_limit:
        ratio = p.max_side_limit / max(h, w)
    resize_h = int(round(int(h * ratio) / 32) * 32)
    resize_w = int(round(int(w * ratio) / 32) * 32)
    if resize_h <= 0 or resize_w <= 0:
        return None
    return cv2.resize(image, (resize_w, resize_h))


def preprocess(image: np.ndarray, p: DetParams) -> Optional[np.ndarray]:
    resized = resize_for_det(image, p)
    return None if resized is None else normalize_to_nchw(resized, p.mean, p.std)


def _mini_box(contour: np.ndarray) -> Tuple[np.ndarray, float]:
    """The min-area rectangle as top-left, top-right, bottom-right, bottom-left, and its short side."""
    rect = cv2.minAreaRect(contour)
    points = sorted(list(cv2.boxPoints(rect)), key=lambda x: x[0])
    i1, i4 = (0, 1) if points[1][1] > points[0][1] else (1, 0)
    i2, i3 = (2, 3) if points[3][1] > points[2][1] else (3, 2)
    return np.array([points[i1], points[i2], points[i3], points[i4]]), min(rect[1])


def _score_box(prob: np.ndarray, points: np.ndarray) -> float:
    """Mean probability inside the polygon (DB's "fast" score uses the box, "slow" the contour)."""
    h, w = prob.shape
    pts = points.reshape(-1, 2).copy()
    xmin = int(np.clip(np.floor(pts[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(pts[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(pts[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(pts[:, 1].max()), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    pts[:, 0] -= xmin
    pts[:, 1] -= ymin
    cv2.fillPoly(mask, pts.reshape(1, -1, 2).astype(np.int32), 1)
    return cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0]


def _offset_paths(box: np.ndarray, ratio: float) -> List[List[List[int]]]:
    """Grow the shrunk text kernel back by area*ratio/perimeter (the DB paper's offset); a concave
    outline may come back as several paths."""
    pts = np.asarray(box, dtype=np.float64)
    nxt = np.roll(pts, -1, axis=0)
    area = 0.5 * abs(float(np.sum(pts[:, 0] * nxt[:, 1] - nxt[:, 0] * pts[:, 1])))
    length = float(np.sum(np.linalg.norm(nxt - pts, axis=1)))
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return offset.Execute(area * ratio / length)


def _unclip(box: np.ndarray, ratio: float) -> np.ndarray:
    return np.array(_offset_paths(box, ratio)).reshape((-1, 1, 2))


def _order_clockwise(pts: np.ndarray) -> np.ndarray:
    by_x = pts[np.argsort(pts[:, 0]), :]
    left, right = by_x[:2], by_x[2:]
    tl, bl = left[np.argsort(left[:, 1])]
    tr, br = right[np.argsort(right[:, 1])]
    return np.array([tl, tr, br, bl], dtype=np.float32)


def postprocess(pred: np.ndarray, src_h: int, src_w: int, p: DetParams) -> Tuple[Boxes, List[float]]:
    """Probability map (1x1xHxW) → text outlines in source pixels and their scores: quadrilaterals
    (N x 4 x 2 float32), or with ``box_type: poly`` polygons (a list of P x 2 float32)."""
    prob = pred[0, 0]
    height, width = prob.shape
    mask = (prob > p.thresh).astype(np.uint8)
    if p.use_dilation:
        mask = cv2.dilate(mask, np.ones((2, 2), dtype=np.uint8))
    contours, _ = cv2.findContours(mask * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    if p.box_type == "poly":
        return _polygons(prob, contours[: p.max_candidates], src_h, src_w, p)
    boxes, scores = [], []
    for contour in contours[: p.max_candidates]:
        points, short_side = _mini_box(contour)
        if short_side < MIN_BOX_SIDE:
            continue
        score = _score_box(prob, points if p.score_mode == "fast" else contour)
        if score < p.box_thresh:
            continue
        points, short_side = _mini_box(_unclip(points, p.unclip_ratio))
        if short_side < MIN_BOX_SIDE + 2:
            continue
        points[:, 0] = np.clip(np.round(points[:, 0] / width * src_w), 0, src_w)
        points[:, 1] = np.clip(np.round(points[:, 1] / height * src_h), 0, src_h)
        box = _order_clockwise(points.astype(np.int32).astype(np.float32))
        box[:, 0] = np.clip(box[:, 0], 0, src_w - 1).astype(np.int32)
        box[:, 1] = np.clip(box[:, 1], 0, src_h - 1).astype(np.int32)
        if int(np.linalg.norm(box[0] - box[1])) <= MIN_BOX_SIDE or int(np.linalg.norm(box[0] - box[3])) <= MIN_BOX_SIDE:
            continue
        boxes.append(box)
        scores.append(float(score))
    if not boxes:
        return np.zeros((0, 4, 2), dtype=np.float32), []
    return sort_boxes(np.stack(boxes), scores)


def _polygons(
    prob: np.ndarray, contours: Sequence[np.ndarray], src_h: int, src_w: int, p: DetParams
) -> Tuple[List[np.ndarray], List[float]]:
    """Each contour simplified (tolerance 0.2% of its length), scored, unclipped whole, scaled and clipped
    to the image (PaddleOCR's polygons_from_bitmap plus its detector's clip), ordered by top edge."""
    height, width = prob.shape
    polys, scores = [], []
    for contour in contours:
        points = cv2.approxPolyDP(contour, 0.002 * cv2.arcLength(contour, True), True).reshape(-1, 2)
        if len(points) < 4:
            continue
        score = _score_box(prob, points)
        if score < p.box_thresh:
            continue
        paths = _offset_paths(points, p.unclip_ratio)
        if len(paths) != 1:
            continue
        poly = np.array(paths[0], dtype=np.float64)
        if _mini_box(poly.reshape(-1, 1, 2).astype(np.float32))[1] < MIN_BOX_SIDE + 2:
            continue
        poly[:, 0] = np.clip(np.round(poly[:, 0] / width * src_w), 0, src_w - 1)
        poly[:, 1] = np.clip(np.round(poly[:, 1] / height * src_h), 0, src_h - 1)
        polys.append(poly.astype(np.float32))
        scores.append(float(score))
    order = sorted(range(len(polys)), key=lambda i: polys[i][:, 1].min())
    return [polys[i] for i in order], [scores[i] for i in order]


def sort_boxes(boxes: np.ndarray, scores: List[float], same_line_px: float = 10) -> Tuple[np.ndarray, List[float]]:
    """Reading order: top to bottom, and left to right among boxes whose tops are within ``same_line_px``."""
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][0][1], boxes[i][0][0]))
    for i in range(len(order) - 1):
        for j in range(i, -1, -1):
            a, b = boxes[order[j]][0], boxes[order[j + 1]][0]
            if abs(b[1] - a[1]) < same_line_px and b[0] < a[0]:
                order[j], order[j + 1] = order[j + 1], order[j]
            else:
                break
    return boxes[order], [scores[i] for i in order]


def probability_maps(session: Any, resized: List[np.ndarray], p: DetParams) -> np.ndarray:
    """N x 1 x H x W maps for N resized images of one shape."""
    return run_normalized(session, resized[0] if len(resized) == 1 else np.stack(resized), p.mean, p.std)[0]


MapsFn = Callable[[List[np.ndarray], DetParams], np.ndarray]


def detect_many(maps: MapsFn, images: Sequence[np.ndarray], p: DetParams, per_call: int) -> List[Tuple[Boxes, List[float]]]:
    """Boxes and scores per image; ``maps``: ``probability_maps`` on a session. Images whose resized inputs share
    a shape (pages of one size) run through the engine as one batch, up to ``per_call``: fewer calls, the same
    results."""
    resized = [resize_for_det(image, p) for image in images]
    results: List[Tuple[Boxes, List[float]]] = [
        ((np.zeros((0, 4, 2), dtype=np.float32) if p.box_type == "quad" else []), []) for _ in images
    ]
    same_shape: Dict[Tuple[int, ...], List[int]] = {}
    for i, work in enumerate(resized):
        if work is not None:
            same_shape.setdefault(work.shape, []).append(i)
    for members in same_shape.values():
        for start in range(0, len(members), per_call):
            chunk = members[start : start + per_call]
            preds = maps([resized[i] for i in chunk], p)
            for i, pred in zip(chunk, preds):
                results[i] = postprocess(pred[None], images[i].shape[0], images[i].shape[1], p)
    return results


def _round_up(value: int, multiple: int = 32) -> int:
    return -(-int(value) // multiple) * multiple


class TextDetection(Task):
    name = "text_detection"
    params_type = DetParams
    module_name = "TextDetection"
    tolerance = 0.08  # F1 x mean IoU >= 0.92 against fp32 (int8 typically shifts boxes ~3%)

    def default_shapes(self, p: DetParams) -> ShapeTriple:
        """Sides 32..2048 (the OCR pipeline caps the longer side at 2000), or up to ``max_side_limit`` when set;
        opt ``limit_side_len`` square; batch 1."""
        top = max(_round_up(p.max_side_limit), 32) if p.max_side_limit else 2048
        opt = min(_round_up(p.limit_side_len), top)
        return [[1, 3, 32, 32], [1, 3, opt, opt], [1, 3, top, top]]

    def calibration_inputs(
        self, source: CalibrationSet, p: DetParams, count: int, helpers: Mapping[str, HelperModel]
    ) -> Iterator[np.ndarray]:
        images = source.images()
        made = index = 0
        while made < count and index < count * 4:
            tensor = preprocess(variant(images[index % len(images)], index, len(images)), p)
            index += 1
            if tensor is not None:
                made += 1
                yield tensor

    def drift(self, reference: Outputs, outputs: Outputs, p: DetParams) -> Measured:
        def boxes(out):
            prob = out[0]
            return list(postprocess(prob, prob.shape[2], prob.shape[3], p)[0])

        expected = [boxes(r) for r in reference]
        scores = accuracy.box_scores(expected, [boxes(o) for o in outputs])
        return "1 - box F1 x IoU", 1.0 - scores["f1"] * scores["mean_iou"], scores, sum(map(len, expected))

    def predict_image(self, session: Any, image: np.ndarray, p: DetParams, state: Any) -> Dict[str, Any]:
        (boxes, scores), = detect_many(lambda resized, q: probability_maps(session, resized, q), [image], p, 1)
        polys = boxes.astype(np.int32) if p.box_type == "quad" else [b.astype(np.int32) for b in boxes]
        return {"dt_polys": polys, "dt_scores": scores}

    def visualize(self, result: Any) -> np.ndarray:
        return draw_polygons(result.image, result["dt_polys"], [f"{s:.2f}" for s in result["dt_scores"]])


TASK = TextDetection()
