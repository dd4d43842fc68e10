"""The TensorRT engine, where TensorRT and a GPU exist (not in CI, not on the GPU lent to this project)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from hpinfer.config import BackendConfig
from hpinfer.device import Device
from hpinfer.models.registry import resolve_model
from hpinfer.runtime.engines import ENGINES
from hpinfer.runtime.engines.tensorrt import TensorRTEngine, _profile_shapes

GPU = Device.parse("gpu:0")


def test_registered_and_refuses_the_cpu():
    assert ENGINES["tensorrt"] is TensorRTEngine
    assert "GPU" in TensorRTEngine.unsupported_reason(Device.parse("cpu"), "fp32")


def test_optimization_profile_from_dynamic_shapes_or_defaults():
    bounds = [[1, 3, 48, 160], [8, 3, 48, 320], [32, 3, 48, 1280]]
    assert _profile_shapes((-1, 3, 48, -1), bounds) == tuple(map(tuple, bounds))
    assert _profile_shapes((-1, 3, 48, -1), None) == ((1, 3, 48, 32), (1, 3, 48, 640), (32, 3, 48, 2048))


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_matches_onnxruntime(precision, tolerance):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install tensorrt, on an NVIDIA GPU machine)")
    if TensorRTEngine.unsupported_reason(GPU, precision):
        pytest.skip(TensorRTEngine.unsupported_reason(GPU, precision))
    path = resolve_model("PP-OCRv4_mobile_rec").model_file
    config = BackendConfig(precision=precision, dynamic_shapes={"x": [[1, 3, 48, 320], [8, 3, 48, 320], [16, 3, 48, 640]]})
    x = np.random.RandomState(0).uniform(-1, 1, (8, 3, 48, 320)).astype(np.float32)
    with TensorRTEngine.load(path, config, GPU) as session:
        got = [session.run_one(x)[0] for _ in range(2)][-1]  # the second run replays the CUDA graph
    (want,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert np.abs(got - want).max() < tolerance
