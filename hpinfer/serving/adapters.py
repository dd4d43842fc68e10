"""Pipeline ↔ PaddleX basic-serving JSON, one ``Adapter`` per pipeline (the LitServe idea: decode the
request, encode the response; the HTTP app and the batcher know nothing pipeline-specific).

Field names, endpoints and result shapes follow PaddleX's ``paddlex/inference/serving/schemas``
(``ocr.py``, ``image_classification.py``, ``object_detection.py`` for layout detection) and
``infra/models.py``; deviations are listed in ``hpinfer/serving/README.md``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, Type, Union

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from ..errors import InputError
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

class OCRRequest(_Request):
    file: str = Field(description="the file, base64-encoded, or an http(s) URL to fetch it from")
    fileType: Optional[Literal[0, 1]] = Field(None, description="0: PDF, 1: image, null: detected from the content")
    useDocOrientationClassify: Optional[bool] = Field(None, description="not supported yet: only null or false")
    useDocUnwarping: Optional[bool] = Field(None, description="not supported yet: only null or false")
    useTextlineOrientation: Optional[bool] = None
    textDetLimitSideLen: Optional[int] = Field(None, ge=32, le=4096)
    textDetLimitType: Optional[Literal["min", "max"]] = None
    textDetThresh: Optional[float] = Field(None, ge=0, le=1)
    textDetBoxThresh: Optional[float] = Field(None, ge=0, le=1)
    textDetUnclipRatio: Optional[float] = Field(None, gt=0, le=10)
    textRecScoreThresh: Optional[float] = Field(None, ge=0, le=1)


class OCRResult(BaseModel):
    prunedResult: Dict[str, Any]
    ocrImage: Optional[str] = None
    inputImage: Optional[str] = None


class OCRInferResult(BaseModel):
    ocrResults: List[OCRResult]
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


def _encode_ocr(results: List[Result], data_info: Dict[str, Any], visualize: bool) -> Dict[str, Any]:
    items = []
    for result in results:
        item: Dict[str, Any] = {"prunedResult": pruned(result)}
        if visualize:
            item["ocrImage"] = jpeg_base64(result.img)
            item["inputImage"] = jpeg_base64(result.image)
        items.append(item)
    return {"ocrResults": items, "dataInfo": data_info}


def _encode_classification(results: List[Result], data_info: Dict[str, Any], visualize: bool) -> Dict[str, Any]:
    (result,) = results
    names = zip(result["class_ids"], result["label_names"], result["scores"])
    out: Dict[str, Any] = {"categories": [{"id": i, "name": n, "score": s} for i, n, s in names]}
    if visualize:
        out["image"] = jpeg_base64(result.img)
    return out


def _encode_layout(results: List[Result], data_info: Dict[str, Any], visualize: bool) -> Dict[str, Any]:
    (result,) = results
    objects = [
        {"bbox": box["coordinate"], "categoryId": box["cls_id"], "categoryName": box["label"], "score": box["score"]}
        for box in result.json["res"]["boxes"]
    ]
    out: Dict[str, Any] = {"detectedObjects": objects}
    if visualize:
        out["image"] = jpeg_base64(result.img)
    return out


def _refuse_doc_preprocessing(request: BaseModel) -> None:
    for name in ("useDocOrientationClassify", "useDocUnwarping"):
        if getattr(request, name, None):
            raise InputError(f"{name}: document preprocessing is not supported by this server yet (send false or omit it)")


@dataclass(frozen=True)
class Adapter:
    path: str
    request_model: Type[_Request]
    result_model: Type[BaseModel]
    file_field: str  # "file" (image or PDF) or "image" (image only)
    option_names: Dict[str, str]  # request field → pipeline option
    encode: Callable[[List[Result], Dict[str, Any], bool], Dict[str, Any]]
    check: Callable[[BaseModel], None] = lambda request: None

    @property
    def accepts_pdf(self) -> bool:
        return self.file_field == "file"

    def options(self, request: BaseModel) -> Dict[str, Any]:
        """The request's pipeline options in our snake_case names; fields left out (null) keep the pipeline's values."""
        self.check(request)
        values = {option: getattr(request, name) for name, option in self.option_names.items()}
        return {k: v for k, v in values.items() if v is not None}


ADAPTERS: Dict[str, Adapter] = {
    "OCR": Adapter(
        "/ocr", OCRRequest, OCRInferResult, "file",
        {
            "useTextlineOrientation": "use_textline_orientation", "textDetLimitSideLen": "text_det_limit_side_len",
            "textDetLimitType": "text_det_limit_type", "textDetThresh": "text_det_thresh",
            "textDetBoxThresh": "text_det_box_thresh", "textDetUnclipRatio": "text_det_unclip_ratio",
            "textRecScoreThresh": "text_rec_score_thresh",
        },
        _encode_ocr, _refuse_doc_preprocessing,
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
