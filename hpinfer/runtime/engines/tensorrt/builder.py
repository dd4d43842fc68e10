"""A serialized TensorRT engine from an ONNX file: one optimization profile from ``dynamic_shapes`` (else the
model's default bounds, ``shapes.bounds_for``; else ``DEFAULT_RANGE`` for dynamic dimensions), the precision flags,
and a timing cache per TensorRT version and GPU architecture in the user cache dir (later builds are faster). int8
uses explicit quantization: the builder hands this engine the QDQ model the shared quantizer made from the
calibration set (TensorRT 10 deprecates its implicit calibrators)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

from ....config import BackendConfig
from ....device import Device
from ...shapes import bounds_for

ENGINE_FILE = "model.engine"
# min, opt, max for a dynamic dimension without dynamic_shapes: the batch, then image sides.
DEFAULT_RANGE = {0: (1, 1, 32), "other": (32, 640, 2048)}


def _profile_shapes(shape: Sequence[int], bounds: Optional[Sequence[Sequence[int]]]) -> Tuple[Tuple[int, ...], ...]:
    if bounds is not None:
        return tuple(tuple(b) for b in bounds)
    ranges = [(d, d, d) if d > 0 else DEFAULT_RANGE[0 if i == 0 else "other"] for i, d in enumerate(shape)]
    return tuple(tuple(r[k] for r in ranges) for k in range(3))


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def build_engine_file(model_path: Path, config: BackendConfig, device: Device, out_dir: Path) -> None:
    """Parse, configure and build; writes ``out_dir/ENGINE_FILE`` and updates the timing cache."""
    import tensorrt as trt
    import torch

    from ...cache import user_cache_dir

    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: every network has an explicit batch dimension
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {model_path.name}: {errors}")
    builder_config = builder.create_builder_config()
    builder_config.builder_optimization_level = 3
    flags = {"fp16": trt.BuilderFlag.FP16, "bf16": trt.BuilderFlag.BF16, "int8": trt.BuilderFlag.INT8}
    if config.precision in flags:
        builder_config.set_flag(flags[config.precision])
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        bounds = bounds_for(config, tensor.name, i, tuple(tensor.shape))  # dynamic_shapes, else the model's defaults
        profile.set_shape(tensor.name, *_profile_shapes(tuple(tensor.shape), bounds))
    builder_config.add_optimization_profile(profile)
    major, minor = torch.cuda.get_device_capability(device.index)
    timing_path = user_cache_dir() / f"tensorrt-{trt.__version__}-sm{major}{minor}.timing"
    timing = builder_config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    builder_config.set_timing_cache(timing, ignore_mismatch=False)
    with torch.cuda.device(device.index):
        serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {model_path.name} (see its log above)")
    (out_dir / ENGINE_FILE).write_bytes(bytes(serialized))
    timing_path.parent.mkdir(parents=True, exist_ok=True)
    timing_path.write_bytes(bytes(builder_config.get_timing_cache().serialize()))
