"""Text line orientation (0° or 180°), so upside-down crops are turned before recognition."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

import cv2
import numpy as np
from pydantic import Field

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


def classify(session: Any, crops: Sequence[np.ndarray], p: ClsParams) -> List[Tuple[int, float]]:
    """(label index, score) per crop."""
    _, height, width = p.image_shape
    results: List[Tuple[int, float]] = [(0, 0.0)] * len(crops)
    for batch in batches_by_ratio(crops, p.batch_size):
        labels, scores = session.run_best(batch_tensor(crops, batch, height, width))
        for i, label, score in zip(batch, labels, scores):
            results[i] = (int(label), float(score))
    return results


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
