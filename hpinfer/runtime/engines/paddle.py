"""Paddle Inference: runs PaddlePaddle model files as PaddleX exports them, without conversion.

A model is ``inference.json`` (PIR, the "new IR") or ``inference.pdmodel`` (legacy program) with
``inference.pdiparams`` beside it. CPU runs use oneDNN and ``cpu_num_threads``; a GPU build of paddlepaddle
runs on the GPU, and fp16 there goes through Paddle-TensorRT when paddlepaddle was built with it.

Which IR runs a model is not left to Paddle's defaults, because with paddlepaddle 3.3.1 they fail on PP-OCR:
a legacy program runs on the legacy IR (the new IR, translating it, fails with and without oneDNN), and a PIR
program whose interpolation ops keep their ``scale`` as doubles (PP-OCRv4 det's FPN) cannot run under oneDNN
(``ConvertPirAttribute2RuntimeAttribute not support [pir::ArrayAttribute<pir::DoubleAttribute>]``): oneDNN is
then turned off for that model, with a warning that says why.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import shutil
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from ...config import BackendConfig
from ...device import Device
from ...errors import EngineUnavailableError
from ..hardware import cpu_count
from ..shapes import current_defaults
from .base import Engine, EngineSession, TensorInfo

log = logging.getLogger("hpinfer.runtime")

PARAMS_SUFFIX = ".pdiparams"
MODEL_SUFFIXES = (".json", ".pdmodel")  # PIR program, legacy program


def is_paddle_model(path: Path) -> bool:
    return Path(path).suffix in MODEL_SUFFIXES


def params_file(model_path: Path) -> Path:
    return Path(model_path).with_suffix(PARAMS_SUFFIX)


def _walk(node):
    """Every JSON object in a PIR program, depth first."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


@functools.lru_cache(maxsize=32)
def _pir_program(path: str, mtime_ns: int) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def pir_program(model_path: Path) -> dict:
    return _pir_program(str(model_path), model_path.stat().st_mtime_ns)


def double_scale_ops(program: dict) -> List[dict]:
    """The interpolation ops whose ``scale`` attribute is an array of doubles (``0.a_f64``)."""
    found = []
    for op in _walk(program):
        name = op.get("#")
        if isinstance(name, str) and name.endswith("_interp"):
            for attr in op.get("A", ()):
                value = attr.get("AT", {})
                if attr.get("N") == "scale" and any(e.get("#") == "0.a_f64" for e in value.get("D", ()) if isinstance(e, dict)):
                    found.append(attr)
    return found


def onednn_refusal(model_path: Path) -> Optional[str]:
    """Why oneDNN cannot run this model (paddlepaddle 3.3.1), or None."""
    if model_path.suffix != ".json":
        return None
    count = len(double_scale_ops(pir_program(model_path)))
    if not count:
        return None
    return (
        f"{count} interpolation op(s) in {model_path.name} keep 'scale' as doubles, which Paddle's oneDNN kernels "
        f"cannot read under the new IR (NotImplementedError: ConvertPirAttribute2RuntimeAttribute); running "
        f"without oneDNN, several times slower: install paddle2onnx to run it on the ONNX engines instead"
    )


_DTYPES = {"t_f32": "float32", "t_f16": "float16", "t_i64": "int64", "t_i32": "int32", "t_bf16": "bfloat16"}


def declared_inputs(model_path: Path) -> Dict[str, Tuple[Tuple[Optional[int], ...], str]]:
    """Input name -> (shape with None for dynamic dimensions, dtype), as the program file declares them."""
    found: Dict[str, Tuple[Tuple[Optional[int], ...], str]] = {}
    if model_path.suffix == ".json":
        for op in _walk(pir_program(model_path)):
            if op.get("#") in ("1.feed", "1.data"):
                attrs = {a.get("N"): a.get("AT", {}).get("D") for a in op.get("A", ())}
                tensor = op["O"][0]["TT"]["D"]
                shape = tuple(d if d >= 0 else None for d in tensor[1])
                found[attrs["name"]] = (shape, _DTYPES.get(tensor[0]["#"].split(".")[-1], "float32"))
        return found
    from paddle.base import core

    program = core.ProgramDesc(model_path.read_bytes())
    block = program.block(0)
    for op_index in range(block.op_size()):
        op = block.op(op_index)
        if op.type() == "feed":
            name = op.output("Out")[0]
            var = block.find_var(name.encode())
            dtype = str(var.dtype()).replace("paddle.", "")
            found[name] = (tuple(d if d >= 0 else None for d in var.shape()), dtype)
    return found


class PaddleSession(EngineSession):
    backend = "paddle"

    def __init__(self, predictors: List, inputs: List[TensorInfo], outputs: List[TensorInfo], settings: str):
        super().__init__(inputs, outputs, settings)
        # A Paddle predictor is not thread-safe: one clone per stream, each used by one caller at a time.
        self._free: "queue.Queue" = queue.Queue()
        for predictor in predictors:
            self._free.put(predictor)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        predictor = self._free.get()
        try:
            for name, array in feeds.items():
                handle = predictor.get_input_handle(name)
                handle.reshape(array.shape)
                handle.copy_from_cpu(np.ascontiguousarray(array))
            predictor.run()
            return [predictor.get_output_handle(o.name).copy_to_cpu() for o in self.outputs]
        finally:
            self._free.put(predictor)

    def close(self) -> None:
        self._free = queue.Queue()


