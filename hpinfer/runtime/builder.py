"""Build, or find in the model cache, what one engine needs to run one model at one precision; and open it.

The cache key of an engine entry holds everything that changes the artifact: the model file's hash, the
engine and its version, the effective backend_config (threads resolved), the device and the CPU's model and
instruction-set flags, and, for reduced precision, the calibration set and quantizer. int8 goes through a
shared calibration entry (prepared graph + calibration table) first. A reduced-precision entry also records
its accuracy drift from fp32 on the calibration inputs (int8: the held-back ones); the loader decides whether to accept it
before opening it.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from ..config import BackendConfig, CalibrationConfig
from ..device import Device
from ..errors import ConfigError
from . import accuracy, quantize
from .cache import CACHE_FORMAT, Entry, ModelCache, cache_root, file_sha256
from .calibration import samples, source_digest
from .engines import ENGINES, EngineSession
from .hardware import cpu_count, cpu_flags, cpu_name, driver_version, gpu_name
from .shapes import ShapeBounds, current_defaults
from .task import ModelTask


@dataclass(frozen=True)
class Artifact:
    """A valid cache entry for one engine, model, precision and machine."""

    backend: str
    config: BackendConfig
    entry: Entry
    drift: Optional[accuracy.Drift]  # None for exact configs (fp32), or when the task has no metric

    def open(self, model_path: Path, device: Device) -> EngineSession:
        session = ENGINES[self.backend].open(self.entry.path, self.config, device)
        session.artifact = self.entry.path
        session.shape_bounds = ShapeBounds.from_config(self.config, session.inputs, model_path)
        return session


def hardware_fields(device: Device) -> Dict[str, str]:
    """The machine an artifact is valid for: the CPU always (host-side code paths), the GPU model and driver too
    for a GPU (a TensorRT engine or compiled kernels from another GPU model fail to load, or load and run slower)."""
    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()
    fields = {"device": str(device), "cpu": cpu_name(), "cpu_flags": flags}
    if device.is_gpu:
        fields.update(gpu=gpu_name(device.index), driver=driver_version())
    return fields


def _quantizer_version() -> str:
    return ENGINES["onnxruntime"].version() or "none"


def calibration_fields(model_path: Path, task: ModelTask, config: CalibrationConfig) -> Dict[str, Any]:
    return {
        "format": CACHE_FORMAT, "model_sha256": file_sha256(model_path), "quantizer": _quantizer_version(),
        "method": config.method, "calibration_set": source_digest(task, config),
    }


def engine_fields(model_path: Path, backend: str, config: BackendConfig, device: Device, task: Optional[ModelTask]) -> Dict[str, Any]:
    effective = config.model_copy(update={"cpu_num_threads": config.cpu_num_threads or cpu_count()})
    ignored = {"accuracy_tolerance"} | (set() if config.precision == "int8" else {"calibration"})
    fields: Dict[str, Any] = {
        "format": CACHE_FORMAT, "model_sha256": file_sha256(model_path), "engine": backend,
        "engine_version": ENGINES[backend].version(), "backend_config": effective.model_dump(mode="json", exclude=ignored),
        **hardware_fields(device),
    }
    if ENGINES[backend].bakes_shape_bounds and not config.dynamic_shapes:
        fields["default_shapes"] = current_defaults()
    if not ENGINES[backend].exact(config) and task is not None:  # the drift report depends on the calibration set
        fields["task"] = task.digest()
        fields["calibration_set"] = source_digest(task, config.calibration)
        fields["guard"] = accuracy.GUARD_REVISION
    if config.precision == "int8":
        fields["quantizer"] = _quantizer_version()
        engine = ENGINES[backend]
        fields["quantized_op_types"] = [engine.int8_op_types, engine.int8_float_op_types]
        if engine.int8_symmetric:
            fields["int8_symmetric"] = True
    return fields


def build_engine(
    model_name: str, model_path: Path, backend: str, config: BackendConfig, device: Device, task: Optional[ModelTask],
    stale: Optional[str] = None,
) -> Artifact:
    """The cache entry, built if missing, corrupt or ``stale`` (why the cached one failed to open)."""
    if config.precision == "int8" and task is None:
        raise ConfigError(
            f"{model_name}: int8 needs calibration inputs made with the model's own pre-processing, but its task "
            f"is not known here; use a built-in model or create it through hpinfer.create_model"
        )
    engine = ENGINES[backend]
    cache = ModelCache(cache_root(model_path))
    fields = engine_fields(model_path, backend, config, device, task)

    def build(out_dir: Path) -> Dict[str, Any]:
        info: Dict[str, Any] = {"precision": config.precision, "engine": backend}
        with tempfile.TemporaryDirectory(prefix="hpinfer-build-") as scratch:
            source = model_path
            if config.precision == "int8":
                calibrated = _calibration_entry(cache, model_path, task, config.calibration, model_name)
                source = Path(scratch) / "int8.onnx"
                info["quantization"] = quantize.quantize(
                    calibrated.path, config.calibration, engine.int8_op_types, engine.int8_float_op_types, source,
                    symmetric=engine.int8_symmetric,
                )
            engine.build(source, config, device, out_dir)
        if not engine.exact(config) and task is not None and task.tolerance is not None:
            with engine.open(out_dir, config, device) as session:
                drift = measure_drift(session, model_path, task, config, model_name)
                if drift is not None:
                    info["drift"] = drift.as_dict()
        return info

    entry = cache.get_or_build(cache.entry_dir(model_path, backend, fields), fields, build, model_name, stale)
    drift = entry.info.get("drift")
    return Artifact(backend, config, entry, accuracy.Drift(**drift) if drift else None)


def _calibration_entry(cache: ModelCache, model_path: Path, task: ModelTask, config: CalibrationConfig, label: str) -> Entry:
    fields = calibration_fields(model_path, task, config)

    def build(out_dir: Path) -> Dict[str, Any]:
        prepared = out_dir / quantize.PREPARED_MODEL
        quantize.prepare(model_path, prepared)
        return quantize.calibrate(prepared, task, config, out_dir / quantize.CALIBRATION_TABLE, label)

    return cache.get_or_build(cache.entry_dir(model_path, "calibration", fields), fields, build, label)


def measure_drift(session: EngineSession, model_path: Path, task: ModelTask, config: BackendConfig, label: str) -> Optional[accuracy.Drift]:
    """``session`` against fp32 ONNX Runtime on the original model, over the calibration inputs: int8 on the fifth
    it was not calibrated on, other precisions (nothing calibrated, nothing to hold back) on all of them."""
    reference_engine = ENGINES["onnxruntime"]
    reference, outputs = [], []
    with reference_engine.load(model_path, BackendConfig(cpu_num_threads=config.cpu_num_threads), Device("cpu")) as fp32:
        held_back = True if config.precision == "int8" else None
        for feeds in samples(task, config.calibration, session.inputs[0].name, held_back, f"{label}: accuracy guard"):
            reference.append(fp32.run(feeds))
            outputs.append(session.run(feeds))
    return accuracy.measure(task, reference, outputs)
