"""Engine choice (safe mode, user overrides, manual mode), the hpi_config schema, the loader's fallback,
and user model directories — on the real engines and real model files installed here."""

from __future__ import annotations

import logging
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from hpinfer.config import BackendConfig, HPIConfig, parse_hpi_config
from hpinfer.device import Device
from hpinfer.errors import ConfigError, EngineUnavailableError, ModelNotFoundError
from hpinfer.models import create_model, resolve_model
from hpinfer.tasks import TASKS
from hpinfer.runtime.auto_config import choose_engine, fallbacks, why_not
from hpinfer.runtime.engines import ENGINES
from hpinfer.runtime.engines.onnxruntime import OnnxRuntimeEngine
from hpinfer.runtime.hardware import cpu_has_fast_fp16

CPU = Device.parse("cpu")
GPU0 = Device.parse("gpu:0")
SINGLE_LINE_TEXT = "在中国作家协会第三届儿童文学"
DET_SHAPES = [[1, 3, 32, 32], [1, 3, 736, 736], [1, 3, 2048, 2048]]

needs_no_cuda = pytest.mark.skipif(
    "CUDAExecutionProvider" in OnnxRuntimeEngine._providers(), reason="this machine's onnxruntime has CUDA"
)


@pytest.fixture
def openvino_not_installed(monkeypatch):
    """Make ``import openvino`` fail as on a machine without it (a None entry is Python's import block).

    We cannot uninstall a package for one test; this hides the real one from importlib.util.find_spec.
    """
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert not ENGINES["openvino"].is_installed()


def test_openvino_and_onnxruntime_are_installed_here():
    # Several expectations below (the CPU rule's first choice) hold only on a machine with both.
    assert ENGINES["openvino"].is_installed() and ENGINES["onnxruntime"].is_installed()


# --- use_hpip off ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hpi", [HPIConfig(), HPIConfig(backend="openvino", backend_config={"cpu_num_threads": 1})])
def test_use_hpip_off_is_standard_onnxruntime_whatever_hpi_config_says(hpi):
    choice = choose_engine("m", CPU, False, hpi)
    assert choice.backend == "onnxruntime"
    assert "standard inference" in choice.reason
    assert choice.config == BackendConfig()
    assert choice.may_fall_back is False


@needs_no_cuda
def test_use_hpip_off_on_gpu_without_cuda_is_a_clear_error():
    with pytest.raises(EngineUnavailableError, match=r"m: standard inference .*no CUDA provider .*onnxruntime-gpu"):
        choose_engine("m", GPU0, False, HPIConfig())


# --- safe mode ------------------------------------------------------------------------------------


def test_safe_mode_on_cpu_picks_openvino_by_the_rule():
    choice = choose_engine("m", CPU, True, HPIConfig(backend_config={"cpu_num_threads": 3}))
    assert choice.backend == "openvino"
    assert choice.reason.startswith("rule cpu-default: OpenVINO runs the PP-OCR models")
    assert "skipped" not in choice.reason
    assert choice.may_fall_back is True
    assert choice.config.cpu_num_threads == 3


def test_safe_mode_skips_an_engine_that_is_not_installed(openvino_not_installed):
    choice = choose_engine("m", CPU, True, HPIConfig())
    assert choice.backend == "onnxruntime"
    assert "rule cpu-default" in choice.reason
    assert "skipped: openvino: openvino is not installed (pip install openvino)" in choice.reason


def test_safe_mode_accepts_a_workable_user_override():
    choice = choose_engine("m", CPU, True, HPIConfig(backend="onnxruntime"))
    assert choice.backend == "onnxruntime"
    assert choice.reason == "user override 'onnxruntime' passed safe-mode checks"
    assert choice.may_fall_back is False  # the user's choice is never silently replaced


def test_safe_mode_rejects_tensorrt_on_cpu_and_lists_what_would_work():
    with pytest.raises(EngineUnavailableError) as info:
        choose_engine("PP-OCRv4_mobile_det", CPU, True, HPIConfig(backend="tensorrt"))
    message = str(info.value)
    assert "PP-OCRv4_mobile_det: backend 'tensorrt' at fp32 on cpu rejected by safe mode" in message
    assert "tensorrt is not installed (pip install tensorrt)" in message or "GPU" in message
    assert "engines that would work: openvino, onnxruntime" in message


