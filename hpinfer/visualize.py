"""Draw detection and OCR results on images so that people can check them at a glance.

Everything is numpy BGR uint8 in and out (callers save with cv2.imwrite). Text goes through
Pillow, because OpenCV's Hershey fonts cannot draw CJK.
"""

from __future__ import annotations

import colorsys
import functools
import logging
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .io.images import to_bgr

log = logging.getLogger("hpinfer")

# CJK-capable fonts first (Debian/Ubuntu package paths), then DejaVu, which at least covers Latin.
_SYSTEM_FONTS: tuple[str, ...] = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)
_FILL_ALPHA = 0.4
_TEXT_FILL = 0.85  # share of the box height (or width, vertical) taken by the glyphs

Font = Union[ImageFont.FreeTypeFont, ImageFont.ImageFont]


@functools.lru_cache(maxsize=None)
def find_font(text_sample: str = "中文") -> Optional[Path]:
    """A font file that draws ``text_sample``: $HPINFER_FONT, else the first system font that has its glyphs.

    Cached, so the warning about a missing CJK font is logged once per process.
    """
    env = os.environ.get("HPINFER_FONT")
    if env:
        if Path(env).is_file():
            return Path(env)
        log.warning("HPINFER_FONT=%s is not a file; looking for a system font instead", env)
    candidates = [Path(p) for p in _SYSTEM_FONTS if Path(p).is_file()]
    for path in candidates:
        if _covers(path, text_sample):
            return path
    log.warning(
        "No font that can draw %r was found, so such text is drawn as empty boxes; "
        "install one with `apt-get install fonts-wqy-microhei` or set HPINFER_FONT to a .ttf/.ttc/.otf file",
        text_sample,
    )
    return candidates[0] if candidates else None


def _glyph(font: ImageFont.FreeTypeFont, char: str) -> bytes:
    canvas = Image.new("L", (48, 48))
    ImageDraw.Draw(canvas).text((0, 0), char, font=font, fill=255)
    return canvas.tobytes()


def _covers(path: Path, sample: str) -> bool:
    """Pillow has no glyph lookup: a missing character renders as the font's .notdef glyph, as U+FFFF does."""
    try:
        font = ImageFont.truetype(str(path), 32)
    except OSError:
        return False
    notdef = _glyph(font, "\uffff")
    return all(_glyph(font, c) != notdef for c in sample if not c.isspace())


@functools.lru_cache(maxsize=128)
def _font(path: Optional[Path], size: int) -> Font:
    if path is not None:
        try:
            return ImageFont.truetype(str(path), size)
        except OSError:
            log.warning("cannot load font %s; using Pillow's built-in font", path)
    return ImageFont.load_default(size)


def _clean(text: str, font: Font) -> str:
    """Control characters would start new lines; a non-FreeType font only encodes Latin-1."""
    text = "".join(c if c.isprintable() else " " for c in str(text))
    if not isinstance(font, ImageFont.FreeTypeFont):
        text = text.encode("latin-1", "replace").decode("latin-1")
    return text


def _colour(i: int) -> tuple[int, int, int]:
    """BGR colour i: hues a golden-ratio step apart, so neighbours differ and the result is reproducible."""
    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def _points(poly: object) -> np.ndarray:
    """Nx2 float points; a polygon with NaN/inf has none, and wild coordinates are clipped so int32 casts hold."""
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    return np.clip(p, -(2**24), 2**24) if np.isfinite(p).all() else p[:0]


def _thickness(image: np.ndarray) -> int:
    return max(1, round(min(image.shape[:2]) / 400))


def draw_polygons(
    image_bgr: np.ndarray,
    polys: Sequence[object],
    labels: Optional[Sequence[str]] = None,
    colours: Optional[Sequence[int]] = None,
) -> np.ndarray:
    """The image with each polygon filled semi-transparently and outlined in its own colour, plus optional labels.

    ``colours`` picks each polygon's palette entry (e.g. its class id, so a class keeps one colour);
    by default polygon i gets entry i.
    """
    image = to_bgr(image_bgr)
    overlay = image.copy()
    pts = [np.round(_points(p)).astype(np.int32) for p in polys]
    palette = [_colour(c) for c in (range(len(pts)) if colours is None else colours)]
    if len(palette) != len(pts):
        raise ValueError(f"{len(pts)} polygons but {len(palette)} colours")
    for p, colour in zip(pts, palette):
        if len(p):
            cv2.fillPoly(overlay, [p], colour)
    out = cv2.addWeighted(overlay, _FILL_ALPHA, image, 1 - _FILL_ALPHA, 0)
    for p, colour in zip(pts, palette):
        if len(p):
            cv2.polylines(out, [p], True, colour, _thickness(out), cv2.LINE_AA)
    if labels:
        out = _draw_labels(out, pts, labels, palette)
    return out


