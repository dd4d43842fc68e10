"""The table_recognition pipeline: tables in, HTML with their text out (PaddleX's pipeline and result names).

Per page: OCR of the whole page once → the tables: the layout model's ``table`` regions
(``use_layout_detection``), or the whole image as one table → per table, SLANet's structure (HTML tokens and
one box per cell) on the table's crop → each OCR line inside the table to the cell it overlaps most (IoU,
then the nearest box, as PaddleOCR's table matcher decides) → the structure with each cell's lines, top to
bottom, as its text. layout_parsing gives its table regions the same treatment (``recognise_table``).
"""

from __future__ import annotations

import html
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import cv2
import numpy as np
from pydantic import Field

from ..device import Device
from ..errors import ConfigError
from ..io.pages import OnError, readable_pages
from ..io.inputs import PageRange
from ..models.base import Predictor
from ..results import Result
from ..tasks import layout_detection, table_structure
from ..tasks.base import Params, validate_params
from ..visualize import draw_polygons
from .config import PipelineSettings, sub_settings
from .ocr import OCR_MODULES, OCRPipeline, _item_of, split_ocr_options
from .paragraphs import join_lines
from .sub_modules import PipelineBase, create_sub_module

TABLE_LABEL = "table"
# Pixels of page around a table region's box: layout boxes hug the text, and SLANet reads spans (rowspan)
# wrongly on a crop without a margin (a rendered 2-row header on a page: TEDS 0.94 without, 1.0 with).
CROP_MARGIN = 16
RULE_SHARE = 0.08  # a table's rule is at least this share of the region's width (height) long: a cell's side
CELL_FILL = 0.85  # an area walled in by rules is a cell when it fills this share of its box
GRID_AREA = 0.3  # the cells' bounding box covers at least this share of the region
GRID_RULE = 0.9  # a frame's rule spans this share of the cells' bounding box


class TableRecognitionOptions(Params):
    use_layout_detection: bool = False  # False: the whole image is one table
    # A line belongs to a table when this share of its box lies inside the table's region.
    line_in_table: float = Field(0.5, gt=0, le=1)


def assign_to_cells(cells: np.ndarray, lines: np.ndarray) -> List[int]:
    """For each line box (x1, y1, x2, y2), the cell box it has the largest IoU with; a line overlapping no cell
    goes to the cell with the nearest corners (L1 distance over both corners)."""
    if not len(cells):
        return [-1] * len(lines)
    a, b = lines[:, None, :], cells[None, :, :]
    inter = np.prod(np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None), axis=2)
    area = lambda boxes: np.prod(np.clip(boxes[..., 2:] - boxes[..., :2], 0, None), axis=-1)  # noqa: E731
    iou = inter / np.maximum(area(a) + area(b) - inter, 1e-9)
    distance = np.abs(a - b).sum(axis=2)
    return [int(np.lexsort((distance[i], -iou[i]))[0]) for i in range(len(lines))]


def fill_structure(structure: Sequence[str], texts: Sequence[str]) -> str:
    """Structure tokens with each cell's text (in cell order) put inside it, as one HTML string."""
    out, cell = [], 0
    for token in structure:
        if token == "<td></td>":
            out.append(f"<td>{texts[cell] if cell < len(texts) else ''}</td>")
            cell += 1
        elif token == ">" and _last_open(out) == "<td":
            out.append(token + (texts[cell] if cell < len(texts) else ""))
            cell += 1
        else:
            out.append(token)
    return "".join(out)


def _last_open(out: List[str]) -> str:
    """The last tag opened so far (an attribute token of ``<td`` continues it)."""
    for token in reversed(out):
        if token.startswith("<"):
            return token
    return ""