def test_safe_mode_picks_the_rules_first_engine_for_int8():
    """int8 is built by quantizing the model (runtime/quantize.py), so both CPU engines can run it."""
    choice = choose_engine("m", CPU, True, HPIConfig(backend_config={"precision": "int8"}))
    assert choice.backend == "openvino" and choice.config.precision == "int8"


@pytest.mark.skipif(cpu_has_fast_fp16(), reason="this CPU runs fp16 natively")
def test_safe_mode_rejects_fp16_override_and_says_nothing_would_work():
    with pytest.raises(EngineUnavailableError, match=r"backend 'openvino' at fp16 .*no engine can do this here"):
        choose_engine("m", CPU, True, HPIConfig(backend="openvino", backend_config={"precision": "fp16"}))


@needs_no_cuda
def test_safe_mode_on_gpu_without_cuda_is_a_clear_error():
    with pytest.raises(EngineUnavailableError) as info:
        choose_engine("m", GPU0, True, HPIConfig())
    message = str(info.value)
    assert "no engine can run on gpu:0 at fp32" in message
    assert "onnxruntime: this onnxruntime build has no CUDA provider (install onnxruntime-gpu)" in message
    assert "tensorrt:" in message and "torch:" in message  # every engine of the GPU rule is accounted for


def test_safe_mode_rejects_openvino_on_gpu():
    with pytest.raises(EngineUnavailableError, match=r"OpenVINO on CPUs only"):
        choose_engine("m", GPU0, True, HPIConfig(backend="openvino"))


def test_fallbacks_are_the_rules_later_workable_engines():
    choice = choose_engine("m", CPU, True, HPIConfig(backend_config={"cpu_num_threads": 2}))
    later = fallbacks(choice, CPU)
    assert [c.backend for c in later] == ["onnxruntime"]
    assert later[0].reason == "fallback after openvino failed"
    assert later[0].config.cpu_num_threads == 2
    assert fallbacks(choose_engine("m", CPU, True, HPIConfig(backend="onnxruntime")), CPU) == []


# --- manual mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_manual_mode_does_what_the_user_says(backend):
    hpi = HPIConfig(auto_config=False, backend=backend, backend_config={"cpu_num_threads": 1})
    choice = choose_engine("m", CPU, True, hpi)
    assert (choice.backend, choice.may_fall_back) == (backend, False)
    assert choice.reason.startswith("manual mode (auto_config: false)")
    with create_model("PP-OCRv4_mobile_det", use_hpip=True, hpi_config=hpi) as model:
        assert model.session.backend == backend
        assert "threads=1" in model.session.settings


def test_manual_mode_with_an_engine_not_installed_names_the_pip_package(openvino_not_installed):
    with pytest.raises(EngineUnavailableError, match=r"m: manual mode asks for openvino at fp32 on cpu, but .*pip install openvino"):
        choose_engine("m", CPU, True, HPIConfig(auto_config=False, backend="openvino"))


def test_manual_mode_refuses_tensorrt_on_cpu():
    reason = why_not("tensorrt", CPU, "fp32")
    assert reason
    with pytest.raises(EngineUnavailableError) as info:
        choose_engine("m", CPU, True, HPIConfig(auto_config=False, backend="tensorrt"))
    assert str(info.value) == f"m: manual mode asks for tensorrt at fp32 on cpu, but {reason}"


def test_why_not_is_none_for_workable_engines():
    assert why_not("onnxruntime", CPU, "fp32") is None
    assert why_not("openvino", CPU, "fp32") is None
    assert "fp32 and int8 only" in why_not("onnxruntime", CPU, "fp16")


@needs_no_cuda
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("onnxruntime"),
        pytest.param("openvino"),
    ],
)
def test_manual_mode_on_a_gpu_it_cannot_use_is_an_error(backend):
    with pytest.raises(ConfigError):
        model = create_model("PP-OCRv4_mobile_det", device="gpu:0", use_hpip=True,
                             hpi_config={"auto_config": False, "backend": backend})
        model.close()


