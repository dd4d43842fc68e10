"""auto_paddle2onnx: a PaddlePaddle model converted to ONNX once, repaired, checked, and kept in the model cache.

paddle2onnx 2.1.0 with paddlepaddle 3.3.1 does not convert the PP-OCR models correctly as they are:

- it refuses interpolation ops whose ``scale`` is an array of doubles (PP-OCRv4 det's FPN: "the 0th
  elementwise MUST be ir::FloatAttribute"); the PIR program is given to it with those values as floats (2.0
  is 2.0 either way). A legacy ``inference.pdmodel`` is first translated to a PIR program, in which the same
  doubles appear.
- it writes ``Concat`` nodes that join 0-d and 1-d shape values (PP-OCRv4 rec, the v2.0 line classifier), which
  ONNX Runtime refuses ("All inputs to Concat must have same rank", "axis must be in [-rank, rank-1]"); the 0-d
  inputs are unsqueezed to 1-d.

Every converted model is run next to the ``paddle`` engine on the model's own calibration inputs (real images
through its pre-processing) and kept only when every output agrees; otherwise ``ConversionError`` says why and the
caller keeps the ``paddle`` engine. The conversion itself runs in a child process: it switches Paddle into static
mode and may crash inside paddle2onnx's C++ code, neither of which should reach the caller's process.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..config import BackendConfig, CalibrationConfig
from ..device import Device
from ..errors import HpinferError
from .cache import CACHE_FORMAT, ModelCache, cache_root, file_sha256
from .calibration import samples
from .task import ModelTask
from .engines.paddle import PaddleEngine, double_scale_ops, params_file

log = logging.getLogger("hpinfer.runtime")

REPAIR_REVISION = 1  # bump when a repair changes: it is part of the cache key
ONNX_FILE = "model.onnx"
OPSET = 14
CHECK_SAMPLES = 4  # calibration inputs the converted model is checked on
RTOL, ATOL = 1e-3, 1e-4
_CONVERT_TIMEOUT_S = 600


class ConversionError(HpinferError):
    """The model could not be converted into an ONNX model that matches Paddle's outputs."""


def converter_version() -> Optional[str]:
    try:
        return importlib.metadata.version("paddle2onnx")
    except importlib.metadata.PackageNotFoundError:
        return None


def to_onnx(model_name: str, model_path: Path, task: Optional[ModelTask]) -> Path:
    """The cached ONNX file converted from ``model_path`` (inference.json / .pdmodel), built and checked if new."""
    version = converter_version()
    if version is None:
        raise ConversionError("paddle2onnx is not installed (pip install 'hpinfer[paddle]')")
    if task is None:
        raise ConversionError("the model's task is not known, so the converted model cannot be checked on real inputs")
    fields: Dict[str, Any] = {
        "format": CACHE_FORMAT, "model_sha256": file_sha256(model_path), "params_sha256": file_sha256(params_file(model_path)),
        "paddle2onnx": version, "paddle": PaddleEngine.version(), "opset": OPSET, "repairs": REPAIR_REVISION,
        "task": task.digest(),
    }
    cache = ModelCache(cache_root(model_path))

    def build(out_dir: Path) -> Dict[str, Any]:
        onnx_path = out_dir / ONNX_FILE
        with tempfile.TemporaryDirectory(prefix="hpinfer-p2o-") as scratch:
            _convert_in_child(model_path, Path(scratch), onnx_path)
        repaired = repair_concat_ranks(onnx_path)
        worst = check_against_paddle(model_name, onnx_path, model_path, task)
        return {"repairs": {"concat_inputs_unsqueezed": repaired}, "max_abs_diff": worst}

    entry = cache.get_or_build(cache.entry_dir(model_path, "paddle2onnx", fields), fields, build, model_name)
    return entry.path / ONNX_FILE


def _convert_in_child(model_path: Path, scratch: Path, onnx_path: Path) -> None:
    command = [sys.executable, "-m", "hpinfer.runtime.paddle2onnx", str(model_path), str(scratch), str(onnx_path)]
    env = {**os.environ, "GLOG_minloglevel": "2"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_CONVERT_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"paddle2onnx ran over {_CONVERT_TIMEOUT_S} s") from None
    if done.returncode != 0 or not onnx_path.is_file():
        output = (done.stderr + done.stdout).splitlines()
        # paddle2onnx's own "[ERROR]" line says why (e.g. unsupported operators); an abort's trace follows it
        lines = [line for line in output if "[ERROR]" in line] or [line for line in output if "rror" in line]
        raise ConversionError(f"paddle2onnx failed (exit {done.returncode}): {(lines or ['no message'])[-1].strip()[:300]}")


