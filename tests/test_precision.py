"""Reduced precision on real models and engines: int8 calibration and its cached table, per-layer exclusions,
the accuracy guard's drift measurement, and safe mode refusing a precision that drifts too far."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from hpinfer.config import BackendConfig, CalibrationConfig, HPIConfig
from hpinfer.device import Device
from hpinfer.models import bind_task, create_model, resolve_model
from hpinfer.runtime import accuracy, quantize
from hpinfer.runtime.auto_config import choose_engine, precision_ladder, why_not
from hpinfer.runtime.cache import ENV_CACHE_DIR
from hpinfer.runtime.hardware import cpu_has_fast_bf16
from hpinfer.tasks import TASKS
from hpinfer.tasks.text_recognition import ctc_labels

CPU = Device("cpu")
DET = "PP-OCRv4_mobile_det"
CLS = "ch_ppocr_mobile_v2.0_cls"
needs_bf16 = pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no AVX512-BF16/AMX")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One user cache for the module: later tests reuse the calibration earlier ones paid for."""
    with pytest.MonkeyPatch.context() as m:
        path = tmp_path_factory.mktemp("cache")
        m.setenv(ENV_CACHE_DIR, str(path))
        yield path


def hpi(shared_images, backend, precision, auto=True, **extra):
    calibration = {"num_samples": 5, "data": str(shared_images), **extra.pop("calibration", {})}
    return {"auto_config": auto, "backend": backend,
            "backend_config": {"precision": precision, "calibration": calibration, **extra}}


def manifest(model) -> dict:
    return json.loads((model.session.artifact / "manifest.json").read_text(encoding="utf-8"))


def guard_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "refused by the accuracy guard" in r.getMessage()]


@needs_bf16
def test_int8_drift_is_measured_and_a_too_strict_tolerance_falls_back(cache_dir, shared_images, caplog):
    caplog.set_level(logging.INFO, logger="hpinfer.runtime")
    with create_model(DET, use_hpip=True, hpi_config=hpi(shared_images, "openvino", "int8", auto=False)) as manual:
        assert "precision=int8" in manual.session.settings
        drift = manifest(manual)["info"]["drift"]
        int8_entry = manual.session.artifact
    assert drift["metric"] == "1 - box F1 x IoU" and drift["inputs"] == 1
    assert drift["value"] > 0  # int8 moves some boxes; if not, this test could not tell the guard works

    caplog.clear()
    strict = hpi(shared_images, "openvino", "int8", accuracy_tolerance=drift["value"] / 2)
    with create_model(DET, use_hpip=True, hpi_config=strict) as safe:
        chosen = safe.session.settings
        fallback = manifest(safe)
    refused = guard_warnings(caplog)
    assert len(refused) >= 1 and refused[0].startswith(f"{DET}: int8 on openvino refused by the accuracy guard: 1 - box F1 x IoU")
    assert "exceeds the tolerance" in refused[0]
    assert "precision=int8" not in chosen
    assert fallback["info"]["precision"] in ("bf16", "fp32")
    assert fallback["info"].get("drift", {"value": 0})["value"] <= drift["value"] / 2

    caplog.clear()  # a lenient tolerance accepts the same cached int8 engine: the tolerance is not in the key
    with create_model(DET, use_hpip=True, hpi_config=hpi(shared_images, "openvino", "int8", accuracy_tolerance=1.0)) as ok:
        assert ok.session.artifact == int8_entry and "precision=int8" in ok.session.settings
    assert not guard_warnings(caplog)
    assert any("from cache" in r.getMessage() for r in caplog.records)

    # int8 was judged on the one input of five held back from its calibration; bf16 calibrates nothing: all five
    with create_model(DET, use_hpip=True, hpi_config=hpi(shared_images, "openvino", "bf16", auto=False)) as bf16:
        assert manifest(bf16)["info"]["drift"]["inputs"] == 5


