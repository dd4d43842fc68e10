"""Text line orientation (0° or 180°), so upside-down crops are turned before recognition."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterator, List, Literal, Mapping, Sequence, Tuple

import cv2
import numpy as np
from pydantic import Field, model_validator

from ..runtime import accuracy
from ..runtime.calibration import CalibrationSet
from ..runtime.task import Measured, Outputs
from ..visualize import draw_polygons
from .base import HelperModel, Params, ShapeTriple, Task, frame
from .text_recognition import LINE_FINDER, batch_tensor, batches_by_ratio, cycled_crops, resize_norm


class ClsParams(Params):
    image_shape: Tuple[int, int, int] = (3, 48, 192)
    batch_size: int = Field(6, ge=1, le=1024)
    threshold: float = Field(0.9, ge=0, le=1)  # rotate only when "180" is at least this sure
    labels: Tuple[str, ...] = ("0", "180")
    # "keep_ratio": resized to the input height, aspect kept, zero padded (PaddleOCR, RapidOCR); "stretch": resized
    # to image_shape exactly (PaddleX 3.7.2's ResizeImage), in [-1, 1] either way.
    resize: Literal["keep_ratio", "stretch"] = "keep_ratio"
    # Pixel order the model is fed: PaddleOCR's line classifiers learnt BGR; PaddleX 3.7.2 feeds RGB to every
    # classifier, the v2.0 line classifier too (it then turns many upright lines over).
    channel_order: Literal["bgr", "rgb"] = "bgr"
    # A line wider than image_shape's aspect: "squeeze" shrinks it into the input (PaddleOCR, RapidOCR: letters
    # lose their shape and many upright long lines get turned over); "tiles" reads a line wider than
    # tile_beyond input widths as up to max_tiles overlapping pieces at the input's aspect and averages their
    # log-probabilities, so it turns only when its pieces agree (narrower lines are squeezed: their letters keep
    # half their width). Bundled pipelines that promise a reference's results keep "squeeze".
    long_lines: Literal["squeeze", "tiles"] = "squeeze"
    max_tiles: int = Field(3, ge=1, le=64)
    tile_beyond: float = Field(2.0, ge=1.0)

    @model_validator(mode="after")
    def _tiles_need_two_labels(self) -> "ClsParams":
        if self.long_lines == "tiles" and len(self.labels) != 2:
            raise ValueError("long_lines 'tiles' averages two labels' probabilities; this classifier has "
                             f"{len(self.labels)} (use long_lines: squeeze)")
        return self


def classify(session: Any, crops: Sequence[np.ndarray], p: ClsParams) -> List[Tuple[int, float]]:
    """(label index, score) per crop."""
    if p.long_lines == "tiles":
        return _classify_tiled(session, crops, p)
    _, height, width = p.image_shape
    results: List[Tuple[int, float]] = [(0, 0.0)] * len(crops)
    if p.channel_order == "rgb":
        crops = [cv2.cvtColor(crop, cv2.COLOR_BGR2RGB) for crop in crops]
    for batch in batches_by_ratio(crops, p.batch_size):
        if p.resize == "stretch":
            tensor = np.stack([resize_norm(cv2.resize(crops[i], (width, height)), height, width) for i in batch])
        else:
            tensor = batch_tensor(crops, batch, height, width)
        labels, scores = session.run_best(tensor)
        for i, label, score in zip(batch, labels, scores):
            results[i] = (int(label), float(score))
    return results


def tiles(crop: np.ndarray, aspect: float, max_tiles: int, beyond: float) -> List[np.ndarray]:
    """The crop as pieces of width ``aspect`` x its height, half-overlapping from end to end (fewer, spread
    evenly, beyond ``max_tiles``); a crop no wider than ``beyond`` pieces is its own single piece."""
    h, w = crop.shape[:2]
    width = max(1, int(round(h * aspect)))
    if w <= beyond * width:
        return [crop]
    count = min(max_tiles, math.ceil((w - width) / (width / 2)) + 1)
    return [crop[:, s : s + width] for s in np.linspace(0, w - width, count).round().astype(int)]


def _classify_tiled(session: Any, crops: Sequence[np.ndarray], p: ClsParams) -> List[Tuple[int, float]]:
    """Each crop's tiles classified together; a crop's label is the one with the higher mean log-probability
    over its tiles, its score that mean normalised over the two labels."""
    _, height, width = p.image_shape
    pieces, owner = [], []
    for index, crop in enumerate(crops):
        for piece in tiles(crop, width / height, p.max_tiles, p.tile_beyond):
            pieces.append(piece)
            owner.append(index)
    logs = np.zeros((len(crops), 2))
    for index, (label, score) in zip(owner, classify(session, pieces, p.model_copy(update={"long_lines": "squeeze"}))):
        logs[index] += np.log(np.clip([1.0 - score, score] if label == 1 else [score, 1.0 - score], 1e-6, 1.0))
    means = logs / np.maximum(np.bincount(np.asarray(owner, dtype=np.int64), minlength=len(crops)), 1)[:, None]
    probs = np.exp(means - means.max(axis=1, keepdims=True))
    labels = probs.argmax(axis=1)
    return [(int(label), float(row[label] / row.sum())) for label, row in zip(labels, probs)]


def upright(session: Any, crops: Sequence[np.ndarray], p: ClsParams) -> Tuple[List[np.ndarray], List[int]]:
    """Crops turned upright where the model is sure they are upside down, and the angle applied to each."""
    turned, angles = [], []
    for crop, (label, score) in zip(crops, classify(session, crops, p)):
        flip = p.labels[label] == "180" and score > p.threshold
        turned.append(cv2.rotate(crop, cv2.ROTATE_180) if flip else crop)
        angles.append(180 if flip else 0)
    return turned, angles


class TextLineOrientation(Task):
    name = "textline_orientation"
    params_type = ClsParams
    module_name = "TextLineOrientation"
    tolerance = 0.02
    helper_models = {"line_finder": LINE_FINDER}

    def default_shapes(self, p: ClsParams) -> ShapeTriple:
        """Batch 1..max(``batch_size``, 32), ``image_shape`` H x W."""
        _, height, width = p.image_shape
        return [[1, 3, height, width], [p.batch_size, 3, height, width], [max(p.batch_size, 32), 3, height, width]]

    def calibration_inputs(
        self, source: CalibrationSet, p: ClsParams, count: int, helpers: Mapping[str, HelperModel]
    ) -> Iterator[np.ndarray]:
        """Text lines as found, and every other one turned upside down."""
        _, height, width = p.image_shape
        for index, crop in enumerate(cycled_crops(source, helpers["line_finder"], count)):
            yield resize_norm(cv2.rotate(crop, cv2.ROTATE_180) if index % 2 else crop, height, width)[None]

    def drift(self, reference: Outputs, outputs: Outputs, p: ClsParams) -> Measured:
        return accuracy.top1_drift(reference, outputs)

    def predict_image(self, session: Any, image: np.ndarray, p: ClsParams, state: Any) -> Dict[str, Any]:
        (label, score), = classify(session, [image], p)
        return {"class_ids": [label], "scores": [score], "label_names": [p.labels[label]]}

    def visualize(self, result: Any) -> np.ndarray:
        return draw_polygons(result.image, [frame(result.image)], [f"{result['label_names'][0]} {result['scores'][0]:.2f}"])


TASK = TextLineOrientation()
