"""Device strings as PaddleX writes them: ``cpu``, ``gpu``, ``gpu:1`` (``cuda:1`` accepted)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError

_DEVICE_RE = re.compile(r"^(cpu|gpu|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" or "gpu"
    index: int = 0

    @classmethod
    def parse(cls, spec: "str | Device | None") -> "Device":
        if isinstance(spec, Device):
            return spec
        if spec is None or spec == "":
            return cls("cpu")
        match = _DEVICE_RE.match(str(spec).strip().lower())
        if not match:
            raise ConfigError(f"invalid device {spec!r}: use 'cpu' or 'gpu:N' (e.g. gpu:0)")
        kind = "cpu" if match.group(1) == "cpu" else "gpu"
        if kind == "cpu" and match.group(2) is not None:
            raise ConfigError(f"invalid device {spec!r}: 'cpu' takes no index")
        return cls(kind, int(match.group(2) or 0))

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"gpu:{self.index}"