def ruled_cells(image: np.ndarray) -> np.ndarray:
    """Boxes (x1, y1, x2, y2) of the cells a ruled grid encloses in ``image`` (BGR), or an empty array when it
    shows fewer than 2 x 2 of them: dark strokes at least ``RULE_SHARE`` of the image long, horizontal and
    vertical (a morphological opening keeps nothing else: text, curves and dots go), and the near-rectangular
    areas they wall in, not open to the image's edge."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    h, w = grey.shape
    if min(h, w) < 20:
        return np.zeros((0, 4), np.int64)
    ink = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 15, 10)
    across = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (max(12, int(w * RULE_SHARE)), 1)))
    down = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(12, int(h * RULE_SHARE)))))
    rules = cv2.dilate(across | down, np.ones((3, 3), np.uint8))  # rules meet where the opening shortened them
    count, _, stats, _ = cv2.connectedComponentsWithStats(255 - rules, connectivity=4)
    x, y, bw, bh, area = stats[1:].T
    inside = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h) & (bw >= 6) & (bh >= 6) & (area >= CELL_FILL * bw * bh)
    cells = np.stack([x, y, x + bw, y + bh], axis=1)[inside]
    none = np.zeros((0, 4), np.int64)
    if len(cells) < 4:
        return none
    gx1, gy1 = cells[:, :2].min(axis=0)
    gx2, gy2 = cells[:, 2:].max(axis=0)
    if (gx2 - gx1) * (gy2 - gy1) < GRID_AREA * h * w:
        return none
    # A grid has a frame: two rules nearly as long as it on either axis (the areas inside letters have none).
    if _long_rules(across, 2, GRID_RULE * (gx2 - gx1)) < 2 or _long_rules(down, 3, GRID_RULE * (gy2 - gy1)) < 2:
        return none
    rows = len(set(np.round((cells[:, 1] + cells[:, 3]) / 2 / max(4, h / 100)).tolist()))
    columns = len(set(np.round((cells[:, 0] + cells[:, 2]) / 2 / max(4, w / 100)).tolist()))
    return cells if rows >= 2 and columns >= 2 else none


def _long_rules(strokes: np.ndarray, size_column: int, least: float) -> int:
    """How many strokes (connected components) are at least ``least`` pixels long (stats column 2: width, 3: height)."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(strokes, connectivity=8)
    return int((stats[1:, size_column] >= least).sum())


def recognise_table(
    structurer: Predictor, image: np.ndarray, box: Sequence[float], line_boxes: np.ndarray, line_texts: Sequence[str]
) -> Dict[str, Any]:
    """One table: ``box`` (x1, y1, x2, y2) of ``image``, and the OCR lines that belong to it (page pixels) →
    ``pred_html``, ``cell_box_list`` (page pixels) and ``table_ocr_pred``."""
    h, w = image.shape[:2]
    x1, y1 = max(0, int(box[0]) - CROP_MARGIN), max(0, int(box[1]) - CROP_MARGIN)
    x2, y2 = min(w, int(np.ceil(box[2])) + CROP_MARGIN), min(h, int(np.ceil(box[3])) + CROP_MARGIN)
    result = structurer.predict_image(image[y1:y2, x1:x2], structurer.params)
    return fill_table(result, (x1, y1), line_boxes, line_texts)


def fill_table(structure: Mapping[str, Any], origin: Sequence[float], line_boxes: np.ndarray, line_texts: Sequence[str]) -> Dict[str, Any]:
    """SLANet's ``structure`` of an image whose top-left is ``origin`` in the lines' pixels, and the OCR lines
    of the table → ``pred_html`` (each cell with its lines), ``cell_box_list`` and ``table_ocr_pred``."""
    offset = np.array([*origin, *origin], dtype=np.float64)
    cells = np.asarray(structure["bbox"], dtype=np.float64).reshape(-1, 4) + offset
    line_boxes = np.asarray(line_boxes, dtype=np.float64).reshape(-1, 4)
    owner = assign_to_cells(cells, line_boxes)
    texts = []
    for index in range(len(cells)):
        mine = sorted((i for i, o in enumerate(owner) if o == index), key=lambda i: (line_boxes[i, 1], line_boxes[i, 0]))
        texts.append(html.escape(join_lines([line_texts[i] for i in mine])))
    return {
        "cell_box_list": cells.round(2).tolist(),
        "pred_html": fill_structure(structure["structure"], texts),
        "table_ocr_pred": {"rec_texts": list(line_texts), "rec_boxes": line_boxes.tolist()},
    }


