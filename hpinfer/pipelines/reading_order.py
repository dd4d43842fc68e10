"""Reading order of layout regions on pages written left to right, top to bottom, in one or more columns.

Recursive XY-cut that tries columns before rows: where a vertical gap runs between the regions from top
to bottom, the page is read column by column (a two-column stretch reads down the left column, then the
right one); where a full-width region (a table, a heading) blocks every such gap, horizontal gaps cut the
page into bands read top to bottom, and each band is cut again. Neighbouring bands that together still
split into columns are one band: the columns' regions seldom end at the same height, and a gap that
happens to run across both columns must not make the page read across them. Regions that no gap separates are read
top to bottom, then left to right.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

# Each region's extent along the cut axis is shrunk by this share on both sides before gaps are looked
# for, so that regions overlapping by a few pixels (detector jitter) can still be told apart.
OVERLAP_TOLERANCE = 0.05


def reading_order(boxes: Sequence[Sequence[float]], tolerance: float = OVERLAP_TOLERANCE) -> List[int]:
    """Indices of ``boxes`` (x1, y1, x2, y2 each) in reading order."""
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order: List[int] = []
    _cut(array, np.arange(len(array)), tolerance, order)
    return order


def _cut(boxes: np.ndarray, index: np.ndarray, tolerance: float, order: List[int]) -> None:
    if len(index) > 1:
        for axis in (0, 1):  # 0: columns, split where no region crosses an x; 1: bands, along y
            groups = split_at_gaps(boxes[index][:, [axis, axis + 2]], tolerance)
            if axis == 1:
                groups = _join_column_bands(boxes[index], groups, tolerance)
            if len(groups) > 1:
                for group in groups:
                    _cut(boxes, index[group], tolerance, order)
                return
    top_then_left = np.lexsort((boxes[index, 0], boxes[index, 1]))
    order.extend(int(i) for i in index[top_then_left])


def _join_column_bands(boxes: np.ndarray, bands: List[np.ndarray], tolerance: float) -> List[np.ndarray]:
    joined = [bands[0]]
    for band in bands[1:]:
        both = np.concatenate([joined[-1], band])
        if len(split_at_gaps(boxes[both][:, [0, 2]], tolerance)) > 1:
            joined[-1] = both
        else:
            joined.append(band)
    return joined


def split_at_gaps(spans: np.ndarray, tolerance: float) -> List[np.ndarray]:
    """Spans (N x 2, start and end) grouped into runs that overlap, runs in ascending order, as index arrays."""
    margin = (spans[:, 1] - spans[:, 0]) * tolerance
    starts, ends = spans[:, 0] + margin, spans[:, 1] - margin
    by_start = np.argsort(starts, kind="stable")
    groups, current, reach = [], [by_start[0]], ends[by_start[0]]
    for i in by_start[1:]:
        if starts[i] >= reach:
            groups.append(np.array(current))
            current = []
        current.append(i)
        reach = max(reach, ends[i])
    groups.append(np.array(current))
    return groups
