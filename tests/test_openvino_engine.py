"""OpenVINO's uint8 image entry (normalisation inside the compiled model) against the host's float path."""

from __future__ import annotations

import numpy as np
import pytest

from hpinfer.errors import InputError
from hpinfer.io.inputs import iter_inputs
from hpinfer.models import create_model
from hpinfer.tasks.normalize import norm_factors, normalize_to_nchw
from hpinfer.tasks.text_detection import postprocess, resize_for_det

DET = "PP-OCRv4_mobile_det"


def test_uint8_entry_gives_the_float_paths_boxes(shared_images):
    with create_model(DET, use_hpip=True, hpi_config={"backend": "openvino"}) as model:
        p = model.params
        entry = model.session.image_runner(*norm_factors(p.mean, p.std))
        assert entry is not None
        for item in iter_inputs(str(shared_images)):
            resized = resize_for_det(item.image, p)
            on_host = model.session.run_one(normalize_to_nchw(resized, p.mean, p.std))[0]
            in_engine = entry(resized)[0]
            np.testing.assert_allclose(in_engine, on_host, atol=1e-4, err_msg=item.input_path)
            h, w = item.image.shape[:2]
            np.testing.assert_array_equal(postprocess(in_engine, h, w, p)[0], postprocess(on_host, h, w, p)[0])
        batch = np.stack([resized, resized[::-1]])  # a batch of two of the last shape
        np.testing.assert_allclose(entry(batch)[0][:1], entry(resized)[0], atol=1e-6)


def test_uint8_entry_keeps_the_dynamic_shapes_bounds(shared_images):
    bounds = {"x": [[1, 3, 32, 32], [1, 3, 736, 736], [1, 3, 1024, 1024]]}
    with create_model(DET, use_hpip=True, hpi_config={"backend": "openvino", "backend_config": {"dynamic_shapes": bounds}}) as model:
        entry = model.session.image_runner(*norm_factors(model.params.mean, model.params.std))
        assert entry(np.zeros((64, 96, 3), np.uint8))[0].shape == (1, 1, 64, 96)
        with pytest.raises(InputError, match="dynamic_shapes"):
            entry(np.zeros((64, 2048, 3), np.uint8))
