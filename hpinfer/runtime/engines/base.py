"""The one small interface every engine implements.

An ``Engine`` knows whether it can serve a device/precision and loads a model file into an
``EngineSession``; the session runs batches of numpy arrays. Heavy libraries are imported only
inside ``load`` so that a missing engine never breaks the others.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, List, Mapping, Optional, Tuple

import numpy as np

from ...config import BackendConfig
from ...device import Device
from ...errors import ConfigError, InputError


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: Tuple[Optional[int], ...]  # None marks a dynamic dimension
    dtype: str


class EngineSession(ABC):
    """A model loaded on one device. ``run`` is safe to call from several threads."""

    backend: ClassVar[str]

    def __init__(self, inputs: List[TensorInfo], outputs: List[TensorInfo], settings: str):
        self.inputs = inputs
        self.outputs = outputs
        self.settings = settings  # human-readable summary for logs and bench reports
        self._input_names = frozenset(t.name for t in inputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        if feeds.keys() != self._input_names:
            raise InputError(f"model expects inputs {sorted(self._input_names)}, got {sorted(feeds)}")
        return self._run(feeds)

    def run_one(self, array: np.ndarray) -> List[np.ndarray]:
        """Shortcut for the common single-input model."""
        return self._run({self.inputs[0].name: array})

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

    @classmethod
    def is_installed(cls) -> bool:
        return importlib.util.find_spec(cls.module) is not None

    @classmethod
    def version(cls) -> Optional[str]:
        try:
            return importlib.metadata.version(cls.pip_name)
        except importlib.metadata.PackageNotFoundError:
            return None

    @classmethod
    @abstractmethod
    def unsupported_reason(cls, device: Device, precision: str) -> Optional[str]:
        """None if this engine can run on ``device`` at ``precision`` here, else why not."""

    @classmethod
    @abstractmethod
    def load(cls, model_path: Path, config: BackendConfig, device: Device) -> EngineSession: ...


def check_dynamic_shapes(config: BackendConfig, inputs: List[TensorInfo], model_path: Path) -> None:
    """dynamic_shapes must name real inputs with the right rank."""
    if not config.dynamic_shapes:
        return
    by_name = {t.name: t for t in inputs}
    for name, (lo, _, _) in config.dynamic_shapes.items():
        if name not in by_name:
            raise ConfigError(
                f"dynamic_shapes names input {name!r}, but {model_path.name} has inputs {sorted(by_name)}"
            )
        if len(lo) != len(by_name[name].shape):
            raise ConfigError(
                f"dynamic_shapes[{name!r}] has rank {len(lo)}, but the model input has rank {len(by_name[name].shape)}"
            )
