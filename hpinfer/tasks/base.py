"""A ``Task`` is what hpinfer knows about one model kind, whichever file or engine runs it: its processing
params (with their defaults, written once), pre/post-processing, the inputs that calibrate it, how far a reduced
precision may drift from fp32 in its own terms, how a result is drawn, and the PaddleX module name. ``bind``
gives the runtime a ``ModelTask`` (``hpinfer.runtime.task``) for one model's params.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple, Type

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError
from ..runtime.calibration import CalibrationSet
from ..runtime.task import Measured, Outputs

# Shapes of the model's (first) input: [min, opt, max], each [N, C, H, W].
ShapeTriple = List[List[int]]


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


@dataclass(frozen=True, eq=False)
class HelperModel:
    """A built-in model a task needs besides the one it runs (e.g. a text-line finder for calibration); equal
    by file and params, so what a task derives with it can be remembered."""

    model_file: Path
    params: Mapping[str, Any] = field(default_factory=dict)

    def _key(self) -> Tuple[str, str]:
        return str(self.model_file), json.dumps(dict(self.params), sort_keys=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HelperModel) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class Task:
    """One model kind. Subclasses set the class attributes and override what their kind supports."""

    name: ClassVar[str]  # the ``task`` of hpinfer.yaml and of the built-in models
    params_type: ClassVar[Type[Params]]
    module_name: ClassVar[str]  # PaddleX's name of the module (sub-module key in its pipeline files)
    # Largest drift (``drift``) accepted in safe mode when hpi_config sets no accuracy_tolerance; None: no metric.
    tolerance: ClassVar[Optional[float]] = None
    # Built-in models the calibration inputs are made with, by role; the models layer resolves them.
    helper_models: ClassVar[Mapping[str, str]] = {}
    # Engine calls may be cut into smaller batches without changing results (``hpinfer tune`` tries sizes).
    rebatchable: ClassVar[bool] = False

    def params(self, values: Mapping[str, Any], where: str) -> Params:
        return validate_params(self.params_type, values, where)

    def default_shapes(self, p: Params) -> Optional[ShapeTriple]:
        """[min, opt, max] of the image input the task's pre-processing makes with ``p``, for engines that need
        bounds when the user gives no ``dynamic_shapes`` (dimensions the ONNX file fixes win over these)."""
        return None

    def calibration_inputs(
        self, source: CalibrationSet, p: Params, count: int, helpers: Mapping[str, HelperModel]
    ) -> Iterator[np.ndarray]:
        raise ConfigError(
            f"reduced precision needs calibration inputs, and hpinfer cannot make them for {self.name} models yet; "
            f"use precision fp32"
        )

    def drift(self, reference: Outputs, outputs: Outputs, p: Params) -> Optional[Measured]:
        return None

    def prepare(self, spec: Any) -> Any:
        """What the task reads once from a model's files (``spec``: name, model_file, character_dict), e.g. a
        recogniser's alphabet; handed to ``predict_image``."""
        return None

    def predict_image(self, session: Any, image: np.ndarray, p: Params, state: Any) -> Dict[str, Any]:
        """One BGR image → the task's result fields, run on ``session``."""
        raise NotImplementedError

    def visualize(self, result: Any) -> np.ndarray:
        raise NotImplementedError

    def bind(self, p: Params, helpers: Optional[Mapping[str, HelperModel]] = None) -> "BoundTask":
        return BoundTask(self, p, dict(helpers or {}))


@dataclass(frozen=True, eq=False)
class BoundTask:
    """A task with one model's params: the ``ModelTask`` the runtime sees."""

    task: Task
    params: Params
    helpers: Dict[str, HelperModel]

    @property
    def kind(self) -> str:
        return self.task.name

    @property
    def tolerance(self) -> Optional[float]:
        return self.task.tolerance

    def digest(self) -> str:
        return hashlib.sha256(f"{self.kind}:{self.params.model_dump_json()}".encode()).hexdigest()

    def calibration_files(self) -> Dict[str, Path]:
        return {name: helper.model_file for name, helper in self.helpers.items()}

    def calibration_inputs(self, source: CalibrationSet, count: int) -> Iterator[np.ndarray]:
        return self.task.calibration_inputs(source, self.params, count, self.helpers)

    def drift(self, reference: Outputs, outputs: Outputs) -> Optional[Measured]:
        return self.task.drift(reference, outputs, self.params)


def frame(image: np.ndarray) -> List[List[int]]:
    """The image's outline as a quadrilateral (results about a whole image are drawn on it)."""
    h, w = image.shape[:2]
    return [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
