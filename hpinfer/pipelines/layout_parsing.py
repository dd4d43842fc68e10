"""The layout_parsing pipeline: pages in, their content in reading order out (blocks, Markdown, JSON).

Per page: turn it upright (doc_preprocessor) → layout regions → a region found twice under two labels
kept once → reading order (columns first, see reading_order.py) → OCR of every text-like region, the
crops of all regions of the page in one ``predict_batch`` call → blocks
``{label, cls_id, score, box, text, order}``.
Tables, figures and equations are not read: Markdown shows them as cropped images.

PDFs and directories stream page by page. With ``use_queues`` (default) reading/rendering, the layout
stage and the recognition stage run in three threads joined by bounded queues (stages.py), results in
input order. A page that cannot be read or processed gives a result with ``status: "error"`` and the
message; a page without any region, ``status: "empty"``; the rest of the document goes on either way.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from pydantic import Field

from ..device import Device
from ..errors import HpinferError, InputError
from ..io.inputs import PageRange
from ..io.pages import OnError, Page, readable_pages
from ..models.base import Predictor
from ..results import Result
from ..tasks import layout_detection
from ..tasks.base import Params, validate_params
from ..visualize import draw_polygons
from .config import PipelineSettings
from .doc_preprocessor import DocPreprocessor
from .markdown import IMAGE_LABELS, MarkdownDocument, crop
from .ocr import OCROptions, OCRPipeline
from .reading_order import reading_order
from .stages import Outcome, run_stages
from .sub_modules import PipelineBase, create_sub_module

log = logging.getLogger("hpinfer")

OCR_MODULES = ("TextDetection", "TextLineOrientation", "TextRecognition")
_CJK = re.compile(r"[\u2e80-\u9fff\u3000-\u303f\uf900-\ufaff\uff00-\uffef]")


class LayoutParsingOptions(Params):
    use_doc_orientation_classify: bool = True
    use_queues: bool = True  # read, layout, recognition in three threads; gains need spare cores (benchmarks/RESULTS.md)
    queue_size: int = Field(2, ge=1)  # pages waiting between two stages
    layout_threshold: Optional[float] = Field(None, ge=0, le=1)  # per call; None keeps LayoutDetection's
    # Regions sharing more than this share of the smaller one's area are one region seen twice (the model
    # finds a figure also as text, a caption as both caption kinds): the better-scored one is kept.
    duplicate_overlap: float = Field(0.8, gt=0, le=1)
    text_region_padding: int = Field(4, ge=0)  # pixels of margin around a text region handed to OCR


def split_options(options: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Options → (this pipeline's, the OCR pipeline's: those only OCROptions knows, e.g. text_rec_score_thresh).
    Unknown ones stay with this pipeline's, whose validation names them."""
    ocr = {k: v for k, v in options.items() if k in OCROptions.model_fields and k not in LayoutParsingOptions.model_fields}
    return {k: v for k, v in options.items() if k not in ocr}, ocr


def drop_duplicates(regions: Sequence[Dict[str, Any]], overlap: float) -> List[Dict[str, Any]]:
    """Best score first, each region kept unless it shares more than ``overlap`` of the smaller area with a kept one."""
    kept: List[Dict[str, Any]] = []
    for region in sorted(regions, key=lambda r: -r["score"]):
        a = region["coordinate"]
        for b in (k["coordinate"] for k in kept):
            inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
            if inter > overlap * smaller:
                break
        else:
            kept.append(region)
    return kept


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


class LayoutParsingResult(Result):
    """One page: ``blocks`` in reading order, ``status`` ok / empty / error. ``image`` is the upright page."""

    def save_to_markdown(self, path: "str | Path") -> Path:
        """This page alone as ``<stem>[_<page>]_res.md`` in ``path`` (or at ``path`` if it ends in .md), images in ``imgs/``.
        For a whole document in one file, add every page's result to a ``MarkdownDocument``."""
        target = self._target(path, "res", ".md")
        with MarkdownDocument(target) as doc:
            doc.add(self)
        return target


@dataclass(frozen=True, eq=False)
class _Analysed:
    """A page after the layout stage, waiting for recognition."""

    page: Page
    image: np.ndarray  # upright
    doc_res: Dict[str, Any]
    regions: List[Dict[str, Any]]  # in reading order
    text_crops: List[np.ndarray]  # of the text-like regions, in reading order


