"""/layout-parsing (PaddleX's PP-StructureV3 shapes) and page orientation over HTTP (useDocOrientationClassify),
each against a real uvicorn server on 127.0.0.1 with the real models."""

from __future__ import annotations

import base64

import cv2
import httpx
import numpy as np
import pytest

import hpinfer
from hpinfer.serving import ServeSettings, create_app
from test_serving_support import b64, make_pdf, running

PAGE = "doc_page_zh_en.jpg"


def decodes(text: str) -> bool:
    return cv2.imdecode(np.frombuffer(base64.b64decode(text), np.uint8), cv2.IMREAD_COLOR) is not None


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()  # lossless, so that the server sees these very pixels


@pytest.fixture(scope="module")
def layout():
    with hpinfer.create_pipeline("layout_parsing") as pipeline:
        with running(create_app(ServeSettings(max_pdf_pages=3), pipeline)) as url:
            yield pipeline, url


@pytest.fixture(scope="module")
def page(shared_images):
    return cv2.imread(str(shared_images / PAGE))


def parse(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/layout-parsing", json=body, timeout=180)


def test_image_page(layout, page, shared_images):
    pipeline, url = layout
    expected = pipeline.predict(page, use_doc_orientation_classify=False)[0]
    answer = parse(url, file=b64((shared_images / PAGE).read_bytes()), fileType=1).json()
    assert answer["errorCode"] == 0, answer
    result = answer["result"]
    assert result["dataInfo"] == {"width": page.shape[1], "height": page.shape[0], "type": "image"}
    (one,) = result["layoutParsingResults"]
    pruned = one["prunedResult"]
    assert "input_path" not in pruned and pruned["page_index"] is None and pruned["status"] == "ok"
    assert [b["text"] for b in pruned["blocks"]] == [b["text"] for b in expected["blocks"]]
    text = one["markdown"]["text"]
    # Real text, in reading order: the section title first, the left column's paragraph before the right one's.
    title = text.index("基于深度学习的表格结构识别方法")
    assert text.startswith("## ") and title < text.index("自底向上的方法") < text.index("图像文本生成方法是指")
    images = one["markdown"]["images"]
    assert images and all(decodes(v) for v in images.values())
    assert all(f"]({name})" in text for name in images)  # every image is linked where it belongs
    assert one["markdown"]["isStart"] is True and one["markdown"]["isEnd"] is True
    assert set(one["outputImages"]) == {"layout_det_res"} and decodes(one["outputImages"]["layout_det_res"])
    assert decodes(one["inputImage"])


def test_tables_as_html_or_pictures(layout, shared_images):
    _, url = layout
    body = {"file": b64((shared_images / PAGE).read_bytes()), "visualize": False}
    (html,) = parse(url, **body).json()["result"]["layoutParsingResults"]
    (pictures,) = parse(url, **body, useTableRecognition=False).json()["result"]["layoutParsingResults"]
    assert html["markdown"]["text"].count("<table>") == 2 and "img_in_table" not in html["markdown"]["text"]
    assert "Shigarov" in html["markdown"]["text"] and all("img_in_table" not in name for name in html["markdown"]["images"])
    assert "<table>" not in pictures["markdown"]["text"] and pictures["markdown"]["text"].count("img_in_table") == 2


def test_two_page_pdf(layout, page, shared_images, tmp_path):
    _, url = layout
    pdf = make_pdf([shared_images / PAGE] * 2, tmp_path / "two.pdf").read_bytes()
    result = parse(url, file=b64(pdf), fileType=0, visualize=False, returnMarkdownImages=False).json()["result"]
    assert result["dataInfo"]["type"] == "pdf" and result["dataInfo"]["numPages"] == 2
    pages = result["layoutParsingResults"]
    assert [p["prunedResult"]["page_index"] for p in pages] == [0, 1]
    assert all(p["prunedResult"]["status"] == "ok" for p in pages)
    assert pages[0]["markdown"]["text"] == pages[1]["markdown"]["text"] and "表格结构识别" in pages[0]["markdown"]["text"]
    assert all(set(p) == {"prunedResult", "markdown"} and p["markdown"]["images"] is None for p in pages)


@pytest.mark.parametrize("body, fragment", [
    ({"file": "@@@"}, "neither an http(s) URL nor valid base64"),
    ({"file": b64(b"x"), "sealRecScoreThresh": 0.5}, "sealRecScoreThresh: not supported"),
    ({"file": b64(b"x"), "layoutNms": False}, "layoutNms: not supported"),
    ({"file": b64(b"x"), "layoutThreshold": {"0": 0.5}}, "layoutThreshold"),
    ({"file": b64(b"x"), "useTextlineOrientation": True}, "without the TextLineOrientation model"),
    ({"file": b64(b"not an image")}, "not a supported image"),
], ids=["base64", "seal", "nms", "threshold", "textline", "not an image"])
def test_bad_requests(layout, body, fragment):
    _, url = layout
    answer = parse(url, **body)
    assert answer.status_code == 422 and fragment in answer.json()["errorMsg"], answer.json()


def test_turned_page_reads_as_upright(layout, page):
    _, url = layout
    upright = parse(url, file=b64(jpeg(page)), visualize=False, returnMarkdownImages=False).json()["result"]
    turned = parse(url, file=b64(jpeg(np.rot90(page, -1))), useDocOrientationClassify=True, returnMarkdownImages=False,
                   visualize=True).json()["result"]
    (a,), (b,) = upright["layoutParsingResults"], turned["layoutParsingResults"]
    assert b["prunedResult"]["angle"] == 90 and a["markdown"]["text"] == b["markdown"]["text"]
    assert decodes(b["outputImages"]["preprocessed_img"])


def test_ocr_doc_orientation(page):
    band = page[80:240]  # the title and two paragraphs: enough text to tell the orientation, quick to read
    settings = ServeSettings(pipeline_options={"use_doc_orientation_classify": True})
    with running(create_app(settings)) as url:  # the app builds the pipeline with the orientation model
        def ocr(image: np.ndarray, **options) -> dict:
            body = {"file": b64(jpeg(image)), "textDetLimitType": "max", "textDetLimitSideLen": 960, **options}
            answer = httpx.post(f"{url}/ocr", json=body, timeout=120).json()
            assert answer["errorCode"] == 0, answer
            return answer["result"]["ocrResults"][0]

        upright = ocr(band, useDocOrientationClassify=False, visualize=False)
        turned = ocr(np.rot90(band, -1), useDocOrientationClassify=True)
        assert upright["prunedResult"]["rec_texts"] and turned["prunedResult"]["rec_texts"] == upright["prunedResult"]["rec_texts"]
        assert turned["prunedResult"]["doc_preprocessor_res"]["angle"] == 90
        shapes = {k: cv2.imdecode(np.frombuffer(base64.b64decode(turned[k]), np.uint8), cv2.IMREAD_COLOR).shape[:2]
                  for k in ("inputImage", "docPreprocessingImage", "ocrImage")}
        assert shapes["inputImage"] == band.shape[1::-1] and shapes["docPreprocessingImage"] == band.shape[:2]
        assert set(upright) == {"prunedResult"}


def test_client_saves_markdown_and_images(layout, shared_images, tmp_path, capsys):
    _, url = layout
    from hpinfer.serving.cli import main as serving_main

    code = serving_main(["client", "--url", f"{url}/layout-parsing", "--input", str(shared_images / PAGE),
                         "--save_path", str(tmp_path), "--no_visualize"])
    assert code == 0 and "基于深度学习的表格结构识别方法" in capsys.readouterr().out
    markdown = (tmp_path / "doc_page_zh_en_0.md").read_text(encoding="utf-8")
    linked = [line.split("](")[1].rstrip(")") for line in markdown.splitlines() if line.startswith("![")]
    assert linked and all(cv2.imread(str(tmp_path / name)) is not None for name in linked)
