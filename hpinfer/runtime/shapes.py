"""``dynamic_shapes`` bounds: checked against the model's inputs when it loads, enforced when it runs.

Engines that compile for a shape range (OpenVINO's bounded reshape, TensorRT profiles) take the bounds
from here.

Default bounds: engines that cannot run without bounds (TensorRT's optimization profile, the torch engine's
CUDA-graph batch buckets) ask ``bounds_for`` at the point where they read ``dynamic_shapes``. Without any
user ``dynamic_shapes`` it gives the model's defaults (``ModelSpec.default_shapes``, installed by the loader
with ``model_defaults`` while it builds and opens the session) fitted to the model's own static dimensions.
Such defaults shape only those engines' builds; they are never enforced at run time and OpenVINO and ONNX
Runtime stay fully dynamic. At run time a batch larger than the bound is split into batches that fit (the models here treat
batch items independently); any other dimension outside its bounds is rejected with an error that names the
setting to change, because resizing is the predictor's decision (``session.shape_bounds`` tells it the limits).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..config import BackendConfig
from ..errors import ConfigError, InputError

Shape = Tuple[int, ...]
Triple = List[List[int]]  # [min, opt, max], as in dynamic_shapes

_DEFAULTS: "contextvars.ContextVar[Optional[Triple]]" = contextvars.ContextVar("hpinfer_default_shapes", default=None)


@contextlib.contextmanager
def model_defaults(shapes: Optional[Triple]) -> Iterator[None]:
    """While a model's session is built and opened: ``shapes`` are its default bounds (first input)."""
    token = _DEFAULTS.set(shapes)
    try:
        yield
    finally:
        _DEFAULTS.reset(token)


def current_defaults() -> Optional[Triple]:
    """The default bounds ``model_defaults`` installed for the model being built, if any."""
    return _DEFAULTS.get()


def fit_to_model(shapes: Optional[Triple], model_shape: Sequence[Optional[int]]) -> Optional[Triple]:
    """``shapes`` with every dimension the model fixes set to the model's value; None if the ranks differ.
    A model dimension of None, 0 or below (-1: TensorRT, ONNX Runtime) is dynamic."""
    if shapes is None or any(len(s) != len(model_shape) for s in shapes):
        return None
    fitted = [list(s) for s in shapes]
    for axis, dim in enumerate(model_shape):
        if isinstance(dim, int) and dim > 0:
            for s in fitted:
                s[axis] = dim
        else:  # keep min <= opt <= max whatever the defaults say
            fitted[1][axis] = min(max(fitted[1][axis], fitted[0][axis]), fitted[2][axis])
    return fitted


def bounds_for(config: BackendConfig, name: str, index: int, model_shape: Sequence[Optional[int]]) -> Optional[Triple]:
    """The bounds an engine that needs some should use for input ``name`` (the model's ``index``-th input):
    the user's ``dynamic_shapes`` entry when ``dynamic_shapes`` is set, else the model's defaults for its first
    input (see ``model_defaults``); None when neither applies (the engine then uses its own generic range)."""
    if config.dynamic_shapes:
        return config.dynamic_shapes.get(name)
    return fit_to_model(current_defaults(), model_shape) if index == 0 else None


@dataclass(frozen=True)
class Bounds:
    min: Shape
    opt: Shape
    max: Shape


@dataclass(frozen=True)
class ShapeBounds:
    """Validated ``{input name: Bounds}`` for one model."""

    inputs: Mapping[str, Bounds]

    @classmethod
    def from_config(cls, config: BackendConfig, inputs: Sequence, model_path: Path) -> Optional["ShapeBounds"]:
        """Bounds for ``inputs`` (the session's TensorInfo list), or None if the config sets none.

        A bound must name a real input, have its rank, and keep every static dimension at the model's value.
        """
        if not config.dynamic_shapes:
            return None
        by_name = {t.name: t for t in inputs}
        checked: Dict[str, Bounds] = {}
        for name, (lo, opt, hi) in config.dynamic_shapes.items():
            if name not in by_name:
                raise ConfigError(
                    f"dynamic_shapes names input {name!r}, but {model_path.name} has inputs {sorted(by_name)}"
                )
            model_shape = by_name[name].shape
            if len(lo) != len(model_shape):
                raise ConfigError(
                    f"dynamic_shapes[{name!r}] has rank {len(lo)}, but the model input has rank {len(model_shape)}"
                )
            for axis, dim in enumerate(model_shape):
                if dim is not None and not lo[axis] == opt[axis] == hi[axis] == dim:
                    raise ConfigError(
                        f"dynamic_shapes[{name!r}] lets dimension {axis} vary ({lo[axis]}..{hi[axis]}), but "
                        f"{model_path.name} fixes it at {dim}: use {dim} in min, opt and max"
                    )
            checked[name] = Bounds(tuple(lo), tuple(opt), tuple(hi))
        return cls(checked)

    def run(self, feeds: Mapping[str, np.ndarray], run: Callable[[Mapping[str, np.ndarray]], List[np.ndarray]]) -> List[np.ndarray]:
        """``run(feeds)`` within the bounds: oversized batches in pieces, other out-of-bounds inputs rejected."""
        batch_limit = None
        for name, array in feeds.items():
            bounds = self.inputs.get(name)
            if bounds is None:
                continue
            self._check(name, array.shape, bounds)
            if array.shape[0] > bounds.max[0]:
                batch_limit = min(batch_limit or bounds.max[0], bounds.max[0])
        if batch_limit is None:
            return run(feeds)
        total = next(iter(feeds.values())).shape[0]
        pieces = [run({k: v[i : i + batch_limit] for k, v in feeds.items()}) for i in range(0, total, batch_limit)]
        return [np.concatenate(outputs, axis=0) for outputs in zip(*pieces)]

    @staticmethod
    def _check(name: str, shape: Shape, bounds: Bounds) -> None:
        if len(shape) != len(bounds.min):
            raise InputError(f"input {name!r} has shape {tuple(shape)}, but dynamic_shapes gives rank {len(bounds.min)}")
        if shape[0] < bounds.min[0]:
            raise InputError(f"input {name!r}: batch {shape[0]} is below the dynamic_shapes minimum {bounds.min[0]}")
        for axis in range(1, len(shape)):
            if not bounds.min[axis] <= shape[axis] <= bounds.max[axis]:
                raise InputError(
                    f"input {name!r} has shape {tuple(shape)}: dimension {axis} = {shape[axis]} is outside "
                    f"hpi_config.backend_config.dynamic_shapes [{bounds.min[axis]}, {bounds.max[axis]}]; widen the "
                    f"bounds, or make the input fit (for detection, e.g. a smaller limit_side_len or max_side_limit)"
                )
