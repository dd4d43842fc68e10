"""Table structure recognition with SLANet (PaddleOCR's table model, PaddleX module table_structure_recognition).

longer side to ``max_len`` → normalise → zero-pad to a square → per decoding step, one structure token
(HTML tags of rows and cells, span attributes) and one cell box → tokens up to the end token, a box for
each token that opens a cell. Boxes come out normalised to the source image (SLANet; SLANet_plus differs).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import cv2
import numpy as np
from pydantic import Field

from ..visualize import draw_polygons
from .base import Params, ShapeTriple, Task
from .normalize import normalize_to_nchw
from .text_recognition import dictionary

START, END = "sos", "eos"
CELL_TOKENS = frozenset({"<td", "<td></td>"})  # a token that opens a cell has a box ("<td>" is merged away)


class TableParams(Params):
    max_len: int = Field(488, ge=32, le=4096)  # the model's square input side; the longer side is resized to it
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)


def load_tokens(spec: Any) -> List[str]:
    """The model's token classes: the ONNX file's "character" metadata (or ``character_dict``) with ``<td>`` and
    ``</td>`` merged into one ``<td></td>`` token (how PaddleOCR trains SLANet), between start and end tokens."""
    tokens = [t for t in dictionary(spec) if t != "<td>"]
    if "<td></td>" not in tokens:
        tokens.append("<td></td>")
    return [START, *tokens, END]


def preprocess(image: np.ndarray, p: TableParams) -> Tuple[np.ndarray, float]:
    """BGR image → 1x3xLxL input (image top-left, zeros elsewhere) and the resize ratio."""
    h, w = image.shape[:2]
    ratio = p.max_len / max(h, w)
    resized = cv2.resize(image, (max(1, int(w * ratio)), max(1, int(h * ratio))))
    out = np.zeros((1, 3, p.max_len, p.max_len), dtype=np.float32)
    rh, rw = resized.shape[:2]
    out[:, :, :rh, :rw] = normalize_to_nchw(resized, p.mean, p.std)
    return out, ratio


def decode(boxes: np.ndarray, probs: np.ndarray, tokens: List[str], height: int, width: int) -> Dict[str, Any]:
    """One image's outputs ([L, 4] boxes, [L, classes] token probabilities) → ``structure`` (HTML tokens inside
    html/body/table), ``bbox`` (one [x1, y1, x2, y2] per cell token, source pixels) and ``structure_score``."""
    ids, scores = probs.argmax(axis=1), probs.max(axis=1)
    end = tokens.index(END)
    structure, cells, kept = [], [], []
    for step, token_id in enumerate(ids.tolist()):
        if token_id == end and step > 0:
            break
        token = tokens[token_id]
        if token in (START, END):
            continue
        structure.append(token)
        kept.append(float(scores[step]))
        if token in CELL_TOKENS:
            cells.append(boxes[step] * np.array([width, height, width, height], dtype=np.float32))
    cell_boxes = np.clip(np.array(cells, dtype=np.float32).reshape(-1, 4), 0, [width, height, width, height])
    return {
        "structure": ["<html>", "<body>", "<table>", *structure, "</table>", "</body>", "</html>"],
        "bbox": cell_boxes.round(2).tolist(),
        "structure_score": float(np.mean(kept)) if kept else 0.0,
    }


class TableStructureRecognition(Task):
    name = "table_structure_recognition"
    params_type = TableParams
    module_name = "TableStructureRecognition"

    def default_shapes(self, p: TableParams) -> ShapeTriple:
        return [[1, 3, p.max_len, p.max_len]] * 3

    def prepare(self, spec: Any) -> List[str]:
        return load_tokens(spec)

    def predict_image(self, session: Any, image: np.ndarray, p: TableParams, state: List[str]) -> Dict[str, Any]:
        tensor, _ = preprocess(image, p)
        boxes, probs = sorted(session.run_one(tensor)[:2], key=lambda out: out.shape[-1])  # [1, L, 4], [1, L, classes]
        return decode(boxes[0], probs[0], state, *image.shape[:2])

    def visualize(self, result: Any) -> np.ndarray:
        rects = [[[x1, y1], [x2, y1], [x2, y2], [x1, y2]] for x1, y1, x2, y2 in result["bbox"]]
        return draw_polygons(result.image, rects)


TASK = TableStructureRecognition()