def pir_source(model_path: Path, scratch: Path) -> Path:
    """A PIR program (inference.json) paddle2onnx can read, weights beside it: the legacy program translated, and
    interpolation scales written as floats."""
    params = params_file(model_path)
    if model_path.suffix == ".pdmodel":
        model_path = translate_legacy(model_path, scratch / "translated")
        params = params_file(model_path)
    program = json.loads(model_path.read_text(encoding="utf-8"))
    for attr in double_scale_ops(program):
        for element in attr["AT"]["D"]:
            if element.get("#") == "0.a_f64":
                element["#"] = "0.a_f32"
    out = scratch / "inference.json"
    out.write_text(json.dumps(program, separators=(",", ":")), encoding="utf-8")
    if params != params_file(out):
        shutil.copyfile(params, params_file(out))
    return out


def translate_legacy(model_path: Path, out_dir: Path) -> Path:
    import paddle

    out_dir.mkdir(parents=True, exist_ok=True)
    paddle.enable_static()
    executor = paddle.static.Executor(paddle.CPUPlace())
    with paddle.pir_utils.OldIrGuard():
        program, _, _ = paddle.static.load_inference_model(str(model_path.with_suffix("")), executor)
    translated = paddle.pir.translate_to_pir(program.desc)
    with paddle.pir_utils.IrGuard():
        fetches = [op.operand_source(0) for op in translated.global_block().ops if op.name() == "pd_op.fetch"]
        paddle.static.save_inference_model(str(out_dir / "inference"), [], fetches, executor, program=translated)
    return out_dir / "inference.json"


def repair_concat_ranks(onnx_path: Path) -> int:
    """Unsqueeze the 0-d inputs of Concat nodes that join 0-d and 1-d values; returns how many were."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    model = onnx.load(str(onnx_path))
    axes = "hpinfer_axes_0"
    total = 0
    for _ in range(3):  # a repair can make more ranks known
        inferred = shape_inference.infer_shapes(model)
        ranks = {
            v.name: len(v.type.tensor_type.shape.dim)
            for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
            if v.type.tensor_type.HasField("shape")
        }
        nodes, fixed = [], 0
        for node in model.graph.node:
            found = [ranks.get(name) for name in node.input]
            if node.op_type == "Concat" and 0 in found and set(found) <= {0, 1}:
                for index, name in enumerate(list(node.input)):
                    if ranks.get(name) == 0:
                        lifted = f"{name}_1d_{len(nodes)}"
                        nodes.append(helper.make_node("Unsqueeze", [name, axes], [lifted], name=f"hpinfer_unsqueeze_{lifted}"))
                        node.input[index] = lifted
                        fixed += 1
            nodes.append(node)
        if not fixed:
            break
        if not any(i.name == axes for i in model.graph.initializer):
            model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), axes))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        total += fixed
    if total:
        onnx.save(model, str(onnx_path))
    return total


def check_against_paddle(model_name: str, onnx_path: Path, model_path: Path, task: ModelTask) -> float:
    """Run both on the model's calibration inputs; the largest absolute difference, or ConversionError."""
    from .engines.onnxruntime import OnnxRuntimeEngine

    cpu = Device("cpu")
    try:
        converted = OnnxRuntimeEngine.load(onnx_path, BackendConfig(), cpu)
    except Exception as err:  # ONNX Runtime refusing the file is the verdict, not a crash
        raise ConversionError(f"ONNX Runtime cannot load the converted model: {str(err).splitlines()[0][:300]}") from None
    worst = 0.0
    with PaddleEngine.load(model_path, BackendConfig(), cpu) as paddle_session, converted:
        inputs = samples(task, CalibrationConfig(num_samples=CHECK_SAMPLES), paddle_session.inputs[0].name, None,
                         f"{model_name}: checking the ONNX conversion")
        name = converted.inputs[0].name
        for feeds in inputs:
            expected = paddle_session.run(feeds)
            got = converted.run({name: next(iter(feeds.values()))})
            for index, (a, b) in enumerate(zip(expected, got)):
                if a.shape != b.shape or not np.allclose(a, b, rtol=RTOL, atol=ATOL):
                    diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
                    raise ConversionError(
                        f"the converted model's output {index} differs from Paddle's (shape {b.shape} vs {a.shape}, "
                        f"largest difference {diff:.3g}) on a calibration input"
                    )
                worst = max(worst, float(np.abs(a - b).max()))
    log.info("%s: paddle2onnx conversion matches the paddle engine (largest difference %.2g)", model_name, worst)
    return worst


def _main(argv: List[str]) -> None:
    """Child process: ``python -m hpinfer.runtime.paddle2onnx MODEL SCRATCH OUT.onnx``."""
    model_path, scratch, out = Path(argv[0]), Path(argv[1]), Path(argv[2])
    source = pir_source(model_path, scratch)
    import paddle2onnx

    paddle2onnx.export(str(source), str(params_file(source)), str(out), opset_version=OPSET,
                       enable_onnx_checker=False, verbose=False)


if __name__ == "__main__":
    _main(sys.argv[1:])