@pytest.mark.parametrize(
    "backend, precision",
    [
        pytest.param("onnxruntime", "fp16"),
        pytest.param("onnxruntime", "bf16"),
    ],
)
def test_manual_mode_with_an_unsupported_precision_is_a_clear_error(backend, precision):
    hpi = {"auto_config": False, "backend": backend, "backend_config": {"precision": precision}}
    with pytest.raises(ConfigError) as info:
        create_model("PP-OCRv4_mobile_det", use_hpip=True, hpi_config=hpi).close()
    assert precision in str(info.value) and "KeyError" not in str(info.value)


# --- the hpi_config schema ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"bogus": 1}, "hpi_config.bogus: unknown key"),
        ({"backend_config": {"threads": 2}}, "hpi_config.backend_config.threads: unknown key"),
        ({"backend": "tensorflow"}, "unknown backend 'tensorflow'; known backends: onnxruntime, openvino, torch, tensorrt"),
        ({"backend_config": {"precision": "fp8"}}, "hpi_config.backend_config.precision"),
        ({"backend_config": {"cpu_num_threads": 0}}, "hpi_config.backend_config.cpu_num_threads"),
        ({"backend_config": {"cpu_num_threads": 1.5}}, "hpi_config.backend_config.cpu_num_threads"),
        ({"backend_config": {"dynamic_shapes": {"x": DET_SHAPES[:2]}}}, "x: give exactly three shapes [min, opt, max], got 2"),
        ({"backend_config": {"dynamic_shapes": {"x": [[1, 3, 32], *DET_SHAPES[1:]]}}}, "x: min/opt/max must have the same rank"),
        ({"backend_config": {"dynamic_shapes": {"x": DET_SHAPES[::-1]}}}, "x: need 1 <= min <= opt <= max"),
        ({"backend_config": {"dynamic_shapes": {"x": [[0, 3, 32, 32], *DET_SHAPES[1:]]}}}, "need 1 <= min"),
        ({"auto_config": False}, "auto_config is false (manual mode) but no backend is set"),
        ('{"backend": ', "hpi_config is not valid JSON"),
        ('["openvino"]', "hpi_config must be a JSON object"),
        (42, "hpi_config must be a mapping, got int"),
    ],
)
def test_schema_rejects_invalid_hpi_config(value, expected):
    with pytest.raises(ConfigError) as info:
        parse_hpi_config(value)
    assert expected in str(info.value)


def test_schema_lists_every_problem_at_once():
    with pytest.raises(ConfigError) as info:
        parse_hpi_config({"bogus": 1, "backend_config": {"precision": "fp8", "cpu_num_threads": 0}})
    message = str(info.value)
    assert "bogus" in message and "precision" in message and "cpu_num_threads" in message


def test_schema_accepts_a_full_valid_config():
    hpi = parse_hpi_config(
        '{"auto_config": false, "backend": "openvino", "backend_config": '
        '{"cpu_num_threads": 4, "precision": "bf16", "dynamic_shapes": {"x": %s}}}' % DET_SHAPES
    )
    assert (hpi.auto_config, hpi.backend) == (False, "openvino")
    assert hpi.backend_config == BackendConfig(cpu_num_threads=4, precision="bf16", dynamic_shapes={"x": DET_SHAPES})


def test_dynamic_shapes_naming_a_missing_input_fails_at_load():
    hpi = {"backend_config": {"dynamic_shapes": {"nope": DET_SHAPES}}}
    with pytest.raises(ConfigError, match=r"dynamic_shapes names input 'nope', but ch_PP-OCRv4_det_infer\.onnx has inputs \['x'\]"):
        create_model("PP-OCRv4_mobile_det", use_hpip=True, hpi_config=hpi)


def test_dynamic_shapes_with_the_wrong_rank_fails_at_load():
    shapes = [s[1:] for s in DET_SHAPES]
    with pytest.raises(ConfigError, match=r"dynamic_shapes\['x'\] has rank 3, but the model input has rank 4"):
        create_model("PP-OCRv4_mobile_det", use_hpip=True, hpi_config={"backend_config": {"dynamic_shapes": {"x": shapes}}})


