"""The line orientation classifier pipelines call: many crops at once."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..tasks import textline_orientation
from ..tasks.textline_orientation import ClsParams
from .base import Predictor


class TextLineOrientationClassifier(Predictor):
    kind = textline_orientation.TASK

    def classify(self, crops: Sequence[np.ndarray], params: Optional[ClsParams] = None) -> List[Tuple[int, float]]:
        """(label index, score) per crop."""
        return textline_orientation.classify(self.session, crops, params or self.params)

    def upright(self, crops: Sequence[np.ndarray], params: Optional[ClsParams] = None) -> Tuple[List[np.ndarray], List[int]]:
        """Crops turned upright where the model is sure they are upside down, and the angle applied to each."""
        return textline_orientation.upright(self.session, crops, params or self.params)
