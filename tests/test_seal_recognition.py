"""Seal text recognition on rendered seals (test_seal.draw_seal: text along the top 240° of a ring and a
straight line below): the arc unwarped around a fitted circle and read by the real recogniser, CER ≤ 5 %;
and the /seal-recognition endpoint."""

from __future__ import annotations

import base64

import cv2
import httpx
import pytest
from rapidfuzz.distance import Levenshtein

import hpinfer
from hpinfer.serving import ServeSettings, create_app
from test_seal import draw_seal
from test_serving_support import running

SEALS = [("上海市浦东新区人民政府办公室", 400), ("北京华夏科技有限公司", 300), ("广州市天河区市场监督管理局", 500)]


@pytest.fixture(scope="module")
def pipeline():
    with hpinfer.create_pipeline("seal_recognition") as pipe:
        yield pipe


def test_rendered_seals_read_with_low_cer(pipeline):
    errors = chars = 0
    for text, size in SEALS:
        (res,) = pipeline.predict(draw_seal(text, size))
        (seal,) = res["seal_res_list"]
        assert len(seal["dt_polys"]) == 2 and len(seal["rec_texts"]) == len(seal["rec_scores"]) == len(seal["rec_polys"])
        errors += Levenshtein.distance("".join(seal["rec_texts"]), text + "专用章")
        chars += len(text) + 3
    assert errors / chars <= 0.05, errors / chars


def test_seal_recognition_endpoint(pipeline):
    ok, png = cv2.imencode(".png", draw_seal())
    body = {"file": base64.b64encode(png.tobytes()).decode(), "fileType": 1, "sealRecScoreThresh": 0.5}
    with running(create_app(ServeSettings(), pipeline)) as url:
        answer = httpx.post(f"{url}/seal-recognition", json=body, timeout=60).json()
        (item,) = answer["result"]["sealRecResults"]
        assert item["prunedResult"]["seal_res_list"][0]["rec_texts"] == ["上海市浦东新区人民政府办公室", "专用章"]
        assert set(item["outputImages"]) == {"seal_res_img"}
        strict = httpx.post(f"{url}/seal-recognition", json={**body, "sealRecScoreThresh": 1.0}, timeout=60).json()
        assert strict["result"]["sealRecResults"][0]["prunedResult"]["seal_res_list"][0]["rec_texts"] == []
        small = httpx.post(f"{url}/seal-recognition", json={**body, "sealDetLimitSideLen": 8}, timeout=60).json()
        assert small["errorCode"] == 422 and "sealDetLimitSideLen" in small["errorMsg"]
        refused = httpx.post(f"{url}/seal-recognition", json={**body, "useLayoutDetection": True}, timeout=60).json()
        assert refused["errorCode"] == 422 and "useLayoutDetection" in refused["errorMsg"]
