"""What every predictor shares: typed processing params, an engine session, and the predict loop.

A predictor is ``preprocess → session.run → postprocess``; the task modules keep those three as
plain functions and subclass ``Predictor`` only to wire them together.

Timing: ``predictor.timer`` is its session's ``StageTimer`` (off unless a benchmark switches it on).
The session records each engine run as "infer"; a predictor may mark ``with self.timer.stage("pre")``
and ``"post"``; whoever calls the predictor marks the whole call as "call" (``predict_iter`` does;
the OCR pipeline does for its sub-modules). ``hpinfer.bench`` turns those spans into per-stage times.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Type

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from ..config import HPIConfig, parse_hpi_config
from ..device import Device
from ..errors import ConfigError
from ..io import iter_inputs
from ..io.inputs import PageRange
from ..results import Result
from ..runtime.engines.base import StageTimer
from ..runtime.calibration import ModelTask
from ..runtime.loader import open_session
from .registry import ModelSpec


class Params(BaseModel):
    """Processing parameters of one task; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_params(cls: Type[Params], values: Mapping[str, Any], where: str) -> Params:
    try:
        return cls.model_validate(dict(values))
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            msg = "unknown parameter" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}")
        allowed = ", ".join(cls.model_fields)
        raise ConfigError(f"{where}: {'; '.join(problems)} (parameters: {allowed})") from None


class Predictor:
    task: ClassVar[str]
    params_type: ClassVar[Type[Params]]

    def __init__(
        self,
        spec: ModelSpec,
        device: "str | Device | None" = None,
        use_hpip: bool = False,
        hpi_config: "HPIConfig | Mapping[str, Any] | str | None" = None,
        **params: Any,
    ):
        if spec.task != self.task:
            raise ConfigError(f"model {spec.name} is a {spec.task} model, not {self.task}")
        self.spec = spec
        self.device = Device.parse(device)
        self.params = validate_params(self.params_type, {**spec.params, **params}, spec.name)
        self.hpi_config = parse_hpi_config(hpi_config)
        self.session = open_session(
            spec.name, spec.model_file, self.device, use_hpip, self.hpi_config, task=ModelTask(spec.task, self.params),
            default_shapes=spec.default_shapes(self.params), paddle_model=spec.paddle_model,
        )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def timer(self) -> StageTimer:
        """Shared with the session, so "infer" spans and the predictor's own stages land together."""
        return self.session.timer

    def with_overrides(self, overrides: Mapping[str, Any]) -> Params:
        """Per-call parameters: the model's, with this call's non-None values on top."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self.params
        return validate_params(self.params_type, {**self.params.model_dump(), **given}, self.name)

    def predict(self, inputs: Any, **overrides: Any) -> List[Result]:
        return list(self.predict_iter(inputs, **overrides))

    def predict_iter(self, inputs: Any, page_range: Optional[PageRange] = None, **overrides: Any) -> Iterator[Result]:
        """One result per image or PDF page (``page_range``: 1-based first and last page of PDFs)."""
        params = self.with_overrides(overrides)
        for item in iter_inputs(inputs, page_range=page_range):
            data = {"input_path": item.input_path, "page_index": item.page_index, "model_name": self.name}
            with self.timer.stage("call"):
                data.update(self.predict_image(item.image, params))
            yield Result(data, item.image, self.visualize, self.task + "_res_img")

    def predict_image(self, image: np.ndarray, params: Params) -> Dict[str, Any]:
        """One BGR image → the task's result fields."""
        raise NotImplementedError

    def visualize(self, result: Result) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
