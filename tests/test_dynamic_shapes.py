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
        batches = []
        with model.session.watching_feeds(lambda feeds: batches.append(len(feeds["x"]))):  # once per engine call
            got = model.recognize(crops)  # batches of up to 6 crops run as pieces of at most 2
    assert batches == [2, 2, 2, 1]  # 7 crops: a batch of 6 in three pieces, then one
    assert [t for t, _ in got] == [t for t, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-4)
    assert got[5][0] == "在中国作家协会第三届儿童文学"


# --- default bounds: only for engines that need bounds, only when the user gives none ------------------

from hpinfer.config import BackendConfig  # noqa: E402
from hpinfer.device import Device  # noqa: E402
from hpinfer.models import BUILT_IN, resolve_model  # noqa: E402
from hpinfer.tasks import TASKS, default_shapes  # noqa: E402
from hpinfer.runtime.shapes import bounds_for, fit_to_model, model_defaults  # noqa: E402


def spec_defaults(name):
    spec = resolve_model(name)
    return spec.default_shapes(TASKS[spec.task].params_type.model_validate(dict(spec.params)))


def test_every_built_in_model_has_default_bounds_that_fit_its_input():
    import onnx

    for name in BUILT_IN:
        shapes = spec_defaults(name)
        model = onnx.load(str(resolve_model(name).model_file), load_external_data=False)
        dims = [d.dim_value if d.dim_value > 0 else None for d in model.graph.input[0].type.tensor_type.shape.dim]
        fitted = fit_to_model(shapes, dims)
        assert fitted is not None, name
        BackendConfig(dynamic_shapes={"x": fitted})  # valid as if the user had written it: 1 <= min <= opt <= max
        for axis, dim in enumerate(dims):
            if dim is not None:
                assert fitted[0][axis] == fitted[1][axis] == fitted[2][axis] == dim, (name, axis)


def test_default_bounds_follow_the_models_parameters():
    assert spec_defaults(DET) == [[1, 3, 32, 32], [1, 3, 736, 736], [1, 3, 2048, 2048]]
    assert spec_defaults("PP-OCRv5_mobile_det")[2] == [1, 3, 4000, 4000]  # its max_side_limit (a multiple of 32)
    assert spec_defaults(REC) == [[1, 3, 48, 8], [6, 3, 48, 320], [32, 3, 48, 3200]]
    assert default_shapes("text_recognition", {"image_shape": [3, 32, 100], "max_batch_size": 8, "batch_size": 16}) == [
        [1, 3, 32, 8], [8, 3, 32, 100], [8, 3, 32, 3200]]
    assert spec_defaults("ch_ppocr_mobile_v2.0_cls") == [[1, 3, 48, 192], [6, 3, 48, 192], [32, 3, 48, 192]]
    assert spec_defaults("PicoDet_layout_1x_CDLA") == [[1, 3, 800, 608]] * 3
    assert default_shapes("no_such_task", {}) is None


def test_bounds_for_prefers_the_users_dynamic_shapes_then_the_models_defaults():
    trt_shape = (-1, 3, -1, -1)  # TensorRT marks dynamic dimensions -1
    defaults = spec_defaults(DET)
    assert bounds_for(BackendConfig(), "x", 0, trt_shape) is None  # no defaults installed: the engine's own range
    with model_defaults(defaults):
        assert bounds_for(BackendConfig(), "x", 0, trt_shape) == defaults
        assert bounds_for(BackendConfig(), "y", 1, trt_shape) is None  # defaults describe the first input only
        assert bounds_for(BackendConfig(), "x", 0, (-1, 3, 640, 640)) == [[1, 3, 640, 640]] * 3  # static dims win
        assert bounds_for(BackendConfig(), "x", 0, (-1, 3, 48)) is None  # another rank: not this model's input
        user = BackendConfig(dynamic_shapes={"x": DET_BOUNDS})
        assert bounds_for(user, "x", 0, trt_shape) == DET_BOUNDS
        assert bounds_for(user, "other", 1, trt_shape) is None
    assert bounds_for(BackendConfig(), "x", 0, trt_shape) is None  # the scope ended


def test_tensorrt_profile_falls_back_to_the_models_defaults():
    from hpinfer.runtime.engines.tensorrt import DEFAULT_RANGE, _profile_shapes

    shape = (-1, 3, 48, -1)
    generic = _profile_shapes(shape, bounds_for(BackendConfig(), "x", 0, shape))
    assert generic[2] == (DEFAULT_RANGE[0][2], 3, 48, DEFAULT_RANGE["other"][2])
    with model_defaults(spec_defaults(REC)):
        assert _profile_shapes(shape, bounds_for(BackendConfig(), "x", 0, shape)) == (
            (1, 3, 48, 8), (6, 3, 48, 320), (32, 3, 48, 3200))


def test_torch_batch_buckets_fall_back_to_the_models_defaults_and_other_engines_stay_dynamic():
    pytest.importorskip("torch")
    from hpinfer.runtime.engines.torch_engine import TorchEngine, batch_buckets
    from hpinfer.runtime.loader import open_session
    from hpinfer.config import HPIConfig

    path, cpu = resolve_model("ch_ppocr_mobile_v2.0_cls").model_file, Device("cpu")
    defaults = spec_defaults("ch_ppocr_mobile_v2.0_cls")
    with model_defaults(defaults):
        session = TorchEngine.load(path, BackendConfig(cpu_num_threads=1), cpu)
        assert session.buckets == batch_buckets(1, 32) and session.pad_batch
        user = BackendConfig(cpu_num_threads=1, dynamic_shapes={"x": [[2, 3, 48, 192], [4, 3, 48, 192], [8, 3, 48, 192]]})
        assert TorchEngine.load(path, user, cpu).buckets == [2, 4, 8]
    assert TorchEngine.load(path, BackendConfig(cpu_num_threads=1), cpu).buckets == []  # no defaults: unbucketed
    # The loader installs the defaults; ONNX Runtime and OpenVINO sessions stay unbounded.
    for backend in ENGINES:
        hpi = HPIConfig(backend=backend, backend_config={"cpu_num_threads": 1})
        with open_session("cls", path, cpu, True, hpi, default_shapes=defaults) as opened:
            assert opened.shape_bounds is None
            assert opened.run_one(np.zeros((40, 3, 48, 192), np.float32))[0].shape[0] == 40
