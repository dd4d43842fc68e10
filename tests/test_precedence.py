"""use_hpip / hpi_config precedence at every level, on real pipeline YAML files and real engines.

The rule (hpinfer/pipelines/config.py): file top level < API/CLI values < the sub-module's own
values in the file; hpi_config levels merge key by key, backend_config included.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
import yaml

import hpinfer
from hpinfer.config import BackendConfig, HPIConfig
from hpinfer.errors import ConfigError
from hpinfer.pipelines import resolve_pipeline
from hpinfer.pipelines.config import BUNDLED_DIR

MODULES = ("DocOrientationClassify", "TextDetection", "TextLineOrientation", "TextRecognition")
SINGLE_LINE_TEXT = "在中国作家协会第三届儿童文学"


def ocr_yaml() -> Dict[str, Any]:
    """The bundled OCR pipeline, as a mapping to edit."""
    return yaml.safe_load((BUNDLED_DIR / "OCR.yaml").read_text(encoding="utf-8"))


DET, REC = (ocr_yaml()["SubModules"][key]["model_name"] for key in ("TextDetection", "TextRecognition"))


def write_pipeline(
    tmp_path: Path,
    top: Optional[Dict[str, Any]] = None,
    subs: Optional[Dict[str, Dict[str, Any]]] = None,
    name: str = "pipeline.yaml",
) -> Path:
    """OCR.yaml with ``top`` keys set at the file's top level and ``subs[module]`` keys set in a sub-module."""
    data = ocr_yaml()
    data.update(copy.deepcopy(top or {}))
    for module, values in (subs or {}).items():
        data["SubModules"][module].update(copy.deepcopy(values))
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def det(settings):
    return settings.modules["TextDetection"]


# --- the file's top level alone -------------------------------------------------------------------


def test_bundled_defaults_are_standard_inference(tmp_path):
    settings = resolve_pipeline(write_pipeline(tmp_path))
    assert set(settings.modules) == set(MODULES)
    for module in settings.modules.values():
        assert module.use_hpip is False
        assert module.hpi_config == HPIConfig()


def test_file_top_level_applies_to_every_module(tmp_path):
    path = write_pipeline(tmp_path, top={
        "use_hpip": True,
        "hpi_config": {"backend": "onnxruntime", "backend_config": {"cpu_num_threads": 2}},
    })
    settings = resolve_pipeline(path)
    for key in MODULES:
        module = settings.modules[key]
        assert module.use_hpip is True, key
        assert isinstance(module.hpi_config, HPIConfig)
        assert module.hpi_config.backend == "onnxruntime", key
        assert module.hpi_config.backend_config.cpu_num_threads == 2, key
        assert module.hpi_config.auto_config is True  # untouched keys keep the schema's defaults


# --- the API overrides the file's top level --------------------------------------------------------


@pytest.mark.parametrize("file_value, api_value", [(True, False), (False, True)])
def test_api_use_hpip_overrides_file_top_level(tmp_path, file_value, api_value):
    path = write_pipeline(tmp_path, top={"use_hpip": file_value})
    assert det(resolve_pipeline(path)).use_hpip is file_value  # None from the API keeps the file's value
    settings = resolve_pipeline(path, use_hpip=api_value)
    assert {m.use_hpip for m in settings.modules.values()} == {api_value}


@pytest.mark.parametrize(
    "api_hpi",
    [
        {"backend": "onnxruntime"},
        '{"backend": "onnxruntime"}',  # the CLI passes JSON text
        HPIConfig(backend="onnxruntime"),
    ],
    ids=["dict", "json", "HPIConfig"],
)
def test_api_hpi_config_overrides_file_top_level(tmp_path, api_hpi):
    path = write_pipeline(tmp_path, top={"use_hpip": True, "hpi_config": {"backend": "openvino"}})
    assert det(resolve_pipeline(path)).hpi_config.backend == "openvino"
    settings = resolve_pipeline(path, hpi_config=api_hpi)
    assert {m.hpi_config.backend for m in settings.modules.values()} == {"onnxruntime"}


# --- the sub-module's own values beat the API and the top level ------------------------------------


def test_sub_module_use_hpip_beats_api_and_top_level(tmp_path):
    path = write_pipeline(
        tmp_path,
        top={"use_hpip": True},
        subs={"TextDetection": {"use_hpip": False}, "TextRecognition": {"use_hpip": True}},
    )
    settings = resolve_pipeline(path, use_hpip=True)
    assert det(settings).use_hpip is False
    assert settings.modules["TextLineOrientation"].use_hpip is True
    settings = resolve_pipeline(path, use_hpip=False)
    assert det(settings).use_hpip is False
    assert settings.modules["TextRecognition"].use_hpip is True  # the sub-module's True beats the API's False
    assert settings.modules["TextLineOrientation"].use_hpip is False