def lines_inside(region: Sequence[float], boxes: np.ndarray, least_share: float) -> List[int]:
    """Indices of the line boxes that have at least ``least_share`` of their area inside ``region``."""
    if not len(boxes):
        return []
    w = np.clip(np.minimum(boxes[:, 2], region[2]) - np.maximum(boxes[:, 0], region[0]), 0, None)
    h = np.clip(np.minimum(boxes[:, 3], region[3]) - np.maximum(boxes[:, 1], region[1]), 0, None)
    own = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1.0)
    return np.flatnonzero(w * h / own >= least_share).tolist()


class TableRecognitionPipeline(PipelineBase):
    """SubModules: TableStructureRecognition, the OCR pipeline's TextDetection, TextLineOrientation and
    TextRecognition, and LayoutDetection (loaded when ``use_layout_detection`` is on at creation). Options:
    ``TableRecognitionOptions`` plus the OCR pipeline's."""

    def __init__(self, settings: PipelineSettings, device: "str | Device | None" = None, **options: Any):
        own, ocr = split_ocr_options({**settings.options, **options}, TableRecognitionOptions)
        self.settings = settings
        self.options = validate_params(TableRecognitionOptions, own, settings.source)
        self.structurer = create_sub_module(settings, "TableStructureRecognition", table_structure.TASK.name, device)
        self.layout: Optional[Predictor] = None
        if self.options.use_layout_detection:
            self.layout = create_sub_module(settings, "LayoutDetection", layout_detection.TASK.name, device)
        self.ocr = OCRPipeline(sub_settings(settings, "OCR", OCR_MODULES, ocr), device)

    @property
    def sub_modules(self) -> Dict[str, Predictor]:
        """Loaded sub-modules by their SubModules key."""
        modules = {"LayoutDetection": self.layout, "TableStructureRecognition": self.structurer, **self.ocr.sub_modules}
        return {key: p for key, p in modules.items() if p is not None}

    def predict_iter(
        self, inputs: Any, page_range: Optional[PageRange] = None, on_error: OnError = "raise", **options: Any
    ) -> Iterator[Result]:
        """One result per image or page: ``overall_ocr_res``, ``layout_det_res`` (with layout detection) and
        ``table_res_list`` (``pred_html``, ``cell_box_list``, ``table_ocr_pred``, ``table_region_id``)."""
        own, ocr_options = split_ocr_options({k: v for k, v in options.items() if v is not None}, TableRecognitionOptions)
        opts = validate_params(TableRecognitionOptions, {**self.options.model_dump(), **own}, "table_recognition predict()")
        if opts.use_layout_detection and self.layout is None:
            raise ConfigError("use_layout_detection=True needs the pipeline created with it on (the model is not loaded)")
        ocr_opts, det_params = self.ocr._call_options(ocr_options)
        for page in readable_pages(inputs, page_range, on_error):
            item = _item_of(page)
            (ocr,) = self.ocr._run([item], ocr_opts, det_params)
            image = ocr.image
            data: Dict[str, Any] = {"input_path": page.input_path, "page_index": page.page_index}
            if opts.use_layout_detection:
                regions = self.layout.predict_image(image, self.layout.params)["boxes"]
                data["layout_det_res"] = {"boxes": regions}
                tables = [r["coordinate"] for r in regions if r["label"] == TABLE_LABEL]
            else:
                tables = [[0, 0, image.shape[1], image.shape[0]]]
            boxes = np.asarray(ocr["rec_boxes"], dtype=np.float64).reshape(-1, 4)
            table_res = []
            for region_id, region in enumerate(tables):
                mine = lines_inside(region, boxes, opts.line_in_table)
                res = recognise_table(self.structurer, image, region, boxes[mine], [ocr["rec_texts"][i] for i in mine])
                table_res.append({**res, "table_region_id": region_id})
            data.update(overall_ocr_res=dict(ocr), table_res_list=table_res)
            yield Result(data, image, _draw, "table_res_img")


def _draw(result: Result) -> np.ndarray:
    cells = [c for table in result["table_res_list"] for c in table["cell_box_list"]]
    return draw_polygons(result.image, [[[x1, y1], [x2, y1], [x2, y2], [x1, y2]] for x1, y1, x2, y2 in cells])
