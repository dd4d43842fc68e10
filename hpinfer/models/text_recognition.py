"""Text line recognition with CTC models (PP-OCRv4/v5/v6 rec).

Crops are sorted by aspect ratio and batched, so each batch pads to a similar width; every crop is
resized to height 48 keeping its aspect ratio, right-padded with zeros to the batch's widest ratio,
and the per-step argmax is collapsed (repeats, then blanks) into text with a mean-probability score.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import cv2
import numpy as np
from pydantic import Field

from ..errors import ModelNotFoundError
from ..visualize import draw_ocr
from .base import Params, Predictor
from .registry import ModelSpec


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


def load_characters(spec: ModelSpec) -> List[str]:
    """The model's alphabet with CTC's blank at index 0 and a space appended, as PaddleOCR trains it."""
    if spec.characters is not None:
        chars = list(spec.characters)
    elif spec.character_dict is not None:
        chars = spec.character_dict.read_text(encoding="utf-8").splitlines()
    else:
        chars = _characters_from_onnx(spec.model_file) if spec.model_file.suffix == ".onnx" else None
        if chars is None:
            raise ModelNotFoundError(
                f"{spec.name}: {spec.model_file.name} has no 'character' metadata; "
                f"name a dictionary file with character_dict in hpinfer.yaml"
            )
    return ["blank", *chars, " "]


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


def ctc_decode(best: np.ndarray, scores: np.ndarray, characters: Sequence[str]) -> List[Tuple[str, float]]:
    """Greedy CTC from each step's best class and its probability (N x T, ``EngineSession.run_best``): drop
    repeats and blanks; score = mean kept probability (0 if none)."""
    keep = np.ones_like(best, dtype=bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != 0
    results = []
    for row_best, row_keep, row_scores in zip(best, keep, scores):
        kept = row_best[row_keep]
        text = "".join(characters[i] for i in kept)
        score = float(np.mean(row_scores[row_keep])) if kept.size else 0.0
        results.append((text, score))
    return results


class TextRecognizer(Predictor):
    task = "text_recognition"
    params_type = RecParams

    def __init__(self, spec: ModelSpec, *args: Any, **kwargs: Any):
        super().__init__(spec, *args, **kwargs)
        self.characters = load_characters(spec)

    def recognize(
        self, crops: Sequence[np.ndarray], params: Optional[RecParams] = None, groups: Optional[Sequence[int]] = None
    ) -> List[Tuple[str, float]]:
        """Text and score per crop. ``groups`` names each crop's image when crops of several images
        come together: padding is decided per image, so batching across images changes no result,
        and lines of equal padded width (most short lines share the minimum) run in one engine call."""
        p = params or self.params
        height = p.image_shape[1]
        widths = padded_widths(crops, None if groups is None else np.asarray(groups), p)
        results: List[Tuple[str, float]] = [("", 0.0)] * len(crops)
        for width in np.unique(widths):
            same_width = np.flatnonzero(widths == width)
            for start in range(0, len(same_width), p.max_batch_size):
                batch = same_width[start : start + p.max_batch_size]
                best, scores = self.session.run_best(batch_tensor(crops, batch, height, int(width), p.resize == "paddlex"))
                for i, decoded in zip(batch, ctc_decode(best, scores, self.characters)):
                    results[i] = decoded
        return results

    def predict_image(self, image: np.ndarray, params: RecParams) -> Dict[str, Any]:
        (text, score), = self.recognize([image], params)
        return {"rec_text": text, "rec_score": score}

    def visualize(self, result) -> np.ndarray:
        h, w = result.image.shape[:2]
        return draw_ocr(result.image, [[[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]], [result["rec_text"]])
