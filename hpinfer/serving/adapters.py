"""Pipeline ↔ PaddleX basic-serving JSON, one ``Adapter`` per pipeline (the LitServe idea: decode the
request, encode the response; the HTTP front-ends and the batcher know nothing pipeline-specific).

The request and response models are in ``schemas.py``. Pages are encoded one at a time as their results
come (``Adapter.encode_page``), so a PDF's pages and results need not all be held at once.

An option the pipeline can't honour is refused with 422 naming the field when a request asks for it
(``only`` in ``Adapter``: the values it may take), never silently ignored.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Type

import cv2
import numpy as np
from pydantic import BaseModel

from ..errors import InputError
from ..pipelines.markdown import as_image, crop, page_markdown
from ..results import Result
from .schemas import (
    ClassificationRequest, ClassificationResult, LayoutParsingInferResult, LayoutParsingRequest, LayoutRequest,
    LayoutResult, OCRInferResult, OCRRequest, SealRecognitionInferResult, SealRecognitionRequest,
    TableRecognitionInferResult, TableRecognitionRequest, _Request,
)

MAX_OUTPUT_IMAGE_SIDE = 2000  # PaddleX's max_output_img_size: result images are shrunk to fit 2000x2000


# ---- encoding ----

def jpeg_base64(image: np.ndarray) -> str:
    h, w = image.shape[:2]
    scale = MAX_OUTPUT_IMAGE_SIDE / max(h, w)
    if scale < 1:
        image = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image)
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def pruned(result: Result) -> Dict[str, Any]:
    """The result's JSON without ``input_path`` (PaddleX's prune_result: where the server read it is nobody's business)."""
    return {k: v for k, v in result.json["res"].items() if k != "input_path"}


class Encoding(NamedTuple):
    """What ``encode_page`` gets besides a page's result: the request and whether to send images."""

    request: BaseModel
    visualize: bool


def _was_turned(result: Result) -> bool:
    """Whether the document preprocessor ran on this page (then ``result.image`` is the upright page)."""
    doc = result.get("doc_preprocessor_res", result)  # OCR nests it, layout_parsing has it at the top
    return bool(doc.get("model_settings", {}).get("use_doc_orientation_classify"))


def _encode_ocr(result: Result, source: np.ndarray, how: Encoding) -> Dict[str, Any]:
    """One page; ``source`` is the page as the client sent it (before any turning upright)."""
    item: Dict[str, Any] = {"prunedResult": pruned(result)}
    if how.visualize:
        item["ocrImage"] = jpeg_base64(result.img)
        if _was_turned(result):
            item["docPreprocessingImage"] = jpeg_base64(result.image)
        item["inputImage"] = jpeg_base64(source)
    return item


def _markdown(result: Result, with_images: bool) -> Dict[str, Any]:
    """One page's Markdown as ``hpinfer``'s save_to_markdown writes it, images named as PaddleX names them."""
    names: Dict[int, str] = {}
    images: Dict[str, str] = {}
    for block in result.get("blocks", []):
        pixels = crop(result.image, block["box"]) if as_image(block) and result.image is not None else None
        if pixels is not None and pixels.size:
            name = "imgs/img_in_{}_box_{}_{}_{}_{}.jpg".format(block["label"], *block["box"])
            names[block["order"]] = name
            if with_images:
                images[name] = jpeg_base64(pixels)
    # Pages are separate documents here: each starts and ends its paragraphs (no continuation across pages).
    return {"text": page_markdown(result, names), "images": images if with_images else None, "isStart": True, "isEnd": True}


def _encode_layout_parsing(result: Result, source: np.ndarray, how: Encoding) -> Dict[str, Any]:
    with_images = how.request.returnMarkdownImages is not False
    item: Dict[str, Any] = {"prunedResult": pruned(result), "markdown": _markdown(result, with_images)}
    if how.visualize:
        outputs = {"layout_det_res": jpeg_base64(result.img)}
        if _was_turned(result) and result.image is not None:
            outputs["preprocessed_img"] = jpeg_base64(result.image)
        item["outputImages"] = outputs
        item["inputImage"] = jpeg_base64(source)
    return item


def _page_encoder(image_name: str) -> Callable[[Result, np.ndarray, Encoding], Dict[str, Any]]:
    """For pipelines whose page is the pruned result and its one picture (table, seal recognition)."""

    def encode(result: Result, source: np.ndarray, how: Encoding) -> Dict[str, Any]:
        item: Dict[str, Any] = {"prunedResult": pruned(result)}
        if how.visualize:
            item["outputImages"] = {image_name: jpeg_base64(result.img)}
            item["inputImage"] = jpeg_base64(source)
        return item

    return encode


