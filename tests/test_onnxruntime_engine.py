"""ONNX Runtime engine facts that decide where a model runs and when its cached artifacts are rebuilt."""

from __future__ import annotations

import importlib.metadata
import warnings

import onnxruntime as ort
import pytest

from hpinfer.config import BackendConfig
from hpinfer.device import Device
from hpinfer.errors import EngineUnavailableError
from hpinfer.models.registry import resolve_model
from hpinfer.runtime.engines import ENGINES
from hpinfer.runtime.engines.onnxruntime import OnnxRuntimeEngine

CLS = "ch_ppocr_mobile_v2.0_cls"


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_a_gpu_session_that_silently_runs_on_the_cpu_is_refused():
    """A CPU-only onnxruntime asked for CUDAExecutionProvider only warns and runs on the CPU (as onnxruntime-gpu
    does when its CUDA libraries are missing): the engine checks what the session got and refuses."""
    path = resolve_model(CLS).model_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnxruntime's own "provider not available" warning
        with pytest.raises(EngineUnavailableError, match=r"got \['CPUExecutionProvider'\].*install onnxruntime-gpu"):
            OnnxRuntimeEngine.load(path, BackendConfig(), Device("gpu", 0))
    with OnnxRuntimeEngine.load(path, BackendConfig(), Device("cpu")) as session:  # the CPU is what it asked for
        assert "CPU" in session.settings


def test_engine_versions_come_from_the_distribution_that_provides_the_module():
    """onnxruntime-gpu provides the same module as onnxruntime: either one's version keys the cache."""
    assert ENGINES["onnxruntime"].version() == ort.__version__
    provider = importlib.metadata.packages_distributions()["onnxruntime"][0]
    assert importlib.metadata.version(provider) == ort.__version__
    assert ENGINES["tensorrt"].version() is None or ENGINES["tensorrt"].is_installed()
