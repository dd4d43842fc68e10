"""The single-model pipelines' endpoints (PaddleX's image classification and object-detection shapes)."""

from __future__ import annotations

import base64

import cv2
import httpx
import numpy as np
import pytest

import hpinfer
from hpinfer.serving import ServeSettings, create_app
from test_serving_support import b64, make_pdf, running, static_files

PAGE = "doc_page_zh_en.jpg"


@pytest.fixture(scope="module")
def page(shared_images):
    return (shared_images / PAGE).read_bytes()


def test_image_classification(page, tmp_path, shared_images):
    with hpinfer.create_pipeline("image_classification") as pipeline:
        expected = pipeline.predict(cv2.imread(str(shared_images / PAGE)), topk=2)[0]
        settings = ServeSettings(allow_private_urls=True)
        make_pdf([shared_images / PAGE], tmp_path / "page.pdf")
        (tmp_path / PAGE).write_bytes(page)
        with running(create_app(settings, pipeline)) as url, static_files(tmp_path) as files:
            answer = httpx.post(f"{url}/image-classification", json={"image": b64(page), "topk": 2}, timeout=60).json()
            result = answer["result"]
            assert [c["name"] for c in result["categories"]] == expected["label_names"]
            assert [c["id"] for c in result["categories"]] == expected["class_ids"]
            assert cv2.imdecode(np.frombuffer(base64.b64decode(result["image"]), np.uint8), cv2.IMREAD_COLOR) is not None
            by_url = httpx.post(f"{url}/image-classification", json={"image": f"{files}/{PAGE}", "visualize": False}).json()
            assert set(by_url["result"]) == {"categories"} and len(by_url["result"]["categories"]) == 1
            pdf = httpx.post(f"{url}/image-classification", json={"image": b64((tmp_path / "page.pdf").read_bytes())}).json()
            assert pdf["errorCode"] == 422 and "image: is a PDF but an image was expected" in pdf["errorMsg"]
            assert httpx.post(f"{url}/image-classification", json={"image": b64(page), "topk": 0}).status_code == 422
            assert httpx.post(f"{url}/ocr", json={"file": b64(page)}).status_code == 404  # one pipeline per server


def test_layout_detection(page):
    with running(create_app(ServeSettings(pipeline="layout_detection"))) as url:  # the app loads the models itself
        result = httpx.post(f"{url}/layout-detection", json={"image": b64(page), "visualize": False}, timeout=60).json()["result"]
        objects = result["detectedObjects"]
        assert objects and set(objects[0]) == {"bbox", "categoryId", "categoryName", "score"} and len(objects[0]["bbox"]) == 4
        strict = httpx.post(f"{url}/layout-detection", json={"image": b64(page), "threshold": 0.9}, timeout=60).json()["result"]
        assert len(strict["detectedObjects"]) < len(objects) and "image" in strict
        assert all(o["score"] >= 0.9 for o in strict["detectedObjects"])
        wrong = httpx.post(f"{url}/layout-detection", json={"image": b64(page), "threshold": {"0": 0.5}}).json()
        assert wrong["errorCode"] == 422 and "threshold" in wrong["errorMsg"]
