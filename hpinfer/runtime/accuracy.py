"""The accuracy guard's yardsticks: how far a reduced-precision model drifts from fp32, in each task's terms.

A raw output difference says little (a detection map may shift everywhere yet give the same boxes), so
drift is measured on what the user gets: detection boxes (1 - F1 x mean IoU of boxes matched at IoU >= 0.5:
boxes lost, added or shifted all count),
recognised text (character error rate of the greedy CTC decoding), class choice (1 - top-1 agreement).
The metric functions take plain arrays and sequences; ``DRIFT`` applies them to raw model outputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

MATCH_IOU = 0.5
# In the cache key of every reduced-precision engine: a change to what the guard records rebuilds its report.
GUARD_REVISION = 3  # 2: Drift.compared; 3: fp16/bf16 judged on every calibration input

# Largest drift accepted in safe mode when hpi_config sets no accuracy_tolerance.
DEFAULT_TOLERANCE: Dict[str, float] = {
    "text_detection": 0.08,  # F1 x mean IoU >= 0.92 against fp32 (int8 typically shifts boxes ~3%)
    "text_recognition": 0.02,  # CER <= 2%
    "textline_orientation": 0.02,
    "image_classification": 0.02,
    "layout_detection": 0.08,  # class-aware region F1 x mean IoU >= 0.92 against fp32
}


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


def edit_distance(a: Sequence, b: Sequence) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def text_scores(reference: Sequence[Sequence], texts: Sequence[Sequence]) -> Dict[str, float]:
    """Character error rate and exact-match rate; items are strings or label sequences."""
    errors = sum(edit_distance(r, t) for r, t in zip(reference, texts))
    length = sum(len(r) for r in reference)
    exact = sum(list(r) == list(t) for r, t in zip(reference, texts))
    return {"cer": errors / max(length, 1), "exact": exact / max(len(reference), 1)}


def ctc_labels(probs: np.ndarray) -> List[Tuple[int, ...]]:
    """Greedy CTC on N x T x C scores: per-step argmax, repeats collapsed, blanks (0) dropped."""
    best = probs.argmax(axis=2)
    return [tuple(int(c) for k, c in enumerate(row) if c != 0 and (k == 0 or c != row[k - 1])) for row in best]


Measured = Tuple[str, float, Dict[str, float], int]  # metric, drift, details, reference items compared


def _detection(refs: List[List[np.ndarray]], outs: List[List[np.ndarray]], params) -> Measured:
    from ..models.text_detection import postprocess

    def boxes(outputs):
        prob = outputs[0]
        return list(postprocess(prob, prob.shape[2], prob.shape[3], params)[0])

    reference = [boxes(r) for r in refs]
    scores = box_scores(reference, [boxes(o) for o in outs])
    return "1 - box F1 x IoU", 1.0 - scores["f1"] * scores["mean_iou"], scores, sum(map(len, reference))


def _layout(refs: List[List[np.ndarray]], outs: List[List[np.ndarray]], params) -> Measured:
    """Regions must keep their class: each class's boxes are matched separately, then pooled."""
    from ..models.layout_detection import postprocess

    height, width = params.image_size

    def regions_by_class(outputs) -> Dict[int, List[np.ndarray]]:
        found: Dict[int, List[np.ndarray]] = {}
        for region in postprocess(outputs, height, width, params):
            x1, y1, x2, y2 = region["coordinate"]
            found.setdefault(region["cls_id"], []).append(np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float32))
        return found

    reference, got = [], []
    for ref_out, out in zip(refs, outs):
        ref_regions, out_regions = regions_by_class(ref_out), regions_by_class(out)
        for cls in set(ref_regions) | set(out_regions):
            reference.append(ref_regions.get(cls, []))
            got.append(out_regions.get(cls, []))
    scores = box_scores(reference, got)
    return "1 - region F1 x IoU (per class)", 1.0 - scores["f1"] * scores["mean_iou"], scores, sum(map(len, reference))


def _recognition(refs, outs, params) -> Measured:
    reference = [label for r in refs for label in ctc_labels(r[0])]
    texts = [label for o in outs for label in ctc_labels(o[0])]
    scores = text_scores(reference, texts)
    return "CER", scores["cer"], scores, sum(map(len, reference))


def _classification(refs, outs, params) -> Measured:
    reference = np.concatenate([r[0].argmax(axis=-1).ravel() for r in refs])
    chosen = np.concatenate([o[0].argmax(axis=-1).ravel() for o in outs])
    agreement = float(np.mean(reference == chosen))
    return "1 - top-1 agreement", 1.0 - agreement, {"top1_agreement": agreement}, len(reference)


DRIFT: Dict[str, Callable[..., Measured]] = {
    "text_detection": _detection,
    "text_recognition": _recognition,
    "textline_orientation": _classification,
    "image_classification": _classification,
    "layout_detection": _layout,
}


def measure(task: str, params, reference: List[List[np.ndarray]], outputs: List[List[np.ndarray]]) -> Drift:
    """Drift of ``outputs`` from ``reference`` (both: per input, the model's output arrays)."""
    metric, value, details, compared = DRIFT[task](reference, outputs, params)
    return Drift(metric, round(float(value), 6), len(reference), {k: round(float(v), 6) for k, v in details.items()}, compared)
