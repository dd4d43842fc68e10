"""PaddleX basic-serving request and response models, shared by every serving front-end.

Field names, endpoints and result shapes follow PaddleX's ``paddlex/inference/serving/schemas``
(``ocr.py``, ``pp_structurev3.py`` for layout parsing, ``table_recognition.py``, ``seal_recognition.py``,
``image_classification.py``, ``object_detection.py`` for layout detection) and ``infra/models.py``; deviations are listed in ``hpinfer/serving/README.md``.
Unknown fields are refused; a known field this server can't honour is accepted only with the values that
mean "don't" (``adapters.Adapter.only``), so no option is ever silently ignored.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Tuple, Type, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, create_model
from typing_extensions import Annotated

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


class Clamp(BaseModel):
    """A size limit that changed how a page was processed (hpinfer only: absent when nothing was clamped)."""

    page: Optional[int] = Field(None, description="0-based PDF page; null for an image")
    what: str = Field(description="what was limited, e.g. 'pdf render scale' or 'text detection input'")
    limit: str = Field(description="the server limit that applied, with its option name")
    applied: str = Field(description="what was used instead of what the request or default asked for")


class _Request(BaseModel):
    """Unknown fields are refused (a misspelt option would otherwise be silently ignored)."""

    model_config = ConfigDict(extra="forbid")
    visualize: Optional[bool] = Field(None, description="return result images (base64 JPEG); default: the server's")


# ---- OCR (schemas/ocr.py) ----

class _FileRequest(_Request):
    file: str = Field(description="the file, base64-encoded, or an http(s) URL to fetch it from")
    # Strict: true and 1.0 are not file types (lax pydantic would take them as 1).
    fileType: Optional[Annotated[StrictInt, Field(ge=0, le=1)]] = Field(
        None, description="0: PDF, 1: image, null: detected from the content")


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


class _PagesResult(BaseModel):
    """What a file endpoint's result has besides its list of pages."""

    dataInfo: Union[ImageInfo, PDFInfo] = Field(discriminator="type")
    clamps: Optional[List[Clamp]] = None


class OCRInferResult(_PagesResult):
    ocrResults: List[OCRResult]


# ---- layout parsing (schemas/pp_structurev3.py: PP-StructureV3's /layout-parsing) ----

class LayoutParsingRequest(_OCRParams):
    useDocOrientationClassify: Optional[bool] = Field(False, description="turn each page upright first (PaddleX's default: false)")
    useSealRecognition: Optional[bool] = Field(
        None, description="seals as seal blocks with their text (needs the server's pipeline built with its seal text detector)")
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
    # Details of PaddleX's several table models: only null (one table model here: SLANet).
    useWiredTableCellsTransToHtml: Optional[bool] = Field(None, description="not supported (one table model: SLANet): only null")
    useWirelessTableCellsTransToHtml: Optional[bool] = Field(None, description="not supported (one table model: SLANet): only null")
    useTableOrientationClassify: Optional[bool] = Field(None, description="not supported (one table model: SLANet): only null")
    useOcrResultsWithTableCells: Optional[bool] = Field(None, description="not supported (one table model: SLANet): only null")
    useE2eWiredTableRecModel: Optional[bool] = Field(None, description="not supported (one table model: SLANet): only null")
    useE2eWirelessTableRecModel: Optional[bool] = Field(None, description="not supported (one table model: SLANet): only null")
    returnMarkdownImages: Optional[bool] = Field(True, description="markdown.images: the figures, equations and tables not read as HTML, as base64 JPEG")
    prettifyMarkdown: Optional[bool] = Field(None, description="the Markdown has one plain form: only null or false")
    showFormulaNumber: Optional[bool] = Field(None, description="not supported (equations come as images): only null or false")


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


class LayoutParsingInferResult(_PagesResult):
    layoutParsingResults: List[LayoutParsingPage]


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


class TableRecognitionInferResult(_PagesResult):
    tableRecResults: List[PageResult]


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


class SealRecognitionInferResult(_PagesResult):
    sealRecResults: List[PageResult]


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


def success_model(result_model: Type[BaseModel]) -> Type[BaseModel]:
    """PaddleX's AIStudioResultResponse[result_model], for the OpenAPI document."""
    return create_model(
        f"{result_model.__name__}Response", logId=(str, ...), errorCode=(Literal[0], 0),
        errorMsg=(Literal["Success"], "Success"), result=(result_model, ...),
    )
