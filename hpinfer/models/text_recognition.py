"""The text recogniser pipelines call: many line crops at once."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..tasks import text_recognition
from ..tasks.text_recognition import RecParams
from .base import Predictor


class TextRecognizer(Predictor):
    kind = text_recognition.TASK

    @property
    def characters(self) -> List[str]:
        return self.state

    def recognize(
        self, crops: Sequence[np.ndarray], params: Optional[RecParams] = None, groups: Optional[Sequence[int]] = None
    ) -> List[Tuple[str, float]]:
        """Text and score per crop; see ``hpinfer.tasks.text_recognition.recognize``."""
        return text_recognition.recognize(self.session, self.state, crops, params or self.params, groups)
