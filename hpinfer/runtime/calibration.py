"""Calibration inputs: images turned into model input tensors by the model's own pre-processing.

Reduced precision is only as good as the inputs it was calibrated and checked on, so the tensors are made
exactly as the predictor makes them: the model's task makes them (``ModelTask.calibration_inputs``: detection
pre-processes whole images, recognition and line orientation text-line crops). Images come from the folder or file the user names
(``calibration.data``: images or PDFs), else from the bundled ``examples/`` images plus generated text pages.
Every 5th tensor is held back from int8 calibration: the accuracy guard judges int8 on inputs calibration never
saw, and fp16/bf16 (nothing calibrated) on all of them.

Tensors are produced lazily: a hundred detection inputs would not fit in memory together.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import cv2
import numpy as np

from ..config import CalibrationConfig
from ..errors import ConfigError
from ..io import iter_inputs
from .cache import file_sha256
from .task import ModelTask

RECIPE_VERSION = 1  # bump when the way tensors are made changes: it is part of every calibration key
HOLD_BACK_EVERY = 5
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
_SYNTHETIC_PAGES = 4
_MAX_ASPECT = 3.0  # image crops: keeps tensors (and calibration time) moderate


@dataclass(frozen=True)
class CalibrationSet:
    """The images a task makes its calibration inputs from (hashable: tasks may remember what they derive)."""

    config: CalibrationConfig

    def images(self) -> List[np.ndarray]:
        return _images(self.config)


Feeds = Dict[str, np.ndarray]


def is_held_back(index: int, count: int) -> bool:
    return index % HOLD_BACK_EVERY == HOLD_BACK_EVERY - 1 or (count < HOLD_BACK_EVERY and index == count - 1)


def source_digest(task: ModelTask, config: CalibrationConfig) -> str:
    """Identifies the calibration set without decoding it (cheap enough for every cache lookup)."""
    parts: Dict[str, Any] = {
        "recipe": RECIPE_VERSION, "task": task.digest(), "num_samples": config.num_samples,
        "images": [file_sha256(p) for p in _image_files(config)],
    }
    parts.update({name: file_sha256(path) for name, path in task.calibration_files().items()})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def samples(
    task: ModelTask, config: CalibrationConfig, input_name: str, held_back: Optional[bool], progress: Optional[str] = None,
) -> Iterator[Feeds]:
    """The calibration (``held_back=False``), held-back (True) or all (None) inputs, made one at a time.
    ``progress``: the label of a progress bar on stderr, shown once they take more than a second (calibrating a
    detector takes minutes, the guard's fp32 reference runs tens of seconds)."""
    count = config.num_samples
    wanted = [held_back is None or is_held_back(index, count) == held_back for index in range(count)]
    feeds = ({input_name: tensor} for tensor, keep in zip(task.calibration_inputs(CalibrationSet(config), count), wanted) if keep)
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


def variant(image: np.ndarray, index: int, count: int) -> np.ndarray:
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