def test_the_calibration_table_is_cached_and_shared_by_engines(cache_dir, shared_images):
    image = str(shared_images / "doc_page_zh_en.jpg")
    with create_model(DET, use_hpip=True, hpi_config={"backend": "onnxruntime"}) as fp32:
        reference = fp32.predict(image)[0]["dt_polys"]
    with create_model(DET, use_hpip=True, hpi_config=hpi(shared_images, "onnxruntime", "int8", auto=False)) as int8:
        assert "precision=int8" in int8.session.settings
        boxes = int8.predict(image)[0]["dt_polys"]
        model_cache = int8.session.artifact.parent
    tables = sorted(model_cache.glob("calibration-*/calibration.json"))
    assert len(tables) == 1  # the openvino test above calibrated already: same set, same table
    ranges = json.loads(tables[0].read_text())
    assert "x" in json.dumps(ranges)  # the model input's range is in the table
    assert accuracy.box_scores([list(reference)], [list(boxes)])["f1"] >= 0.9


@pytest.fixture(scope="module")
def cls_calibration(cache_dir, shared_images):
    """The calibration entry of the line orientation classifier (small inputs: fast)."""
    with create_model(CLS, use_hpip=True, hpi_config=hpi(shared_images, "onnxruntime", "int8", auto=False)) as model:
        drift = manifest(model)["info"]["drift"]
        cache = model.session.artifact.parent
    assert drift["metric"] == "1 - top-1 agreement"
    return next(cache.glob("calibration-*"))


def test_calibration_methods_make_different_tables(cls_calibration, shared_images, tmp_path):
    spec = resolve_model(CLS)
    task = bind_task(spec.task, TASKS[spec.task].params_type.model_validate(dict(spec.params)))
    tables = {}
    for method in ("minmax", "entropy", "percentile"):
        config = CalibrationConfig(method=method, num_samples=3, data=str(shared_images))
        facts = quantize.calibrate(cls_calibration / quantize.PREPARED_MODEL, task, config, tmp_path / f"{method}.json", CLS)
        assert facts == {"calibration_inputs": 2, "method": method}  # the third input is held back
        tables[method] = json.loads((tmp_path / f"{method}.json").read_text())
    assert tables["minmax"] != tables["entropy"] != tables["percentile"] != tables["minmax"]


def _float_compute_nodes(path: Path):
    """Compute nodes whose weights are plain float initializers (not quantized)."""
    model = onnx.load(str(path))
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n for n in model.graph.node if n.op_type in quantize.COMPUTE_OPS and n.input[1] not in dequantized]