class LayoutParsingPipeline(PipelineBase):
    """SubModules: DocOrientationClassify, LayoutDetection, and the OCR pipeline's TextDetection,
    TextLineOrientation, TextRecognition. Options: ``LayoutParsingOptions`` plus the OCR pipeline's."""

    def __init__(self, settings: PipelineSettings, device: "str | Device | None" = None, **options: Any):
        own, ocr = split_options({**settings.options, **options})
        self.settings = settings
        self.options = validate_params(LayoutParsingOptions, own, settings.source)
        modules = settings.modules

        def part(name: str, keys: Sequence[str], part_options: Dict[str, Any]) -> PipelineSettings:
            return PipelineSettings(name, settings.source, part_options, {k: modules[k] for k in keys if k in modules})

        doc_options = {"use_doc_orientation_classify": self.options.use_doc_orientation_classify}
        self.doc = DocPreprocessor(part("doc_preprocessor", ["DocOrientationClassify"], doc_options), device)
        self.layout: Predictor = create_sub_module(settings, "LayoutDetection", layout_detection.TASK.name, device)
        self.ocr = OCRPipeline(part("OCR", OCR_MODULES, ocr), device)

    @property
    def sub_modules(self) -> Dict[str, Predictor]:
        """Loaded sub-modules by their SubModules key, in processing order."""
        return {**self.doc.sub_modules, "LayoutDetection": self.layout, **self.ocr.sub_modules}

    @property
    def predictors(self) -> List[Predictor]:
        return list(self.sub_modules.values())

    def predict(self, inputs: Any, **options: Any) -> List[LayoutParsingResult]:
        return list(self.predict_iter(inputs, **options))

    def predict_iter(
        self, inputs: Any, page_range: Optional[PageRange] = None, on_error: OnError = "result", **options: Any
    ) -> Iterator[LayoutParsingResult]:
        """One result per image or PDF page, in input order; options as at creation, for this call only. A page
        that cannot be read or processed gives a result with status "error" (``on_error="raise"``: an unreadable
        page raises instead)."""
        own, ocr_options = split_options({k: v for k, v in options.items() if v is not None})
        opts = validate_params(LayoutParsingOptions, {**self.options.model_dump(), **own}, "layout_parsing predict()")
        layout_params = self.layout.with_overrides({"threshold": opts.layout_threshold})
        stages = [
            lambda page: self._analyse(page, opts, layout_params),
            lambda analysed: self._recognise(analysed, ocr_options),
        ]
        for outcome in run_stages(readable_pages(inputs, page_range, on_error), stages, opts.use_queues, opts.queue_size):
            yield outcome.value if outcome.error is None else _failed(outcome)

    def _analyse(self, page: Page, opts: LayoutParsingOptions, layout_params) -> _Analysed:
        if page.image is None:
            raise InputError(page.error)
        image, doc_res = self.doc.process(page.image, opts.use_doc_orientation_classify)
        regions = drop_duplicates(self.layout.predict_image(image, layout_params)["boxes"], opts.duplicate_overlap)
        regions = [
            {**regions[i], "box": [int(round(v)) for v in regions[i]["coordinate"]]}
            for i in reading_order([r["coordinate"] for r in regions])
        ]
        crops = [crop(image, r["box"], opts.text_region_padding) for r in regions if r["label"] not in IMAGE_LABELS]
        return _Analysed(page, image, doc_res, regions, crops)

    def _recognise(self, analysed: _Analysed, ocr_options: Dict[str, Any]) -> LayoutParsingResult:
        texts = iter(
            join_lines(res["rec_texts"])
            for res in (self.ocr.predict_batch(analysed.text_crops, **ocr_options) if analysed.text_crops else [])
        )
        blocks = [
            {
                "label": r["label"], "cls_id": r["cls_id"], "score": r["score"], "box": r["box"],
                "text": "" if r["label"] in IMAGE_LABELS else next(texts), "order": order,
            }
            for order, r in enumerate(analysed.regions)
        ]
        page, (h, w) = analysed.page, analysed.image.shape[:2]
        data = {**analysed.doc_res, "width": w, "height": h, "blocks": blocks}
        return _result(page, analysed.image, "ok" if blocks else "empty", None, data)


def _result(page: Page, image: Optional[np.ndarray], status: str, error: Optional[str], data: Dict[str, Any]) -> LayoutParsingResult:
    head = {"input_path": page.input_path, "page_index": page.page_index, "status": status, "error": error}
    return LayoutParsingResult({**head, **data}, image, _draw, "layout_parsing_res_img")


def _failed(outcome: Outcome) -> LayoutParsingResult:
    page = outcome.value if isinstance(outcome.value, Page) else outcome.value.page
    err = outcome.error
    message = str(err) if isinstance(err, HpinferError) else f"{type(err).__name__}: {err}"
    where = f"{page.input_path or 'input'}" + ("" if page.page_index is None else f" page {page.page_index + 1}")
    log.warning("layout_parsing: %s", message if isinstance(err, InputError) else f"{where}: {message}")
    return _result(page, page.image, "error", message, {"blocks": []})


def _draw(result: Result) -> np.ndarray:
    """Regions coloured by class, each labelled with its place in the reading order; a failed page's message."""
    image = result.image
    if image is None:
        image = np.full((120, 900, 3), 255, dtype=np.uint8)
        return draw_polygons(image, [[[0, 60], [899, 60], [899, 119], [0, 119]]], [f"error: {result['error']}"])
    blocks = result["blocks"]
    rects = [[[x1, y1], [x2, y1], [x2, y2], [x1, y2]] for x1, y1, x2, y2 in (b["box"] for b in blocks)]
    names = [f"{b['order'] + 1} {b['label']}" for b in blocks]
    return draw_polygons(image, rects, names, [b["cls_id"] for b in blocks])
