"""Static int8 quantization with ONNX Runtime's tools, into QDQ models that both CPU engines run as integer
kernels (ONNX Runtime fuses QDQ into QLinear ops; OpenVINO turns it into FakeQuantize and runs int8).

Two steps, each cached on its own:
- ``calibrate``: prepare the graph (constants folded, BatchNorm fused into Conv, opset >= 13 so per-channel
  QDQ is valid for every engine), run the calibration inputs and write the calibration table (every float
  tensor's range, ONNX Runtime's JSON). Shared by all engines, and kept for reproducibility.
- ``quantize``: the QDQ model from that table with the op types the engine runs well in int8
  (``Engine.int8_op_types`` / ``int8_float_op_types``), keeping the first and last compute layers (the most
  sensitive) and any excluded nodes or op types in float.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..config import CalibrationConfig
from .calibration import Feeds, samples
from .task import ModelTask

log = logging.getLogger("hpinfer.runtime")

PREPARED_MODEL = "prepared.onnx"
CALIBRATION_TABLE = "calibration.json"
MIN_OPSET = 13  # per-channel DequantizeLinear needs opset 13
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_CHUNK = 4  # calibration inputs per pass: intermediate tensors of every layer are held in memory meanwhile
_PERCENTILE = 99.999


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def prepare(model_path: Path, out_path: Path) -> None:
    """ONNX Runtime's quantization pre-processing, then an opset upgrade where per-channel QDQ needs it."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import quant_pre_process

    quant_pre_process(str(model_path), str(out_path), skip_symbolic_shape=True)
    model = onnx.load(str(out_path))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < MIN_OPSET:
        onnx.save(version_converter.convert_version(model, MIN_OPSET), str(out_path))


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over one chunk of an iterator."""

    def __init__(self, feeds: Sequence[Feeds]):
        self._feeds = iter(feeds)

    def get_next(self) -> Optional[Feeds]:
        return next(self._feeds, None)


def calibrate(prepared: Path, task: ModelTask, config: CalibrationConfig, table: Path, label: str) -> Dict[str, Any]:
    """Run the calibration inputs through ``prepared`` and write the calibration table; returns facts for the log."""
    import onnx
    from onnxruntime.quantization import create_calibrator
    from onnxruntime.quantization.calibrate import save_tensors_data

    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    options = {"percentile": _PERCENTILE} if config.method == "percentile" else {}
    count = 0
    with tempfile.TemporaryDirectory(prefix="hpinfer-calib-") as scratch:
        calibrator = create_calibrator(
            prepared, [], augmented_model_path=str(Path(scratch) / "augmented.onnx"),
            calibrate_method=_method(config.method), extra_options=options,
        )
        stream = samples(task, config, input_name, held_back=False, progress=f"{label}: calibrating")
        while chunk := list(itertools.islice(stream, _CHUNK)):
            calibrator.collect_data(_Reader(chunk))
            count += len(chunk)
        save_tensors_data(calibrator.compute_data(), table)
    return {"calibration_inputs": count, "method": config.method}


def float_nodes(model, config: CalibrationConfig) -> List[str]:
    """Nodes kept in float: the first and last compute layers (if asked) and the ones named in the config."""
    compute = [node.name for node in model.graph.node if node.op_type in COMPUTE_OPS]
    kept = list(config.exclude_nodes)
    if config.keep_first_last and compute:
        kept += [compute[0], compute[-1]]
    return sorted(set(kept))


def quantize(
    calibration_dir: Path, config: CalibrationConfig, op_types: Optional[Sequence[str]], float_op_types: Sequence[str],
    out_path: Path, symmetric: bool = False,
) -> Dict[str, Any]:
    """A QDQ int8 model from a calibration entry: ``op_types`` (None: all) less ``float_op_types`` and the config's.
    ``symmetric``: activations as int8 with zero points 0 (TensorRT accepts no other), else uint8 with the zero
    point that fits each tensor's range (finer steps for one-sided ranges such as ReLU outputs)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    prepared = calibration_dir / PREPARED_MODEL
    model = onnx.load(str(prepared))
    keep_float = float_nodes(model, config)
    types = set(op_types) if op_types is not None else set(QDQRegistry) | set(QLinearOpsRegistry)
    types -= set(float_op_types) | set(config.exclude_op_types)
    missing = set(config.exclude_nodes) - {node.name for node in model.graph.node}
    if missing:
        log.warning("calibration.exclude_nodes names nodes the model does not have: %s", ", ".join(sorted(missing)))
    quantize_static(
        str(prepared), str(out_path), calibration_data_reader=None,
        calibration_cache_path=str(calibration_dir / CALIBRATION_TABLE), calibrate_method=_method(config.method),
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
        weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=sorted(types), nodes_to_exclude=keep_float,
        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
    )
    return {"kept_float": keep_float, "quantized_op_types": sorted(types), "symmetric": symmetric}
