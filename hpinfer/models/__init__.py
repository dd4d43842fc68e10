"""One predictor per task; ``create_model`` picks it from the model's task."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Type

from ..config import HPIConfig
from ..device import Device
from .base import Predictor
from .image_classification import ImageClassifier
from .layout_detection import LayoutDetector
from .registry import BUILT_IN, ModelSpec, resolve_model
from .text_detection import TextDetector
from .text_recognition import TextRecognizer
from .textline_orientation import TextLineOrientationClassifier

PREDICTORS: Dict[str, Type[Predictor]] = {
    cls.task: cls
    for cls in (TextDetector, TextLineOrientationClassifier, TextRecognizer, ImageClassifier, LayoutDetector)
}


def create_model(
    model_name: "str | None" = None,
    model_dir: "str | None" = None,
    device: "str | Device | None" = None,
    use_hpip: bool = False,
    hpi_config: "HPIConfig | Mapping[str, Any] | str | None" = None,
    **params: Any,
) -> Predictor:
    """A ready predictor for a built-in model name or a user's model directory."""
    spec = resolve_model(model_name, model_dir)
    return PREDICTORS[spec.task](spec, device=device, use_hpip=use_hpip, hpi_config=hpi_config, **params)


__all__ = ["BUILT_IN", "ModelSpec", "PREDICTORS", "Predictor", "create_model", "resolve_model"]
