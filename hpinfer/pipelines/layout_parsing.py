"""The layout_parsing pipeline: pages in, their content in reading order out (blocks, Markdown, JSON).

Per page: turn it upright (doc_preprocessor) → layout regions, a region found twice under two labels kept
once → OCR of the whole page, once (as PP-StructureV3 does) → each text line to the region holding most of
it, a region's box grown to hold its lines whole (a region never cuts a line), lines outside every region
grouped into paragraphs that become text blocks of their own (a one-line paragraph in larger type than the
page's body, a title) → reading order over all blocks (columns first, see reading_order.py) → blocks
``{label, cls_id, score, box, text, order}``; a text or reference block's ``text`` holds one paragraph per
line (paragraphs.py groups its lines by their geometry), ``score`` is None for a block found only by OCR. So the page's text is
as complete as the OCR pipeline's. Tables, figures and equations keep their lines' text in the JSON, and
Markdown shows them as cropped images; with SubModules.TableStructureRecognition, a table block also gets
``html`` (its structure with each cell's text, table_recognition.py) and ``cell_box_list``, and Markdown
shows that HTML. A region of another label (CDLA calls most bordered tables "equation") whose crop shows a
ruled grid with text in its cells (``ruled_table``) is a table.

Seals (CDLA has no seal class): ringed blobs of red or blue ink (seal_locator.py) in which the seal text
detector (SubModules.SealTextDetection) finds text are read as seal_recognition reads a seal, with the OCR
pipeline's recogniser, and become ``seal`` blocks (``text``: one seal line per line, ``seal_res``: its
polygons on the page, texts and scores); their ink is erased from the page the layout model and the OCR
see, so the seal's text does not come back as garbled body text (``use_seal_recognition``).

PDFs and directories stream page by page. With ``use_queues`` (default) reading/rendering, the layout
stage (with text detection) and the recognition stage run in three threads joined by bounded queues
(stages.py), results in input order. A page that cannot be read or processed gives a result with
``status: "error"`` and the message; a page without any region or text, ``status: "empty"``; the rest of
the document goes on either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from pydantic import Field

from ..device import Device
from ..errors import ConfigError, HpinferError, InputError, ModelNotFoundError
from ..io.inputs import PageRange
from ..io.pages import OnError, Page, readable_pages
from ..models.base import Predictor
from ..results import Result
from ..models.text_detection import TextDetector
from ..tasks import layout_detection, table_structure
from ..tasks.base import Params, validate_params
from ..visualize import draw_polygons
from .config import PipelineSettings, sub_settings
from .doc_preprocessor import DocPreprocessor
from ..io import InputItem
from .markdown import MarkdownDocument
from .ocr import OCR_MODULES, OCRPipeline, split_ocr_options
from .paragraphs import box_of, join_lines, paragraphs
from .reading_order import reading_order
from .seal_locator import SealCandidate, erase, find_seals, isolate
from .seal_recognition import SealOptions, detect_seal_text, read_seal
from .stages import Outcome, run_stages
from .table_recognition import TABLE_LABEL, recognise_table, ruled_cells
from .sub_modules import PipelineBase, create_sub_module

log = logging.getLogger("hpinfer")

PARAGRAPH_LABELS = frozenset({"text", "reference"})  # regions of running text, cut into paragraphs
TITLE_SIZE = 1.3  # a lone line this many times the page's usual line height is a title
MIN_TABLE_SIDE = 40  # pixels: a smaller region is no ruled table
SEAL_LABEL = "seal"  # PaddleX's layout label for seals
SEAL_OPTIONS = SealOptions()  # the seal detector's own settings, every line kept (seal_recognition's defaults)


class LayoutParsingOptions(Params):
    use_doc_orientation_classify: bool = True
    use_queues: bool = True  # read, layout, recognition in three threads; gains need spare cores (benchmarks/RESULTS.md)
    queue_size: int = Field(2, ge=1)  # pages waiting between two stages
    layout_threshold: Optional[float] = Field(None, ge=0, le=1)  # per call; None keeps LayoutDetection's
    # Regions sharing more than this share of the smaller one's area are one region seen twice (the model
    # finds a figure also as text, a caption as both caption kinds): the better-scored one is kept.
    duplicate_overlap: float = Field(0.8, gt=0, le=1)
    # A text line belongs to the region holding at least this share of its box (the one holding most);
    # a line no region holds that much of starts a text block of its own.
    line_in_region: float = Field(0.5, gt=0, le=1)
    # Table regions as HTML with their text (SubModules.TableStructureRecognition, loaded when this is on at
    # creation); off, or without that entry, they stay pictures in Markdown.
    use_table_recognition: bool = True
    # Seals as seal blocks with their text (SubModules.SealTextDetection, loaded when this is on at creation),
    # their ink kept out of the page's text; off, a seal is whatever the layout model and the OCR make of it.
    use_seal_recognition: bool = True


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


def ordered_regions(boxes: Sequence[Dict[str, Any]], overlap: float) -> List[Dict[str, Any]]:
    """Layout regions without duplicates, in reading order, each with its ``box`` in whole pixels."""
    regions = drop_duplicates(boxes, overlap)
    return [
        {**regions[i], "box": [int(round(v)) for v in regions[i]["coordinate"]]}
        for i in reading_order([r["coordinate"] for r in regions])
    ]


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
    clean: np.ndarray  # what layout and OCR see: ``image`` without the seals' ink
    doc_res: Dict[str, Any]
    regions: List[Dict[str, Any]]
    detected: Tuple[Any, ...]  # the OCR pipeline's first half on the whole page (_analyse), for its second half
    seals: Tuple["_Seal", ...] = ()


@dataclass(frozen=True, eq=False)
class _Seal:
    """A seal found on the page, its text detected, waiting for recognition."""

    candidate: SealCandidate
    alone: np.ndarray  # the seal's box, nothing but its ink (seal_locator.isolate)
    polys: list  # in the candidate's box
    scores: list


def assign_lines(regions: Sequence[Dict[str, Any]], boxes: np.ndarray, least_share: float) -> List[int]:
    """For each line box, the index of the region holding the largest share of it, or -1 when no region
    holds ``least_share`` of it. Regions count as half a line taller at the top and bottom: the detector's
    boxes often stop inside a paragraph's first or last line, and a caption's box inside its one line."""
    if not len(regions) or not len(boxes):
        return [-1] * len(boxes)
    lines = np.asarray(boxes, dtype=np.float64).reshape(-1, 1, 4)
    areas = np.asarray([r["coordinate"] for r in regions], dtype=np.float64).reshape(1, -1, 4)
    grow = (lines[..., 3] - lines[..., 1]) / 2
    width = np.clip(np.minimum(lines[..., 2], areas[..., 2]) - np.maximum(lines[..., 0], areas[..., 0]), 0, None)
    height = np.minimum(lines[..., 3], areas[..., 3] + grow) - np.maximum(lines[..., 1], areas[..., 1] - grow)
    height = np.clip(height, 0, None)
    own = np.maximum((lines[..., 2] - lines[..., 0]) * (lines[..., 3] - lines[..., 1]), 1.0)
    share = width * height / own
    best = share.argmax(axis=1)
    return [int(b) if share[i, b] >= least_share else -1 for i, b in enumerate(best)]


def ruled_table(image: np.ndarray, box: Sequence[float], line_boxes: np.ndarray) -> bool:
    """Whether the region ``box`` of ``image`` shows a ruled grid of at least 2 x 2 cells, at least half of them
    holding the centre of one of its text lines (a chart's grid lines wall in no text)."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    if y2 - y1 < MIN_TABLE_SIDE or x2 - x1 < MIN_TABLE_SIDE or not len(line_boxes):
        return False
    cells = ruled_cells(image[max(0, y1):y2, max(0, x1):x2]) + np.array([max(0, x1), max(0, y1)] * 2)
    if not len(cells):
        return False
    cx, cy = (line_boxes[:, 0] + line_boxes[:, 2]) / 2, (line_boxes[:, 1] + line_boxes[:, 3]) / 2
    held = (cx[None] >= cells[:, :1]) & (cx[None] < cells[:, 2:3]) & (cy[None] >= cells[:, 1:2]) & (cy[None] < cells[:, 3:])
    return bool(held.any(axis=1).mean() >= 0.5)


def paragraph_texts(boxes: np.ndarray, texts: Sequence[str]) -> List[str]:
    return [join_lines([texts[i] for i in group]) for group in paragraphs(boxes, texts)]


class LayoutParsingPipeline(PipelineBase):
    """SubModules: DocOrientationClassify, LayoutDetection, and the OCR pipeline's TextDetection,
    TextLineOrientation, TextRecognition. Options: ``LayoutParsingOptions`` plus the OCR pipeline's."""

    def __init__(self, settings: PipelineSettings, device: "str | Device | None" = None, **options: Any):
        own, ocr = split_ocr_options({**settings.options, **options}, LayoutParsingOptions)
        self.settings = settings
        self.options = validate_params(LayoutParsingOptions, own, settings.source)
        doc_options = {"use_doc_orientation_classify": self.options.use_doc_orientation_classify}
        self.doc = DocPreprocessor(sub_settings(settings, "doc_preprocessor", ["DocOrientationClassify"], doc_options), device)
        self.layout: Predictor = create_sub_module(settings, "LayoutDetection", layout_detection.TASK.name, device)
        self.ocr = OCRPipeline(sub_settings(settings, "OCR", OCR_MODULES, ocr), device)
        self.structurer: Optional[Predictor] = None
        if self.options.use_table_recognition and "TableStructureRecognition" in settings.modules:
            try:
                self.structurer = create_sub_module(settings, "TableStructureRecognition", table_structure.TASK.name, device)
            except ModelNotFoundError as err:  # an optional package: the rest of the pipeline works without it
                log.warning("layout_parsing: tables stay pictures: %s", err)
        self.seal_det: Optional[TextDetector] = None
        if self.options.use_seal_recognition and "SealTextDetection" in settings.modules:
            self.seal_det = create_sub_module(settings, "SealTextDetection", TextDetector.kind.name, device)

    @property
    def sub_modules(self) -> Dict[str, Predictor]:
        """Loaded sub-modules by their SubModules key, in processing order."""
        tables = {"TableStructureRecognition": self.structurer} if self.structurer is not None else {}
        seals = {"SealTextDetection": self.seal_det} if self.seal_det is not None else {}
        return {**self.doc.sub_modules, "LayoutDetection": self.layout, **seals, **self.ocr.sub_modules, **tables}

    def predict_iter(
        self, inputs: Any, page_range: Optional[PageRange] = None, on_error: OnError = "result", **options: Any
    ) -> Iterator[LayoutParsingResult]:
        """One result per image or PDF page, in input order; options as at creation, for this call only. A page
        that cannot be read or processed gives a result with status "error" (``on_error="raise"``: an unreadable
        page raises instead)."""
        own, ocr_options = split_ocr_options({k: v for k, v in options.items() if v is not None}, LayoutParsingOptions)
        opts = validate_params(LayoutParsingOptions, {**self.options.model_dump(), **own}, "layout_parsing predict()")
        if own.get("use_table_recognition") and self.structurer is None:
            raise ConfigError(
                "use_table_recognition=True needs the pipeline created with it on and a SubModules.TableStructureRecognition entry"
            )
        if own.get("use_seal_recognition") and self.seal_det is None:
            raise ConfigError("use_seal_recognition=True needs the pipeline created with it on and a SubModules.SealTextDetection entry")
        layout_params = self.layout.with_overrides({"threshold": opts.layout_threshold})
        ocr_opts, det_params = self.ocr._call_options(ocr_options)
        stages = [
            lambda page: self._analyse(page, opts, layout_params, ocr_opts, det_params),
            lambda analysed: self._recognise(analysed, opts, ocr_opts, det_params),
        ]
        for outcome in run_stages(readable_pages(inputs, page_range, on_error), stages, opts.use_queues, opts.queue_size):
            yield outcome.value if outcome.error is None else _failed(outcome)

    def _analyse(self, page: Page, opts: LayoutParsingOptions, layout_params, ocr_opts, det_params) -> _Analysed:
        if page.image is None:
            raise InputError(page.error)
        image, doc_res = self.doc.process(page.image, opts.use_doc_orientation_classify)
        seals = self._find_seals(image) if opts.use_seal_recognition and self.seal_det is not None else []
        clean = erase(image, [seal.candidate for seal in seals]) if seals else image
        regions = drop_duplicates(self.layout.predict_image(clean, layout_params)["boxes"], opts.duplicate_overlap)
        detected = self.ocr._analyse([InputItem(clean, page.input_path, page.page_index)], ocr_opts, det_params)
        return _Analysed(page, image, clean, doc_res, regions, detected, tuple(seals))

    def _find_seals(self, image: np.ndarray) -> List[_Seal]:
        """Seal candidates in which the seal text detector finds text (a coloured ring without any is no seal)."""
        seals = []
        for candidate in find_seals(image):
            alone = isolate(image, candidate)
            polys, scores = detect_seal_text(self.seal_det, alone, SEAL_OPTIONS)
            if len(polys):
                seals.append(_Seal(candidate, alone, list(polys), list(scores)))
        return seals

    def _seal_block(self, seal: _Seal) -> Dict[str, Any]:
        x1, y1, x2, y2 = seal.candidate.box
        read = read_seal(self.ocr.text_rec, seal.alone, seal.polys, seal.scores, SEAL_OPTIONS)
        shift = np.array([x1, y1])
        return {
            "label": SEAL_LABEL, "cls_id": -1, "score": None, "box": [x1, y1, x2, y2], "text": "\n".join(read["rec_texts"]),
            "seal_res": {"rec_polys": [(np.asarray(p) + shift).tolist() for p in read["rec_polys"]],
                         "rec_texts": read["rec_texts"], "rec_scores": read["rec_scores"]},
        }

    def _recognise(self, analysed: _Analysed, opts: LayoutParsingOptions, ocr_opts, det_params) -> LayoutParsingResult:
        (ocr,) = self.ocr._complete(*analysed.detected, ocr_opts, det_params)
        texts, boxes = ocr["rec_texts"], np.asarray(ocr["rec_boxes"], dtype=np.float64).reshape(-1, 4)
        owner = assign_lines(analysed.regions, boxes, opts.line_in_region)
        blocks = []
        for index, region in enumerate(analysed.regions):
            mine = [i for i, o in enumerate(owner) if o == index]
            box = box_of([region["coordinate"], *boxes[mine]])
            paras = paragraph_texts(boxes[mine], [texts[i] for i in mine])
            # A title, caption, header or footer is one paragraph however its lines look (a caption's
            # Chinese and English lines differ in size); running text is split by its geometry.
            text = "\n".join(paras) if region["label"] in PARAGRAPH_LABELS else join_lines(paras)
            block = {"label": region["label"], "cls_id": region["cls_id"], "score": region["score"], "box": list(box), "text": text}
            tables = opts.use_table_recognition and self.structurer is not None
            if tables and region["label"] != TABLE_LABEL and ruled_table(analysed.clean, box, boxes[mine]):
                block.update(label=TABLE_LABEL, cls_id=self._table_class)
            if block["label"] == TABLE_LABEL and tables:
                table = recognise_table(self.structurer, analysed.clean, box, boxes[mine], [texts[i] for i in mine])
                block.update(html=table["pred_html"], cell_box_list=table["cell_box_list"])
            blocks.append(block)
        blocks += self._loose_blocks(boxes, texts, [i for i, o in enumerate(owner) if o < 0])
        blocks += [self._seal_block(seal) for seal in analysed.seals]
        blocks = [{**blocks[i], "order": order} for order, i in enumerate(reading_order([b["box"] for b in blocks]))]
        page, (h, w) = analysed.page, analysed.image.shape[:2]
        data = {**analysed.doc_res, "width": w, "height": h, "blocks": blocks}
        return _result(page, analysed.image, "ok" if blocks else "empty", None, data)

    @property
    def _table_class(self) -> int:
        labels = list(self.layout.params.labels)
        return labels.index(TABLE_LABEL) if TABLE_LABEL in labels else -1

    def _loose_blocks(self, boxes: np.ndarray, texts: Sequence[str], loose: List[int]) -> List[Dict[str, Any]]:
        """Lines outside every region, one text block per paragraph; a one-line paragraph in type clearly
        larger than the page's usual line (all lines') is a title."""
        if not loose:
            return []
        usual = float(np.median(boxes[:, 3] - boxes[:, 1]))
        labels = list(self.layout.params.labels)
        blocks = []
        for group in paragraphs(boxes[loose], [texts[i] for i in loose]):
            members = [loose[k] for k in group]
            box = box_of(boxes[members])
            tall = box[3] - box[1] > TITLE_SIZE * usual and len(members) == 1
            label = "title" if tall and "title" in labels else "text"
            blocks.append({
                "label": label, "cls_id": labels.index(label) if label in labels else -1, "score": None,
                "box": list(box), "text": join_lines([texts[i] for i in members]),
            })
        return blocks


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


def draw_regions(result: Result, boxes: Sequence[Sequence[int]], names: Sequence[str], classes: Sequence[int]) -> np.ndarray:
    """Regions (x1, y1, x2, y2) coloured by class and named on the page; a failed page's message."""
    image = result.image
    if image is None:
        image = np.full((120, 900, 3), 255, dtype=np.uint8)
        return draw_polygons(image, [[[0, 60], [899, 60], [899, 119], [0, 119]]], [f"error: {result['error']}"])
    rects = [[[x1, y1], [x2, y1], [x2, y2], [x1, y2]] for x1, y1, x2, y2 in boxes]
    return draw_polygons(image, rects, list(names), list(classes))


def _draw(result: Result) -> np.ndarray:
    """Regions coloured by class, each labelled with its place in the reading order."""
    blocks = result.get("blocks", [])
    names = [f"{b['order'] + 1} {b['label']}" for b in blocks]
    return draw_regions(result, [b["box"] for b in blocks], names, [b["cls_id"] for b in blocks])
