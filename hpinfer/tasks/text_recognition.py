"""Text line recognition with CTC models (PP-OCRv4/v5/v6 rec).

Crops are sorted by aspect ratio and batched, so each batch pads to a similar width; every crop is
resized to height 48 keeping its aspect ratio, right-padded with zeros to the batch's widest ratio,
and the per-step argmax is collapsed (repeats, then blanks) into text with a mean-probability score.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np
from pydantic import Field

from ..config import BackendConfig
from ..device import Device
from ..errors import ConfigError, ModelNotFoundError
from ..runtime import accuracy
from ..runtime.calibration import CalibrationSet
from ..runtime.engines.onnxruntime import OnnxRuntimeEngine
from ..runtime.task import Measured, Outputs
from ..visualize import draw_ocr
from . import text_detection
from .base import HelperModel, Params, ShapeTriple, Task, frame

LINE_FINDER = "PP-OCRv4_mobile_det"  # cuts text-line crops for recognition/orientation calibration
_LINE_FINDER_MAX_SIDE = 2048  # a very flat image would otherwise be detected at 736 x 16000


class RecParams(Params):
    image_shape: Tuple[int, int, int] = (3, 48, 320)  # C, H, and the minimum padded width
    # Lines padded to a common width together, as PaddleOCR groups them: the padding a line gets
    # changes what the model reads, so this is part of the result, not only of the speed.
    batch_size: int = Field(6, ge=1, le=1024)
    # Lines of equal padded width sent to the engine in one run: speed only, results unchanged.
    max_batch_size: int = Field(32, ge=1, le=1024)
    # How a line is resized to the input height: "rapidocr" (width ceil(h * ratio) up to the batch's padded
    # width) or "paddlex" (PaddleX 3.7.2's OCRReisizeNormImg: each line capped at its own int(h * ratio), and
    # lines wider than 3200 stretched to 3200).
    resize: Literal["rapidocr", "paddlex"] = "rapidocr"


def load_characters(spec: Any) -> List[str]:
    """The model's alphabet with CTC's blank at index 0 and a space appended, as PaddleOCR trains it. ``spec``:
    the model's name, ``model_file`` and ``character_dict`` (``hpinfer.models.ModelSpec``)."""
    return ["blank", *dictionary(spec), " "]


def dictionary(spec: Any) -> List[str]:
    """The model's own characters (a PaddleX model dir's inference.yml), else the lines of ``character_dict``, else
    the ONNX file's "character" metadata (PaddleOCR's exports)."""
    if getattr(spec, "characters", None) is not None:
        return list(spec.characters)
    if spec.character_dict is not None:
        return spec.character_dict.read_text(encoding="utf-8").splitlines()
    chars = _characters_from_onnx(spec.model_file) if spec.model_file.suffix == ".onnx" else None
    if chars is None:
        raise ModelNotFoundError(
            f"{spec.name}: {spec.model_file.name} has no 'character' metadata; "
            f"name a dictionary file with character_dict in hpinfer.yaml"
        )
    return chars


def _characters_from_onnx(path: Path) -> Optional[List[str]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == "character":
            return prop.value.splitlines()
    return None


PADDLEX_MAX_WIDTH = 3200


def resize_norm_into(out: np.ndarray, crop: np.ndarray, paddlex: bool = False) -> None:
    """One crop into ``out`` (3 x height x width float32 zeros): values in [-1, 1], aspect kept, zero right
    padding. Written in place, plane by plane, so a batch tensor is filled without intermediate copies.
    ``paddlex``: the width PaddleX gives it (see ``RecParams.resize``)."""
    _, height, width = out.shape
    h, w = crop.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / float(h))))
    if paddlex:
        resized_w = min(resized_w, int(height * max(w / float(h), 1.0)), PADDLEX_MAX_WIDTH)
    for c, plane in enumerate(cv2.split(cv2.resize(crop, (resized_w, height)))):
        np.multiply(plane, _TO_UNIT, out=out[c, :, :resized_w], dtype=np.float32)
        out[c, :, :resized_w] -= 1.0


