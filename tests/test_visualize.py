"""Drawings of OCR/detection results on the real test images: shapes, where ink lands, fonts, edge cases."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from hpinfer import visualize
from hpinfer.visualize import draw_ocr, draw_polygons, find_font

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def rect(x: int, y: int, w: int, h: int) -> list[list[int]]:
    return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]


# paragraph_en.jpg: the heading and the three paragraph lines.
LINES = [rect(0, 5, 300, 22), rect(0, 53, 709, 22), rect(0, 77, 709, 22), rect(0, 101, 350, 22)]
TEXTS = [
    "3 MovieShots Dataset",
    "To facilitate the shot type analysis in videos, we collect MovieShots, a large-scale",
    "shot type annotation set that contains 46K shots from 7858 movies. The details",
    "of this dataset are specified as follows.",
]


def load(name: str) -> np.ndarray:
    image = cv2.imread(str(IMAGES / name))
    assert image is not None, f"missing test image {name}"
    return image


def outside(shape: tuple[int, ...], polys: list, margin: int = 4) -> np.ndarray:
    """Mask of pixels at least ``margin`` px away from every polygon (outlines are anti-aliased)."""
    mask = np.zeros(shape[:2], np.uint8)
    for p in polys:
        cv2.fillPoly(mask, [np.int32(p)], 255)
    return cv2.dilate(mask, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) == 0


@pytest.fixture(autouse=True)
def fresh_font_cache():
    find_font.cache_clear()
    yield
    find_font.cache_clear()


def test_draw_polygons_marks_inside_and_leaves_the_rest() -> None:
    image = load("paragraph_en.jpg")
    before = image.copy()
    out = draw_polygons(image, [LINES[0]], labels=["0.98"])
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)  # input untouched
    inside = (slice(10, 22), slice(100, 290))
    assert np.abs(out[inside].astype(int) - image[inside]).mean() > 20
    far = outside(image.shape, [rect(0, 0, 320, 45)])  # the heading box and its label tag
    np.testing.assert_array_equal(out[far], image[far])


def test_polygons_get_distinct_colours() -> None:
    out = draw_polygons(np.full((100, 300, 3), 255, np.uint8), [rect(10 + 60 * i, 10, 40, 40) for i in range(4)])
    colours = {tuple(out[30, 30 + 60 * i]) for i in range(4)}
    assert len(colours) == 4
    again = draw_polygons(np.full((100, 300, 3), 255, np.uint8), [rect(10 + 60 * i, 10, 40, 40) for i in range(4)])
    np.testing.assert_array_equal(out, again)  # same palette every run


def test_draw_ocr_side_by_side() -> None:
    image = load("paragraph_en.jpg")
    out = draw_ocr(image, LINES, TEXTS)
    h, w = image.shape[:2]
    assert out.shape == (h, 2 * w, 3)
    left, panel = out[:, :w], out[:, w:]
    far = outside(image.shape, LINES)
    np.testing.assert_array_equal(left[far], image[far])
    assert (panel[far] == 255).all()  # white away from the boxes
    for (x0, y0), _, (x1, y1), _ in LINES:
        box = panel[y0 + 3 : y1 - 2, x0 + 3 : x1 - 2]
        assert (box.max(axis=2) < 100).sum() > 50  # dark text written inside each box


def test_vertical_box_writes_one_character_per_row() -> None:
    image = load("vertical_text.png")
    box = rect(580, 70, 190, 1930)
    panel = draw_ocr(image, [box], ["有評是是非"])[:, image.shape[1] :]
    ys, xs = np.nonzero(panel[75:1995, 585:765].max(axis=2) < 100)
    assert ys.max() - ys.min() > 500  # five rows of characters, not one squeezed line
    assert ys.max() - ys.min() > 3 * (xs.max() - xs.min())


def test_rotated_and_curved_polygons() -> None:
    image = load("single_line.jpg")
    canvas = cv2.copyMakeBorder(image, 20, 200, 20, 20, cv2.BORDER_CONSTANT, value=(240, 240, 240))
    rotated = cv2.boxPoints(((250, 150), (300, 40), -15))[[1, 2, 3, 0]]
    xs = np.linspace(40, 440, 6)
    top = [[x, 200 + 20 * np.sin(x / 70)] for x in xs]
    curved = top + [[x, y + 30] for x, y in top[::-1]]
    out = draw_ocr(canvas, [rotated, curved], ["rotated text", "curved text line"])
    panel = out[:, canvas.shape[1] :]
    for poly in (rotated, curved):
        mask = np.zeros(panel.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.int32(poly)], 255)
        mask = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
        assert (panel[mask].max(axis=1) < 100).sum() > 50


def test_empty_polys() -> None:
    image = load("paragraph_en.jpg")
    np.testing.assert_array_equal(draw_polygons(image, []), image)
    out = draw_ocr(image, [], [])
    np.testing.assert_array_equal(out[:, : image.shape[1]], image)
    assert (out[:, image.shape[1] :] == 255).all()


@pytest.mark.parametrize(
    "poly, text",
    [
        ([[5, 5], [5, 5], [5, 5], [5, 5]], "zero area"),
        ([[0, 0], [60, 0], [30, 0], [10, 0]], "collinear"),
        ([[3, 3], [40, 8]], "two points"),
        ([[-500, -20], [9000, -20], [9000, 900], [-500, 900]], "far outside the image"),
        ([[200, 200], [300, 200], [300, 230], [200, 230]], "wholly outside"),
        ([[0, 0], [1e9, 0], [1e9, 1e9], [0, 1e9]], "enormous"),
        ([[0, 0], [np.nan, 0], [10, 10], [0, 10]], "nan"),
        ([], "no points"),
        (rect(1, 1, 60, 8), ""),
        (rect(1, 1, 60, 8), "a text much longer than this tiny box can hold, " * 5),
        (rect(1, 1, 60, 8), "\x00\n\t\u200b\U0001f600\U000e0001\uffff"),
        (rect(2, 0, 8, 10), "竖排文字"),
    ],
)
def test_edge_cases_do_not_raise(poly: list, text: str) -> None:
    tiny = load("tiny.png")  # 65 x 11
    assert draw_ocr(tiny, [poly], [text]).shape == (11, 130, 3)
    assert draw_polygons(tiny, [poly], [text]).shape == tiny.shape


def test_counts_must_match() -> None:
    with pytest.raises(ValueError):
        draw_ocr(load("paragraph_en.jpg"), LINES, TEXTS[:2])
    with pytest.raises(ValueError):
        draw_polygons(load("paragraph_en.jpg"), LINES, ["one label"])


@pytest.mark.parametrize(
    "convert",
    [
        lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY),
        lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)[:, :, None],
        lambda im: cv2.cvtColor(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR),
        lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2BGRA),
    ],
    ids=["gray", "gray1", "gray-as-bgr", "bgra"],
)
def test_gray_and_alpha_inputs(convert) -> None:
    image = convert(load("paragraph_en.jpg"))
    assert draw_ocr(image, LINES, TEXTS).shape == (132, 1418, 3)
    assert draw_polygons(image, LINES, ["a", "b", "c", "d"]).shape == (132, 709, 3)


def test_find_font_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    chosen = tmp_path / "my-font.ttf"
    chosen.write_bytes(b"not really a font")
    monkeypatch.setenv("HPINFER_FONT", str(chosen))
    assert find_font() == chosen
    # an unloadable font degrades to Pillow's built-in one instead of failing
    assert draw_ocr(load("paragraph_en.jpg"), LINES, TEXTS).shape == (132, 1418, 3)


def test_find_font_ignores_missing_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HPINFER_FONT", str(tmp_path / "missing.ttf"))
    monkeypatch.setattr(visualize, "_SYSTEM_FONTS", ())
    assert find_font() is None


@pytest.mark.skipif(not DEJAVU.is_file(), reason="needs DejaVuSans (fonts-dejavu-core)")
def test_find_font_checks_glyph_coverage(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("HPINFER_FONT", raising=False)
    monkeypatch.setattr(visualize, "_SYSTEM_FONTS", (str(DEJAVU),))
    with caplog.at_level(logging.WARNING, logger="hpinfer"):
        assert find_font("Latin") == DEJAVU
        assert not caplog.records
        assert find_font("中文") == DEJAVU  # best available, with a hint on how to do better
    assert len(caplog.records) == 1 and "fonts-wqy-microhei" in caplog.text


def test_no_font_at_all_warns_once_and_still_draws(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("HPINFER_FONT", raising=False)
    monkeypatch.setattr(visualize, "_SYSTEM_FONTS", ())
    image = load("paragraph_en.jpg")
    with caplog.at_level(logging.WARNING, logger="hpinfer"):
        for _ in range(2):
            out = draw_ocr(image, LINES, ["中文 " + t for t in TEXTS])
    warnings = [r for r in caplog.records if "HPINFER_FONT" in r.getMessage()]
    assert len(warnings) == 1
    panel = out[:, image.shape[1] :]
    assert (panel[10:22, 5:290].max(axis=2) < 100).sum() > 50
