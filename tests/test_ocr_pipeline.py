"""The OCR pipeline's own behaviour: batching across images, per-call options, saved results."""

from __future__ import annotations

import json
import threading

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


@pytest.mark.parametrize("hpi", [None, {"backend": "openvino"}], ids=["onnxruntime", "openvino"])
def test_pages_of_one_size_are_detected_in_one_engine_call_with_the_same_results(hpi, images):
    """Two crops of a real page at one size, one of another size: two detector calls, not three, when asked
    for (the default on a GPU; on a CPU one page per call is as fast or faster)."""
    page = images[0]
    same_size = [page[:800, :600], page[77:877, 21:621], page[:500, :500]]
    with hpinfer.create_pipeline("OCR", use_hpip=hpi is not None, hpi_config=hpi) as ocr:
        alone = [ocr.predict(image)[0] for image in same_size]
        detector = ocr.text_det
        batches, run = [], detector._probability_maps
        detector._probability_maps = lambda resized, p: (batches.append(len(resized)), run(resized, p))[1]
        ocr.predict_batch(same_size)
        assert batches == [1, 1, 1]
        batches.clear()
        ocr.text_det.params = ocr.text_det.with_overrides({"max_batch_size": 8})
        together = ocr.predict_batch(same_size)
    assert sorted(batches) == [1, 2]
    for a, b in zip(alone, together):
        assert a["rec_texts"] == b["rec_texts"]
        np.testing.assert_array_equal(a["dt_polys"], b["dt_polys"])
        np.testing.assert_allclose(a["rec_scores"], b["rec_scores"], atol=1e-6)


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


def _same(a, b) -> bool:
    keys = ("input_path", "page_index", "rec_texts", "rec_scores", "textline_orientation_angles")
    return all(a[k] == b[k] for k in keys) and all(np.array_equal(a[k], b[k]) for k in ("dt_polys", "rec_polys", "rec_boxes"))


def _stage_threads() -> int:
    return sum(t.name.startswith(("hpinfer-stage", "hpinfer-source")) for t in threading.enumerate())


def test_stage_threads_give_the_sequential_results_in_order(ocr, shared_images, tmp_path):
    """Directory, list and PDF input through the three stage threads: the same results, bit for bit, as one
    image at a time, in input order. On a CPU they are off unless asked for (they did not pay there)."""
    files = sorted(str(p) for p in shared_images.iterdir())
    stream = ocr.predict_iter(files)
    next(stream)
    assert _stage_threads() == 0  # the CPU default: one image after the other in this thread
    stream.close()
    sequential = ocr.predict(files, use_queues=False)
    for queued in (ocr.predict(files, use_queues=True), ocr.predict(str(shared_images), use_queues=True, queue_size=1)):
        assert len(queued) == len(sequential) == len(files)
        assert all(_same(a, b) for a, b in zip(sequential, queued))
    pages = [Image.open(shared_images / name).convert("RGB") for name in ("paragraph_en.jpg", "single_line.jpg", "ja_lines.jpg")]
    pdf = tmp_path / "pages.pdf"
    pages[0].save(pdf, "PDF", save_all=True, append_images=pages[1:])
    queued = list(ocr.predict_iter(str(pdf), page_range=(2, 3), use_queues=True))
    assert [r["page_index"] for r in queued] == [1, 2]
    assert all(_same(a, b) for a, b in zip(ocr.predict(str(pdf), page_range=(2, 3), use_queues=False), queued))


def test_stage_threads_raise_a_bad_input_where_it_is(ocr, shared_images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    stream = ocr.predict_iter([str(shared_images / "single_line.jpg"), str(bad), str(shared_images / "tiny.png")], use_queues=True)
    assert next(stream)["rec_texts"] == ["在中国作家协会第三届儿童文学"]
    assert _stage_threads() > 0
    with pytest.raises(hpinfer.InputError, match="broken.jpg"):
        next(stream)


def test_openvino_streams_setting(images):
    """cpu_num_streams compiles that many OpenVINO streams (threads split among them): same texts."""
    pytest.importorskip("openvino")
    hpi = {"backend": "openvino", "backend_config": {"cpu_num_threads": 2, "cpu_num_streams": 2}}
    with hpinfer.create_pipeline("OCR", use_hpip=True, hpi_config=hpi) as streamed, \
            hpinfer.create_pipeline("OCR", use_hpip=True, hpi_config={"backend": "openvino"}) as plain:
        assert "streams=2" in streamed.text_rec.session.settings
        assert "streams" not in plain.text_rec.session.settings
        # every model would pin its streams to the same first cores: two models running at once shared one
        for module in (streamed.text_det, streamed.text_rec):
            assert module.session._pool.compiled.get_property("ENABLE_CPU_PINNING") is False
        assert [r["rec_texts"] for r in streamed.predict(images[:3])] == [r["rec_texts"] for r in plain.predict(images[:3])]
