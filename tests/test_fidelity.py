"""Same models, same results: our OCR against the reference implementations, on every CPU engine.

PP-OCRv4 mobile is compared with rapidocr_onnxruntime 1.4.4 and PP-OCRv6 small with rapidocr 3.10,
each run here on the same pixels (our decoder's output: the references ignore EXIF orientation).
"""

from __future__ import annotations

import numpy as np
import pytest

import hpinfer
from hpinfer.io import iter_inputs

BOX_TOLERANCE_PX = 2
IMAGES = [
    "bilevel_test.png", "doc_page_zh_en.jpg", "empty_black.jpg", "exif_rotated.jpg", "ja_lines.jpg",
    "paragraph_en.jpg", "single_line.jpg", "tiny.png", "vertical_text.png", "wide_line.jpg",
]
ENGINES = ["onnxruntime", "openvino"]


@pytest.fixture(scope="module")
def pixels(shared_images):
    return {name: next(iter(iter_inputs(str(shared_images / name)))).image for name in IMAGES}


def _reference_v4(pixels):
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    out = {}
    for name, image in pixels.items():
        lines, _ = engine(image)
        lines = lines or []
        out[name] = ([line[1] for line in lines], np.array([line[0] for line in lines]).reshape(-1, 4, 2))
    return out


def _reference_v6(pixels):
    from rapidocr import RapidOCR

    engine = RapidOCR(params={"Global.log_level": "error"})
    out = {}
    for name, image in pixels.items():
        res = engine(image)
        texts = list(res.txts) if res.txts is not None else []
        boxes = np.array(res.boxes).reshape(-1, 4, 2) if texts else np.zeros((0, 4, 2))
        out[name] = (texts, boxes)
    return out


@pytest.fixture(scope="module")
def reference(pixels):
    return {"OCR_PP-OCRv4_mobile": _reference_v4(pixels), "OCR_PP-OCRv6_small": _reference_v6(pixels)}


@pytest.fixture(scope="module", params=[(p, e) for p in ("OCR_PP-OCRv4_mobile", "OCR_PP-OCRv6_small") for e in ENGINES], ids=lambda x: f"{x[0]}-{x[1]}")
def ours(request, pixels):
    pipeline_name, engine = request.param
    pipe = hpinfer.create_pipeline(pipeline_name, use_hpip=True, hpi_config={"backend": engine})
    assert {p.session.backend for p in pipe.predictors} == {engine}
    results = {name: pipe.predict(image)[0] for name, image in pixels.items()}
    pipe.close()
    return pipeline_name, results


def _in_reading_order(texts, boxes):
    return sorted(zip(texts, boxes.tolist()), key=lambda tb: (tb[0], tb[1]))


def test_same_lines_as_reference(ours, reference):
    pipeline_name, results = ours
    for name in IMAGES:
        ref_texts, ref_boxes = reference[pipeline_name][name]
        got_texts, got_boxes = results[name]["rec_texts"], np.asarray(results[name]["rec_polys"]).reshape(-1, 4, 2)
        if pipeline_name != "OCR_PP-OCRv4_mobile":
            # rapidocr 3 groups lines with a different (vectorised) sort; PaddleOCR's order is ours.
            ref_pairs, got_pairs = _in_reading_order(ref_texts, ref_boxes), _in_reading_order(got_texts, got_boxes)
            ref_texts, ref_boxes = [t for t, _ in ref_pairs], np.array([b for _, b in ref_pairs]).reshape(-1, 4, 2)
            got_texts, got_boxes = [t for t, _ in got_pairs], np.array([b for _, b in got_pairs]).reshape(-1, 4, 2)
        assert got_texts == ref_texts, f"{pipeline_name} {name}: texts differ"
        if ref_texts:
            deviation = np.abs(got_boxes - ref_boxes).max()
            assert deviation <= BOX_TOLERANCE_PX, f"{pipeline_name} {name}: boxes off by {deviation:.1f}px"


def test_known_facts(ours):
    _, results = ours
    assert results["single_line.jpg"]["rec_texts"] == ["在中国作家协会第三届儿童文学"]
    assert results["exif_rotated.jpg"]["rec_texts"] == ["我是中国人"]
    assert results["empty_black.jpg"]["rec_texts"] == [] and results["tiny.png"]["rec_texts"] == []
    assert results["bilevel_test.png"]["rec_texts"] == ["TEST"]
    assert "".join(results["paragraph_en.jpg"]["rec_texts"]).replace(" ", "").startswith("3MovieShotsDataset")
    assert len(results["doc_page_zh_en.jpg"]["rec_texts"]) > 50


def test_decoding_matches_reference_loader(shared_images, pixels):
    """Our decoder gives the reference's pixels for every file without an EXIF rotation."""
    from rapidocr_onnxruntime.utils import LoadImage

    load = LoadImage()
    for name in IMAGES:
        if name == "exif_rotated.jpg":
            np.testing.assert_array_equal(pixels[name], np.rot90(load(str(shared_images / name)), 2))
        else:
            np.testing.assert_array_equal(pixels[name], load(str(shared_images / name)), err_msg=name)
