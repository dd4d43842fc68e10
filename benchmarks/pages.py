"""Synthetic document pages for the benchmarks: the shared images laid out on white A4 pages, so that
page-sized inputs (all of one size, as scans and PDF renders are) can be measured without shipping any."""

from __future__ import annotations

from typing import List

import cv2
import numpy as np

PAGE_SIZE = (1754, 1240)  # A4 portrait at 150 dpi (h, w)


def compose_page(images: List[np.ndarray], index: int, margin: int = 70, gap: int = 40) -> np.ndarray:
    """A white A4 page with the shared images (those with some content, each at most 700 px tall and
    as wide as the text column) laid out in rows, starting at a different image on each page."""
    height, width = PAGE_SIZE
    page = np.full((height, width, 3), 255, np.uint8)
    usable = [img for img in images if min(img.shape[:2]) >= 32 and img.std() > 10]
    x, y, row_h = margin, margin, 0
    for k in range(len(usable)):
        img = usable[(index * 3 + k) % len(usable)]
        scale = min(1.0, (width - 2 * margin) / img.shape[1], 700 / img.shape[0])
        if scale < 1.0:
            img = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
        if x + w > width - margin:
            x, y, row_h = margin, y + row_h + gap, 0
        if y + h > height - margin:
            continue
        page[y : y + h, x : x + w] = img
        x, row_h = x + w + gap, max(row_h, h)
    return page
