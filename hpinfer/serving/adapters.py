"""Pipeline ↔ PaddleX basic-serving JSON, one ``Adapter`` per pipeline (the LitServe idea: decode the
request, encode the response; the HTTP app and the batcher know nothing pipeline-specific).

Field names, endpoints and result shapes follow PaddleX's ``paddlex/inference/serving/schemas``
(``ocr.py``, ``pp_structurev3.py`` for layout parsing, ``table_recognition.py``, ``seal_recognition.py``,
``image_classification.py``, ``object_detection.py`` for layout detection) and ``infra/models.py``; deviations are listed in ``hpinfer/serving/README.md``.

An option the pipeline can't honour is refused with 422 naming the field when a request asks for it
(``only`` in ``Adapter``: the values it may take), never silently ignored.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Literal, NamedTuple, Optional, Tuple, Type, Union

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from ..errors import InputError
from ..pipelines.markdown import as_image, crop, page_markdown
from ..results import Result

MAX_OUTPUT_IMAGE_SIDE = 2000  # PaddleX's max_output_img_size: result images are shrunk to fit 2000x2000


# ---- envelopes and shared parts (infra/models.py) ----

class ErrorResponse(BaseModel):
    logId: str
    errorCode: int
    errorMsg: str


class ImageInfo(BaseModel):
    width: int
    height: int
    type: Literal["image"] = "image"


class PDFPageInfo(BaseModel):
    width: int
    height: int


class PDFInfo(BaseModel):
    numPages: int
    pages: List[PDFPageInfo]
    type: Literal["pdf"] = "pdf"


class _Request(BaseModel):
    """Unknown fields are refused (a misspelt option would otherwise be silently ignored)."""

    model_config = ConfigDict(extra="forbid")
    visualize: Optional[bool] = Field(None, description="return result images (base64 JPEG); default: the server's")


# ---- OCR (schemas/ocr.py) ----

class _FileRequest(_Request):
    file: str = Field(description="the file, base64-encoded, or an http(s) URL to fetch it from")
    fileType: Optional[Literal[0, 1]] = Field(None, description="0: PDF, 1: image, null: detected from the content")


class _OCRParams(_FileRequest):
    """The OCR options, which layout parsing shares (its text regions go through the OCR pipeline)."""

    useDocOrientationClassify: Optional[bool] = Field(
        None, description="turn each page upright first (needs the server's pipeline built with the orientation model)")
    useDocUnwarping: Optional[bool] = Field(None, description="not supported: only null or false")
    useTextlineOrientation: Optional[bool] = None
    textDetLimitSideLen: Optional[int] = Field(None, ge=32, le=4096)
    textDetLimitType: Optional[Literal["min", "max"]] = None
    textDetThresh: Optional[float] = Field(None, ge=0, le=1)
    textDetBoxThresh: Optional[float] = Field(None, ge=0, le=1)
    textDetUnclipRatio: Optional[float] = Field(None, gt=0, le=10)
    textRecScoreThresh: Optional[float] = Field(None, ge=0, le=1)


class OCRRequest(_OCRParams):
    pass


class OCRResult(BaseModel):
    prunedResult: Dict[str, Any]
    ocrImage: Optional[str] = None
    docPreprocessingImage: Optional[str] = None
    inputImage: Optional[str] = None


class OCRInferResult(BaseModel):
    ocrResults: List[OCRResult]
    dataInfo: Union[ImageInfo, PDFInfo] = Field(discriminator="type")


# ---- layout parsing (schemas/pp_structurev3.py: PP-StructureV3's /layout-parsing) ----

class LayoutParsingRequest(_OCRParams):
    useDocOrientationClassify: Optional[bool] = Field(False, description="turn each page upright first (PaddleX's default: false)")
    useSealRecognition: Optional[bool] = Field(None, description="not supported: only null or false")
    useTableRecognition: Optional[bool] = Field(
        None, description="tables as HTML (needs the server's pipeline built with its table model; false: as images)")
    useFormulaRecognition: Optional[bool] = Field(None, description="not supported (equations come as images): only null or false")
    useChartRecognition: Optional[bool] = Field(False, description="not supported: only null or false")
    useRegionDetection: Optional[bool] = Field(None, description="not supported: only null or false")
    layoutThreshold: Optional[float] = Field(None, ge=0, le=1, description="a single score threshold (not per class)")
    layoutNms: Optional[bool] = Field(None, description="class-aware NMS is always on: only null or true")
    layoutUnclipRatio: Optional[Any] = Field(None, description="not supported: only null")
    layoutMergeBboxesMode: Optional[Any] = Field(None, description="not supported: only null")
    sealDetLimitSideLen: Optional[int] = Field(None, description="not supported (no seal recognition): only null")
    sealDetLimitType: Optional[str] = Field(None, description="not supported (no seal recognition): only null")
    sealDetThresh: Optional[float] = Field(None, description="not supported (no seal recognition): only null")
    sealDetBoxThresh: Optional[float] = Field(None, description="not supported (no seal recognition): only null")
    sealDetUnclipRatio: Optional[float] = Field(None, description="not supported (no seal recognition): only null")
    sealRecScoreThresh: Optional[float] = Field(None, description="not supported (no seal recognition): only null")
    # Table-recognition details of PaddleX's several table models: accepted with any value and ignored (one model here).
    useWiredTableCellsTransToHtml: Optional[bool] = Field(None, description="ignored (one table model: SLANet)")
    useWirelessTableCellsTransToHtml: Optional[bool] = Field(None, description="ignored (one table model: SLANet)")
    useTableOrientationClassify: Optional[bool] = Field(None, description="ignored (one table model: SLANet)")
    useOcrResultsWithTableCells: Optional[bool] = Field(None, description="ignored (one table model: SLANet)")
    useE2eWiredTableRecModel: Optional[bool] = Field(None, description="ignored (one table model: SLANet)")
    useE2eWirelessTableRecModel: Optional[bool] = Field(None, description="ignored (one table model: SLANet)")
    returnMarkdownImages: Optional[bool] = Field(True, description="markdown.images: the figures, equations and tables not read as HTML, as base64 JPEG")
    prettifyMarkdown: Optional[bool] = Field(None, description="ignored: the Markdown is always the same plain form")
    showFormulaNumber: Optional[bool] = Field(None, description="ignored (equations come as images)")


class MarkdownData(BaseModel):
    text: str
    images: Optional[Dict[str, str]] = None  # relative path in ``text`` → base64 JPEG
    isStart: bool
    isEnd: bool


class LayoutParsingPage(BaseModel):
    prunedResult: Dict[str, Any]
    markdown: MarkdownData
    outputImages: Optional[Dict[str, str]] = None
    inputImage: Optional[str] = None


class LayoutParsingInferResult(BaseModel):
    layoutParsingResults: List[LayoutParsingPage]
    dataInfo: Union[ImageInfo, PDFInfo] = Field(discriminator="type")


# ---- table recognition (schemas/table_recognition.py) ----


class TableRecognitionRequest(_OCRParams):
    useDocOrientationClassify: Optional[bool] = Field(None, description="not supported: only null or false")
    useLayoutDetection: Optional[bool] = Field(
        None, description="find the tables with the layout model first (else the image is one table)")
    useOcrModel: Optional[bool] = Field(None, description="the OCR model is always used: only null or true")
    useOcrResultsWithTableCells: bool = Field(False, description="not supported: only false")


class PageResult(BaseModel):
    """One page of the pipelines that answer with the pruned result and its pictures (table, seal recognition)."""

    prunedResult: Dict[str, Any]
    outputImages: Optional[Dict[str, str]] = None
    inputImage: Optional[str] = None


class TableRecognitionInferResult(BaseModel):
    tableRecResults: List[PageResult]
    dataInfo: Union[ImageInfo, PDFInfo] = Field(discriminator="type")


# ---- seal recognition (schemas/seal_recognition.py) ----


class SealRecognitionRequest(_FileRequest):
    useDocOrientationClassify: Optional[bool] = Field(None, description="not supported: only null or false")
    useDocUnwarping: Optional[bool] = Field(None, description="not supported: only null or false")
    useLayoutDetection: Optional[bool] = Field(None, description="not supported (the image is one seal region): only null or false")
    layoutThreshold: Optional[Any] = Field(None, description="not supported: only null")
    layoutNms: Optional[bool] = Field(None, description="not supported: only null")
    layoutUnclipRatio: Optional[Any] = Field(None, description="not supported: only null")
    layoutMergeBboxesMode: Optional[str] = Field(None, description="not supported: only null")
    sealDetLimitSideLen: Optional[int] = Field(None, ge=32, le=4096)
    sealDetLimitType: Optional[Literal["min", "max"]] = None
    sealDetThresh: Optional[float] = Field(None, ge=0, le=1)
    sealDetBoxThresh: Optional[float] = Field(None, ge=0, le=1)
    sealDetUnclipRatio: Optional[float] = Field(None, gt=0, le=10)
    sealRecScoreThresh: Optional[float] = Field(None, ge=0, le=1)


class SealRecognitionInferResult(BaseModel):
    sealRecResults: List[PageResult]
    dataInfo: Union[ImageInfo, PDFInfo] = Field(discriminator="type")


# ---- image classification (schemas/image_classification.py) ----

class ClassificationRequest(_Request):
    image: str = Field(description="the image, base64-encoded, or an http(s) URL")
    topk: Optional[int] = Field(None, gt=0, le=1000)


class Category(BaseModel):
    id: int
    name: str
    score: float


class ClassificationResult(BaseModel):
    categories: List[Category]
    image: Optional[str] = None


# ---- layout detection (schemas/object_detection.py's shape, at /layout-detection) ----

class LayoutRequest(_Request):
    image: str = Field(description="the image, base64-encoded, or an http(s) URL")
    threshold: Optional[float] = Field(None, ge=0, le=1, description="a single score threshold (not per class)")


class DetectedObject(BaseModel):
    bbox: Tuple[float, float, float, float]
    categoryId: int
    categoryName: str
    score: float


class LayoutResult(BaseModel):
    detectedObjects: List[DetectedObject]
    image: Optional[str] = None


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
    """What an adapter's ``encode`` gets besides the results: the request, its pages as read, and whether
    to send images. ``inputs`` are the pages as the client sent them (before any turning upright)."""

    request: BaseModel
    inputs: List[np.ndarray]
    data_info: Dict[str, Any]
    visualize: bool


def _was_turned(result: Result) -> bool:
    """Whether the document preprocessor ran on this page (then ``result.image`` is the upright page)."""
    doc = result.get("doc_preprocessor_res", result)  # OCR nests it, layout_parsing has it at the top
    return bool(doc.get("model_settings", {}).get("use_doc_orientation_classify"))


def _encode_ocr(results: List[Result], how: Encoding) -> Dict[str, Any]:
    items = []
    for result, source in zip(results, how.inputs):
        item: Dict[str, Any] = {"prunedResult": pruned(result)}
        if how.visualize:
            item["ocrImage"] = jpeg_base64(result.img)
            if _was_turned(result):
                item["docPreprocessingImage"] = jpeg_base64(result.image)
            item["inputImage"] = jpeg_base64(source)
        items.append(item)
    return {"ocrResults": items, "dataInfo": how.data_info}


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


def _encode_layout_parsing(results: List[Result], how: Encoding) -> Dict[str, Any]:
    items = []
    with_images = how.request.returnMarkdownImages is not False
    for result, source in zip(results, how.inputs):
        item: Dict[str, Any] = {"prunedResult": pruned(result), "markdown": _markdown(result, with_images)}
        if how.visualize:
            outputs = {"layout_det_res": jpeg_base64(result.img)}
            if _was_turned(result) and result.image is not None:
                outputs["preprocessed_img"] = jpeg_base64(result.image)
            item["outputImages"] = outputs
            item["inputImage"] = jpeg_base64(source)
        items.append(item)
    return {"layoutParsingResults": items, "dataInfo": how.data_info}


def _pages_encoder(key: str, image_name: str) -> Callable[[List[Result], Encoding], Dict[str, Any]]:
    """For pipelines whose response lists, per page, the pruned result and its one picture."""

    def encode(results: List[Result], how: Encoding) -> Dict[str, Any]:
        items = []
        for result, source in zip(results, how.inputs):
            item: Dict[str, Any] = {"prunedResult": pruned(result)}
            if how.visualize:
                item["outputImages"] = {image_name: jpeg_base64(result.img)}
                item["inputImage"] = jpeg_base64(source)
            items.append(item)
        return {key: items, "dataInfo": how.data_info}

    return encode


def _encode_classification(results: List[Result], how: Encoding) -> Dict[str, Any]:
    (result,) = results
    names = zip(result["class_ids"], result["label_names"], result["scores"])
    out: Dict[str, Any] = {"categories": [{"id": i, "name": n, "score": s} for i, n, s in names]}
    if how.visualize:
        out["image"] = jpeg_base64(result.img)
    return out


def _encode_layout(results: List[Result], how: Encoding) -> Dict[str, Any]:
    (result,) = results
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
    """For pipelines without ``predict_batch``: the pages as one list, which the pipeline streams through
    its stages (a page that fails gives its own error result, as for a PDF read in-process)."""
    return pipeline.predict(list(images), **options)


# The values a request may send for options the pipeline can't honour (any other value: 422 naming the field).
_NULL_OR_FALSE = (None, False)
_OCR_ONLY = {"useDocUnwarping": _NULL_OR_FALSE}
_LAYOUT_PARSING_ONLY = {
    **_OCR_ONLY,
    **{name: _NULL_OR_FALSE for name in (
        "useSealRecognition", "useFormulaRecognition", "useChartRecognition", "useRegionDetection")},
    "layoutNms": (None, True),
    **{name: (None,) for name in (
        "layoutUnclipRatio", "layoutMergeBboxesMode", "sealDetLimitSideLen", "sealDetLimitType", "sealDetThresh",
        "sealDetBoxThresh", "sealDetUnclipRatio", "sealRecScoreThresh")},
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
}


@dataclass(frozen=True)
class Adapter:
    path: str
    request_model: Type[_Request]
    result_model: Type[BaseModel]
    file_field: str  # "file" (image or PDF) or "image" (image only)
    option_names: Dict[str, str]  # request field → pipeline option
    encode: Callable[[List[Result], Encoding], Dict[str, Any]]
    only: Dict[str, Tuple[Any, ...]] = field(default_factory=dict)  # field → the values allowed (unsupported options)
    run: Callable[[Any, List[np.ndarray], Dict[str, Any]], List[Result]] = _predict_batch  # one batch of pages
    routes: Optional[Callable[[Any], None]] = None  # adds the pipeline's other endpoints to the app

    @property
    def accepts_pdf(self) -> bool:
        return self.file_field == "file"

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
    "OCR": Adapter("/ocr", OCRRequest, OCRInferResult, "file", _OCR_OPTIONS, _encode_ocr, _OCR_ONLY),
    "layout_parsing": Adapter(
        "/layout-parsing", LayoutParsingRequest, LayoutParsingInferResult, "file",
        {**_OCR_OPTIONS, "layoutThreshold": "layout_threshold", "useTableRecognition": "use_table_recognition"},
        _encode_layout_parsing, _LAYOUT_PARSING_ONLY,
        _predict_pages,
    ),
    "table_recognition": Adapter(
        "/table-recognition", TableRecognitionRequest, TableRecognitionInferResult, "file",
        {**_OCR_OPTIONS, "useLayoutDetection": "use_layout_detection"},
        _pages_encoder("tableRecResults", "table_cell_img"), _TABLE_ONLY, _predict_pages,
    ),
    "seal_recognition": Adapter(
        "/seal-recognition", SealRecognitionRequest, SealRecognitionInferResult, "file",
        {
            "sealDetLimitSideLen": "seal_det_limit_side_len", "sealDetLimitType": "seal_det_limit_type",
            "sealDetThresh": "seal_det_thresh", "sealDetBoxThresh": "seal_det_box_thresh",
            "sealDetUnclipRatio": "seal_det_unclip_ratio", "sealRecScoreThresh": "seal_rec_score_thresh",
        },
        _pages_encoder("sealRecResults", "seal_res_img"), _SEAL_ONLY, _predict_pages,
    ),
    "image_classification": Adapter(
        "/image-classification", ClassificationRequest, ClassificationResult, "image", {"topk": "topk"},
        _encode_classification,
    ),
    "layout_detection": Adapter(
        "/layout-detection", LayoutRequest, LayoutResult, "image", {"threshold": "threshold"}, _encode_layout,
    ),
}


def success_model(result_model: Type[BaseModel]) -> Type[BaseModel]:
    """PaddleX's AIStudioResultResponse[result_model], for the OpenAPI document."""
    return create_model(
        f"{result_model.__name__}Response", logId=(str, ...), errorCode=(Literal[0], 0),
        errorMsg=(Literal["Success"], "Success"), result=(result_model, ...),
    )


def file_field(path: str) -> str:
    """The request field that carries the file at an endpoint path (for the client)."""
    return next((a.file_field for a in ADAPTERS.values() if a.path == path.rstrip("/")), "file")


# PaddleOCR-VL's endpoints live in their own module, which builds on the parts above.
from .vl_adapter import VL_ADAPTER  # noqa: E402

ADAPTERS.update({"PaddleOCR-VL": VL_ADAPTER, "doc_vlm": VL_ADAPTER})