def _draw_labels(image: np.ndarray, pts: list[np.ndarray], labels: Sequence[str], palette: list) -> np.ndarray:
    """White text on a tag of the polygon's colour, just above its top-left corner (inside if at the top edge)."""
    font = _font(find_font(), int(np.clip(min(image.shape[:2]) // 12, 10, 20)))
    pil = Image.fromarray(image[:, :, ::-1])
    draw = ImageDraw.Draw(pil)
    for p, label, (b, g, r) in zip(pts, labels, palette, strict=True):
        text = _clean(label, font)
        if not len(p) or not text.strip():
            continue
        x, y = (int(v) for v in p.min(axis=0))
        *_, right, bottom = draw.textbbox((0, 0), text, font=font)
        y = y - bottom - 2 if y - bottom - 2 >= 0 else y
        draw.rectangle((x, y, x + right + 2, y + bottom + 2), fill=(r, g, b))
        draw.text((x + 1, y + 1), text, font=font, fill=(255, 255, 255))
    return np.ascontiguousarray(np.asarray(pil)[:, :, ::-1])


def draw_ocr(image_bgr: np.ndarray, polys: Sequence[object], texts: Sequence[str]) -> np.ndarray:
    """Side by side (H x 2W): the image with its text boxes, and a white panel with each text written in its box."""
    left = draw_polygons(image_bgr, polys)
    panel = np.full_like(left, 255)
    path = find_font()
    for i, (poly, text) in enumerate(zip(polys, texts, strict=True)):  # a count mismatch is a bug upstream
        p = _points(poly)
        if len(p) == 0:
            continue
        quad = p if len(p) == 4 else _min_area_quad(p)
        _write_in_quad(panel, quad, text, path)
        cv2.polylines(panel, [np.round(p).astype(np.int32)], True, _colour(i), _thickness(panel), cv2.LINE_AA)
    return np.hstack([left, panel])


def _min_area_quad(p: np.ndarray) -> np.ndarray:
    """Curved polygons are written along their minimum-area rectangle, corners ordered tl, tr, br, bl."""
    box = cv2.boxPoints(cv2.minAreaRect(p.astype(np.float32))).astype(np.float64)
    s, d = box.sum(axis=1), box[:, 1] - box[:, 0]
    return box[[np.argmin(s), np.argmin(d), np.argmax(s), np.argmax(d)]]


def _write_in_quad(panel: np.ndarray, quad: np.ndarray, text: str, path: Optional[Path]) -> None:
    """Render the text upright on a tile the size of the box, then warp the tile onto the quad (tl, tr, br, bl)."""
    w = (np.linalg.norm(quad[1] - quad[0]) + np.linalg.norm(quad[2] - quad[3])) / 2
    h = (np.linalg.norm(quad[3] - quad[0]) + np.linalg.norm(quad[2] - quad[1])) / 2
    x0, y0 = np.maximum(np.floor(quad.min(axis=0)), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(quad.max(axis=0)), panel.shape[1::-1]).astype(int)
    if w < 2 or h < 2 or x1 <= x0 or y1 <= y0 or abs(cv2.contourArea(quad.astype(np.float32))) < 1:
        return
    scale = min(1.0, 2 * max(panel.shape[:2]) / max(w, h))  # boxes far larger than the image need no bigger tile
    tile = _text_tile(text, max(1, round(w * scale)), max(1, round(h * scale)), path)
    if tile is None:
        return
    tw, th = tile.size
    src = np.float32([[0, 0], [tw, 0], [tw, th], [0, th]])
    matrix = cv2.getPerspectiveTransform(src, (quad - [x0, y0]).astype(np.float32))
    ink = cv2.warpPerspective(np.asarray(tile), matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=0)
    roi = panel[y0:y1, x0:x1]
    np.minimum(roi, (255 - ink)[:, :, None], out=roi)


def _text_tile(text: str, w: int, h: int, path: Optional[Path]) -> Optional[Image.Image]:
    """Ink mask (L, 255 = ink) of a w x h box; a tall box with several characters is written one per row."""
    vertical = h > 1.5 * w and len(text.strip()) > 1
    size = max(1, int((w if vertical else h) * _TEXT_FILL))
    font = _font(path, size)
    text = _clean(text, font).strip()
    if not text:
        return None
    tile = Image.new("L", (w, h))
    draw = ImageDraw.Draw(tile)
    if vertical:
        step = min(size, h / len(text))  # shrink rows so long texts fit
        font = _font(path, max(1, int(step)))
        for k, char in enumerate(text):
            _place(draw, char, font, (0, k * step, w, (k + 1) * step), centre=True)
        return tile
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    fit = min(w / max(right - left, 1), h / max(bottom - top, 1))
    if fit < 1:  # shrink to fit rather than clip
        font = _font(path, max(1, int(size * fit * 0.95)))
    _place(draw, text, font, (0, 0, w, h), centre=False)
    return tile


def _place(draw: ImageDraw.ImageDraw, text: str, font: Font, cell: tuple[float, ...], centre: bool) -> None:
    """Ink centred vertically in the cell, left-aligned like the line it reads or centred (vertical characters).

    Placed by its measured ink box, as text anchors fail with Pillow's non-FreeType bitmap font.
    """
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x0, y0, x1, y1 = cell
    spare = max(0.0, x1 - x0 - (right - left))
    x = x0 + (spare / 2 if centre else min(spare, 0.1 * (y1 - y0))) - left  # small indent off the outline
    draw.text((x, (y0 + y1 - top - bottom) / 2), text, font=font, fill=255)
