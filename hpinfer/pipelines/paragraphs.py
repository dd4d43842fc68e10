"""Text lines grouped into paragraphs by their geometry alone, so that a page reads as paragraphs whatever
the layout detector made of it (one region for a whole page, or none at all).

Lines that share a row (vertical overlap, a small horizontal gap) are one row; rows are read in the
columns-first order of reading_order.py; a run of rows stacked in one column is cut into paragraphs where
the gap above a row is clearly wider than the column's line spacing, where a row starts indented after an
unindented one or after a one-line paragraph's indented first line (a first-line indent; an indented row
after an indented continuation is a hanging indent, not a new paragraph), where the row above ended short
of the column's right edge by more than this row's first word would have needed (a paragraph's last line),
where the type size changes (a heading) or where a row starts with a list marker.
"""

from __future__ import annotations

import re
from typing import List, Sequence, Tuple

import numpy as np

from .reading_order import reading_order

ROW_OVERLAP = 0.5  # lines overlapping by this share of the lower one's height share a row...
ROW_GAP = 1.5  # ...when no more than this many line heights apart horizontally
EXTRA_GAP = 0.5  # a gap wider than the column's usual one by this many line heights starts a paragraph
INDENT = 0.8  # a row starting this many line heights right of the column's left edge is indented
LIST_MARKER = re.compile(r"^\s*([•·▪●○◦■□\-–*]|\(?\d{1,3}[.)]|\(?[a-z][.)])\s")

_CJK = re.compile(r"[\u2e80-\u9fff\u3000-\u303f\uf900-\ufaff\uff00-\uffef]")

Box = Sequence[float]


def rows_of(boxes: np.ndarray) -> List[List[int]]:
    """Line indices grouped into rows, each row left to right."""
    rows: List[List[int]] = []
    row_boxes: List[np.ndarray] = []
    for i in np.argsort((boxes[:, 1] + boxes[:, 3]) / 2, kind="stable"):
        box = boxes[i]
        for row, rbox in zip(rows, row_boxes):
            height = min(box[3] - box[1], rbox[3] - rbox[1])
            overlap = min(box[3], rbox[3]) - max(box[1], rbox[1])
            gap = max(box[0] - rbox[2], rbox[0] - box[2])
            if overlap >= ROW_OVERLAP * height and gap <= ROW_GAP * height:
                row.append(int(i))
                rbox[:] = [min(rbox[0], box[0]), min(rbox[1], box[1]), max(rbox[2], box[2]), max(rbox[3], box[3])]
                break
        else:
            rows.append([int(i)])
            row_boxes.append(box.astype(np.float64).copy())
    return [sorted(row, key=lambda j: boxes[j][0]) for row in rows]


def _union(boxes: np.ndarray) -> np.ndarray:
    return np.array([boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()])


def _same_column(above: np.ndarray, below: np.ndarray) -> bool:
    """``below`` continues the column of ``above``: lower on the page and overlapping it horizontally."""
    overlap = min(above[2], below[2]) - max(above[0], below[0])
    narrower = min(above[2] - above[0], below[2] - below[0])
    return below[1] >= above[1] + 0.5 * (above[3] - above[1]) and overlap > 0.3 * narrower


def paragraphs(boxes: Sequence[Box], texts: Sequence[str]) -> List[List[int]]:
    """Line indices per paragraph, paragraphs in reading order, lines in reading order within each."""
    if len(boxes) == 0:
        return []
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    rows = rows_of(array)
    row_boxes = np.array([_union(array[row]) for row in rows])
    ordered = [rows[i] for i in reading_order(row_boxes)]
    ordered_boxes = np.array([_union(array[row]) for row in ordered])
    # Runs of rows stacked in one column, then each run cut into paragraphs.
    runs: List[List[int]] = [[0]]
    for k in range(1, len(ordered)):
        if _same_column(ordered_boxes[k - 1], ordered_boxes[k]):
            runs[-1].append(k)
        else:
            runs.append([k])
    result: List[List[int]] = []
    for run in runs:
        for piece in _split_run(ordered_boxes[run], [" ".join(texts[j] for j in ordered[k]) for k in run]):
            result.append([j for k in piece for j in ordered[run[k]]])
    return result


def _split_run(boxes: np.ndarray, texts: List[str]) -> List[List[int]]:
    """Rows of one column (top to bottom) cut into paragraphs, as lists of positions in ``boxes``."""
    heights = boxes[:, 3] - boxes[:, 1]
    height = float(np.median(heights))
    gaps = boxes[1:, 1] - boxes[:-1, 3]
    usual_gap = float(np.percentile(gaps, 25)) if len(gaps) else 0.0
    left, right = boxes[:, 0].min(), boxes[:, 2].max()
    indented = boxes[:, 0] - left > INDENT * height
    pieces: List[List[int]] = [[0]]
    for k in range(1, len(boxes)):
        new = (
            gaps[k - 1] > usual_gap + EXTRA_GAP * height
            or (indented[k] and (not indented[k - 1] or pieces[-1] == [k - 1]))
            or right - boxes[k - 1, 2] > _first_word_width(boxes[k], texts[k]) + height
            or bool(LIST_MARKER.match(texts[k]))
            or abs(heights[k] - heights[k - 1]) > 0.35 * max(heights[k], heights[k - 1])  # a heading's size
        )
        if new:
            pieces.append([k])
        else:
            pieces[-1].append(k)
    return pieces


def _first_word_width(box: np.ndarray, text: str) -> float:
    """About how wide the row's first word is: its share of the row's characters (a CJK row: one character)."""
    text = text.strip()
    words = text.split(maxsplit=1)
    first = words[0] if words and len(words[0]) < 30 else text[:1]
    return float(box[2] - box[0]) * (len(first) + 1) / max(1, len(text))


def box_of(boxes: Sequence[Box]) -> Tuple[int, int, int, int]:
    """The smallest box holding every box given."""
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = _union(array)
    return int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2))


def join_lines(lines: Sequence[str]) -> str:
    """A region's text lines as one paragraph: no space where Chinese/Japanese text meets, hyphenation undone."""
    text = ""
    for line in (line.strip() for line in lines):
        if not line:
            continue
        if not text:
            text = line
        elif text.endswith("-") and line[0].islower():
            text = text[:-1] + line
        elif _CJK.match(text[-1]) or _CJK.match(line[0]):
            text += line
        else:
            text += " " + line
    return text
