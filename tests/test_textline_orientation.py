"""The line classifier on long lines: the reference's squeeze turns upright English lines over, tiles do not;
and which bundled OCR pipeline reads them which way (the default chosen by measurement: benchmarks/RESULTS.md).

The line is one of benchmarks/heldout.py's English pages (LiberationSans 24 px, 828 x 28 px crop, aspect 30 where
the model takes 192 x 48 = 4): squeezed into the input, the v2.0 classifier calls it "180" at 0.995.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

import hpinfer
from hpinfer.pipelines import resolve_pipeline
from hpinfer.tasks.textline_orientation import ClsParams, tiles

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import heldout  # noqa: E402  (the held-out set's fonts)

LINE = "national, further June price reduce weekly on include industry Bob, plan was?"


@pytest.fixture(scope="module")
def classifier():
    return hpinfer.create_model("ch_ppocr_mobile_v2.0_cls")


@pytest.fixture(scope="module")
def long_line() -> np.ndarray:
    canvas = Image.new("RGB", (1000, 60), "white")
    x1, y1, x2, y2 = heldout.draw_line(ImageDraw.Draw(canvas), (10, 10), LINE, heldout.font("LiberationSans-Regular.ttf", 24), "black").box
    return np.asarray(canvas)[y1 - 3 : y2 + 3, x1 - 3 : x2 + 3, ::-1].copy()


def test_tiles_keep_a_long_upright_line_and_turn_it_when_upside_down(classifier, long_line):
    turned = cv2.rotate(long_line, cv2.ROTATE_180)
    squeeze = classifier.with_overrides({"long_lines": "squeeze"})
    _, angles = classifier.upright([long_line, turned], squeeze)
    assert angles == [180, 0]  # the reference's way: upright line turned over, upside-down one left
    pieces = classifier.with_overrides({"long_lines": "tiles"})
    (upright, back), angles = classifier.upright([long_line, turned], pieces)
    assert angles == [0, 180]
    assert np.array_equal(upright, long_line) and np.array_equal(back, long_line)


def test_tiles_span_the_line_at_the_models_aspect(long_line):
    h, w = long_line.shape[:2]
    pieces = tiles(long_line, 4.0, 3, 2.0)
    assert [p.shape[1] for p in pieces] == [4 * h] * 3
    assert np.array_equal(pieces[0], long_line[:, : 4 * h]) and np.array_equal(pieces[-1], long_line[:, w - 4 * h :])
    assert [p.shape[1] for p in tiles(long_line[:, :300], 4.0, 8, 2.0)] == [4 * h] * 5  # half-overlapping
    within = long_line[:, : 8 * h]  # up to twice the model's aspect: squeezed whole, as the reference does
    assert len(tiles(within, 4.0, 3, 2.0)) == 1 and tiles(within, 4.0, 3, 2.0)[0] is within
    assert len(tiles(long_line[:, : 8 * h + 1], 4.0, 3, 2.0)) == 3


# name: (detector, recogniser, long_lines). OCR is the rule's pick; the model-named pipelines are their references'.
CHOSEN = {
    "OCR": ("PP-OCRv6_tiny_det", "PP-OCRv6_tiny_rec", "tiles"),
    "OCR_PP-OCRv4_mobile": ("PP-OCRv4_mobile_det", "PP-OCRv4_mobile_rec", "squeeze"),
    "OCR_PP-OCRv5_mobile": ("PP-OCRv5_mobile_det", "PP-OCRv5_mobile_rec", "squeeze"),
    "OCR_PP-OCRv6_small": ("PP-OCRv6_small_det", "PP-OCRv6_small_rec", "squeeze"),
    "OCR_PP-OCRv6_tiny": ("PP-OCRv6_tiny_det", "PP-OCRv6_tiny_rec", "squeeze"),
}


@pytest.mark.parametrize("name", CHOSEN)
def test_bundled_ocr_pipelines_use_the_chosen_models_and_classifier_mode(name):
    modules = resolve_pipeline(name).modules
    cls = ClsParams(**modules["TextLineOrientation"].params)  # the task's defaults under the file's values
    assert (modules["TextDetection"].model_name, modules["TextRecognition"].model_name, cls.long_lines) == CHOSEN[name]


def test_default_ocr_reads_the_long_line_either_way_up(long_line):
    """The whole crop as one line (use_det=False): upright stays, upside down is turned, both read."""
    with hpinfer.create_pipeline("OCR", use_det=False) as ocr:
        for image, angle in ((long_line, 0), (cv2.rotate(long_line, cv2.ROTATE_180), 180)):
            (res,) = ocr.predict(image)
            assert res["textline_orientation_angles"] == [angle]
            assert heldout.cer(LINE, " ".join(res["rec_texts"])) < 0.02


def test_tiles_on_a_classifier_without_two_labels_is_a_config_error(classifier):
    with pytest.raises(hpinfer.ConfigError, match="long_lines 'tiles'.* has 4"):
        classifier.with_overrides({"long_lines": "tiles", "labels": ["0", "90", "180", "270"]})
    assert classifier.classify([], classifier.with_overrides({"long_lines": "tiles"})) == []