def test_dynamic_shapes_naming_the_real_input_loads():
    with create_model("PP-OCRv4_mobile_det", use_hpip=True, hpi_config={"backend_config": {"dynamic_shapes": {"x": DET_SHAPES}}}) as model:
        assert model.session.backend == "openvino"


# --- the loader's fallback: a model OpenVINO cannot read, ONNX Runtime can ------------------------


def write_ort_only_detector(directory: Path) -> Path:
    """A text_detection model using com.microsoft.Inverse, a contrib op of ONNX Runtime unknown to OpenVINO.

    Output = mean of the input's channels * sum(inverse(2I)) = the channel mean: a white image is all text.
    """
    directory.mkdir()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1, None, None])
    matrix = numpy_helper.from_array(np.array([[2.0, 0.0], [0.0, 2.0]], np.float32), "m")
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Inverse", ["m"], ["inv"], domain="com.microsoft"),
        helper.make_node("ReduceSum", ["inv"], ["s"], keepdims=0),
        helper.make_node("Mul", ["mean", "s"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "ort_only", [x], [y], initializer=[matrix])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(directory / "model.onnx"))
    (directory / "hpinfer.yaml").write_text("model_name: ort_only_det\ntask: text_detection\n", encoding="utf-8")
    return directory


def test_rule_pick_that_fails_to_load_falls_back_and_logs_it(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hpinfer.runtime")
    model_dir = write_ort_only_detector(tmp_path / "ort_only")
    with create_model(model_dir=str(model_dir), use_hpip=True) as model:
        assert model.session.backend == "onnxruntime"
        result = model.predict(np.full((64, 64, 3), 255, np.uint8))[0]
    # The ONNX Runtime session really runs the model: the whole white image is one text region.
    assert len(result["dt_polys"]) == 1
    poly = np.asarray(result["dt_polys"][0])
    assert poly.min() <= 2 and poly.max() >= 61

    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "hpinfer.runtime"]
    assert any(level == logging.WARNING and msg.startswith("ort_only_det: engine openvino failed to load")
               for level, msg in messages), messages
    assert any(level == logging.INFO and msg.startswith("ort_only_det: fell back to onnxruntime after: openvino:")
               for level, msg in messages), messages
    assert any("engine onnxruntime on cpu (fallback after openvino failed)" in msg for _, msg in messages), messages


def test_fallback_log_says_why_the_engine_failed(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hpinfer.runtime")
    model_dir = write_ort_only_detector(tmp_path / "ort_only")
    create_model(model_dir=str(model_dir), use_hpip=True).close()
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "hpinfer.runtime")
    assert "Inverse" in warning


@pytest.mark.parametrize(
    "hpi",
    [{"backend": "openvino"}, {"auto_config": False, "backend": "openvino"}],
    ids=["override", "manual"],
)
def test_users_choice_that_fails_to_load_is_an_error_not_a_fallback(tmp_path, hpi):
    model_dir = write_ort_only_detector(tmp_path / "ort_only")
    with pytest.raises(EngineUnavailableError, match=r"ort_only_det: no engine could load model\.onnx: openvino: "):
        create_model(model_dir=str(model_dir), use_hpip=True, hpi_config=hpi)


# --- user model directories -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rec_model_file() -> Path:
    return resolve_model("PP-OCRv4_mobile_rec").model_file