def batch_tensor(crops: Sequence[np.ndarray], indices: Sequence[int], height: int, width: int, paddlex: bool = False) -> np.ndarray:
    """The crops at ``indices`` as one N x 3 x height x width float32 batch, each row filled in place."""
    tensor = np.zeros((len(indices), 3, height, width), dtype=np.float32)
    for row, i in enumerate(indices):
        resize_norm_into(tensor[row], crops[i], paddlex)
    return tensor


def resize_norm(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """One crop → 3 x height x width float32 in [-1, 1], aspect kept, zero right padding."""
    out = np.zeros((3, height, width), dtype=np.float32)
    resize_norm_into(out, crop)
    return out


_TO_UNIT = np.float32(2.0 / 255.0)  # x * 2/255 - 1 maps 0..255 to [-1, 1] (the reference's float32 steps)


def batches_by_ratio(crops: Sequence[np.ndarray], batch_size: int) -> List[np.ndarray]:
    """Index batches of crops sorted by width/height, so padding within a batch is small."""
    order = np.argsort(_ratios(crops), kind="quicksort")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _ratios(crops: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([c.shape[1] / float(c.shape[0]) for c in crops])


def padded_widths(crops: Sequence[np.ndarray], groups: Optional[np.ndarray], p: RecParams) -> np.ndarray:
    """Each line's input width as PaddleOCR pads it: within its own image (``groups``; None: all one image),
    lines sorted by aspect ratio are chunked by ``batch_size`` and padded to the chunk's widest ratio."""
    _, height, min_width = p.image_shape
    ratios = _ratios(crops)
    widths = np.empty(len(crops), dtype=np.int64)
    images = [np.arange(len(crops))] if groups is None else [np.flatnonzero(groups == g) for g in np.unique(groups)]
    for members in images:
        order = members[np.argsort(ratios[members], kind="quicksort")]
        for start in range(0, len(order), p.batch_size):
            chunk = order[start : start + p.batch_size]
            widths[chunk] = int(height * max(min_width / height, float(ratios[chunk].max())))
    return np.minimum(widths, PADDLEX_MAX_WIDTH) if p.resize == "paddlex" else widths


def ctc_keep(best: np.ndarray) -> np.ndarray:
    """Greedy CTC on each step's best class (N x T): True where a label is kept (repeats and blanks (0) dropped)."""
    keep = np.ones_like(best, dtype=bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != 0
    return keep


def ctc_labels(probs: np.ndarray) -> List[Tuple[int, ...]]:
    """Greedy CTC on N x T x C scores: the kept labels of each row."""
    best = probs.argmax(axis=2)
    return [tuple(int(c) for c in row[keep]) for row, keep in zip(best, ctc_keep(best))]


def ctc_decode(best: np.ndarray, scores: np.ndarray, characters: Sequence[str]) -> List[Tuple[str, float]]:
    """Greedy CTC from each step's best class and its probability (N x T, ``EngineSession.run_best``): drop
    repeats and blanks; score = mean kept probability (0 if none)."""
    results = []
    for row_best, row_keep, row_scores in zip(best, ctc_keep(best), scores):
        kept = row_best[row_keep]
        text = "".join(characters[i] for i in kept)
        score = float(np.mean(row_scores[row_keep])) if kept.size else 0.0
        results.append((text, score))
    return results


def recognize(
    session: Any, characters: Sequence[str], crops: Sequence[np.ndarray], p: RecParams, groups: Optional[Sequence[int]] = None
) -> List[Tuple[str, float]]:
    """Text and score per crop. ``groups`` names each crop's image when crops of several images come together:
    padding is decided per image, so batching across images changes no result, and lines of equal padded width
    (most short lines share the minimum) run in one engine call."""
    height = p.image_shape[1]
    widths = padded_widths(crops, None if groups is None else np.asarray(groups), p)
    results: List[Tuple[str, float]] = [("", 0.0)] * len(crops)
    for width in np.unique(widths):
        same_width = np.flatnonzero(widths == width)
        for start in range(0, len(same_width), p.max_batch_size):
            batch = same_width[start : start + p.max_batch_size]
            best, scores = session.run_best(batch_tensor(crops, batch, height, int(width), p.resize == "paddlex"))
            for i, decoded in zip(batch, ctc_decode(best, scores, characters)):
                results[i] = decoded
    return results


@functools.lru_cache(maxsize=4)
def line_crops(source: CalibrationSet, finder: HelperModel) -> List[np.ndarray]:
    """Text lines in the calibration images, found by the built-in detector (fp32 ONNX Runtime), as
    axis-aligned crops. Remembered: calibration and the held-back set both need them."""
    params = text_detection.DetParams(**{**finder.params, "max_side_limit": _LINE_FINDER_MAX_SIDE})
    crops = []
    with OnnxRuntimeEngine.load(finder.model_file, BackendConfig(), Device("cpu")) as session:
        for image in source.images():
            tensor = text_detection.preprocess(image, params)
            if tensor is None:
                continue
            boxes, _ = text_detection.postprocess(session.run_one(tensor)[0], image.shape[0], image.shape[1], params)
            for box in boxes.astype(int):
                (x0, y0), (x1, y1) = box.min(axis=0), box.max(axis=0)
                if x1 - x0 >= 8 and y1 - y0 >= 8:
                    crops.append(image[y0 : y1 + 1, x0 : x1 + 1])
    if not crops:
        raise ConfigError("calibration images hold no text lines the detector can find; name other images in calibration.data")
    return crops


def cycled_crops(source: CalibrationSet, finder: HelperModel, count: int) -> Iterator[np.ndarray]:
    """``count`` crops: each line once, then again with its width stretched or squeezed a little."""
    crops = line_crops(source, finder)
    for index in range(count):
        crop = crops[index % len(crops)]
        if index >= len(crops):
            factor = float(np.random.default_rng(index).uniform(0.8, 1.25))
            crop = cv2.resize(crop, (max(8, int(crop.shape[1] * factor)), crop.shape[0]))
        yield crop


class TextRecognition(Task):
    name = "text_recognition"
    params_type = RecParams
    module_name = "TextRecognition"
    tolerance = 0.02  # CER <= 2%
    helper_models = {"line_finder": LINE_FINDER}
    rebatchable = True  # max_batch_size is speed only

    def default_shapes(self, p: RecParams) -> ShapeTriple:
        """Batch 1..``max_batch_size`` (opt ``batch_size``), height ``image_shape[1]``, width 8..3200 (opt
        ``image_shape[2]``)."""
        _, height, width = p.image_shape
        most = max(p.max_batch_size, 1)
        return [[1, 3, height, 8], [min(p.batch_size, most), 3, height, width], [most, 3, height, max(3200, width)]]

    def calibration_inputs(
        self, source: CalibrationSet, p: RecParams, count: int, helpers: Mapping[str, HelperModel]
    ) -> Iterator[np.ndarray]:
        _, height, min_width = p.image_shape
        for crop in cycled_crops(source, helpers["line_finder"], count):
            width = int(height * max(min_width / height, crop.shape[1] / crop.shape[0]))
            yield resize_norm(crop, height, width)[None]

    def drift(self, reference: Outputs, outputs: Outputs, p: RecParams) -> Measured:
        expected = [label for r in reference for label in ctc_labels(r[0])]
        texts = [label for o in outputs for label in ctc_labels(o[0])]
        scores = accuracy.text_scores(expected, texts)
        return "CER", scores["cer"], scores, sum(map(len, expected))

    def prepare(self, spec: Any) -> List[str]:
        return load_characters(spec)

    def predict_image(self, session: Any, image: np.ndarray, p: RecParams, state: List[str]) -> Dict[str, Any]:
        (text, score), = recognize(session, state, [image], p)
        return {"rec_text": text, "rec_score": score}

    def visualize(self, result: Any) -> np.ndarray:
        return draw_ocr(result.image, [frame(result.image)], [result["rec_text"]])


TASK = TextRecognition()
