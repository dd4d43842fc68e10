"""The OCR pipeline's host work as torch ops (``torch_engine.device_ops``), run here on CPU torch against the
numpy/OpenCV path they would replace on a GPU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hpinfer.io import iter_inputs
from hpinfer.models import create_model, resolve_model
from hpinfer.tasks import text_detection
from hpinfer.pipelines.ocr import crop_quad

torch = pytest.importorskip("torch")
from hpinfer.runtime.engines.torch_engine import device_ops  # noqa: E402

DET = "PP-OCRv4_mobile_det"


def _image(shared_images, name):
    return next(iter(iter_inputs(str(shared_images / name)))).image


@pytest.fixture(scope="module")
def page_and_map(shared_images):
    """A real page and the detector's probability map of it (ONNX Runtime, the reference)."""
    page = _image(shared_images, "doc_page_zh_en.jpg")
    spec = resolve_model(DET)
    params = text_detection.DetParams(**spec.params)
    with create_model(DET) as det:
        prob = det.session.run_one(text_detection.preprocess(page, params))[0][0, 0]
        boxes = det.predict(page)[0]["dt_polys"]
    return page, prob, params, boxes


def test_db_mask_is_the_host_threshold_and_dilation(page_and_map):
    _, prob, params, _ = page_and_map
    for thresh in (params.thresh, 0.5, 0.05):
        want = (prob > thresh).astype(np.uint8)
        dilated = cv2.dilate(want, np.ones((2, 2), dtype=np.uint8))
        np.testing.assert_array_equal(device_ops.db_mask(torch.from_numpy(prob)[None], thresh, False)[0].numpy(), want)
        np.testing.assert_array_equal(device_ops.db_mask(torch.from_numpy(prob)[None], thresh, True)[0].numpy(), dilated)
    assert want.any() and not want.all()  # a real map: both values present


def test_batched_line_crops_are_close_to_opencvs(page_and_map):
    """Same sizes and within a few grey levels of cv2.warpPerspective(INTER_CUBIC, BORDER_REPLICATE) for every
    detected line of a real page; not identical (OpenCV's fixed-point sampling), hence not a default path."""
    page, _, _, boxes = page_and_map
    quads = boxes.astype(np.float32)
    sizes = device_ops.quad_sizes(quads)
    got = device_ops.warp_quads(torch.from_numpy(page), quads, sizes)
    diffs = []
    for quad, crop in zip(quads, got):
        want = crop_quad(page, quad)
        crop = crop.numpy()
        if want.shape != crop.shape:  # crop_quad turns tall lines upright
            crop = np.ascontiguousarray(np.rot90(crop))
        assert want.shape == crop.shape
        diffs.append(np.abs(want.astype(int) - crop.astype(int)))
    every = np.concatenate([d.ravel() for d in diffs])
    assert len(diffs) == len(boxes) > 50
    assert every.max() <= 2 and (every > 0).mean() < 0.01, (every.max(), (every > 0).mean())  # 2026-12-04: 1, 0.014 %