def _encode_classification(result: Result, source: np.ndarray, how: Encoding) -> Dict[str, Any]:
    names = zip(result["class_ids"], result["label_names"], result["scores"])
    out: Dict[str, Any] = {"categories": [{"id": i, "name": n, "score": s} for i, n, s in names]}
    if how.visualize:
        out["image"] = jpeg_base64(result.img)
    return out


def _encode_layout(result: Result, source: np.ndarray, how: Encoding) -> Dict[str, Any]:
    objects = [
        {"bbox": box["coordinate"], "categoryId": box["cls_id"], "categoryName": box["label"], "score": box["score"]}
        for box in result.json["res"]["boxes"]
    ]
    out: Dict[str, Any] = {"detectedObjects": objects}
    if how.visualize:
        out["image"] = jpeg_base64(result.img)
    return out


def _predict_batch(pipeline: Any, images: List[np.ndarray], options: Dict[str, Any]) -> List[Result]:
    return pipeline.predict_batch(images, **options)


def _predict_pages(pipeline: Any, images: List[np.ndarray], options: Dict[str, Any]) -> List[Result]:
    """For pipelines without ``predict_batch``: the batch's pages as one list, which the pipeline streams
    through its stages (a page that fails gives its own error result, as for a PDF read in-process)."""
    return pipeline.predict(list(images), **options)


# The values a request may send for options the pipeline can't honour (any other value: 422 naming the field).
_NULL_OR_FALSE = (None, False)
_OCR_ONLY = {"useDocUnwarping": _NULL_OR_FALSE}
_LAYOUT_PARSING_ONLY = {
    **_OCR_ONLY,
    **{name: _NULL_OR_FALSE for name in (
        "useFormulaRecognition", "useChartRecognition", "useRegionDetection")},
    "layoutNms": (None, True),
    **{name: (None,) for name in (
        "layoutUnclipRatio", "layoutMergeBboxesMode", "sealDetLimitSideLen", "sealDetLimitType", "sealDetThresh",
        "sealDetBoxThresh", "sealDetUnclipRatio", "sealRecScoreThresh",
        "useWiredTableCellsTransToHtml", "useWirelessTableCellsTransToHtml", "useTableOrientationClassify",
        "useOcrResultsWithTableCells", "useE2eWiredTableRecModel", "useE2eWirelessTableRecModel")},
    "prettifyMarkdown": _NULL_OR_FALSE,
    "showFormulaNumber": _NULL_OR_FALSE,
}
_TABLE_ONLY = {
    **_OCR_ONLY, "useDocOrientationClassify": _NULL_OR_FALSE, "useOcrModel": (None, True),
    "useOcrResultsWithTableCells": (False,),
}
_SEAL_ONLY = {
    **{name: _NULL_OR_FALSE for name in ("useDocOrientationClassify", "useDocUnwarping", "useLayoutDetection")},
    **{name: (None,) for name in ("layoutThreshold", "layoutNms", "layoutUnclipRatio", "layoutMergeBboxesMode")},
}
_OCR_OPTIONS = {
    "useDocOrientationClassify": "use_doc_orientation_classify",
    "useTextlineOrientation": "use_textline_orientation", "textDetLimitSideLen": "text_det_limit_side_len",
    "textDetLimitType": "text_det_limit_type", "textDetThresh": "text_det_thresh",
    "textDetBoxThresh": "text_det_box_thresh", "textDetUnclipRatio": "text_det_unclip_ratio",
    "textRecScoreThresh": "text_rec_score_thresh",
}
# Request field → the sub-module a true value needs loaded (optional models load only at pipeline creation).
_NEEDS_MODEL = {
    "useDocOrientationClassify": "DocOrientationClassify", "useTextlineOrientation": "TextLineOrientation",
    "useLayoutDetection": "LayoutDetection", "useTableRecognition": "TableStructureRecognition",
    "useSealRecognition": "SealTextDetection",
}


