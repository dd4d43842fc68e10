"""PaddleOCR-VL's basic-serving API (PaddleX ``schemas/paddleocr_vl.py``): ``/layout-parsing`` with its request
fields, and ``/restructure-pages`` (pages parsed separately joined into one document: block ids numbered
across pages, a table split by a page break merged, optionally one page-less result).

Options this server can't honour are refused with 422 naming the field when a request sets them (the
``only`` table), as for the other adapters.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from ..pipelines.paddleocr_vl import PaddleOCRVLResult, restructure_pages
from ..pipelines.markdown import crop
from ..errors import InputError
from .adapters import Adapter, Encoding, LayoutParsingInferResult, _FileRequest, _predict_pages, jpeg_base64, pruned

RESTRUCTURE_PATH = "/restructure-pages"


class VLLayoutParsingRequest(_FileRequest):
    useDocOrientationClassify: Optional[bool] = None
    useDocUnwarping: Optional[bool] = Field(None, description="not supported: only null or false")
    useLayoutDetection: Optional[bool] = None
    useChartRecognition: Optional[bool] = None
    useSealRecognition: Optional[bool] = None
    useOcrForImageBlock: Optional[bool] = Field(None, description="not supported: only null or false")
    layoutThreshold: Optional[float] = Field(None, ge=0, le=1, description="a single score threshold (not per class)")
    layoutNms: Optional[bool] = Field(None, description="duplicates are always dropped: only null or true")
    layoutUnclipRatio: Optional[Any] = Field(None, description="not supported: only null")
    layoutMergeBboxesMode: Optional[Any] = Field(None, description="not supported: only null")
    layoutShapeMode: Optional[Literal["rect", "quad", "poly", "auto"]] = Field(None, description="boxes are rectangles: null, auto or rect")
    promptLabel: Optional[Literal["ocr", "formula", "table", "chart", "seal", "spotting"]] = None
    formatBlockContent: Optional[bool] = Field(None, description="not supported: only null or false")
    repetitionPenalty: Optional[float] = Field(None, gt=0)
    temperature: Optional[float] = Field(None, ge=0)
    topP: Optional[float] = Field(None, gt=0, le=1)
    minPixels: Optional[int] = Field(None, description="not supported: only null")
    maxPixels: Optional[int] = Field(None, description="not supported: only null")
    maxNewTokens: Optional[int] = Field(None, gt=0)
    mergeLayoutBlocks: Optional[bool] = Field(None, description="not supported: only null or false")
    markdownIgnoreLabels: Optional[List[str]] = Field(None, description="not supported: only null")
    vlmExtraArgs: Optional[Dict[str, Any]] = Field(None, description="not supported: only null")
    prettifyMarkdown: Optional[bool] = Field(None, description="ignored: the Markdown is always the same plain form")
    showFormulaNumber: Optional[bool] = Field(None, description="ignored")
    returnMarkdownImages: Optional[bool] = Field(True, description="markdown.images: the pictures as base64 JPEG")
    restructurePages: Optional[bool] = Field(False, description="restructure this request's pages (see /restructure-pages)")
    mergeTables: Optional[bool] = Field(True, description="with restructurePages: merge tables split across pages")
    relevelTitles: Optional[bool] = Field(None, description="not supported: only null or false")
    logId: Optional[str] = None


class PageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prunedResult: Dict[str, Any]
    markdownImages: Optional[Dict[str, str]] = None


class RestructurePagesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pages: List[PageIn] = Field(min_length=1, max_length=1000)
    mergeTables: bool = True
    relevelTitles: Optional[bool] = Field(None, description="not supported: only null or false")
    concatenatePages: bool = False
    prettifyMarkdown: Optional[bool] = Field(None, description="ignored")
    showFormulaNumber: Optional[bool] = Field(None, description="ignored")
    returnMarkdownImages: bool = True
    logId: Optional[str] = None


def picture_name(label: str, box: List[int]) -> str:
    return "imgs/img_in_{}_box_{}_{}_{}_{}.jpg".format(label, *box)


def _markdown(result: PaddleOCRVLResult, images: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """``images``: name → base64 JPEG to send, or None to send none; cropped from the page when it is there."""
    names = {key: picture_name(label, box) for key, label, box in result.image_blocks()}
    if images is not None and result.image is not None:
        for key, label, box in result.image_blocks():
            pixels = crop(result.image, box)
            if pixels.size:
                images[names[key]] = jpeg_base64(pixels)
    text = result.markdown(names)
    images = None if images is None else {k: v for k, v in images.items() if k in text}
    return {"text": text, "images": images, "isStart": True, "isEnd": True}


def _encode(results: List[PaddleOCRVLResult], how: Encoding) -> Dict[str, Any]:
    request = how.request
    with_images = request.returnMarkdownImages is not False
    pages = [pruned(result) for result in results]
    if request.restructurePages:
        pages = restructure_pages(pages, merge_tables=request.mergeTables is not False)
    items = []
    for result, page, source in zip(results, pages, how.inputs):
        shown = PaddleOCRVLResult(page, result.image, result._visualize, result._suffix)
        item: Dict[str, Any] = {"prunedResult": page, "markdown": _markdown(shown, {} if with_images else None)}
        if how.visualize:
            item["outputImages"] = {"layout_order_res": jpeg_base64(result.img)}
            item["inputImage"] = jpeg_base64(source)
        items.append(item)
    return {"layoutParsingResults": items, "dataInfo": how.data_info}


def add_restructure_route(app: Any) -> None:
    @app.post(RESTRUCTURE_PATH, operation_id="restructurePages")
    async def restructure(request: Request, body: RestructurePagesRequest) -> Dict[str, Any]:
        if body.relevelTitles:
            raise InputError("relevelTitles: not supported by this server (send null or false, or leave it out)")
        pages = restructure_pages([p.prunedResult for p in body.pages], body.mergeTables, body.concatenatePages)
        given: Dict[str, str] = {}
        for page in body.pages:
            given.update(page.markdownImages or {})
        items = []
        for page in pages:
            result = PaddleOCRVLResult(page, None, lambda r: None, "")
            markdown = _markdown(result, dict(given) if body.returnMarkdownImages else None)
            items.append({"prunedResult": page, "markdown": markdown})
        return {"logId": request.state.log_id, "errorCode": 0, "errorMsg": "Success", "result": {"layoutParsingResults": items}}


_NULL_OR_FALSE = (None, False)
VL_ADAPTER = Adapter(
    "/layout-parsing", VLLayoutParsingRequest, LayoutParsingInferResult, "file",
    {
        "useDocOrientationClassify": "use_doc_orientation_classify", "useLayoutDetection": "use_layout_detection",
        "useChartRecognition": "use_chart_recognition", "useSealRecognition": "use_seal_recognition",
        "layoutThreshold": "layout_threshold", "promptLabel": "prompt_label", "repetitionPenalty": "repetition_penalty",
        "temperature": "temperature", "topP": "top_p", "maxNewTokens": "max_new_tokens",
    },
    _encode,
    {
        **{name: _NULL_OR_FALSE for name in ("useDocUnwarping", "useOcrForImageBlock", "formatBlockContent",
                                             "mergeLayoutBlocks", "relevelTitles")},
        "layoutNms": (None, True), "layoutShapeMode": (None, "auto", "rect"),
        **{name: (None,) for name in ("layoutUnclipRatio", "layoutMergeBboxesMode", "minPixels", "maxPixels",
                                      "markdownIgnoreLabels", "vlmExtraArgs")},
    },
    _predict_pages,
    add_restructure_route,
)