def test_sub_module_hpi_config_beats_api_and_top_level(tmp_path):
    path = write_pipeline(
        tmp_path,
        top={"hpi_config": {"backend": "openvino"}},
        subs={"TextRecognition": {"hpi_config": {"backend": "openvino"}}},
    )
    settings = resolve_pipeline(path, use_hpip=True, hpi_config={"backend": "onnxruntime"})
    assert det(settings).hpi_config.backend == "onnxruntime"  # API over top
    assert settings.modules["TextRecognition"].hpi_config.backend == "openvino"  # sub over API


# --- key-by-key merging -----------------------------------------------------------------------------


def test_top_threads_and_sub_backend_are_both_kept(tmp_path):
    path = write_pipeline(
        tmp_path,
        top={"hpi_config": {"backend_config": {"cpu_num_threads": 1}}},
        subs={"TextDetection": {"hpi_config": {"backend": "onnxruntime"}}},
    )
    settings = resolve_pipeline(path)
    hpi = det(settings).hpi_config
    assert hpi.backend == "onnxruntime"
    assert hpi.backend_config.cpu_num_threads == 1
    rec = settings.modules["TextRecognition"].hpi_config
    assert rec.backend is None and rec.backend_config.cpu_num_threads == 1


@pytest.mark.parametrize(
    "api_hpi",
    [{"backend_config": {"precision": "bf16"}}, HPIConfig(backend_config=BackendConfig(precision="bf16"))],
    ids=["dict", "HPIConfig"],
)
def test_api_precision_and_sub_threads_are_both_kept(tmp_path, api_hpi):
    path = write_pipeline(
        tmp_path,
        top={"hpi_config": {"backend_config": {"cpu_num_threads": 1, "precision": "fp16"}}},
        subs={"TextDetection": {"hpi_config": {"backend_config": {"cpu_num_threads": 3}}}},
    )
    settings = resolve_pipeline(path, hpi_config=api_hpi)
    det_config = det(settings).hpi_config.backend_config
    assert (det_config.precision, det_config.cpu_num_threads) == ("bf16", 3)
    # A module without its own values: the API's precision over the file's, the file's threads kept.
    rec_config = settings.modules["TextRecognition"].hpi_config.backend_config
    assert (rec_config.precision, rec_config.cpu_num_threads) == ("bf16", 1)


def test_dynamic_shapes_merge_per_input(tmp_path):
    shapes_x = [[1, 3, 32, 32], [1, 3, 736, 736], [1, 3, 2048, 2048]]
    shapes_y = [[1, 3, 48, 16], [1, 3, 48, 320], [8, 3, 48, 3200]]
    path = write_pipeline(
        tmp_path,
        top={"hpi_config": {"backend_config": {"dynamic_shapes": {"x": shapes_x}}}},
        subs={"TextDetection": {"hpi_config": {"backend_config": {"dynamic_shapes": {"y": shapes_y}}}}},
    )
    shapes = det(resolve_pipeline(path)).hpi_config.backend_config.dynamic_shapes
    assert shapes == {"x": shapes_x, "y": shapes_y}


# --- invalid values name their level ----------------------------------------------------------------


@pytest.mark.parametrize("value", [1, "true", "yes", "on"])
def test_top_level_use_hpip_must_be_a_bool(tmp_path, value):
    path = write_pipeline(tmp_path, top={"use_hpip": value})  # safe_dump quotes strings, so they stay strings
    with pytest.raises(ConfigError, match=r"use_hpip must be true or false") as info:
        resolve_pipeline(path)
    assert str(path) in str(info.value)
    assert repr(value) in str(info.value)


def test_sub_module_use_hpip_must_be_a_bool(tmp_path):
    path = write_pipeline(tmp_path, subs={"TextRecognition": {"use_hpip": "false"}})
    with pytest.raises(ConfigError, match=r"SubModules\.TextRecognition\.use_hpip must be true or false"):
        resolve_pipeline(path)


def test_unknown_hpi_key_in_file_top_level_names_the_file(tmp_path):
    path = write_pipeline(tmp_path, top={"hpi_config": {"bogus": 1}})
    with pytest.raises(ConfigError) as info:
        resolve_pipeline(path)
    message = str(info.value)
    assert f"{path}: hpi_config.bogus: unknown key" in message
    assert "SubModules" not in message and "API" not in message


@pytest.mark.parametrize(
    "hpi, key",
    [({"bogus": 1}, "bogus"), ({"backend_config": {"threads": 4}}, "backend_config.threads")],
)
def test_unknown_hpi_key_in_sub_module_names_the_sub_module(tmp_path, hpi, key):
    path = write_pipeline(tmp_path, subs={"TextDetection": {"hpi_config": hpi}})
    with pytest.raises(ConfigError) as info:
        resolve_pipeline(path)
    message = str(info.value)
    assert f"SubModules.TextDetection.hpi_config.{key}: unknown key" in message
    assert str(path) in message


@pytest.mark.parametrize("api_hpi", [{"bogus": 1}, '{"bogus": 1}'], ids=["dict", "json"])
def test_unknown_hpi_key_from_api_names_the_api(tmp_path, api_hpi):
    path = write_pipeline(tmp_path)
    with pytest.raises(ConfigError) as info:
        resolve_pipeline(path, hpi_config=api_hpi)
    message = str(info.value)
    assert "API" in message and "bogus: unknown key" in message
    assert str(path) not in message  # the file is fine; blaming it would send the user to the wrong place


