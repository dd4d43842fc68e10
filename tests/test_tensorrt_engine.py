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


def test_per_shape_state_is_bounded():
    """Buffers and graphs per input shape are kept for the most recently used shapes only."""
    from hpinfer.runtime.engines.lru import LRU

    lru = LRU(2)
    assert lru.put("a", 1) is None and lru.put("b", 2) is None
    assert lru.get("a") == 1  # "b" is now the least recently used
    assert lru.put("c", 3) == 2 and "b" not in lru and len(lru) == 2 and lru.get("a") == 1


def test_shapes_past_the_bound_are_dropped_on_the_gpu():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install tensorrt, on an NVIDIA GPU machine)")
    if TensorRTEngine.unsupported_reason(GPU, "fp32"):
        pytest.skip(TensorRTEngine.unsupported_reason(GPU, "fp32"))
    from hpinfer.runtime.engines.tensorrt import session as tensorrt

    path = resolve_model("PP-OCRv4_mobile_rec").model_file
    config = BackendConfig(dynamic_shapes={"x": [[1, 3, 48, 32], [1, 3, 48, 320], [1, 3, 48, 2048]]})
    with TensorRTEngine.load(path, config, GPU) as session:
        for width in range(32, 32 + 8 * (tensorrt.MAX_SHAPES + 4), 8):
            session.run_one(np.zeros((1, 3, 48, width), np.float32))
        assert len(session._bound) == tensorrt.MAX_SHAPES
