"""The accuracy guard's yardsticks: how far a reduced-precision model drifts from fp32, in each task's terms.

A raw output difference says little (a detection map may shift everywhere yet give the same boxes), so
drift is measured on what the user gets: detection boxes (1 - F1 x mean IoU of boxes matched at IoU >= 0.5:
boxes lost, added or shifted all count),
recognised text (character error rate of the greedy CTC decoding), class choice (1 - top-1 agreement).
The metric functions here take plain arrays and sequences; each task applies them to its raw model outputs
(``ModelTask.drift``) and owns its tolerance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np
from rapidfuzz.distance import Levenshtein

from .task import Measured, ModelTask, Outputs

MATCH_IOU = 0.5
# In the cache key of every reduced-precision engine: a change to what the guard records rebuilds its report.
GUARD_REVISION = 3  # 2: Drift.compared; 3: fp16/bf16 judged on every calibration input

@dataclass(frozen=True)
class Drift:
    """``value`` is the task's drift (0: same results as fp32); ``details`` are the numbers behind it."""

    metric: str
    value: float
    inputs: int
    details: Dict[str, float]
    # What the fp32 reference held for the metric to judge (boxes, regions, characters, labels); 0: nothing, so
    # a drift of 0 proves nothing. None: not recorded (an engine built before it was).
    compared: Optional[int] = None

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in self.details.items())
        return f"{self.metric} {self.value:.4f} on {self.inputs} input(s) ({shown})"

    @property
    def vacuous(self) -> bool:
        return self.compared == 0


def quad_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two convex quadrilaterals (4x2 points)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    inter, _ = cv2.intersectConvexConvex(a, b)
    union = cv2.contourArea(a) + cv2.contourArea(b) - inter
    return float(inter / union) if union > 0 else 0.0


def match_boxes(reference: Sequence[np.ndarray], boxes: Sequence[np.ndarray], iou: float = MATCH_IOU) -> List[float]:
    """Greedy one-to-one matching, best IoU first; the IoU of each matched pair."""
    pairs = sorted(
        ((quad_iou(r, b), i, j) for i, r in enumerate(reference) for j, b in enumerate(boxes)), reverse=True
    )
    used_r, used_b, matched = set(), set(), []
    for value, i, j in pairs:
        if value < iou:
            break
        if i not in used_r and j not in used_b:
            used_r.add(i)
            used_b.add(j)
            matched.append(value)
    return matched


def box_scores(reference: Sequence[Sequence[np.ndarray]], boxes: Sequence[Sequence[np.ndarray]]) -> Dict[str, float]:
    """Recall, precision, F1 and mean matched IoU of ``boxes`` against ``reference``, over all images."""
    matched: List[float] = []
    for ref, got in zip(reference, boxes):
        matched += match_boxes(ref, got)
    n_ref, n_got = sum(len(r) for r in reference), sum(len(b) for b in boxes)
    recall = len(matched) / n_ref if n_ref else 1.0
    precision = len(matched) / n_got if n_got else 1.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return {"recall": recall, "precision": precision, "f1": f1, "mean_iou": float(np.mean(matched)) if matched else 1.0}


def text_scores(reference: Sequence[Sequence], texts: Sequence[Sequence]) -> Dict[str, float]:
    """Character error rate and exact-match rate; items are strings or label sequences."""
    errors = sum(Levenshtein.distance(r, t) for r, t in zip(reference, texts))
    length = sum(len(r) for r in reference)
    exact = sum(list(r) == list(t) for r, t in zip(reference, texts))
    return {"cer": errors / max(length, 1), "exact": exact / max(len(reference), 1)}


def top1_drift(reference: Outputs, outputs: Outputs) -> Measured:
    """Classifiers: 1 - top-1 agreement of the first output's class scores."""
    best = np.concatenate([r[0].argmax(axis=-1).ravel() for r in reference])
    chosen = np.concatenate([o[0].argmax(axis=-1).ravel() for o in outputs])
    agreement = float(np.mean(best == chosen))
    return "1 - top-1 agreement", 1.0 - agreement, {"top1_agreement": agreement}, len(best)


def measure(task: ModelTask, reference: Outputs, outputs: Outputs) -> Optional[Drift]:
    """Drift of ``outputs`` from ``reference`` (both: per input, the model's output arrays); None when the task
    has no metric."""
    measured = task.drift(reference, outputs)
    if measured is None:
        return None
    metric, value, details, compared = measured
    return Drift(metric, round(float(value), 6), len(reference), {k: round(float(v), 6) for k, v in details.items()}, compared)