@pytest.mark.parametrize(
    "calibration, expect_float",
    [
        ({}, "first_last"),
        ({"keep_first_last": False}, "none"),
        ({"keep_first_last": False, "exclude_op_types": ["MatMul"]}, "matmul"),
        ({"keep_first_last": False, "exclude_nodes": ["NODE"]}, "named"),
    ],
)
def test_per_layer_exclusions_keep_layers_in_float(cls_calibration, tmp_path, calibration, expect_float):
    prepared = onnx.load(str(cls_calibration / quantize.PREPARED_MODEL))
    compute = [n for n in prepared.graph.node if n.op_type in quantize.COMPUTE_OPS]
    named = compute[len(compute) // 2].name
    calibration = {k: [named] if v == ["NODE"] else v for k, v in calibration.items()}
    out = tmp_path / "int8.onnx"
    quantize.quantize(cls_calibration, CalibrationConfig(**calibration), None, (), out)
    kept = [n.name for n in _float_compute_nodes(out)]
    expected = {
        "first_last": [compute[0].name, compute[-1].name],
        "none": [],
        "matmul": [n.name for n in compute if n.op_type == "MatMul"],
        "named": [named],
    }[expect_float]
    assert sorted(kept) == sorted(expected)


def test_precision_ladder_is_safe_mode_only():
    safe_ort = choose_engine("m", CPU, True, HPIConfig(backend="onnxruntime", backend_config={"precision": "int8"}))
    assert [c.precision for c in precision_ladder(safe_ort, CPU)] == ["int8", "fp32"]
    manual = choose_engine("m", CPU, True, HPIConfig(auto_config=False, backend="openvino", backend_config={"precision": "int8"}))
    assert [c.precision for c in precision_ladder(manual, CPU)] == ["int8"]
    safe_ov = choose_engine("m", CPU, True, HPIConfig(backend_config={"precision": "int8"}))
    expected = ["int8", "bf16", "fp32"] if cpu_has_fast_bf16() else ["int8", "fp32"]
    assert safe_ov.backend == "openvino" and [c.precision for c in precision_ladder(safe_ov, CPU)] == expected


def test_onnxruntime_refuses_bf16_and_names_what_it_can_do():
    assert "fp32 and int8 only" in why_not("onnxruntime", CPU, "bf16")


def test_int8_of_a_model_whose_task_is_unknown_is_a_clear_error(tmp_path, cache_dir):
    from hpinfer.errors import ConfigError
    from hpinfer.models import resolve_model
    from hpinfer.runtime.builder import build_engine

    with pytest.raises(ConfigError, match=r"int8 needs calibration inputs made with the model's own pre-processing"):
        build_engine("mystery", resolve_model(CLS).model_file, "onnxruntime", BackendConfig(precision="int8"), CPU, None)


def test_a_model_dir_model_is_built_in_int8_and_judged_by_the_accuracy_guard(cache_dir, shared_images, tmp_path):
    """A user's model (not a built-in name) gets its task passed to the loader: calibrated with its own
    pre-processing, its drift measured, and it runs."""
    import shutil

    model_dir = tmp_path / "my_det"
    model_dir.mkdir()
    shutil.copy(resolve_model(DET).model_file, model_dir / "inference.onnx")
    (model_dir / "hpinfer.yaml").write_text("model_name: my_det\ntask: text_detection\n", encoding="utf-8")
    images = tmp_path / "calibration"
    images.mkdir()
    for name in sorted(p.name for p in shared_images.glob("*.jpg"))[:4]:
        shutil.copy(shared_images / name, images / name)
    config = {"backend": "onnxruntime", "backend_config": {
        "precision": "int8", "calibration": {"num_samples": 4, "data": str(images)}, "accuracy_tolerance": 1.0}}
    with create_model(model_dir=str(model_dir), use_hpip=True, hpi_config=config) as model:
        assert model.name == "my_det" and "precision=int8" in model.session.settings
        info = manifest(model)["info"]
        boxes = model.predict(str(shared_images / "paragraph_en.jpg"))[0]["dt_polys"]
    assert info["precision"] == "int8" and info["quantization"]
    assert info["drift"]["metric"] == "1 - box F1 x IoU" and info["drift"]["inputs"] >= 1
    assert len(boxes) >= 3


# --- the metrics, on plain arrays ------------------------------------------------------------------


def square(x, y, side=10):
    return np.array([[x, y], [x + side, y], [x + side, y + side], [x, y + side]], np.float32)


def test_box_scores_match_by_iou():
    reference = [[square(0, 0), square(100, 0)]]
    assert accuracy.box_scores(reference, reference)["f1"] == 1.0
    shifted = [[square(1, 0), square(100, 50)]]  # first still matches (IoU 0.82), second moved away
    scores = accuracy.box_scores(reference, shifted)
    assert scores["recall"] == scores["precision"] == scores["f1"] == 0.5
    assert scores["mean_iou"] == pytest.approx(90 / 110)


def test_text_scores_and_ctc_labels():
    assert accuracy.text_scores(["abcd", "xy"], ["abed", "xy"]) == {"cer": pytest.approx(1 / 6), "exact": 0.5}
    probs = np.zeros((1, 6, 4), np.float32)
    for step, label in enumerate([1, 1, 0, 1, 3, 3]):
        probs[0, step, label] = 1
    assert ctc_labels(probs) == [(1, 1, 3)]


def test_layout_int8_is_calibrated_on_pages_and_its_region_drift_measured(cache_dir, shared_images, tmp_path):
    """The layout model gets calibration pages through its own pre-processing and a class-aware region metric,
    so the guard can judge it like the OCR models."""
    page = str(shared_images / "doc_page_zh_en.jpg")
    with create_model("PicoDet_layout_1x_CDLA", use_hpip=True, hpi_config={"backend": "onnxruntime"}) as fp32:
        reference = fp32.predict(page)[0]["boxes"]
    pages = tmp_path / "pages"  # document pages only, so the held-back input has regions to lose
    pages.mkdir()
    shutil.copyfile(page, pages / "page.jpg")
    config = hpi(pages, "onnxruntime", "int8", auto=False, calibration={"num_samples": 5})
    with create_model("PicoDet_layout_1x_CDLA", use_hpip=True, hpi_config=config) as int8:
        assert "precision=int8" in int8.session.settings
        drift = manifest(int8)["info"]["drift"]
        regions = int8.predict(page)[0]["boxes"]
    assert drift["metric"] == "1 - region F1 x IoU (per class)" and drift["inputs"] >= 1 and drift["compared"] > 0
    assert 0 <= drift["value"] <= 1 and set(drift["details"]) == {"recall", "precision", "f1", "mean_iou"}
    assert regions and reference
    # The guard's verdict, not a loss, is asserted (a better quantizer may lose nothing): safe mode keeps this
    # int8 engine (the same cache entry) exactly when its drift is within the task's tolerance.
    with create_model("PicoDet_layout_1x_CDLA", use_hpip=True, hpi_config=hpi(pages, "onnxruntime", "int8", calibration={"num_samples": 5})) as safe:
        kept = "precision=int8" in safe.session.settings
    assert kept == (drift["value"] <= TASKS["layout_detection"].tolerance)



def test_a_guard_with_nothing_to_judge_refuses_in_safe_mode(cache_dir, shared_images, tmp_path, caplog):
    """Calibration pages where the fp32 model finds no region leave the guard nothing to compare: a drift of 0 there
    proves nothing, so safe mode refuses the reduced precision (and falls back); manual mode warns and obeys."""
    caplog.set_level(logging.INFO, logger="hpinfer.runtime")
    blank = tmp_path / "blank"
    blank.mkdir()
    cv2.imwrite(str(blank / "white.png"), np.full((1100, 850, 3), 255, np.uint8))  # a blank page: no region at all
    layout = "PicoDet_layout_1x_CDLA"
    with create_model(layout, use_hpip=True, hpi_config=hpi(blank, "onnxruntime", "int8", auto=False)) as manual:
        assert "precision=int8" in manual.session.settings
        drift = manifest(manual)["info"]["drift"]
    assert drift["compared"] == 0 and drift["value"] == 0
    assert any("nothing to judge" in r.getMessage() and "manual mode: used anyway" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with create_model(layout, use_hpip=True, hpi_config=hpi(blank, "onnxruntime", "int8")) as safe:
        assert "precision=int8" not in safe.session.settings
    (refused,) = guard_warnings(caplog)
    assert refused.startswith(f"{layout}: int8 on onnxruntime refused by the accuracy guard: the accuracy guard had nothing to judge")
    assert "calibration.data" in refused


def _zero_points(path: Path):
    """Every activation zero point of a QDQ model (QuantizeLinear's third input), as numpy arrays."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [constants[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]


def test_tensorrt_int8_is_quantized_symmetric(cls_calibration, tmp_path):
    """TensorRT accepts symmetric int8 only; the CPU engines keep the asymmetric uint8 activations."""
    from hpinfer.runtime.engines import ENGINES

    trt = ENGINES["tensorrt"]
    assert trt.int8_symmetric and not ENGINES["onnxruntime"].int8_symmetric
    outs = {}
    for symmetric in (False, True):
        outs[symmetric] = tmp_path / f"int8-{symmetric}.onnx"
        quantize.quantize(cls_calibration, CalibrationConfig(), trt.int8_op_types, trt.int8_float_op_types,
                          outs[symmetric], symmetric=symmetric)
    symmetric, asymmetric = _zero_points(outs[True]), _zero_points(outs[False])
    assert symmetric and all(z.dtype == np.int8 and not z.any() for z in symmetric)
    assert any(z.dtype == np.uint8 and z.any() for z in asymmetric)  # what TensorRT would refuse
