"""The text detector pipelines call: many images at once, pages of one size batched into one engine call."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..tasks import text_detection
from ..tasks.text_detection import Boxes, DetParams
from .base import Predictor


class TextDetector(Predictor):
    kind = text_detection.TASK

    def detect(self, image: np.ndarray, params: Optional[DetParams] = None) -> Tuple[Boxes, List[float]]:
        return self.detect_many([image], params)[0]

    def detect_many(self, images: Sequence[np.ndarray], params: Optional[DetParams] = None) -> List[Tuple[Boxes, List[float]]]:
        """Boxes and scores per image, up to ``max_batch_size`` images of one input shape per engine call
        (None: 8 on a GPU, 1 on a CPU)."""
        p = params or self.params
        per_call = p.max_batch_size or (8 if self.device.is_gpu else 1)
        return text_detection.detect_many(self._probability_maps, images, p, per_call)

    def _probability_maps(self, resized: List[np.ndarray], p: DetParams) -> np.ndarray:
        return text_detection.probability_maps(self.session, resized, p)
