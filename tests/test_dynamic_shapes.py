"""dynamic_shapes on real models and engines: validation against the model's inputs, OpenVINO compiled for
the bounded range, batches split to fit, and other out-of-bounds inputs rejected with a clear error."""

from __future__ import annotations

import cv2
import numpy as np
import openvino as ov
import pytest

from hpinfer.errors import ConfigError, InputError
from hpinfer.models import create_model
from hpinfer.runtime.cache import ENV_CACHE_DIR

DET = "PP-OCRv4_mobile_det"
REC = "PP-OCRv4_mobile_rec"
DET_BOUNDS = [[1, 3, 32, 32], [1, 3, 736, 736], [1, 3, 1024, 1024]]
ENGINES = ["openvino", "onnxruntime"]


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "cache"))


def bounded(backend, shapes):
    return {"backend": backend, "backend_config": {"dynamic_shapes": shapes}}


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize(
    "shapes, message",
    [
        ({"img": DET_BOUNDS}, r"dynamic_shapes names input 'img', but ch_PP-OCRv4_det_infer\.onnx has inputs \['x'\]"),
        ({"x": [s[1:] for s in DET_BOUNDS]}, r"dynamic_shapes\['x'\] has rank 3, but the model input has rank 4"),
        ({"x": [[1, 1, 32, 32], [1, 3, 64, 64], [1, 4, 96, 96]]},
         r"dynamic_shapes\['x'\] lets dimension 1 vary \(1\.\.4\), but ch_PP-OCRv4_det_infer\.onnx fixes it at 3"),
    ],
)
def test_bounds_that_do_not_fit_the_model_are_config_errors(backend, shapes, message):
    with pytest.raises(ConfigError, match=message):
        create_model(DET, use_hpip=True, hpi_config=bounded(backend, shapes))


def test_openvino_compiles_for_the_bounded_range():
    with create_model(DET, use_hpip=True, hpi_config=bounded("openvino", {"x": DET_BOUNDS})) as model:
        ir = ov.Core().read_model(str(model.session.artifact / "model.xml"))
    assert str(ir.inputs[0].get_partial_shape()) == "[1,3,32..1024,32..1024]"


@pytest.mark.parametrize("backend", ENGINES)
def test_inputs_within_bounds_give_the_unbounded_results(backend, shared_images):
    image = str(shared_images / "paragraph_en.jpg")  # 709x132 -> a 736x3968 input: widen the bounds to hold it
    shapes = {"x": [[1, 3, 32, 32], [1, 3, 736, 736], [1, 3, 736, 4096]]}
    with create_model(DET, use_hpip=True, hpi_config={"backend": backend}) as free:
        expected = free.predict(image)[0]["dt_polys"]
    with create_model(DET, use_hpip=True, hpi_config=bounded(backend, shapes)) as model:
        np.testing.assert_array_equal(model.predict(image)[0]["dt_polys"], expected)


@pytest.mark.parametrize("backend", ENGINES)
def test_an_input_outside_the_bounds_is_rejected_with_the_setting_to_change(backend, shared_images):
    with create_model(DET, use_hpip=True, hpi_config=bounded(backend, {"x": DET_BOUNDS})) as model:
        with pytest.raises(InputError) as info:
            model.predict(str(shared_images / "paragraph_en.jpg"))  # preprocessed to 736 x 3968
    message = str(info.value)
    assert "input 'x' has shape (1, 3, 736, 3968): dimension 3 = 3968 is outside" in message
    assert "dynamic_shapes [32, 1024]" in message and "limit_side_len" in message


@pytest.mark.parametrize("backend", ENGINES)
def test_a_batch_larger_than_the_bound_is_split_to_fit(backend, shared_images):
    crops = [np.ascontiguousarray(np.full((48, 100 + 40 * i, 3), 255, np.uint8)) for i in range(5)]
    line = cv2.imread(str(shared_images / "single_line.jpg"))
    crops += [line, line[:, : line.shape[1] // 2]]
    shapes = {"x": [[1, 3, 48, 32], [2, 3, 48, 320], [2, 3, 48, 2048]]}
    with create_model(REC, use_hpip=True, hpi_config={"backend": backend}) as free:
        expected = free.recognize(crops)
    with create_model(REC, use_hpip=True, hpi_config=bounded(backend, shapes), batch_size=6) as model:
        engine_run, batches = model.session._run, []
        model.session._run = lambda feeds: batches.append(len(feeds["x"])) or engine_run(feeds)
        got = model.recognize(crops)  # batches of up to 6 crops run as pieces of at most 2
    assert batches == [2, 2, 2, 1]  # 7 crops: a batch of 6 in three pieces, then one
    assert [t for t, _ in got] == [t for t, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-4)
    assert got[5][0] == "在中国作家协会第三届儿童文学"
