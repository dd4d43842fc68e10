"""Image classification with PaddleClas-style models, e.g. document orientation PP-LCNet_x1_0_doc_ori.

resize the short side → centre crop → normalise → class probabilities → top-k
(``class_ids``, ``scores``, ``label_names``, as PaddleX's image classification module returns them).
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Literal, Mapping, Sequence, Tuple

import cv2
import numpy as np
from pydantic import Field, model_validator

from ..runtime import accuracy
from ..runtime.calibration import CalibrationSet, variant
from ..runtime.task import Measured, Outputs
from ..visualize import draw_polygons
from .base import HelperModel, Params, ShapeTriple, Task, frame
from .normalize import normalize_to_nchw, run_normalized

INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}


class ImageClsParams(Params):
    resize_short: int = Field(256, ge=1)
    crop_size: int = Field(224, ge=1)
    interpolation: Literal["linear", "cubic", "lanczos"] = "linear"
    channel_order: Literal["rgb", "bgr"] = "rgb"  # what the model was trained on; PaddleClas reads RGB
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    topk: int = Field(1, ge=1)
    labels: Tuple[str, ...] = ()  # name of each class id; ids without one are named by their number

    @model_validator(mode="after")
    def _crop_fits(self) -> "ImageClsParams":
        if self.crop_size > self.resize_short:
            raise ValueError(f"crop_size {self.crop_size} is larger than resize_short {self.resize_short}")
        return self


def crop_square(image: np.ndarray, p: ImageClsParams) -> np.ndarray:
    """BGR image → the model's uint8 SxSx3 pixels: short side to ``resize_short``, then the centre ``crop_size``
    square, channels in the model's order."""
    h, w = image.shape[:2]
    scale = p.resize_short / min(h, w)
    resized = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=INTERPOLATIONS[p.interpolation])
    top, left = (resized.shape[0] - p.crop_size) // 2, (resized.shape[1] - p.crop_size) // 2
    crop = resized[top : top + p.crop_size, left : left + p.crop_size]
    return crop[:, :, ::-1] if p.channel_order == "rgb" else crop


def preprocess(image: np.ndarray, p: ImageClsParams) -> np.ndarray:
    """The 1x3xSxS input normalised on the host (calibration and engine tests feed tensors)."""
    return normalize_to_nchw(crop_square(image, p), p.mean, p.std)


def label_name(labels: Sequence[str], class_id: int) -> str:
    return labels[class_id] if class_id < len(labels) else str(class_id)


def postprocess(probs: np.ndarray, p: ImageClsParams) -> Dict[str, List[Any]]:
    """One row of class probabilities (PaddleClas exports end in softmax) → the top-k, best first."""
    ids = np.argsort(-probs, kind="stable")[: p.topk]
    return {
        "class_ids": [int(i) for i in ids],
        "scores": [float(probs[i]) for i in ids],
        "label_names": [label_name(p.labels, int(i)) for i in ids],
    }


class ImageClassification(Task):
    name = "image_classification"
    params_type = ImageClsParams
    module_name = "ImageClassification"
    tolerance = 0.02

    def default_shapes(self, p: ImageClsParams) -> ShapeTriple:
        """Batch 1..8 (opt 1), ``crop_size`` square."""
        side = p.crop_size
        return [[1, 3, side, side], [1, 3, side, side], [8, 3, side, side]]

    def calibration_inputs(
        self, source: CalibrationSet, p: ImageClsParams, count: int, helpers: Mapping[str, HelperModel]
    ) -> Iterator[np.ndarray]:
        """Images and crops of them, each turned by 0, 90, 180 and 270 degrees in turn (orientation models)."""
        images = source.images()
        turns = (None, cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)
        for index in range(count):
            image = variant(images[index % len(images)], index // len(turns), len(images))
            turn = turns[index % len(turns)]
            yield preprocess(image if turn is None else cv2.rotate(image, turn), p)

    def drift(self, reference: Outputs, outputs: Outputs, p: ImageClsParams) -> Measured:
        return accuracy.top1_drift(reference, outputs)

    def predict_image(self, session: Any, image: np.ndarray, p: ImageClsParams, state: Any) -> Dict[str, Any]:
        probs = run_normalized(session, crop_square(image, p), p.mean, p.std)[0]
        return postprocess(probs[0], p)

    def visualize(self, result: Any) -> np.ndarray:
        text = ", ".join(f"{name} {score:.2f}" for name, score in zip(result["label_names"], result["scores"]))
        return draw_polygons(result.image, [frame(result.image)], [text], result["class_ids"][:1])


TASK = ImageClassification()
