"""Calibration inputs: images turned into model input tensors by the model's own pre-processing.

Reduced precision is only as good as the inputs it was calibrated and checked on, so the tensors are made
exactly as the predictor makes them (detection: ``text_detection.preprocess``; recognition and line
orientation: ``resize_norm`` on text-line crops). Images come from the folder or file the user names
(``calibration.data``: images or PDFs), else from the bundled ``examples/`` images plus generated text pages.
Every 5th tensor is held back from int8 calibration: the accuracy guard judges int8 on inputs calibration never
saw, and fp16/bf16 (nothing calibrated) on all of them.

Tensors are produced lazily: a hundred detection inputs would not fit in memory together.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import cv2
import numpy as np

from ..config import CalibrationConfig
from ..errors import ConfigError
from .cache import file_sha256

RECIPE_VERSION = 1  # bump when the way tensors are made changes: it is part of every calibration key
HOLD_BACK_EVERY = 5
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
LINE_FINDER = "PP-OCRv4_mobile_det"  # cuts text-line crops for recognition/orientation calibration
_SYNTHETIC_PAGES = 4
_MAX_ASPECT = 3.0  # detection crops: keeps tensors (and calibration time) moderate
_LINE_FINDER_MAX_SIDE = 2048  # a very flat image would otherwise be detected at 736 x 16000


@dataclass(frozen=True)
class ModelTask:
    """What calibration and the accuracy guard know about a model: its task and processing parameters."""

    task: str
    params: Any  # the task's pydantic Params (DetParams, RecParams, ...)

    def digest(self) -> str:
        return hashlib.sha256(f"{self.task}:{self.params.model_dump_json()}".encode()).hexdigest()


Feeds = Dict[str, np.ndarray]


def is_held_back(index: int, count: int) -> bool:
    return index % HOLD_BACK_EVERY == HOLD_BACK_EVERY - 1 or (count < HOLD_BACK_EVERY and index == count - 1)


def source_digest(task: ModelTask, config: CalibrationConfig) -> str:
    """Identifies the calibration set without decoding it (cheap enough for every cache lookup)."""
    parts: Dict[str, Any] = {
        "recipe": RECIPE_VERSION, "task": task.digest(), "num_samples": config.num_samples,
        "images": [file_sha256(p) for p in _image_files(config)],
    }
    if task.task in ("text_recognition", "textline_orientation"):
        from ..models.registry import resolve_model

        parts["line_finder"] = file_sha256(resolve_model(LINE_FINDER).model_file)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def samples(
    task: ModelTask, config: CalibrationConfig, input_name: str, held_back: Optional[bool], progress: Optional[str] = None,
) -> Iterator[Feeds]:
    """The calibration (``held_back=False``), held-back (True) or all (None) inputs, made one at a time.
    ``progress``: the label of a progress bar on stderr, shown once they take more than a second (calibrating a
    detector takes minutes, the guard's fp32 reference runs tens of seconds)."""
    maker = _MAKERS.get(task.task)
    if maker is None:
        raise ConfigError(
            f"reduced precision needs calibration inputs, and hpinfer cannot make them for {task.task} models yet; "
            f"use precision fp32 (or int8 on a text detection, recognition, line orientation, classification or layout model)"
        )
    count = config.num_samples
    wanted = [held_back is None or is_held_back(index, count) == held_back for index in range(count)]
    feeds = ({input_name: tensor} for tensor, keep in zip(maker(config, task.params, count), wanted) if keep)
    if progress is None:
        return feeds
    from tqdm import tqdm

    return iter(tqdm(feeds, desc=progress, total=sum(wanted), unit="input", file=sys.stderr, delay=1.0, leave=False))


def _image_files(config: CalibrationConfig) -> List[Path]:
    if config.data is None:
        return sorted(EXAMPLES_DIR.glob("*.jpg")) if EXAMPLES_DIR.is_dir() else []
    path = Path(config.data)
    if not path.exists():
        raise ConfigError(f"calibration.data {config.data}: no such file or folder")
    return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]


def _images(config: CalibrationConfig) -> List[np.ndarray]:
    from ..io import iter_inputs

    if config.data is not None:
        images = [item.image for item in iter_inputs(config.data)]
    else:
        images = [item.image for path in _image_files(config) for item in iter_inputs(str(path))]
        images += synthetic_pages(_SYNTHETIC_PAGES)
    if not images:
        raise ConfigError(f"calibration.data {config.data}: no images or PDF pages found")
    return images


_WORDS = (
    "invoice total 2024 page OCR model the of and data 123.45 Table Figure results section abstract "
    "reference ID No. Date: 07/11 price qty HELLO world quantization calibration engine speed"
).split()
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)


def synthetic_pages(count: int) -> List[np.ndarray]:
    """Text pages drawn with OpenCV's fonts: light and dark backgrounds, several sizes (seeded, so reproducible)."""
    rng = np.random.default_rng(RECIPE_VERSION)
    pages = []
    for k in range(count):
        height, width = 480 + 160 * k, 720 + 96 * k
        dark = k % 2 == 1
        page = np.full((height, width, 3), rng.integers(0, 60) if dark else rng.integers(200, 256), np.uint8)
        y = 30
        while True:
            scale = float(rng.uniform(0.5, 1.6))
            y += int(34 * scale) + int(rng.integers(6, 24))
            if y > height - 10:
                break
            text = " ".join(rng.choice(_WORDS, size=int(rng.integers(2, 8))))
            color = tuple(int(c) for c in (rng.integers(190, 256, 3) if dark else rng.integers(0, 90, 3)))
            cv2.putText(page, text, (int(rng.integers(5, 60)), y), _FONTS[int(rng.integers(len(_FONTS)))], scale,
                        color, 1 + int(scale > 1.1), cv2.LINE_AA)
        pages.append(page)
    return pages