@dataclass(frozen=True)
class Adapter:
    path: str
    request_model: Type[_Request]
    result_model: Type[BaseModel]
    file_field: str  # "file" (image or PDF) or "image" (image only)
    option_names: Dict[str, str]  # request field → pipeline option
    encode_page: Callable[[Result, np.ndarray, Encoding], Dict[str, Any]]  # one page's result → its JSON
    pages_key: Optional[str]  # the result's list of pages ("ocrResults"...); None: one image, the page's JSON is the result
    only: Dict[str, Tuple[Any, ...]] = field(default_factory=dict)  # field → the values allowed (unsupported options)
    run: Callable[[Any, List[np.ndarray], Dict[str, Any]], List[Result]] = _predict_batch  # one batch of pages
    routes: Optional[Callable[[Any], None]] = None  # adds the pipeline's other endpoints to the app
    # All pages' JSON at once, in order, before the result is made (work across pages, e.g. restructuring).
    finish: Optional[Callable[[List[Dict[str, Any]], BaseModel], List[Dict[str, Any]]]] = None

    @property
    def accepts_pdf(self) -> bool:
        return self.file_field == "file"

    @property
    def detects_text(self) -> bool:
        """Whether the pipeline runs the text detector (whose input side the server caps)."""
        return "textDetLimitSideLen" in self.option_names

    def result(self, pages: List[Dict[str, Any]], data_info: Dict[str, Any], clamps: List[Dict[str, Any]],
               request: BaseModel) -> Dict[str, Any]:
        """The ``result`` of the envelope from the pages' JSON, in page order."""
        if self.finish:
            pages = self.finish(pages, request)
        if self.pages_key is None:
            (page,) = pages
            return page
        out = {self.pages_key: pages, "dataInfo": data_info}
        if clamps:
            out["clamps"] = clamps
        return out

    def options(self, request: BaseModel, pipeline: Any = None) -> Dict[str, Any]:
        """The request's pipeline options in our snake_case names; fields left out (null) keep the pipeline's
        values. Raises ``InputError`` (422) naming the field for what this server can't do."""
        for name, allowed in self.only.items():
            if getattr(request, name, None) not in allowed:
                shown = ", ".join("null" if a is None else str(a).lower() for a in allowed)
                raise InputError(f"{name}: not supported by this server (send {shown} or leave it out)")
        loaded = getattr(pipeline, "sub_modules", None)
        for name, module in _NEEDS_MODEL.items():
            if name in self.option_names and getattr(request, name, None) and loaded is not None and module not in loaded:
                raise InputError(
                    f"{name}: this server's pipeline was created without the {module} model "
                    f"(start it with the pipeline option {self.option_names[name]}: true)"
                )
        values = {option: getattr(request, name) for name, option in self.option_names.items()}
        return {k: v for k, v in values.items() if v is not None}


ADAPTERS: Dict[str, Adapter] = {
    "OCR": Adapter("/ocr", OCRRequest, OCRInferResult, "file", _OCR_OPTIONS, _encode_ocr, "ocrResults", _OCR_ONLY),
    "layout_parsing": Adapter(
        "/layout-parsing", LayoutParsingRequest, LayoutParsingInferResult, "file",
        {**_OCR_OPTIONS, "layoutThreshold": "layout_threshold", "useTableRecognition": "use_table_recognition",
         "useSealRecognition": "use_seal_recognition"},
        _encode_layout_parsing, "layoutParsingResults", _LAYOUT_PARSING_ONLY, _predict_pages,
    ),
    "table_recognition": Adapter(
        "/table-recognition", TableRecognitionRequest, TableRecognitionInferResult, "file",
        {**_OCR_OPTIONS, "useLayoutDetection": "use_layout_detection"},
        _page_encoder("table_cell_img"), "tableRecResults", _TABLE_ONLY, _predict_pages,
    ),
    "seal_recognition": Adapter(
        "/seal-recognition", SealRecognitionRequest, SealRecognitionInferResult, "file",
        {
            "sealDetLimitSideLen": "seal_det_limit_side_len", "sealDetLimitType": "seal_det_limit_type",
            "sealDetThresh": "seal_det_thresh", "sealDetBoxThresh": "seal_det_box_thresh",
            "sealDetUnclipRatio": "seal_det_unclip_ratio", "sealRecScoreThresh": "seal_rec_score_thresh",
        },
        _page_encoder("seal_res_img"), "sealRecResults", _SEAL_ONLY, _predict_pages,
    ),
    "image_classification": Adapter(
        "/image-classification", ClassificationRequest, ClassificationResult, "image", {"topk": "topk"},
        _encode_classification, None,
    ),
    "layout_detection": Adapter(
        "/layout-detection", LayoutRequest, LayoutResult, "image", {"threshold": "threshold"}, _encode_layout, None,
    ),
}


def file_field(path: str) -> str:
    """The request field that carries the file at an endpoint path (for the client)."""
    return next((a.file_field for a in ADAPTERS.values() if a.path == path.rstrip("/")), "file")


# PaddleOCR-VL's endpoints live in their own module, which builds on the parts above.
from .vl_adapter import VL_ADAPTER  # noqa: E402

ADAPTERS.update({"PaddleOCR-VL": VL_ADAPTER, "doc_vlm": VL_ADAPTER})
