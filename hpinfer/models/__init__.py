"""Predictors: a model's task (``hpinfer.tasks``) and an engine session; ``create_model`` makes one."""

from __future__ import annotations

from typing import Any, Mapping

from ..config import HPIConfig
from ..device import Device
from . import text_detection, text_recognition, textline_orientation  # noqa: F401  (the Predictor subclasses)
from .base import Predictor, bind_task
from .registry import BUILT_IN, ModelSpec, resolve_model


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
    return Predictor.for_task(spec.task)(spec, device=device, use_hpip=use_hpip, hpi_config=hpi_config, **params)


__all__ = ["BUILT_IN", "ModelSpec", "Predictor", "bind_task", "create_model", "resolve_model"]
