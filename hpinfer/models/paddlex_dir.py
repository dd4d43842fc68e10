"""PaddleX model directories: ``inference.json`` or ``inference.pdmodel``, ``inference.pdiparams`` and ``inference.yml``.

The task, the processing values and a recogniser's characters come from ``inference.yml`` as PaddleOCR exports it:

    Global: {model_name: PP-OCRv4_mobile_det}
    PreProcess: {transform_ops: [{DecodeImage: ...}, {DetResizeForTest: ...}, {NormalizeImage: ...}, ...]}
    PostProcess: {name: DBPostProcess, thresh: 0.3, box_thresh: 0.6, unclip_ratio: 1.5}

Values the file leaves out take PaddleX 3.7.2's defaults for that module, so a directory gives the results it
gives in PaddleX. A transform or post-processor hpinfer does not implement is an error naming it and the file,
never skipped. An ``*.onnx`` file beside the Paddle files (a PaddleX high-performance export) runs the ONNX
engines directly; otherwise they get the Paddle model converted (``hpinfer.runtime.paddle2onnx``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from ..errors import ModelNotFoundError
from ..runtime.engines.paddle import MODEL_SUFFIXES, params_file

INFERENCE_YML = "inference.yml"

# Transform ops that carry nothing hpinfer's pre-processing needs (training-time label encoders, key filters).
_INERT_OPS = frozenset({"DetLabelEncode", "MultiLabelEncode", "CTCLabelEncode", "ClsLabelEncode", "KeepKeys", "ToCHWImage"})
# PaddleX 3.7.2 detects with the longer side capped at 960 for these (limit_type max), others: min side 736.
_MAX_LIMIT_DET = frozenset({
    "PP-OCRv5_server_det", "PP-OCRv5_mobile_det", "PP-OCRv6_medium_det", "PP-OCRv6_small_det", "PP-OCRv6_tiny_det",
})
_IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def is_paddlex_dir(directory: Path) -> bool:
    return (directory / INFERENCE_YML).is_file()


def paddle_model_file(directory: Path) -> Optional[Path]:
    """inference.json (PIR) if present, else inference.pdmodel, else None."""
    return next((directory / f"inference{s}" for s in MODEL_SUFFIXES if (directory / f"inference{s}").is_file()), None)


class _Reader:
    def __init__(self, path: Path):
        self.path = path
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ModelNotFoundError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ModelNotFoundError(f"{path} must hold a mapping with Global, PreProcess and PostProcess")
        self.data = data

    def fail(self, key: str, problem: str) -> ModelNotFoundError:
        return ModelNotFoundError(f"{self.path}: {key}: {problem}")

    def section(self, key: str) -> Dict[str, Any]:
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise self.fail(key, "missing or not a mapping")
        return value

    def transforms(self) -> Dict[str, Dict[str, Any]]:
        ops = self.section("PreProcess").get("transform_ops")
        if not isinstance(ops, list):
            raise self.fail("PreProcess.transform_ops", "missing or not a list")
        found: Dict[str, Dict[str, Any]] = {}
        for op in ops:
            if not isinstance(op, dict) or len(op) != 1:
                raise self.fail("PreProcess.transform_ops", f"each entry must be one {{OpName: args}}, got {op!r}")
            (name, args), = op.items()
            found[name] = args or {}
        return found


def read_paddlex_dir(directory: Path, model_name: Optional[str]) -> Tuple[str, str, Dict[str, Any], Optional[List[str]]]:
    """(model name, task, params, characters) from ``directory/inference.yml``."""
    reader = _Reader(directory / INFERENCE_YML)
    name = reader.section("Global").get("model_name")
    if not isinstance(name, str) or not name:
        raise reader.fail("Global.model_name", "missing")
    if model_name and model_name != name:
        raise reader.fail(
            "Global.model_name", f"is {name!r} but the model is configured as {model_name!r} (PaddleX requires them equal)"
        )
    post = reader.section("PostProcess")
    transforms = reader.transforms()
    kind = post.get("name") or next(iter(post), None)
    if kind == "DBPostProcess":
        return name, "text_detection", _detection(reader, name, transforms, post), None
    if kind == "CTCLabelDecode":
        characters = post.get("character_dict")
        if not isinstance(characters, list) or not characters:
            raise reader.fail("PostProcess.character_dict", "missing or empty: a recogniser needs its character list")
        return name, "text_recognition", _recognition(reader, transforms), [str(c) for c in characters]
    if kind == "Topk":
        return name, "textline_orientation", _orientation(reader, transforms, post), None
    raise reader.fail(
        "PostProcess", f"post-processor {kind!r} is not supported (hpinfer reads DBPostProcess, CTCLabelDecode and Topk "
        f"directories); give an ONNX model_dir with hpinfer.yaml instead"
    )


def _check_ops(reader: _Reader, transforms: Mapping[str, Any], known: Tuple[str, ...]) -> None:
    for op, args in transforms.items():
        if op in _INERT_OPS or op in known:
            continue
        if op == "DecodeImage":
            if str(args.get("img_mode", "BGR")).upper() != "BGR":
                raise reader.fail("PreProcess.transform_ops.DecodeImage.img_mode", f"{args['img_mode']!r} is not supported (BGR only)")
            continue
        raise reader.fail("PreProcess.transform_ops", f"transform {op!r} is not supported (supported: {', '.join(sorted(known))})")


def _normalize(reader: _Reader, args: Mapping[str, Any]) -> Dict[str, Any]:
    scale = args.get("scale", 1 / 255)
    if isinstance(scale, str):  # PaddleOCR writes "1./255."
        try:
            first, *divisors = (float(part) for part in scale.split("/"))
        except ValueError:
            raise reader.fail("PreProcess.transform_ops.NormalizeImage.scale", f"cannot read {scale!r}") from None
        for divisor in divisors:
            first /= divisor
        scale = first
    if abs(float(scale) - 1 / 255) > 1e-6:
        raise reader.fail("PreProcess.transform_ops.NormalizeImage.scale", f"{scale} is not supported (1/255 only)")
    return {"mean": list(args.get("mean", _IMAGENET["mean"])), "std": list(args.get("std", _IMAGENET["std"]))}


def _detection(reader: _Reader, name: str, transforms: Mapping[str, Any], post: Mapping[str, Any]) -> Dict[str, Any]:
    _check_ops(reader, transforms, ("DetResizeForTest", "NormalizeImage"))
    resize = transforms.get("DetResizeForTest", {})
    unknown = set(resize) - {"limit_side_len", "limit_type", "resize_long"}
    if unknown:
        raise reader.fail("PreProcess.transform_ops.DetResizeForTest", f"{sorted(unknown)} not supported")
    wide = name in _MAX_LIMIT_DET
    params: Dict[str, Any] = {
        "limit_side_len": resize.get("limit_side_len", resize.get("resize_long", 960 if wide else 736)),
        "limit_type": resize.get("limit_type", "max" if wide else "min"),
        "max_side_limit": 4000,
        **_normalize(reader, transforms.get("NormalizeImage", {})),
        # PaddleX 3.7.2's DBPostProcess defaults where the file is silent
        "thresh": post.get("thresh", 0.3), "box_thresh": post.get("box_thresh", 0.6),
        "unclip_ratio": post.get("unclip_ratio", 2.0), "max_candidates": post.get("max_candidates", 1000),
        "use_dilation": post.get("use_dilation", False), "score_mode": post.get("score_mode", "fast"),
        "box_type": post.get("box_type", "quad"),
    }
    unknown = set(post) - {"name", "thresh", "box_thresh", "unclip_ratio", "max_candidates", "use_dilation", "score_mode", "box_type"}
    if unknown:
        raise reader.fail("PostProcess", f"{sorted(unknown)} not supported by hpinfer's DB post-processing")
    return params


def _recognition(reader: _Reader, transforms: Mapping[str, Any]) -> Dict[str, Any]:
    _check_ops(reader, transforms, ("RecResizeImg",))
    shape = transforms.get("RecResizeImg", {}).get("image_shape", [3, 48, 320])
    if list(shape)[:2] != [3, 48]:
        raise reader.fail("PreProcess.transform_ops.RecResizeImg.image_shape", f"{shape} is not supported (3 x 48 x W)")
    return {"image_shape": list(shape), "resize": "paddlex"}


def _orientation(reader: _Reader, transforms: Mapping[str, Any], post: Mapping[str, Any]) -> Dict[str, Any]:
    _check_ops(reader, transforms, ("ResizeImage", "NormalizeImage", "ClsResizeImg"))
    params: Dict[str, Any] = {}
    if "ResizeImage" in transforms:  # PaddleX stretches the line to this size
        width, height = transforms["ResizeImage"].get("size", [192, 48])
        params["image_shape"] = [3, height, width]
        params["resize"] = "stretch"
    elif "ClsResizeImg" in transforms:
        params["image_shape"] = list(transforms["ClsResizeImg"].get("image_shape", [3, 48, 192]))
    params["channel_order"] = "rgb"  # PaddleX reads every classifier's input as RGB
    normalize = _normalize(reader, transforms.get("NormalizeImage", {"mean": [0.5] * 3, "std": [0.5] * 3}))
    if normalize != {"mean": [0.5] * 3, "std": [0.5] * 3}:
        raise reader.fail(
            "PreProcess.transform_ops.NormalizeImage", f"mean {normalize['mean']} / std {normalize['std']} not supported "
            f"for text line orientation (hpinfer's line classifier input is scaled to [-1, 1]: mean = std = 0.5)"
        )
    topk = post.get("Topk", post)
    labels = topk.get("label_list") if isinstance(topk, dict) else None
    if labels is not None:
        if len(labels) != 2:
            raise reader.fail("PostProcess.Topk.label_list", f"{labels} is not supported (text line orientation: 2 labels)")
        params["labels"] = [str(label).split("_")[0] for label in labels]
    return params


def paddle_files(directory: Path) -> Path:
    """The directory's Paddle program, checked to have its weights; a clear error otherwise."""
    model = paddle_model_file(directory)
    if model is None:
        raise ModelNotFoundError(
            f"model_dir {directory} has {INFERENCE_YML} but no inference.json or inference.pdmodel (a PaddleX model "
            f"directory holds the program, inference.pdiparams and inference.yml)"
        )
    if not params_file(model).is_file():
        raise ModelNotFoundError(f"model_dir {directory}: {model.name} is there but its weights inference.pdiparams are missing")
    return model
