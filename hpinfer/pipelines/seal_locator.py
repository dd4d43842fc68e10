"""Seals on a page without a layout model that knows them (CDLA, the bundled one, has no seal class).

A seal is ink of one saturated colour (red, or blue) forming a ring or an oval ring around its text. So:
the page's pixels of each seal colour (HSV: saturated, not dark) → joined into blobs (a closing as wide as a
seal's ring is apart from its text) → a blob is a seal candidate when its box is squarish (an ellipse, at
most ``MAX_ASPECT`` long), of plausible size, and its outline is a ring: an ellipse fitted to the blob's
outer contour has ink along most of its rim, little ink just outside it and an interior mostly free of
ink (the text and the star, not a filled shape). Coloured headings, logos, photos and tinted backgrounds
fail one of these. The caller confirms a candidate by finding seal text in it (the seal text detector).

``isolate`` gives the seal alone, to be read; ``erase`` whitens a seal's coloured pixels (dilated by a pixel or two, for anti-aliased edges) inside its
box, so that the page's OCR does not read the seal's text as garbled body text while black text stamped
over stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

# Hue ranges on OpenCV's 0-180 scale: red wraps around 0.
COLOURS = {"red": ((0, 12), (160, 180)), "blue": ((95, 135),)}
MIN_SATURATION = 70
MIN_VALUE = 60
MAX_ASPECT = 1.8  # oval seals are at most this much wider than tall (or taller than wide)
MIN_SIDE = 0.04  # of the page's shorter side, and at least MIN_PIXELS
MIN_PIXELS = 48
RIM = 0.12  # the rim: the outer 12 % of the fitted ellipse's radius
RUN = 3  # samples (12 across the rim) in a row that make a stroke
RIM_INK = 0.7  # share of directions from the centre with ink on the rim
OUTSIDE_INK = 0.15  # at most this share of a band just outside the rim is ink
INSIDE_INK = 0.45  # at most this share of the interior is ink
ERASE_SATURATION = 30  # erasing takes fainter ink than finding
DARK = 90  # a pixel with no channel above this is black ink (or ink over black), kept when erasing


@dataclass(frozen=True)
class SealCandidate:
    box: Tuple[int, int, int, int]  # x1, y1, x2, y2
    colour: str
    mask: np.ndarray  # the seal colour's ink inside ``box`` (uint8 0/255)


def colour_mask(image: np.ndarray, colour: str, min_saturation: int = MIN_SATURATION) -> np.ndarray:
    """The pixels of ``colour`` ink (uint8 0/255)."""
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    inked = (sat >= min_saturation) & (val >= MIN_VALUE)
    in_hue = np.zeros_like(inked)
    for low, high in COLOURS[colour]:
        in_hue |= (hue >= low) & (hue <= high)
    return ((inked & in_hue) * 255).astype(np.uint8)


def _ring_shares(mask: np.ndarray, ellipse) -> Tuple[float, float, float]:
    """On the blob's ink (``mask``, the blob's box): the share of directions from the fitted ellipse's centre
    in which ink lies on the rim (the outer ``RIM`` of its radius), the ink share of a band just outside the
    rim, and the ink share of the interior."""
    (cx, cy), (a, b), angle = ellipse
    theta = np.linspace(0, 2 * np.pi, 180, endpoint=False)[:, None]
    radial = np.linspace(1 - RIM, 1.03, 12)[None, :]
    turn = np.deg2rad(angle)
    ex, ey = a / 2 * np.cos(theta) * radial, b / 2 * np.sin(theta) * radial
    xs = np.clip(np.round(cx + ex * np.cos(turn) - ey * np.sin(turn)), 0, mask.shape[1] - 1).astype(int)
    ys = np.clip(np.round(cy + ex * np.sin(turn) + ey * np.cos(turn)), 0, mask.shape[0] - 1).astype(int)
    ink = (mask[ys, xs] > 0).astype(np.int8)
    # A stroke, not a speck: RUN neighbouring samples in a row are ink.
    runs = sum(ink[:, i : ink.shape[1] - RUN + 1 + i] for i in range(RUN))
    rim = float((runs >= RUN).any(axis=1).mean())

    def inside(scale: float) -> np.ndarray:
        area = np.zeros(mask.shape, np.uint8)
        cv2.ellipse(area, ((cx, cy), (a * scale, b * scale), angle), 255, -1)
        return area > 0

    def share(area: np.ndarray) -> float:
        return float((mask[area] > 0).mean()) if area.any() else 0.0

    outside = inside(1 + 3 * RIM) & ~inside(1 + RIM)
    return rim, share(outside), share(inside(1 - RIM))


def find_seals(image: np.ndarray) -> List[SealCandidate]:
    """Seal candidates on a BGR page, top to bottom."""
    h, w = image.shape[:2]
    least = max(MIN_PIXELS, int(MIN_SIDE * min(h, w)))
    found: List[SealCandidate] = []
    for colour in COLOURS:
        ink = cv2.medianBlur(colour_mask(image, colour), 3)  # specks of noise are no ink
        if cv2.countNonZero(ink) < least * 2:
            continue
        gap = max(3, least // 8) | 1
        joined = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (gap, gap)))
        contours, _ = cv2.findContours(joined, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for contour in contours:
            x, y, bw, bh = cv2.boundingRect(contour)
            if min(bw, bh) < least or max(bw, bh) > MAX_ASPECT * min(bw, bh) or len(contour) < 20:
                continue
            pad = max(4, min(bw, bh) // 6)
            x1, y1, x2, y2 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
            local = ink[y1:y2, x1:x2]
            (cx, cy), axes, angle = cv2.fitEllipse(contour)
            rim, outside, inside = _ring_shares(local, ((cx - x1, cy - y1), axes, angle))
            if rim >= RIM_INK and outside <= OUTSIDE_INK and inside <= INSIDE_INK:
                found.append(SealCandidate((x1, y1, x2, y2), colour, local))
    return sorted(found, key=lambda c: (c.box[1], c.box[0]))


def erase(image: np.ndarray, seals: Sequence[SealCandidate]) -> np.ndarray:
    """A copy of ``image`` with each seal's ink turned white: its colour (faint, anti-aliased edges too, a
    pixel or two around its strokes), but not dark pixels (black text stamped over stays)."""
    out = image.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    for seal in seals:
        x1, y1, x2, y2 = seal.box
        region = out[y1:y2, x1:x2]
        ink = cv2.dilate(colour_mask(region, seal.colour, ERASE_SATURATION), kernel) > 0
        region[ink & (region.max(axis=2) > DARK)] = 255
    return out


def isolate(image: np.ndarray, seal: SealCandidate) -> np.ndarray:
    """The seal's box with everything but its ink (and the light pixels around its strokes) white, in red:
    text and rules printed under or over it do not confuse the seal's text detection and recognition, and
    the seal text detector, which reads red seals best (a rendered blue seal: 2 of 12 characters wrong, the
    same seal in red: none), sees red."""
    x1, y1, x2, y2 = seal.box
    region = image[y1:y2, x1:x2]
    ink = cv2.dilate(colour_mask(region, seal.colour, ERASE_SATURATION), np.ones((3, 3), np.uint8)) > 0
    ink &= region.max(axis=2) > DARK
    out = np.full_like(region, 255)
    out[ink] = region[ink]
    return np.ascontiguousarray(out[:, :, ::-1]) if seal.colour == "blue" else out  # BGR -> RGB: blue ink turns red
