"""Inputs and modes the peers handle, and layout_parsing's text on rendered pages (benchmarks/heldout.py pages,
known text): transparent PNGs (white and black text), a rotated line crop read with detection off, whitespace
lines kept, layout_parsing as complete as OCR on the same page, paragraphs found by geometry."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import hpinfer
from hpinfer.pipelines.markdown import page_markdown
from hpinfer.pipelines.paragraphs import paragraphs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import heldout  # noqa: E402  (the held-out set's page maker and scores)


@pytest.fixture(scope="module")
def ocr():
    with hpinfer.create_pipeline("OCR_PP-OCRv4_mobile") as pipe:
        yield pipe


def text_png(text: str, color, size=(420, 70)) -> bytes:
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(image).text((12, 14), text, font=heldout.font("DejaVuSans.ttf", 34), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("color", [(255, 255, 255, 255), (0, 0, 0, 255)], ids=["white", "black"])
def test_text_on_transparent_png_is_read(ocr, tmp_path, color) -> None:
    path = tmp_path / "transparent.png"
    path.write_bytes(text_png("Open 24 hours", color))
    (res,) = ocr.predict(str(path))
    assert heldout.squash("".join(res["rec_texts"])) == "Open24hours"


def test_rotated_line_crop_with_detection_off(ocr) -> None:
    line = Image.new("RGB", (460, 56), "white")
    ImageDraw.Draw(line).text((8, 8), "Invoice 2026-118", font=heldout.font("DejaVuSerif.ttf", 34), fill="black")
    crop = np.ascontiguousarray(np.asarray(line)[::-1, ::-1, ::-1])  # turned 180 degrees, BGR
    (res,) = ocr.predict(crop, use_det=False)
    assert res["rec_texts"] == ["Invoice 2026-118"] and res["textline_orientation_angles"] == [180]
    assert res["rec_boxes"].tolist() == [[0, 0, 460, 56]]


def test_whitespace_lines_are_kept_empty_ones_dropped(ocr) -> None:
    opts, det_params = ocr._call_options({})
    page, *_ = ocr._detect([np.full((40, 200, 3), 255, np.uint8)], opts.model_copy(update={"use_det": False}), det_params)
    kept = ocr._assemble(page, [0], [(" ", 0.9)], opts, det_params)
    assert kept["rec_texts"] == [" "]
    assert ocr._assemble(page, [0], [("", 0.9)], opts, det_params)["rec_texts"] == []


@pytest.fixture(scope="module")
def page():
    """A two-column English page of spaced paragraphs in DejaVu Serif (the first page of the held-out set)."""
    spec = heldout.page_specs()[0]
    import random

    return heldout.page(random.Random(7), "page", **spec)


def test_layout_parsing_text_is_as_complete_as_ocr(page) -> None:
    with hpinfer.create_pipeline("layout_parsing") as layout:
        (res,) = layout.predict(page.image)
        ocr_pipe = layout.ocr
        (plain,) = ocr_pipe.predict(page.image)
    truth = " ".join(page.paragraphs)
    found = [p for b in res["blocks"] for p in b["text"].split("\n") if p.strip()]
    ocr_errors, chars = heldout.line_errors(page.truth()["lines"], plain["rec_texts"], plain["rec_boxes"].tolist())
    assert heldout.cer(truth, " ".join(found)) <= ocr_errors / chars + 0.005  # in reading order, so stricter
    # Paragraphs from the geometry, however the layout model labelled the regions.
    assert abs(len(found) - len(page.paragraphs)) <= 0.1 * len(page.paragraphs)


def test_paragraphs_by_spacing_indent_and_columns() -> None:
    # Two columns; left: two paragraphs set apart by a blank line, right: a first-line indent.
    boxes = [[0, 0, 400, 20], [0, 28, 400, 48], [0, 56, 200, 76], [0, 110, 400, 130], [0, 138, 300, 158],
             [500, 0, 900, 20], [500, 28, 900, 48], [540, 56, 900, 76], [500, 84, 700, 104]]
    texts = ["a"] * 3 + ["b"] * 2 + ["c"] * 2 + ["d"] * 2
    assert paragraphs(boxes, texts) == [[0, 1, 2], [3, 4], [5, 6], [7, 8]]
    # A list: each marker starts an item.
    items = [[0, 0, 300, 20], [0, 28, 400, 48], [0, 56, 400, 76]]
    assert paragraphs(items, ["• one", "• two", "three"]) == [[0], [1, 2]]
    blocks = [{"label": "title", "text": "Notes", "order": 0}, {"label": "text", "text": "One *a*.\n• two\nthree", "order": 1}]
    assert page_markdown({"blocks": blocks}, {}) == "## Notes\n\nOne \\*a\\*.\n\n- two\n\nthree"
