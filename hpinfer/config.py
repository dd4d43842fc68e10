"""The ``hpi_config`` schema (typed, strict) and the precedence rules that merge its levels.

Configuration is resolved once, at the edge (API, CLI, pipeline YAML), into these objects;
everything further in receives plain, validated values.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import ConfigError

Precision = Literal["fp32", "fp16", "bf16", "int8"]
BACKEND_NAMES = ("onnxruntime", "openvino", "torch", "tensorrt")


class CalibrationConfig(BaseModel):
    """How an int8 model is calibrated. Every field changes the quantized model, so all are in its cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    # A folder (or file) of images or PDFs like the ones you will run; None: examples/ plus generated text pages.
    data: Optional[str] = None
    # Calibration inputs; every 5th is held back from int8 calibration to judge int8 on (fp16/bf16: all of them).
    num_samples: int = Field(default=100, ge=2, le=1000)
    keep_first_last: bool = True  # the layers nearest the inputs and outputs are the most sensitive: keep them float
    exclude_nodes: Tuple[str, ...] = ()  # more nodes to keep float, by ONNX node name
    exclude_op_types: Tuple[str, ...] = ()  # more op types to keep float, e.g. ["Softmax"]


CompileMode = Literal["none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class TorchConfig(BaseModel):
    """Options of the ``torch`` engine (``backend_config.torch``); only that engine reads them. Every field changes
    what runs, so all are part of the model-cache key.

    - ``compile``: ``torch.compile`` (Inductor) mode; ``none`` runs the translated module as is. Compiling takes
      10-20 s per model and input shape on an H100 (``max-autotune``: minutes), paid again at every start.
      ``reduce-overhead`` and ``max-autotune`` use torch's own CUDA graphs, so the engine's are then off.
    - ``aot``: ``torch.export`` + AOTInductor: the module is compiled once (dynamic shapes within
      ``dynamic_shapes``, or the model's own dynamic axes) into a package stored in the model cache, keyed by GPU
      architecture, CUDA/driver and torch versions; later starts load it in well under a second. Not with ``compile``.
      Each new package is loaded and run once in a child process before it is kept: with torch 2.11 on an H100
      every package crashed a fresh process's loader (segmentation fault), so there they are refused with that reason.
    - ``cuda_graphs``: capture a CUDA graph per input shape (batch padded to power-of-two buckets when
      ``dynamic_shapes`` is given) and replay it; the PP-OCR models are launch-bound without.
    - ``tf32``: TF32 convolutions/matmuls in fp32 (faster, ~1e-3 relative error; off for fidelity with the CPU).
    - ``contexts``: execution contexts (own CUDA stream, graphs and memory each) so concurrent callers overlap.
    - ``channels_last``: NHWC memory format for weights and inputs (cuDNN's preferred layout in fp16/bf16).
    - ``device_preprocess``: detection models get the resized uint8 image and normalise it on the GPU
      (4x less to copy, no host normalisation); same arithmetic as the CPU path.
    - ``cudnn_benchmark``: cuDNN times its algorithms for every new convolution shape and keeps the fastest (the
      graphs replay it). Each new input shape then pays an autotuning pass, seconds for a detector: turn it off
      where shapes keep changing (a server batching pages of all sizes across requests).
    - ``capture_after``: sightings of a shape before its graph is captured (1 when ``dynamic_shapes`` is set);
      ``max_graphs``: graphs kept per context (least recently used dropped).
    - ``shape_buckets``: pad the model's free image sides / line widths with zeros up to a few sizes (about 15 %
      apart) and crop the outputs back, so a GPU sees a bounded set of shapes (one autotuning pass and graph each).
      Not bit-exact near the padded edges: off by default, its drift measured by the accuracy guard.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    compile: CompileMode = "none"
    aot: bool = False
    cuda_graphs: bool = True
    tf32: bool = False
    contexts: int = Field(default=1, ge=1, le=16)
    channels_last: bool = False
    device_preprocess: bool = True
    cudnn_benchmark: bool = True
    capture_after: int = Field(default=2, ge=1, le=100)
    max_graphs: int = Field(default=64, ge=1, le=4096)
    shape_buckets: bool = False

    @model_validator(mode="after")
    def _one_compiler(self):
        if self.aot and self.compile != "none":
            raise ValueError(f"aot (AOTInductor, compiled once and cached) and compile={self.compile!r} exclude each other; pick one")
        return self

    @property
    def own_cuda_graphs(self) -> bool:
        """Whether the engine captures graphs itself (torch.compile's cudagraph modes capture their own)."""
        return self.cuda_graphs and self.compile not in ("reduce-overhead", "max-autotune")


class BackendConfig(BaseModel):
    """Settings every engine understands; an engine ignores none silently (it rejects what it can't do)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_num_threads: Optional[int] = Field(default=None, ge=1, le=1024)
    # Inferences of one model (or of several, as pipeline stage threads make them) that may run at the same
    # time, cpu_num_threads split among them. None: one at a time with all the threads (OpenVINO's LATENCY
    # hint); on 2 cores two streams were no faster than one (benchmarks/RESULTS.md). See
    # hpinfer/pipelines/ocr.py for how stage threads use it.
    cpu_num_streams: Optional[int] = Field(default=None, ge=1, le=64)
    precision: Precision = "fp32"
    # {input_name: [[min...], [opt...], [max...]]}, as in PaddleX/TensorRT.
    dynamic_shapes: Optional[Dict[str, List[List[int]]]] = None
    calibration: CalibrationConfig = CalibrationConfig()
    # Largest accepted drift of a reduced precision from fp32 on the guard's inputs, in the task's own metric
    # (detection 1 - box F1 x mean IoU, recognition CER, classification 1 - top-1 agreement); None: the task's default.
    accuracy_tolerance: Optional[float] = Field(default=None, ge=0, le=1)
    torch: TorchConfig = TorchConfig()  # read by the torch engine only; see TorchConfig

    @field_validator("dynamic_shapes")
    @classmethod
    def _check_shapes(cls, value):
        if value is None:
            return value
        for name, triple in value.items():
            if len(triple) != 3:
                raise ValueError(f"{name}: give exactly three shapes [min, opt, max], got {len(triple)}")
            lo, opt, hi = triple
            if not (len(lo) == len(opt) == len(hi)):
                raise ValueError(f"{name}: min/opt/max must have the same rank")
            if any(d < 1 for d in lo) or not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise ValueError(f"{name}: need 1 <= min <= opt <= max in every dimension, got {triple}")
        return value


class HPIConfig(BaseModel):
    """High-performance inference settings for one model (PaddleX's ``hpi_config``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auto_config: bool = True
    backend: Optional[str] = None
    backend_config: BackendConfig = BackendConfig()

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value):
        if value is not None and value not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {value!r}; known backends: {', '.join(BACKEND_NAMES)}")
        return value

    @model_validator(mode="after")
    def _manual_needs_backend(self, info: ValidationInfo):
        partial = bool(info.context and info.context.get("partial"))
        if not partial and not self.auto_config and self.backend is None:
            raise ValueError(
                "auto_config is false (manual mode) but no backend is set; "
                'add e.g. "backend": "onnxruntime", or set "auto_config": true'
            )
        return self


def allowed_keys(model: type) -> str:
    """The keys a config model accepts, nested ones in braces (from its fields, so never out of date)."""
    parts = []
    for name, info in model.model_fields.items():
        nested = info.annotation
        is_model = isinstance(nested, type) and issubclass(nested, BaseModel)
        parts.append(f"{name}{{{allowed_keys(nested)}}}" if is_model else name)
    return ", ".join(parts)


def _format_validation_error(where: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key (allowed: {allowed_keys(HPIConfig)})"
        parts.append(f"{where}.{loc}: {msg}" if loc else f"{where}: {msg}")
    return "; ".join(parts)


def parse_hpi_config(
    value: "HPIConfig | Mapping[str, Any] | str | None", where: str = "hpi_config", partial: bool = False
) -> HPIConfig:
    """Accept a dict, a JSON string or an HPIConfig; raise ConfigError with every problem listed.

    ``partial`` validates one level of a multi-level config, whose cross-field rules
    (manual mode needs a backend) only apply after merging.
    """
    if isinstance(value, HPIConfig):
        return value
    if value is None:
        return HPIConfig()
    if isinstance(value, str):
        value = parse_json_object(value, where)
    try:
        return HPIConfig.model_validate(dict(value), context={"partial": partial})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(where, err)) from None
    except TypeError:
        raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}") from None


def parse_json_object(text: str, where: str) -> Dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where} is not valid JSON ({err.msg} at column {err.colno}): {text!r}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a JSON object like '{{\"backend\": \"openvino\"}}', got {text!r}")
    return value


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    """Override wins key by key; nested mappings merge rather than replace."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def hpi_as_dict(value: "HPIConfig | Mapping[str, Any] | str | None", where: str) -> Dict[str, Any]:
    """Only the keys a level actually sets, so that merging keeps lower levels' other keys."""
    if value is None:
        return {}
    if isinstance(value, HPIConfig):
        return value.model_dump(exclude_unset=True)
    if isinstance(value, str):
        value = parse_json_object(value, where)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
    parse_hpi_config(value, where, partial=True)  # validate each level on its own, so errors name the level
    return dict(value)
