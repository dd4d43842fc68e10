"""Build a pipeline's sub-module predictor from its resolved settings, checking the model's task."""

from __future__ import annotations

from typing import Any, List

from ..device import Device
from ..errors import ConfigError, EngineUnavailableError
from ..models import Predictor, create_model
from .config import PipelineSettings


def create_sub_module(settings: PipelineSettings, key: str, task: str, device: "str | Device | None", **params: Any) -> Predictor:
    """``SubModules.<key>``'s model on ``device``; ``params`` override the YAML's processing parameters."""
    module = settings.modules.get(key)
    if module is None:
        raise ConfigError(f"{settings.source}: SubModules.{key} is missing")
    try:
        predictor = create_model(
            module.model_name, module.model_dir, device=device,
            use_hpip=module.use_hpip, hpi_config=module.hpi_config, **{**module.params, **params},
        )
    except EngineUnavailableError as err:  # name the YAML key a per-module hpi_config would go under
        raise EngineUnavailableError(f"{settings.source}: SubModules.{key}: {err}") from None
    if predictor.task != task:
        predictor.close()
        raise ConfigError(f"{settings.source}: SubModules.{key} needs a {task} model, got {predictor.task}")
    return predictor


class PipelineBase:
    """Lifecycle shared by pipelines: ``close`` frees every loaded predictor; usable as a context manager.
    A pipeline with ``sub_modules`` (loaded predictors by SubModules key) and ``predict_iter`` gets
    ``predictors`` and ``predict`` from here."""

    @property
    def predictors(self) -> List[Predictor]:
        return list(self.sub_modules.values())

    def predict(self, inputs: Any, **options: Any) -> list:
        return list(self.predict_iter(inputs, **options))

    def close(self) -> None:
        for predictor in self.predictors:
            predictor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