def test_invalid_value_in_sub_module_names_the_sub_module(tmp_path):
    path = write_pipeline(tmp_path, subs={"TextRecognition": {"hpi_config": {"backend_config": {"precision": "fp8"}}}})
    with pytest.raises(ConfigError, match=r"SubModules\.TextRecognition\.hpi_config\.backend_config\.precision"):
        resolve_pipeline(path)


# --- manual mode is judged after merging ------------------------------------------------------------


def test_manual_mode_with_backend_set_deeper_is_valid(tmp_path):
    path = write_pipeline(
        tmp_path,
        top={"use_hpip": True, "hpi_config": {"auto_config": False}},
        subs={"TextDetection": {"hpi_config": {"backend": "onnxruntime"}}},
    )
    settings = resolve_pipeline(path, hpi_config={"backend": "openvino"})
    assert det(settings).hpi_config == HPIConfig(auto_config=False, backend="onnxruntime")
    for key in ("TextLineOrientation", "TextRecognition"):
        assert settings.modules[key].hpi_config == HPIConfig(auto_config=False, backend="openvino")


def test_manual_mode_from_api_with_backend_in_file_is_valid(tmp_path):
    path = write_pipeline(tmp_path, top={"hpi_config": {"backend": "onnxruntime"}})
    settings = resolve_pipeline(path, hpi_config={"auto_config": False})
    assert {m.hpi_config.auto_config for m in settings.modules.values()} == {False}
    assert {m.hpi_config.backend for m in settings.modules.values()} == {"onnxruntime"}


def test_manual_mode_without_any_backend_is_an_error(tmp_path):
    path = write_pipeline(tmp_path, top={"hpi_config": {"auto_config": False}})
    with pytest.raises(ConfigError, match=r"manual mode.*no backend is set"):
        resolve_pipeline(path)


def test_manual_mode_error_names_the_module_left_without_backend(tmp_path):
    path = write_pipeline(
        tmp_path,
        top={"hpi_config": {"auto_config": False}},
        subs={"TextDetection": {"hpi_config": {"backend": "onnxruntime"}}},
    )
    with pytest.raises(ConfigError) as info:
        resolve_pipeline(path)
    message = str(info.value)
    assert "SubModules.DocOrientationClassify" in message and "no backend is set" in message
    assert "SubModules.TextDetection" not in message


# --- end to end: the resolved values reach real engines ---------------------------------------------


def engine_records(caplog) -> Dict[str, str]:
    """model name → the INFO message that says which engine it got and why."""
    found = {}
    for record in caplog.records:
        if record.name == "hpinfer.runtime" and record.levelno == logging.INFO and ": engine " in record.getMessage():
            found[record.getMessage().split(":", 1)[0]] = record.getMessage()
    return found


def test_create_pipeline_applies_api_and_sub_module_backends(tmp_path, shared_images, caplog):
    caplog.set_level(logging.INFO, logger="hpinfer.runtime")
    path = write_pipeline(
        tmp_path,
        top={"hpi_config": {"backend_config": {"cpu_num_threads": 1}}},
        subs={"TextRecognition": {"hpi_config": {"backend": "openvino"}}},
    )
    with hpinfer.create_pipeline(path, use_hpip=True, hpi_config={"backend": "onnxruntime"}) as pipe:
        assert pipe.text_det.session.backend == "onnxruntime"
        assert pipe.textline_cls.session.backend == "onnxruntime"
        assert pipe.text_rec.session.backend == "openvino"
        # The file's thread count survives both overrides and reaches the engines.
        assert "threads=1" in pipe.text_det.session.settings
        assert "threads=1" in pipe.text_rec.session.settings
        result = pipe.predict(str(shared_images / "single_line.jpg"))[0]
    assert result["rec_texts"] == [SINGLE_LINE_TEXT]

    logs = engine_records(caplog)
    assert "engine onnxruntime on cpu (user override 'onnxruntime'" in logs[DET]
    assert "engine openvino on cpu (user override 'openvino'" in logs[REC]


def test_sub_module_with_use_hpip_false_gets_standard_inference(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="hpinfer.runtime")
    path = write_pipeline(tmp_path, subs={"TextDetection": {"use_hpip": False}})
    with hpinfer.create_pipeline(path, use_hpip=True, use_textline_orientation=False) as pipe:
        assert pipe.text_det.session.backend == "onnxruntime"
        assert pipe.text_rec.session.backend == "openvino"  # the CPU rule's first choice, installed here
        assert pipe.textline_cls is None

    logs = engine_records(caplog)
    assert "engine onnxruntime on cpu (use_hpip is off: standard inference)" in logs[DET]
    assert "engine openvino on cpu (rule cpu-default: OpenVINO runs" in logs[REC]
    assert "ch_ppocr_mobile_v2.0_cls" not in logs  # switched off: never loaded
