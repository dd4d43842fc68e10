"""Pipelines of one model (``image_classification``, ``layout_detection``), so that the CLI and serving
handle a lone model exactly like a composed pipeline: same YAML, same use_hpip/hpi_config precedence."""

from __future__ import annotations

from typing import Any, Iterator, List, Sequence

import numpy as np

from ..device import Device
from ..errors import ConfigError
from ..results import Result
from .config import PipelineSettings
from .sub_modules import create_sub_module


class SingleModelPipeline:
    """The pipeline's name is the task its one sub-module must have; options are that model's parameters."""

    def __init__(self, settings: PipelineSettings, device: "str | Device | None" = None, **options: Any):
        where = settings.source
        if len(settings.modules) != 1:
            raise ConfigError(f"{where}: a {settings.pipeline_name} pipeline has exactly one entry in SubModules")
        if settings.options:
            raise ConfigError(
                f"{where}: unknown pipeline options {sorted(settings.options)}; "
                f"model parameters belong in the SubModules entry"
            )
        self.settings = settings
        (key,) = settings.modules
        self.predictor = create_sub_module(settings, key, settings.pipeline_name, device, **options)

    @property
    def predictors(self) -> List[Any]:
        return [self.predictor]

    def predict(self, inputs: Any, **options: Any) -> List[Result]:
        return list(self.predict_iter(inputs, **options))

    def predict_iter(self, inputs: Any, **options: Any) -> Iterator[Result]:
        """Per-call options override the model's parameters, e.g. ``threshold=0.3`` or ``topk=2``."""
        return self.predictor.predict_iter(inputs, **options)

    def predict_batch(self, images: Sequence[np.ndarray], **options: Any) -> List[Result]:
        """Several decoded images (a server's batch of requests); one model call per image for now."""
        return self.predictor.predict(list(images), **options)

    def close(self) -> None:
        self.predictor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
