"""The seal_recognition pipeline: seal text detection (curved polygons) → each polygon unwarped into a
straight strip → text recognition; PaddleX's result names (``seal_res_list`` with ``dt_polys``,
``rec_texts``, ``rec_scores``).

Seal text runs along a circle (or an ellipse near enough to one), so an arc polygon is unwarped by polar
resampling: a circle fitted to the polygon's points gives the centre; the text band spans the polygon's
angles (the complement of the largest gap between them) and radii; the strip reads along increasing image
angle (clockwise on screen, as a seal's top arc reads left to right) with the outer radius at the top
(letters stand on the ring, heads outwards). A polygon that fills most of its minimum-area rectangle is
straight text and is cropped as a rotated rectangle, as in the OCR pipeline.

CDLA, the bundled layout model, has no seal class: the whole image is read as one seal region
(``seal_region_id`` 0). layout_parsing finds seals on a page itself (seal_locator.py) and reads each with
``detect_seal_text`` and ``read_seal``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterator, Literal, Optional, Tuple

import cv2
import numpy as np
from pydantic import Field

from ..device import Device
from ..io.inputs import PageRange
from ..io.pages import OnError, readable_pages
from ..models.text_detection import TextDetector
from ..models.text_recognition import TextRecognizer
from ..results import Result
from ..tasks.base import Params, validate_params
from ..visualize import draw_ocr
from .config import PipelineSettings
from .ocr import _item_of, crop_quad
from .sub_modules import PipelineBase, create_sub_module

STRAIGHT_FILL = 0.75  # a polygon covering this share of its min-area rectangle is straight text


class SealOptions(Params):
    """PaddleX's seal_recognition option names; None keeps the detector's own parameter."""

    seal_det_limit_side_len: Optional[int] = Field(None, ge=32)
    seal_det_limit_type: Optional[Literal["min", "max"]] = None
    seal_det_thresh: Optional[float] = Field(None, ge=0, le=1)
    seal_det_box_thresh: Optional[float] = Field(None, ge=0, le=1)
    seal_det_unclip_ratio: Optional[float] = Field(None, gt=0)
    seal_rec_score_thresh: float = Field(0.0, ge=0, le=1)  # PaddleX's default keeps every line


def fit_circle(points: np.ndarray) -> tuple:
    """Centre (x, y) and radius of the least-squares circle through ``points`` (Kåsa's algebraic fit)."""
    x, y = points[:, 0], points[:, 1]
    a = np.stack([x, y, np.ones_like(x)], axis=1)
    (c0, c1, c2), *_ = np.linalg.lstsq(a, x * x + y * y, rcond=None)
    cx, cy = c0 / 2, c1 / 2
    return cx, cy, math.sqrt(max(c2 + cx * cx + cy * cy, 0.0))


def unwarp_arc(image: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """The text band of an arc polygon as a straight strip (outer radius on top, reading by increasing angle)."""
    points = poly.reshape(-1, 2).astype(np.float64)
    cx, cy, _ = fit_circle(points)
    angles = np.sort(np.arctan2(points[:, 1] - cy, points[:, 0] - cx))
    gaps = np.diff(np.concatenate([angles, angles[:1] + 2 * math.pi]))
    widest = int(gaps.argmax())
    start = angles[(widest + 1) % len(angles)]
    span = 2 * math.pi - gaps[widest]
    radii = np.hypot(points[:, 0] - cx, points[:, 1] - cy)
    inner, outer = np.percentile(radii, 2), np.percentile(radii, 98)
    height = max(int(round(outer - inner)), 8)
    width = max(int(round(span * (inner + outer) / 2)), height)
    theta = start + span * (np.arange(width) + 0.5) / width
    radius = outer - (outer - inner) * (np.arange(height) + 0.5) / height
    map_x = (cx + radius[:, None] * np.cos(theta)[None, :]).astype(np.float32)
    map_y = (cy + radius[:, None] * np.sin(theta)[None, :]).astype(np.float32)
    return cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def seal_crop(image: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """One detected polygon as a straight text strip: a rotated-rectangle crop for straight text, else the arc unwarped."""
    contour = poly.reshape(-1, 2).astype(np.float32)
    rect = cv2.minAreaRect(contour)
    if cv2.contourArea(contour) >= STRAIGHT_FILL * max(rect[1][0] * rect[1][1], 1.0):
        quad = cv2.boxPoints(rect)
        quad = quad[np.argsort(np.arctan2(quad[:, 1] - quad[:, 1].mean(), quad[:, 0] - quad[:, 0].mean()))]
        top_left = int(np.argmin(quad.sum(axis=1)))
        return crop_quad(image, np.roll(quad, -top_left, axis=0))  # clockwise from the top-left corner
    return unwarp_arc(image, poly)


class SealRecognitionPipeline(PipelineBase):
    """SubModules: SealTextDetection (a text_detection model with box_type poly) and TextRecognition."""

    def __init__(self, settings: PipelineSettings, device: "str | Device | None" = None, **options: Any):
        self.settings = settings
        self.options = validate_params(SealOptions, {**settings.options, **options}, settings.source)
        self.text_det: TextDetector = create_sub_module(settings, "SealTextDetection", TextDetector.kind.name, device)
        self.text_rec: TextRecognizer = create_sub_module(settings, "TextRecognition", TextRecognizer.kind.name, device)

    @property
    def sub_modules(self) -> Dict[str, Any]:
        return {"SealTextDetection": self.text_det, "TextRecognition": self.text_rec}

    def predict_iter(
        self, inputs: Any, page_range: Optional[PageRange] = None, on_error: OnError = "raise", **options: Any
    ) -> Iterator[Result]:
        given = {k: v for k, v in options.items() if v is not None}
        opts = validate_params(SealOptions, {**self.options.model_dump(), **given}, "seal_recognition predict()")
        for page in readable_pages(inputs, page_range, on_error):
            image = _item_of(page).image
            yield Result(
                {"input_path": page.input_path, "page_index": page.page_index, "seal_res_list": [self.read_seal(image, opts)]},
                image, _draw, "seal_res_img",
            )

    def read_seal(self, image: np.ndarray, opts: Optional[SealOptions] = None) -> Dict[str, Any]:
        """One seal region's text: ``dt_polys``, ``rec_texts``, ``rec_scores``, ``rec_polys`` (kept lines)."""
        opts = opts or self.options
        return read_seal(self.text_rec, image, *detect_seal_text(self.text_det, image, opts), opts)


def detect_seal_text(detector: TextDetector, image: np.ndarray, opts: SealOptions) -> Tuple[list, list]:
    """The seal's text polygons and their scores, with ``opts``' detector settings."""
    return detector.detect(image, detector.with_overrides({
        "limit_side_len": opts.seal_det_limit_side_len, "limit_type": opts.seal_det_limit_type,
        "thresh": opts.seal_det_thresh, "box_thresh": opts.seal_det_box_thresh, "unclip_ratio": opts.seal_det_unclip_ratio,
    }))


def read_seal(recogniser: TextRecognizer, image: np.ndarray, polys: list, scores: list, opts: SealOptions) -> Dict[str, Any]:
    """The detected polygons of one seal region read (each unwarped to a strip): ``dt_polys``, ``dt_scores``,
    ``rec_texts``, ``rec_scores``, ``rec_polys`` (the lines kept by ``seal_rec_score_thresh``)."""
    read = recogniser.recognize([seal_crop(image, poly) for poly in polys]) if len(polys) else []
    keep = [i for i, (text, score) in enumerate(read) if text and score >= opts.seal_rec_score_thresh]
    return {
        "seal_region_id": 0, "dt_polys": list(polys), "dt_scores": list(scores),
        "rec_texts": [read[i][0] for i in keep], "rec_scores": [read[i][1] for i in keep],
        "rec_polys": [polys[i] for i in keep],
    }


def _draw(result: Result) -> np.ndarray:
    seals = result["seal_res_list"]
    return draw_ocr(result.image, [p for s in seals for p in s["rec_polys"]], [t for s in seals for t in s["rec_texts"]])
