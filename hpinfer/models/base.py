"""A predictor is a model's ``Task`` (``hpinfer.tasks``: params, pre/post-processing) and an engine session.

``Predictor`` runs any task; the subclasses of the task modules here only add the calls a pipeline makes
besides ``predict`` (detect many images, recognise many crops, turn crops upright).

Timing: ``predictor.timer`` is its session's ``StageTimer`` (off unless a benchmark switches it on).
The session records each engine run as "infer"; a predictor may mark ``with self.timer.stage("pre")``
and ``"post"``; whoever calls the predictor marks the whole call as "call" (``predict_iter`` does;
the OCR pipeline does for its sub-modules). ``hpinfer.bench`` turns those spans into per-stage times.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Type

import numpy as np

from ..config import HPIConfig, parse_hpi_config
from ..device import Device
from ..errors import ConfigError
from ..io.inputs import PageRange
from ..io.pages import FailedPage, OnError, readable_pages
from ..results import Result
from ..runtime.engines.base import StageTimer
from ..runtime.loader import open_session
from ..tasks import TASKS, HelperModel, Params, Task
from ..tasks.base import BoundTask
from .registry import ModelSpec, resolve_model


def bind_task(kind: str, params: Params) -> BoundTask:
    """The runtime's view of a model of ``kind`` with ``params``, its helper models resolved to their files."""
    task = TASKS[kind]
    helpers = {}
    for role, name in task.helper_models.items():
        spec = resolve_model(name)
        helpers[role] = HelperModel(spec.model_file, dict(spec.params))
    return task.bind(params, helpers)


class Predictor:
    kind: Optional[Task] = None  # a subclass's task; the generic Predictor takes its model's

    @classmethod
    def for_task(cls, kind: str) -> Type["Predictor"]:
        """The subclass written for ``kind`` (it adds calls pipelines make), else ``Predictor`` itself."""
        return next((sub for sub in cls.__subclasses__() if sub.kind is TASKS.get(kind)), cls)

    def __init__(
        self,
        spec: ModelSpec,
        device: "str | Device | None" = None,
        use_hpip: bool = False,
        hpi_config: "HPIConfig | Mapping[str, Any] | str | None" = None,
        **params: Any,
    ):
        if self.kind is not None and spec.task != self.kind.name:
            raise ConfigError(f"model {spec.name} is a {spec.task} model, not {self.kind.name}")
        self.spec = spec
        self.kind = TASKS[spec.task]
        self.device = Device.parse(device)
        self.params = self.kind.params({**spec.params, **params}, spec.name)
        self.hpi_config = parse_hpi_config(hpi_config)
        self.state = self.kind.prepare(spec)
        self.session = open_session(
            spec.name, spec.model_file, self.device, use_hpip, self.hpi_config, task=bind_task(spec.task, self.params),
            default_shapes=self.kind.default_shapes(self.params), paddle_model=spec.paddle_model,
        )
        self.device = self.session.device  # where it really runs: safe mode may place a GPU's model on the CPU

    @property
    def task(self) -> str:
        return self.kind.name

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
        return self.kind.params({**self.params.model_dump(), **given}, self.name)

    def predict(self, inputs: Any, **overrides: Any) -> List[Result]:
        return list(self.predict_iter(inputs, **overrides))

    def predict_iter(
        self, inputs: Any, page_range: Optional[PageRange] = None, on_error: OnError = "raise", **overrides: Any
    ) -> Iterator[Result]:
        """One result per image or PDF page (``page_range``: 1-based first and last page of PDFs); ``on_error``
        (``hpinfer.io.pages``): what a page that cannot be read does."""
        params = self.with_overrides(overrides)
        for page in readable_pages(inputs, page_range, on_error):
            if page.image is None:
                yield FailedPage(page)
                continue
            data = {"input_path": page.input_path, "page_index": page.page_index, "model_name": self.name}
            with self.timer.stage("call"):
                data.update(self.predict_image(page.image, params))
            yield Result(data, page.image, self.kind.visualize, self.task + "_res_img")

    def predict_image(self, image: np.ndarray, params: Params) -> Dict[str, Any]:
        """One BGR image → the task's result fields."""
        return self.kind.predict_image(self.session, image, params, self.state)

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
