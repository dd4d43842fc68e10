"""The OCR pipeline's own behaviour: batching across images, per-call options, saved results."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import hpinfer
from hpinfer.io import iter_inputs

NAMES = ["doc_page_zh_en.jpg", "ja_lines.jpg", "paragraph_en.jpg", "wide_line.jpg", "empty_black.jpg", "single_line.jpg"]


@pytest.fixture(scope="module")
def ocr():
    with hpinfer.create_pipeline("OCR") as pipeline:
        yield pipeline


@pytest.fixture(scope="module")
def images(shared_images):
    return [next(iter(iter_inputs(str(shared_images / name)))).image for name in NAMES]


def test_batch_of_images_gives_each_image_its_own_result(ocr, images):
    """Lines of all images go through the recogniser together, padded as they would be alone."""
    alone = [ocr.predict(image)[0] for image in images]
    together = ocr.predict_batch(images)
    assert len(together) == len(images)
    for name, a, b in zip(NAMES, alone, together):
        assert a["rec_texts"] == b["rec_texts"], name
        np.testing.assert_allclose(a["rec_scores"], b["rec_scores"], atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(a["rec_polys"], b["rec_polys"], err_msg=name)


def test_engine_batch_size_does_not_change_results(images):
    """max_batch_size is speed only: one line per engine call reads the same as many."""
    with hpinfer.create_pipeline("OCR") as wide, hpinfer.create_pipeline("OCR") as narrow:
        narrow.text_rec.params = narrow.text_rec.with_overrides({"max_batch_size": 1})
        for image in images[:3]:
            assert wide.predict(image)[0]["rec_texts"] == narrow.predict(image)[0]["rec_texts"]


def test_per_call_options(ocr, images):
    page = images[0]
    default = ocr.predict(page)[0]
    strict = ocr.predict(page, text_rec_score_thresh=0.99)[0]
    assert 0 < len(strict["rec_texts"]) < len(default["rec_texts"])
    assert all(score >= 0.99 for score in strict["rec_scores"])
    plain = ocr.predict(page, use_textline_orientation=False)[0]
    assert set(plain["textline_orientation_angles"]) == {-1}
    assert ocr.predict(page, text_det_box_thresh=0.9)[0]["text_det_params"]["box_thresh"] == 0.9


def test_results_save_json_and_picture(ocr, shared_images, tmp_path):
    (result,) = ocr.predict(str(shared_images / "paragraph_en.jpg"))
    json_path = result.save_to_json(tmp_path)
    img_path = result.save_to_img(tmp_path)
    assert json_path.name == "paragraph_en_res.json" and img_path.name == "paragraph_en_ocr_res_img.png"
    saved = json.loads(json_path.read_text(encoding="utf-8"))["res"]
    assert saved["rec_texts"] == result["rec_texts"] and saved["input_path"].endswith("paragraph_en.jpg")
    assert len(saved["rec_boxes"]) == len(saved["rec_polys"]) == len(saved["rec_texts"])
    with Image.open(img_path) as picture:
        assert picture.size == (2 * 709, 132)


def test_pdf_pages_stream_with_their_index(ocr, shared_images, tmp_path):
    pages = [Image.open(shared_images / name).convert("RGB") for name in ("single_line.jpg", "empty_black.jpg", "paragraph_en.jpg")]
    pdf = tmp_path / "three.pdf"
    pages[0].save(pdf, "PDF", save_all=True, append_images=pages[1:])
    results = list(ocr.predict_iter(str(pdf)))
    assert [r["page_index"] for r in results] == [0, 1, 2]
    assert results[0]["rec_texts"] == ["在中国作家协会第三届儿童文学"]
    assert results[1]["rec_texts"] == []
    assert any("MovieShots" in text for text in results[2]["rec_texts"])


def test_doc_orientation_turns_pages_upright_before_ocr(images):
    page = images[2]  # paragraph_en.jpg
    with hpinfer.create_pipeline("OCR", use_doc_orientation_classify=True) as ocr:
        upright = ocr.predict(page)[0]["rec_texts"]
        for quarter_turns, angle in ((1, 270), (2, 180), (3, 90)):
            result = ocr.predict(np.ascontiguousarray(np.rot90(page, quarter_turns)))[0]
            assert result["doc_preprocessor_res"]["angle"] == angle
            assert result["rec_texts"] == upright
            assert result.image.shape == page.shape  # boxes refer to the upright page shown in pictures
    with hpinfer.create_pipeline("OCR") as plain:
        assert "DocOrientationClassify" not in plain.sub_modules
        with pytest.raises(hpinfer.ConfigError, match="use_doc_orientation_classify"):
            plain.predict(page, use_doc_orientation_classify=True)