def _variant(image: np.ndarray, index: int, count: int) -> np.ndarray:
    """The image itself on the first pass, then seeded random crops (at most _MAX_ASPECT:1)."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(index)
    first_pass = index < count and max(h, w) <= _MAX_ASPECT * min(h, w)
    if first_pass:
        return image
    crop_h = int(min(h, max(32, rng.uniform(0.4, 1.0) * h, w / _MAX_ASPECT)))
    crop_w = int(min(w, max(32, rng.uniform(0.4, 1.0) * w, crop_h / _MAX_ASPECT), crop_h * _MAX_ASPECT))
    top, left = int(rng.integers(0, h - crop_h + 1)), int(rng.integers(0, w - crop_w + 1))
    return image[top : top + crop_h, left : left + crop_w]


def _detection(config: CalibrationConfig, params, count: int) -> Iterator[np.ndarray]:
    from ..models.text_detection import preprocess

    images = _images(config)
    made = index = 0
    while made < count and index < count * 4:
        tensor = preprocess(_variant(images[index % len(images)], index, len(images)), params)
        index += 1
        if tensor is not None:
            made += 1
            yield tensor


@functools.lru_cache(maxsize=4)
def line_crops(config: CalibrationConfig) -> List[np.ndarray]:
    """Text lines in the calibration images, found by the built-in detector (fp32 ONNX Runtime), as
    axis-aligned crops. Remembered: calibration and the held-back set both need them."""
    from ..config import BackendConfig
    from ..device import Device
    from ..models.registry import resolve_model
    from ..models.text_detection import DetParams, postprocess, preprocess
    from .engines.onnxruntime import OnnxRuntimeEngine

    spec = resolve_model(LINE_FINDER)
    params = DetParams(**{**spec.params, "max_side_limit": _LINE_FINDER_MAX_SIDE})
    crops = []
    with OnnxRuntimeEngine.load(spec.model_file, BackendConfig(), Device("cpu")) as session:
        for image in _images(config):
            tensor = preprocess(image, params)
            if tensor is None:
                continue
            boxes, _ = postprocess(session.run_one(tensor)[0], image.shape[0], image.shape[1], params)
            for box in boxes.astype(int):
                (x0, y0), (x1, y1) = box.min(axis=0), box.max(axis=0)
                if x1 - x0 >= 8 and y1 - y0 >= 8:
                    crops.append(image[y0 : y1 + 1, x0 : x1 + 1])
    if not crops:
        raise ConfigError("calibration images hold no text lines the detector can find; name other images in calibration.data")
    return crops


def _cycled_crops(config: CalibrationConfig, count: int) -> Iterator[np.ndarray]:
    """``count`` crops: each line once, then again with its width stretched or squeezed a little."""
    crops = line_crops(config)
    for index in range(count):
        crop = crops[index % len(crops)]
        if index >= len(crops):
            factor = float(np.random.default_rng(index).uniform(0.8, 1.25))
            crop = cv2.resize(crop, (max(8, int(crop.shape[1] * factor)), crop.shape[0]))
        yield crop


def _recognition(config: CalibrationConfig, params, count: int) -> Iterator[np.ndarray]:
    from ..models.text_recognition import resize_norm

    _, height, min_width = params.image_shape
    for crop in _cycled_crops(config, count):
        width = int(height * max(min_width / height, crop.shape[1] / crop.shape[0]))
        yield resize_norm(crop, height, width)[None]


def _orientation(config: CalibrationConfig, params, count: int) -> Iterator[np.ndarray]:
    from ..models.text_recognition import resize_norm

    _, height, width = params.image_shape
    for index, crop in enumerate(_cycled_crops(config, count)):
        yield resize_norm(cv2.rotate(crop, cv2.ROTATE_180) if index % 2 else crop, height, width)[None]


def _classification(config: CalibrationConfig, params, count: int) -> Iterator[np.ndarray]:
    from ..models.image_classification import preprocess

    images = _images(config)
    turns = (None, cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)
    for index in range(count):
        image = _variant(images[index % len(images)], index // len(turns), len(images))
        turn = turns[index % len(turns)]
        yield preprocess(image if turn is None else cv2.rotate(image, turn), params)


def _layout(config: CalibrationConfig, params, count: int) -> Iterator[np.ndarray]:
    from ..models.layout_detection import preprocess

    images = _images(config)
    for index in range(count):
        yield preprocess(_variant(images[index % len(images)], index, len(images)), params)


_MAKERS: Dict[str, Callable[[CalibrationConfig, Any, int], Iterator[np.ndarray]]] = {
    "text_detection": _detection,
    "text_recognition": _recognition,
    "textline_orientation": _orientation,
    "image_classification": _classification,
    "layout_detection": _layout,
}
