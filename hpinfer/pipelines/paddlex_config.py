"""PaddleX pipeline YAMLs (paddlex 3.7.2 ``paddlex/configs/pipelines/``), read as they are.

PaddleX nests pipelines (``SubPipelines``: an OCR inside layout parsing, a document preprocessor inside OCR) and
names modules its own way (``doc_text_orientation``); hpinfer's pipelines take one flat ``SubModules``. A PaddleX
file is translated into that shape, keeping PaddleX's option names and defaults (``max_side_limit``,
``score_thresh`` → ``text_rec_score_thresh``), with the ``paddlex`` profile (see ``pipelines/ocr.py``). Nothing is
dropped silently: every problem in the parts the file turns on is collected and reported at once — models hpinfer
does not ship (with what to do: a ``model_dir``, or the bundled equivalent by name) and options or features it
does not implement, each by its key.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from ..errors import ConfigError

# What marks a PaddleX file: keys hpinfer's own files never use.
_PADDLEX_KEYS = ("SubPipelines", "use_doc_preprocessor", "text_type")

# PaddleX module name -> hpinfer module (task) name
_MODULES = {
    "text_detection": "text_detection", "text_recognition": "text_recognition",
    "textline_orientation": "textline_orientation", "doc_text_orientation": "image_classification",
    "layout_detection": "layout_detection",
}
# Bundled stand-ins for PaddleX models hpinfer does not ship (same family, smaller or older).
EQUIVALENTS = {
    "PP-OCRv6_medium_det": "PP-OCRv6_small_det", "PP-OCRv6_medium_rec": "PP-OCRv6_small_rec",
    "PP-OCRv5_server_det": "PP-OCRv5_mobile_det", "PP-OCRv5_server_rec": "PP-OCRv5_mobile_rec",
    "PP-OCRv4_server_det": "PP-OCRv4_mobile_det", "PP-OCRv4_server_rec": "PP-OCRv4_mobile_rec",
    "PP-OCRv4_server_seal_det": "PP-OCRv4_mobile_seal_det",
    "PP-LCNet_x1_0_textline_ori": "ch_ppocr_mobile_v2.0_cls", "PP-LCNet_x0_25_textline_ori": "ch_ppocr_mobile_v2.0_cls",
    "RT-DETR-H_layout_17cls": "PicoDet_layout_1x_CDLA", "PP-DocLayout_plus-L": "PicoDet_layout_1x_CDLA",
    "PP-DocLayout-L": "PicoDet_layout_1x_CDLA",
}
# Sub-pipelines and sub-modules, and the option that turns each on (absent: always on).
_SWITCHES = {
    "DocPreprocessor": "use_doc_preprocessor", "TableRecognition": "use_table_recognition",
    "SealRecognition": "use_seal_recognition", "FormulaRecognition": "use_formula_recognition",
    "ChartRecognition": "use_chart_recognition", "RegionDetection": "use_region_detection",
    "DocOrientationClassify": "use_doc_orientation_classify", "DocUnwarping": "use_doc_unwarping",
    "TextLineOrientation": "use_textline_orientation", "LayoutDetection": "use_layout_detection",
}
# Options hpinfer takes with PaddleX's meaning, per sub-module (the rest are refused by name).
_MODULE_OPTIONS = {
    "TextDetection": ("limit_side_len", "limit_type", "max_side_limit", "thresh", "box_thresh", "unclip_ratio"),
    "TextRecognition": ("batch_size", "score_thresh"),
    "TextLineOrientation": ("batch_size",),
    "DocOrientationClassify": (),
    "LayoutDetection": ("threshold",),
}
_COMMON = ("module_name", "model_name", "model_dir", "use_hpip", "hpi_config")
# Features hpinfer does not have: the switch that turns each on, and what PaddleX runs for it.
_FEATURES = {
    "use_doc_unwarping": "document unwarping (UVDoc)", "use_table_recognition": "table recognition",
    "use_seal_recognition": "seal recognition inside layout parsing", "use_formula_recognition": "formula recognition",
    "use_chart_recognition": "chart recognition", "use_region_detection": "region detection",
}
_SUPPORTED = ("OCR", "doc_preprocessor", "layout_parsing")
# Pipeline-level keys understood (their meaning is applied, or they are checked by _FEATURES / _SWITCHES).
_PIPELINE_KEYS = frozenset({
    "pipeline_name", "text_type", "SubModules", "SubPipelines", "use_hpip", "hpi_config", "use_ocr_model",
    *_SWITCHES.values(), *_FEATURES,
})


def is_paddlex_config(data: Mapping[str, Any]) -> bool:
    return any(key in data for key in _PADDLEX_KEYS) or any(
        isinstance(m, Mapping) and m.get("module_name") in ("doc_text_orientation", "seal_text_detection", "image_unwarping")
        for m in (data.get("SubModules") or {}).values()
    )


class _Problems:
    def __init__(self, source: str):
        self.source, self.items = source, []

    def add(self, where: str, text: str) -> None:
        self.items.append(f"{where}: {text}")

    def raise_if_any(self, name: str) -> None:
        if self.items:
            raise ConfigError(
                f"{self.source} (PaddleX {name} pipeline) cannot run in hpinfer as it is — "
                + "; ".join(f"({i + 1}) {p}" for i, p in enumerate(self.items))
            )


def _on(options: Mapping[str, Any], key: str) -> bool:
    switch = _SWITCHES.get(key)
    return switch is None or bool(options.get(switch, True))


def _module(raw: Any, key: str, where: str, problems: _Problems) -> Optional[Dict[str, Any]]:
    """One PaddleX sub-module as an hpinfer one, or None after recording why not."""
    from ..models import BUILT_IN

    if not isinstance(raw, Mapping):
        problems.add(where, "must be a mapping")
        return None
    module = raw.get("module_name")
    ours = _MODULES.get(module)
    if ours is None:
        problems.add(where, f"module {module!r} is not supported (hpinfer has {', '.join(sorted(_MODULES))})")
        return None
    name, model_dir = raw.get("model_name"), raw.get("model_dir")
    if model_dir is None and name not in BUILT_IN:
        hint = f"or use the bundled {EQUIVALENTS[name]} (model_name: {EQUIVALENTS[name]})" if name in EQUIVALENTS else (
            "or a built-in model: see 'hpinfer models'")
        problems.add(where, f"model {name} is not shipped with hpinfer: give its PaddleX model_dir, {hint}")
    allowed = _MODULE_OPTIONS.get(key, ())
    unknown = [k for k in raw if k not in _COMMON and k not in allowed]
    for option in unknown:
        problems.add(f"{where}.{option}", "option not supported by hpinfer" + (f" (supported: {', '.join(allowed)})" if allowed else ""))
    out = {k: v for k, v in raw.items() if k in _COMMON or k in allowed}
    out["module_name"] = ours
    return out


def _features(options: Mapping[str, Any], where: str, problems: _Problems) -> None:
    for switch, what in _FEATURES.items():
        if options.get(switch):
            problems.add(f"{where}{switch}", f"{what} is not part of hpinfer; set it to false")


def _collect(data: Mapping[str, Any], where: str, problems: _Problems, modules: Dict[str, Dict[str, Any]],
             options: Dict[str, Any]) -> None:
    """Flatten one (sub-)pipeline's enabled modules into ``modules``, its options into ``options``."""
    _features(data, where, problems)
    for option in data:
        if option not in _PIPELINE_KEYS:
            problems.add(f"{where}{option}", "option not supported by hpinfer")
    if data.get("text_type", "general") != "general":
        problems.add(f"{where}text_type", f"{data['text_type']!r} is not supported (general only)")
    for key, raw in (data.get("SubModules") or {}).items():
        if not _on(data, key) or key == "DocUnwarping":
            continue
        module = _module(raw, key, f"{where}SubModules.{key}", problems)
        if module is None:
            continue
        score = module.pop("score_thresh", None)
        if score is not None:
            options["text_rec_score_thresh"] = score
        modules[key] = module
    for key, sub in (data.get("SubPipelines") or {}).items():
        if not isinstance(sub, Mapping):
            problems.add(f"{where}SubPipelines.{key}", "must be a mapping")
        elif _on(data, key):
            if key == "DocPreprocessor":
                options["use_doc_orientation_classify"] = bool(sub.get("use_doc_orientation_classify", True))
            elif sub.get("pipeline_name") == "OCR":
                options["use_textline_orientation"] = bool(sub.get("use_textline_orientation", True))
            _collect(sub, f"{where}SubPipelines.{key}.", problems, modules, options)


def from_paddlex(data: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """A PaddleX pipeline file as hpinfer's pipeline mapping; ConfigError listing every problem."""
    name = data.get("pipeline_name")
    problems = _Problems(source)
    if name not in _SUPPORTED:
        problems.add("pipeline_name", f"{name!r} is not an hpinfer pipeline (PaddleX pipelines hpinfer reads: {', '.join(_SUPPORTED)})")
    modules: Dict[str, Dict[str, Any]] = {}
    options: Dict[str, Any] = {"profile": "paddlex"} if name in ("OCR", "layout_parsing") else {}
    if name == "doc_preprocessor":
        options["use_doc_orientation_classify"] = bool(data.get("use_doc_orientation_classify", True))
    elif name == "OCR":
        options["use_doc_orientation_classify"] = False
        options["use_textline_orientation"] = bool(data.get("use_textline_orientation", True))
        options["text_rec_score_thresh"] = 0.0  # PaddleX's default when TextRecognition sets none
    _collect(data, "", problems, modules, options)
    problems.raise_if_any(str(name))
    passthrough = {k: v for k, v in data.items() if k in ("use_hpip", "hpi_config")}
    return {"pipeline_name": name, **options, **passthrough, "SubModules": modules}