class PaddleEngine(Engine):
    name = "paddle"
    module = "paddle"
    pip_name = "paddlepaddle"

    @classmethod
    def version(cls) -> Optional[str]:
        return super().version() or cls._gpu_version()

    @classmethod
    def _gpu_version(cls) -> Optional[str]:
        import importlib.metadata

        try:
            return importlib.metadata.version("paddlepaddle-gpu")
        except importlib.metadata.PackageNotFoundError:
            return None

    @classmethod
    def unsupported_reason(cls, device: Device, precision: str) -> Optional[str]:
        if device.is_gpu:
            import paddle

            if not paddle.device.is_compiled_with_cuda():
                return "this paddlepaddle build has no CUDA (install paddlepaddle-gpu)"
            if precision == "fp16" and not _has_tensorrt():
                return "fp16 on the paddle engine runs through Paddle-TensorRT, which this paddlepaddle build lacks"
            if precision not in ("fp32", "fp16"):
                return f"precision {precision} is not supported by the paddle engine on a GPU (fp32, fp16)"
            return None
        if precision != "fp32":
            return f"precision {precision} is not supported by the paddle engine on a CPU (fp32 only)"
        return None

    @classmethod
    def load(cls, model_path: Path, config: BackendConfig, device: Device) -> EngineSession:
        model_path = Path(model_path)
        if not is_paddle_model(model_path):
            raise EngineUnavailableError(
                f"the paddle engine runs PaddlePaddle models (inference.json or inference.pdmodel), not {model_path.name}"
            )
        params = params_file(model_path)
        if not params.is_file():
            raise EngineUnavailableError(f"{model_path.name} needs its weights {params.name} beside it in {model_path.parent}")
        import paddle.inference as pi

        options = pi.Config(str(model_path), str(params))
        options.disable_glog_info()
        new_ir = model_path.suffix == ".json"
        options.enable_new_ir(new_ir)
        threads = config.cpu_num_threads or cpu_count()
        streams = min(config.cpu_num_streams or 1, threads)
        if device.is_gpu:
            options.enable_use_gpu(256, device.index)
            where = f"GPU {device.index}" + _tensorrt(options, config, model_path)
        else:
            options.disable_gpu()
            options.set_cpu_math_library_num_threads(max(1, threads // streams))
            refusal = onednn_refusal(model_path)
            if refusal:
                log.warning("%s: paddle engine: %s", model_path.parent.name, refusal)
                options.disable_onednn()
            else:
                options.enable_onednn()
            where = f"CPU oneDNN={'off' if refusal else 'on'} threads={threads}" + (f" streams={streams}" if streams > 1 else "")
        predictor = pi.create_predictor(options)
        predictors = [predictor] + [predictor.clone() for _ in range(streams - 1)]
        declared = declared_inputs(model_path)
        inputs = [
            TensorInfo(name, *declared.get(name, ((None,) * 4, "float32"))) for name in predictor.get_input_names()
        ]
        outputs = [TensorInfo(name, (), "float32") for name in predictor.get_output_names()]
        import paddle

        settings = f"paddle {paddle.__version__} {where} ir={'new' if new_ir else 'legacy'} precision={config.precision}"
        return PaddleSession(predictors, inputs, outputs, settings)

    @classmethod
    def build(cls, model_path: Path, config: BackendConfig, device: Device, out_dir: Path) -> None:
        """The program and its weights, copied into the cache entry: nothing is compiled ahead of a run."""
        shutil.copyfile(model_path, out_dir / f"inference{model_path.suffix}")
        shutil.copyfile(params_file(model_path), out_dir / f"inference{PARAMS_SUFFIX}")

    @classmethod
    def open(cls, artifact_dir: Path, config: BackendConfig, device: Device) -> EngineSession:
        model = next(artifact_dir / f"inference{s}" for s in MODEL_SUFFIXES if (artifact_dir / f"inference{s}").is_file())
        return cls.load(model, config, device)


def _has_tensorrt() -> bool:
    import paddle.inference as pi

    return pi.get_trt_compile_version() != (0, 0, 0)


def _tensorrt(options, config: BackendConfig, model_path: Path) -> str:
    """Paddle-TensorRT for fp16 (fp32 runs Paddle's own GPU kernels), with the dynamic-shape profile of the
    first input from ``dynamic_shapes`` or the model's default bounds."""
    if config.precision != "fp16":
        return ""
    import paddle.inference as pi

    options.enable_tensorrt_engine(
        workspace_size=1 << 30, max_batch_size=1, min_subgraph_size=3,
        precision_mode=pi.PrecisionType.Half, use_static=False, use_calib_mode=False,
    )
    shapes = config.dynamic_shapes or {}
    if not shapes:
        defaults = current_defaults()
        if defaults:
            name = next(iter(declared_inputs(model_path)), "x")
            shapes = {name: defaults}
    if shapes:
        options.set_trt_dynamic_shape_info(
            {k: v[0] for k, v in shapes.items()}, {k: v[2] for k, v in shapes.items()}, {k: v[1] for k, v in shapes.items()}
        )
    return " TensorRT fp16"
