"""Text line orientation (0° or 180°), so upside-down crops are turned before recognition."""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import cv2
import numpy as np
from pydantic import Field

from ..visualize import draw_polygons
from .base import Params, Predictor
from .text_recognition import batch_tensor, batches_by_ratio, resize_norm


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


class TextLineOrientationClassifier(Predictor):
    task = "textline_orientation"
    params_type = ClsParams

    def classify(self, crops: Sequence[np.ndarray], params: Optional[ClsParams] = None) -> List[Tuple[int, float]]:
        """(label index, score) per crop."""
        p = params or self.params
        _, height, width = p.image_shape
        results: List[Tuple[int, float]] = [(0, 0.0)] * len(crops)
        if p.channel_order == "rgb":
            crops = [cv2.cvtColor(crop, cv2.COLOR_BGR2RGB) for crop in crops]
        for batch in batches_by_ratio(crops, p.batch_size):
            if p.resize == "stretch":
                tensor = np.stack([resize_norm(cv2.resize(crops[i], (width, height)), height, width) for i in batch])
            else:
                tensor = batch_tensor(crops, batch, height, width)
            labels, scores = self.session.run_best(tensor)
            for i, label, score in zip(batch, labels, scores):
                results[i] = (int(label), float(score))
        return results

    def upright(self, crops: Sequence[np.ndarray], params: Optional[ClsParams] = None) -> Tuple[List[np.ndarray], List[int]]:
        """Crops turned upright where the model is sure they are upside down, and the angle applied to each."""
        p = params or self.params
        turned, angles = [], []
        for crop, (label, score) in zip(crops, self.classify(crops, p)):
            name = p.labels[label]
            flip = name == "180" and score > p.threshold
            turned.append(cv2.rotate(crop, cv2.ROTATE_180) if flip else crop)
            angles.append(180 if flip else 0)
        return turned, angles

    def predict_image(self, image: np.ndarray, params: ClsParams) -> Dict[str, Any]:
        (label, score), = self.classify([image], params)
        return {"class_ids": [label], "scores": [score], "label_names": [params.labels[label]]}

    def visualize(self, result) -> np.ndarray:
        h, w = result.image.shape[:2]
        box = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
        return draw_polygons(result.image, [box], [f"{result['label_names'][0]} {result['scores'][0]:.2f}"])
