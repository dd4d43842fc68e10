"""Pipelines compose predictors; ``create_pipeline`` builds one from a bundled name or a YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Type

from ..config import HPIConfig
from ..device import Device
from ..errors import ConfigError
from .config import PipelineSettings, bundled_pipelines, resolve_pipeline
from .doc_preprocessor import DocPreprocessor
from .layout_parsing import LayoutParsingPipeline
from .ocr import OCRPipeline
from .paddleocr_vl import PaddleOCRVLPipeline
from .seal_recognition import SealRecognitionPipeline
from .single_model import SingleModelPipeline
from .table_recognition import TableRecognitionPipeline

# pipeline_name → class; a single-model pipeline's name is its model's task.
PIPELINES: Dict[str, Type] = {
    "OCR": OCRPipeline, "image_classification": SingleModelPipeline, "layout_detection": SingleModelPipeline,
    "doc_preprocessor": DocPreprocessor, "layout_parsing": LayoutParsingPipeline,
    "PaddleOCR-VL": PaddleOCRVLPipeline, "doc_vlm": PaddleOCRVLPipeline,
    "table_structure_recognition": SingleModelPipeline, "table_recognition": TableRecognitionPipeline,
    "seal_recognition": SealRecognitionPipeline,
}


def create_pipeline(
    pipeline: "str | Path",
    device: "str | Device | None" = None,
    use_hpip: Optional[bool] = None,
    hpi_config: "HPIConfig | Mapping[str, Any] | str | None" = None,
    **options: Any,
):
    """``pipeline``: a bundled name (``hpinfer.pipelines.bundled_pipelines()``) or a pipeline YAML path.

    ``use_hpip``/``hpi_config`` override the file's top level; a sub-module's own values still win.
    Other keyword arguments override the file's pipeline options (e.g. ``use_textline_orientation``; for a
    single-model pipeline, the model's parameters such as ``threshold``).
    """
    settings = resolve_pipeline(pipeline, use_hpip=use_hpip, hpi_config=hpi_config)
    cls = PIPELINES.get(settings.pipeline_name)
    if cls is None:
        raise ConfigError(f"{settings.source}: pipeline_name {settings.pipeline_name!r} is not one of {', '.join(PIPELINES)}")
    return cls(settings, device=device, **options)


__all__ = ["PIPELINES", "PipelineSettings", "bundled_pipelines", "create_pipeline", "resolve_pipeline"]
