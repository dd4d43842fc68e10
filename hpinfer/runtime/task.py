"""What the runtime needs to know about a model's task, and nothing more: calibration inputs, a drift metric and
its tolerance, and a digest for cache keys. ``hpinfer.tasks`` implements it (a ``Task`` bound to a model's
params); the runtime never imports a task, so a new model kind needs no runtime edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Protocol, Tuple

import numpy as np

if TYPE_CHECKING:
    from .calibration import CalibrationSet

# metric name, drift (0: the same results as fp32), the numbers behind it, reference items compared
Measured = Tuple[str, float, Dict[str, float], int]
Outputs = List[List[np.ndarray]]  # per input, the model's output arrays


class ModelTask(Protocol):
    kind: str  # e.g. "text_detection", for messages
    # Largest drift accepted in safe mode when hpi_config sets no accuracy_tolerance; None: the kind has no
    # drift metric, so a reduced precision is not judged.
    tolerance: Optional[float]

    def digest(self) -> str:
        """Identifies the kind and its processing params (part of calibration and engine cache keys)."""

    def calibration_files(self) -> Dict[str, Path]:
        """Files besides the images that the calibration inputs depend on (e.g. a model that finds text lines)."""

    def calibration_inputs(self, source: "CalibrationSet", count: int) -> Iterator[np.ndarray]:
        """``count`` input tensors made by the model's own pre-processing from ``source``'s images; raises
        ``ConfigError`` when the kind cannot make any."""

    def drift(self, reference: Outputs, outputs: Outputs) -> Optional[Measured]:
        """How far ``outputs`` are from the fp32 ``reference`` in the task's own terms; None: no metric."""
