"""What makes a reduced-precision torch start fast the second time: the accuracy guard's verdict and the mixed
plan's calibrated ranges live in the engine's cache entry, and Inductor's kernels in hpinfer's cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hpinfer.config import BackendConfig, TorchConfig
from hpinfer.device import Device
from hpinfer.models import create_model, resolve_model
from hpinfer.runtime import builder, onnx_to_torch
from hpinfer.runtime.cache import ENV_CACHE_DIR
from hpinfer.runtime.engines.torch_engine import TorchEngine
from hpinfer.runtime.engines.torch_engine.module import RANGES_FILE
from hpinfer.runtime.hardware import cpu_has_fast_bf16

pytest.importorskip("torch")
CLS = "ch_ppocr_mobile_v2.0_cls"
CPU = Device("cpu")
needs_bf16 = pytest.mark.skipif(not cpu_has_fast_bf16(), reason="bf16 on the CPU needs AVX512-BF16/AMX")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "cache"))
    return tmp_path / "cache"


@needs_bf16
def test_the_guard_runs_once_per_config_and_its_verdict_is_cached(cache_dir, shared_images, monkeypatch):
    hpi = {"auto_config": False, "backend": "torch", "backend_config": {
        "precision": "bf16", "cpu_num_threads": 2, "calibration": {"num_samples": 3, "data": str(shared_images)}}}
    calls = []
    measure = builder.measure_drift
    monkeypatch.setattr(builder, "measure_drift", lambda *a, **k: calls.append(1) or measure(*a, **k))
    with create_model(CLS, use_hpip=True, hpi_config=hpi) as first:
        entry = first.session.artifact
    assert len(calls) == 1
    verdict = json.loads((entry / "manifest.json").read_text())["info"]["drift"]
    with create_model(CLS, use_hpip=True, hpi_config=hpi) as second:
        assert second.session.artifact == entry
    assert len(calls) == 1  # the second start read the verdict from the entry
    assert json.loads((entry / "manifest.json").read_text())["info"]["drift"] == verdict
    other = {**hpi, "backend_config": {**hpi["backend_config"], "torch": {"channels_last": True}}}
    with create_model(CLS, use_hpip=True, hpi_config=other):
        pass
    assert len(calls) == 2  # another config is judged on its own


@needs_bf16
def test_a_cached_reduced_precision_entry_skips_the_calibration_runs(tmp_path, monkeypatch):
    path = resolve_model(CLS).model_file
    config = BackendConfig(precision="bf16", cpu_num_threads=1)
    TorchEngine.build(path, config, CPU, tmp_path)
    assert json.loads((tmp_path / RANGES_FILE).read_text())  # calibrated at build time
    x = np.random.RandomState(0).uniform(-1, 1, (2, 3, 48, 192)).astype(np.float32)
    want = TorchEngine.load(path, config, CPU).run_one(x)[0]

    def no_calibration(shape):
        raise AssertionError("a cached entry must not recalibrate")

    monkeypatch.setattr(onnx_to_torch, "calibration_inputs", no_calibration)
    with TorchEngine.open(tmp_path, config, CPU) as session:
        np.testing.assert_array_equal(session.run_one(x)[0], want)  # the same mixed plan


def test_compiled_kernels_are_kept_in_hpinfers_cache(cache_dir, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "set")  # recorded, so the test leaves the variable as it found it
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    TorchEngine.load(resolve_model(CLS).model_file, BackendConfig(cpu_num_threads=1, torch=TorchConfig(compile="default")), CPU)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(cache_dir / "torchinductor")
