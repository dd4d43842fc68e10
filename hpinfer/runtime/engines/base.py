"""The one small interface every engine implements.

An ``Engine`` knows whether it can serve a device/precision and loads a model file into an
``EngineSession``; the session runs batches of numpy arrays. Heavy libraries are imported only
inside ``load`` so that a missing engine never breaks the others.

Every session carries a ``StageTimer`` (off by default) that records each ``run`` as an "infer"
span; predictors share it for their own stages, and ``hpinfer.bench`` switches it on.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from ...config import BackendConfig
from ...device import Device
from ...errors import EngineUnavailableError, InputError

if TYPE_CHECKING:
    from ..shapes import ShapeBounds


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: Tuple[Optional[int], ...]  # None marks a dynamic dimension
    dtype: str


Span = Tuple[str, float, float]  # stage name, start, end (time.perf_counter seconds)

_NO_SPAN = contextlib.nullcontext()


class _Span:
    __slots__ = ("_spans", "_name", "_start")

    def __init__(self, spans: List[Span], name: str):
        self._spans, self._name = spans, name

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self._spans.append((self._name, self._start, time.perf_counter()))


class StageTimer:
    """Named time spans (``with timer.stage("pre"): ...``), recorded only while ``enabled``.

    Off, ``stage`` hands back one shared do-nothing context: an attribute test per span, nothing
    allocated. On, each span appends ``(name, start, end)`` to ``spans`` (list appends are atomic,
    so threads may share a timer); the reader takes them with ``drain``.
    """

    __slots__ = ("enabled", "spans")

    def __init__(self) -> None:
        self.enabled = False
        self.spans: List[Span] = []

    def stage(self, name: str):
        return _Span(self.spans, name) if self.enabled else _NO_SPAN

    def drain(self) -> List[Span]:
        """The spans recorded so far, oldest first; the timer starts a fresh list."""
        spans, self.spans = self.spans, []
        return spans


def best_of(scores: np.ndarray) -> List[np.ndarray]:
    """Arg-max over the last axis (the first index on ties) and the score there."""
    best = scores.argmax(axis=-1)
    return [best, np.take_along_axis(scores, best[..., None], axis=-1)[..., 0]]


@functools.lru_cache(maxsize=1)
def _distributions() -> Mapping[str, List[str]]:
    """Top-level module → the installed distributions that provide it (read once: it scans every one)."""
    return importlib.metadata.packages_distributions()


class EngineSession(ABC):
    """A model loaded on one device. ``run`` is safe to call from several threads."""

    backend: ClassVar[str]

    def __init__(self, inputs: List[TensorInfo], outputs: List[TensorInfo], settings: str):
        self.inputs = inputs
        self.outputs = outputs
        self.settings = settings  # human-readable summary for logs and bench reports
        self.timer = StageTimer()  # each run is an "infer" span while a benchmark enables it
        self.shape_bounds: Optional["ShapeBounds"] = None  # dynamic_shapes, enforced on every run
        self.artifact: Optional[Path] = None  # the model cache entry it was opened from, if any
        self.device: Optional[Device] = None  # where it runs, set by the loader: safe mode may put a GPU's model on the CPU
        self._input_names = frozenset(t.name for t in inputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        if feeds.keys() != self._input_names:
            raise InputError(f"model expects inputs {sorted(self._input_names)}, got {sorted(feeds)}")
        with self.timer.stage("infer"):
            return self._run_bounded(feeds)

    def run_one(self, array: np.ndarray) -> List[np.ndarray]:
        """Shortcut for the common single-input model."""
        with self.timer.stage("infer"):
            return self._run_bounded({self.inputs[0].name: array})

    def run_best(self, array: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The single-input model's first output reduced over its last axis: the best class and its score at
        each position (N x T x C scores → two N x T arrays; N x C → two of N), all that arg-max heads such as
        CTC decoding read. An engine on a GPU reduces there and sends back two numbers per position instead of
        C (PP-OCR rec: 6625)."""
        with self.timer.stage("infer"):
            best, score = self._run_bounded({self.inputs[0].name: array}, self._run_best)
        return best, score

    def _run_best(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        """``run_best`` on the host: engines that can reduce on their device, or read their output buffers in
        place, override this."""
        return best_of(self._run(feeds)[0])

    @contextlib.contextmanager
    def watching_feeds(self, see: Callable[[Mapping[str, np.ndarray]], None]) -> Iterator[None]:
        """Within the block, ``see(feeds)`` once per engine call (``run``, ``run_one`` or ``run_best``), for tools
        that record what a model is fed (bench --profile, benchmarks). One thread at a time."""
        depth = 0  # a host-side run_best runs _run inside: that call is seen once

        def watched(method):
            def run(feeds):
                nonlocal depth
                if depth == 0:
                    see(feeds)
                depth += 1
                try:
                    return method(feeds)
                finally:
                    depth -= 1
            return run

        self._run, self._run_best = watched(self._run), watched(self._run_best)  # instance attributes shadow the class's
        try:
            yield
        finally:
            del self._run, self._run_best

    def _takes_images(self, scale: np.ndarray) -> bool:
        """Whether an ``image_runner`` can serve this model: one NCHW input of 3 channels, 3 normalising factors."""
        shape = self.inputs[0].shape
        return len(self.inputs) == 1 and len(shape) == 4 and shape[1] in (None, 3) and len(scale) == 3

    def _image_batch(self, image: np.ndarray) -> np.ndarray:
        """An ``image_runner``'s argument (HxWx3 or NxHxWx3 uint8) as a contiguous NxHxWx3 batch, checked
        against ``dynamic_shapes`` as the NCHW tensor it stands for."""
        batch = np.ascontiguousarray(image)
        if batch.ndim == 3:
            batch = batch[None]
        name = self.inputs[0].name
        if self.shape_bounds is not None and name in self.shape_bounds.inputs:
            self.shape_bounds._check(name, (batch.shape[0], 3, *batch.shape[1:3]), self.shape_bounds.inputs[name])
        return batch

    def _run_bounded(self, feeds: Mapping[str, np.ndarray], run: Optional[Callable] = None) -> List[np.ndarray]:
        """``run`` (default ``_run``) within the ``dynamic_shapes`` bounds, if any."""
        run = run or self._run
        return run(feeds) if self.shape_bounds is None else self.shape_bounds.run(feeds, run)

    @abstractmethod
    def _run(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]: ...

    def close(self) -> None:
        """Release engine memory; the session is unusable afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Engine(ABC):
    name: ClassVar[str]
    module: ClassVar[str]  # importable module that must be present
    pip_name: ClassVar[str]  # what to pip install
    # What an int8 model for this engine quantizes: these op types (None: all ONNX Runtime can) less the float ones.
    int8_op_types: ClassVar[Optional[Tuple[str, ...]]] = None
    int8_float_op_types: ClassVar[Tuple[str, ...]] = ()
    # Whether its int8 needs symmetric activations (int8, zero points 0) rather than the quantizer's uint8 default.
    int8_symmetric: ClassVar[bool] = False
    # Whether a built artifact bakes in shape bounds (TensorRT profiles, CUDA-graph buckets), so the model's
    # default bounds belong in its cache key.
    bakes_shape_bounds: ClassVar[bool] = False

    @classmethod
    def is_installed(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None

    @classmethod
    def version(cls) -> Optional[str]:
        """The version of whichever distribution provides ``module`` (onnxruntime or onnxruntime-gpu, ...): part
        of every cache key, so an upgrade rebuilds what the old version built."""
        for dist in _distributions().get(cls.module, []) or [cls.pip_name]:
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    @classmethod
    @abstractmethod
    def unsupported_reason(cls, device: Device, precision: str) -> Optional[str]:
        """None if this engine can run on ``device`` at ``precision`` here, else why not."""

    @classmethod
    def exact(cls, config: BackendConfig) -> bool:
        """Whether this config computes what fp32 ONNX Runtime computes (else the accuracy guard measures how far)."""
        return config.precision == "fp32"

    @classmethod
    def _validate(cls, model_path: Path, config: BackendConfig, device: Device) -> None:
        """What a public ``load``/``build``/``open`` checks before its ``_impl`` works: the file is there and this
        engine can run on ``device`` at the precision (a clear refusal, not a failure deep inside the library)."""
        if not model_path.is_file():
            raise EngineUnavailableError(f"{cls.name}: {model_path} does not exist (an incomplete cache entry or a moved model)")
        reason = cls.unsupported_reason(device, config.precision)
        if reason:
            raise EngineUnavailableError(f"{cls.name} cannot run on {device} at {config.precision}: {reason}")

    @classmethod
    @abstractmethod
    def load(cls, model_path: Path, config: BackendConfig, device: Device) -> EngineSession:
        """Load a model file directly, without the model cache (standard inference)."""

    @classmethod
    def build(cls, model_path: Path, config: BackendConfig, device: Device, out_dir: Path) -> None:
        """Write into ``out_dir`` what ``open`` needs; the loader caches it. Default: the model file itself."""
        shutil.copyfile(model_path, out_dir / "model.onnx")

    @classmethod
    def open(cls, artifact_dir: Path, config: BackendConfig, device: Device) -> EngineSession:
        """A session from what ``build`` wrote."""
        return cls.load(artifact_dir / "model.onnx", config, device)