def make_model_dir(directory: Path, meta, files=()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for source, name in files:
        shutil.copyfile(source, directory / name)
    if meta is not None:
        text = meta if isinstance(meta, str) else yaml.safe_dump(meta, allow_unicode=True)
        (directory / "hpinfer.yaml").write_text(text, encoding="utf-8")
    return directory


def characters_of(model_file: Path) -> str:
    model = onnx.load(str(model_file), load_external_data=False)
    return next(p.value for p in model.metadata_props if p.key == "character")


def test_user_model_dir_recognises_text(tmp_path, shared_images, rec_model_file):
    model_dir = make_model_dir(tmp_path / "my_rec", {"model_name": "my_rec", "task": "text_recognition"},
                               [(rec_model_file, "inference.onnx")])
    with create_model(model_dir=str(model_dir)) as model:
        assert model.name == "my_rec" and model.task == "text_recognition"
        result = model.predict(str(shared_images / "single_line.jpg"))[0]
    assert result["model_name"] == "my_rec"
    assert result["rec_text"] == SINGLE_LINE_TEXT
    assert result["rec_score"] > 0.9


def test_user_model_dir_with_character_dict_and_params(tmp_path, shared_images, rec_model_file):
    model_dir = make_model_dir(
        tmp_path / "rec2",
        {"task": "text_recognition", "model_file": "rec.onnx", "character_dict": "keys.txt", "params": {"batch_size": 2}},
        [(rec_model_file, "rec.onnx")],
    )
    (model_dir / "keys.txt").write_text(characters_of(rec_model_file), encoding="utf-8")
    with create_model(model_dir=str(model_dir), use_hpip=True) as model:
        assert model.name == "rec2"  # no model_name: the directory's name
        assert model.params.batch_size == 2
        assert model.session.backend == "openvino"
        assert model.predict(str(shared_images / "single_line.jpg"))[0]["rec_text"] == SINGLE_LINE_TEXT


def test_user_rec_model_without_characters_anywhere_is_an_error(tmp_path, rec_model_file):
    model = onnx.load(str(rec_model_file))
    del model.metadata_props[:]
    model_dir = make_model_dir(tmp_path / "bare", {"task": "text_recognition"})
    onnx.save(model, str(model_dir / "model.onnx"))
    with pytest.raises(ModelNotFoundError, match=r"model\.onnx has no 'character' metadata; name a dictionary file with character_dict"):
        create_model(model_dir=str(model_dir))


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_dir", r"model_dir .*missing_dir does not exist or is not a directory"),
        ("a_file", r"model_dir .*a_file does not exist or is not a directory"),
        ("no_yaml", r"has no hpinfer\.yaml; write one with at least 'task: "),
        ("bad_yaml", r"hpinfer\.yaml is not valid YAML"),
        ("bad_task", re.escape(f"task must be one of {', '.join(TASKS)}, got 'ocr'")),
        ("no_task", r"task must be one of .*got None"),
        ("unknown_key", r"unknown keys \['framework'\]"),
        ("two_onnx", r"expected exactly one \.onnx file \(found: a\.onnx, b\.onnx\); set model_file"),
        ("no_onnx", r"expected exactly one \.onnx file \(found: none\)"),
        ("missing_model_file", r"model_file .*other\.onnx does not exist"),
        ("missing_character_dict", r"character_dict .*keys\.txt does not exist"),
    ],
)
def test_bad_model_dirs(tmp_path, rec_model_file, case, expected):
    rec = [(rec_model_file, "a.onnx")]
    good = {"task": "text_recognition"}
    directory = tmp_path / case
    if case == "a_file":
        directory.write_text("not a directory")
    elif case == "no_yaml":
        make_model_dir(directory, None, rec)
    elif case == "bad_yaml":
        make_model_dir(directory, "task: [text_recognition\n", rec)
    elif case == "bad_task":
        make_model_dir(directory, {"task": "ocr"}, rec)
    elif case == "no_task":
        make_model_dir(directory, {"model_name": "x"}, rec)
    elif case == "unknown_key":
        make_model_dir(directory, {**good, "framework": "paddle"}, rec)
    elif case == "two_onnx":
        make_model_dir(directory, good, rec + [(rec_model_file, "b.onnx")])
    elif case == "no_onnx":
        make_model_dir(directory, good)
    elif case == "missing_model_file":
        make_model_dir(directory, {**good, "model_file": "other.onnx"}, rec)
    elif case == "missing_character_dict":
        make_model_dir(directory, {**good, "character_dict": "keys.txt"}, rec)
    with pytest.raises(ModelNotFoundError, match=expected):
        create_model(model_dir=str(directory))
