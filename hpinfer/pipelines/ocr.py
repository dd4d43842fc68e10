"""The OCR pipeline: detect text lines, turn upside-down lines upright, recognise each line.

Several images (a directory, a PDF, a list) can stream through three threads joined by bounded queues
(``use_queues``; stages.py): decoding, detection (with the line crops) and recognition of consecutive images
overlap, results come in input order and equal ``predict``'s one image at a time. The engines' inference does
not oversubscribe the cores: OpenVINO models compiled with the same settings share one CPU executor, so two
stages' inferences take turns while the Python work around them (decoding, cropping, post-processing) runs
beside. On a CPU that costs more than it gives when the engines already keep every core busy, so it is off by
default there; on a GPU (the device computes while the host prepares the next image) it is on for several
images (measurements: benchmarks/RESULTS.md, "Numbers moved out of docstrings").

Timing hooks (no-ops unless ``hpinfer.bench`` enables them): each sub-module call is a "call" span on
that predictor's timer, and the pipeline's own work is "pre" (bounds, padding), "crop" and "post"
(coordinates, filtering) on ``self.timer``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple, Type

import cv2
import numpy as np
from pydantic import Field, field_validator

from ..device import Device
from ..errors import ConfigError, InputError
from ..io import InputItem, to_bgr
from ..io.inputs import PageRange
from ..io.pages import FailedPage, OnError, Page, check_on_error, readable_pages
from ..models.text_detection import TextDetector
from ..models.text_recognition import TextRecognizer
from ..models.textline_orientation import TextLineOrientationClassifier
from ..results import Result
from ..runtime.engines.base import StageTimer
from ..tasks.base import Params, validate_params
from ..tasks.text_detection import DetParams, min_area_quad
from ..visualize import draw_ocr
from .config import PipelineSettings
from .doc_preprocessor import DocPreprocessor
from .stages import run_stages
from .sub_modules import PipelineBase, create_sub_module


class OCROptions(Params):
    # Whose OCR behaviour to reproduce around the models: "rapidocr" (rapidocr_onnxruntime: image bounds and
    # padding before detection, line crops from the detected quadrilateral) or "paddlex" (PaddleX 3.7.2's OCR
    # pipeline: the image as it is, crops from each box's minimum-area rectangle, line orientation by arg-max
    # on RGB lines stretched to the classifier's input, PaddleX's recognition resize, empty lines kept). PaddleX
    # pipeline YAMLs select "paddlex"; its detection and score-threshold values come with the YAML.
    profile: Literal["rapidocr", "paddlex"] = "rapidocr"
    use_doc_orientation_classify: bool = False  # turn whole pages upright first (needs DocOrientationClassify)
    # False: no detection, the whole image is one text line (a crop) to classify and recognise, as RapidOCR's
    # use_det=False; detection on a tight line crop finds fragments.
    use_det: bool = True
    use_textline_orientation: bool = True
    text_rec_score_thresh: float = Field(0.5, ge=0, le=1)
    max_side_len: int = Field(2000, ge=32)
    min_side_len: int = Field(30, ge=1)
    min_height: int = Field(30, ge=1)
    width_height_ratio: float = 8  # -1 pads only images lower than min_height

    @field_validator("width_height_ratio")
    @classmethod
    def _positive_or_off(cls, value: float) -> float:
        if value <= 0 and value != -1:
            raise ValueError("must be > 0, or -1 to pad only by min_height")
        return value
    # Per-call detection overrides (PaddleX names); None keeps the TextDetection sub-module's value.
    text_det_limit_side_len: Optional[int] = Field(None, ge=32)
    text_det_limit_type: Optional[Literal["min", "max"]] = None
    text_det_thresh: Optional[float] = Field(None, ge=0, le=1)
    text_det_box_thresh: Optional[float] = Field(None, ge=0, le=1)
    text_det_unclip_ratio: Optional[float] = Field(None, gt=0)
    # A cap on the detector input's longer side on top of the detector's own max_side_limit (the lower wins):
    # how a server bounds what textDetLimitSideLen can make the detector allocate.
    text_det_max_side_limit: Optional[int] = Field(None, ge=32)
    # Stage threads for several images (decode | detect + crop | recognise); None: on a GPU, on when the input
    # holds more than one image (a list, directory or PDF); on a CPU off (measured: module docstring).
    # Results are the same either way.
    use_queues: Optional[bool] = None
    queue_size: int = Field(2, ge=1)  # images waiting between two stages


def _resize_to_32(image: np.ndarray, ratio: float) -> Tuple[np.ndarray, float, float]:
    h, w = image.shape[:2]
    new_h = max(32, int(round(int(h * ratio) / 32) * 32))
    new_w = max(32, int(round(int(w * ratio) / 32) * 32))
    return cv2.resize(image, (new_w, new_h)), h / new_h, w / new_w


def fit_side_bounds(image: np.ndarray, min_side: int, max_side: int) -> Tuple[np.ndarray, float, float]:
    """Shrink a huge image / grow a tiny one (sides to multiples of 32); returns the scale back to the input."""
    ratio_h = ratio_w = 1.0
    h, w = image.shape[:2]
    if max(h, w) > max_side:
        image, ratio_h, ratio_w = _resize_to_32(image, max_side / max(h, w))
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        image, ratio_h, ratio_w = _resize_to_32(image, min_side / min(h, w))
    return image, ratio_h, ratio_w


def pad_flat_image(image: np.ndarray, min_height: int, width_height_ratio: float) -> Tuple[np.ndarray, int]:
    """Black bands above and below a very flat image, so DB sees text lines with context; returns the band height."""
    h, w = image.shape[:2]
    too_flat = width_height_ratio != -1 and w / h > width_height_ratio
    if h > min_height and not too_flat:
        return image, 0
    pad = int(abs(max(int(w / width_height_ratio), min_height) * 2 - h) / 2)
    return cv2.copyMakeBorder(image, pad, pad, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0)), pad


def crop_quad(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Perspective-rectify a quadrilateral; tall results are turned 90° so text runs left to right."""
    width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    crop = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    if crop.shape[0] / crop.shape[1] >= 1.5:
        crop = cv2.rotate(crop, cv2.ROTATE_90_COUNTERCLOCKWISE)  # np.rot90, but contiguous: 14x faster than copying it
    return crop


def to_input_coords(boxes: np.ndarray, pad_top: int, ratio_h: float, ratio_w: float, h: int, w: int) -> np.ndarray:
    out = boxes.astype(np.float64).copy()
    out[..., 1] -= pad_top
    out[..., 0] *= ratio_w
    out[..., 1] *= ratio_h
    out[..., 0] = np.clip(out[..., 0], 0, w)
    out[..., 1] = np.clip(out[..., 1], 0, h)
    return np.round(out).astype(np.int32)


@dataclass(frozen=True)
class _DetectedPage:
    """One image between detection and recognition: its line polygons (input pixels) and line crops."""

    polys: np.ndarray
    crops: List[np.ndarray]


# How PaddleX 3.7.2 runs the line classifier: each crop stretched to the input in RGB, turned on any "180".
_PADDLEX_CLS = {"resize": "stretch", "threshold": 0.0, "channel_order": "rgb", "long_lines": "squeeze"}

OCR_MODULES = ("TextDetection", "TextLineOrientation", "TextRecognition")  # what pipelines built on OCR pass on


def split_ocr_options(options: Mapping[str, Any], own: Type[Params]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Options of a pipeline built on OCR → (its own, the OCR pipeline's: those only OCROptions knows, e.g.
    text_rec_score_thresh). Unknown ones stay with its own, whose validation names them."""
    ocr = {k: v for k, v in options.items() if k in OCROptions.model_fields and k not in own.model_fields}
    return {k: v for k, v in options.items() if k not in ocr}, ocr


class OCRPipeline(PipelineBase):
    def __init__(self, settings: PipelineSettings, device: "str | Device | None" = None, **options: Any):
        self.settings = settings
        self.options = validate_params(OCROptions, {**settings.options, **options}, settings.source)
        self.device = Device.parse(device)
        self.timer = StageTimer()  # the pipeline's own stages; sub-modules time on their predictors' timers
        self.text_det: TextDetector = create_sub_module(settings, "TextDetection", TextDetector.kind.name, self.device)
        self.text_rec: TextRecognizer = create_sub_module(settings, "TextRecognition", TextRecognizer.kind.name, self.device)
        # Optional models load only when switched on here, as in PaddleX: a later predict() can't switch them on.
        self.doc_preprocessor: Optional[DocPreprocessor] = None
        if self.options.use_doc_orientation_classify:
            doc_settings = PipelineSettings(
                "doc_preprocessor", settings.source, {},
                {k: v for k, v in settings.modules.items() if k == "DocOrientationClassify"},
            )
            self.doc_preprocessor = DocPreprocessor(doc_settings, self.device)
        self.textline_cls: Optional[TextLineOrientationClassifier] = None
        if self.options.use_textline_orientation:
            self.textline_cls = create_sub_module(
                settings, "TextLineOrientation", TextLineOrientationClassifier.kind.name, self.device
            )

    @property
    def sub_modules(self) -> Dict[str, Any]:
        """Loaded sub-modules by their SubModules key, in processing order."""
        modules = dict(self.doc_preprocessor.sub_modules) if self.doc_preprocessor else {}
        modules.update(TextDetection=self.text_det, TextLineOrientation=self.textline_cls, TextRecognition=self.text_rec)
        return {key: p for key, p in modules.items() if p is not None}

    def predict_iter(
        self, inputs: Any, page_range: Optional[PageRange] = None, on_error: OnError = "raise", **options: Any
    ) -> Iterator[Result]:
        """One result per image or page; ``on_error`` (``hpinfer.io.pages``): what a page that cannot be read does."""
        opts, det_params = self._call_options(options)
        check_on_error(on_error)
        use_queues = opts.use_queues if opts.use_queues is not None else self.device.is_gpu and _several(inputs)
        if not use_queues:
            for page in readable_pages(inputs, page_range, on_error):
                yield FailedPage(page) if page.image is None else self._run([_item_of(page)], opts, det_params)[0]
            return
        stages = [
            lambda page: self._analyse([_item_of(page)], opts, det_params),
            lambda analysed: self._complete(*analysed, opts, det_params)[0],
        ]
        # A bad page travels as a page (the source thread reads on) and raises or becomes a result here, in order.
        for outcome in run_stages(readable_pages(inputs, page_range, "result"), stages, True, opts.queue_size):
            if outcome.error is None:
                yield outcome.value
            elif on_error == "result" and isinstance(outcome.value, Page) and outcome.value.image is None:
                yield FailedPage(outcome.value)
            else:
                raise outcome.error  # as the sequential loop would, at the same place in the stream

    def predict_batch(self, images: Sequence[np.ndarray], **options: Any) -> List[Result]:
        """Several decoded images at once (what a server batching requests wants): images whose detector inputs
        share a shape are detected in one engine call, then every text line of every image goes through the
        classifier and recogniser together. Each line is padded as it would be alone with its own image, so
        the results equal ``predict``'s."""
        opts, det_params = self._call_options(options)
        items = [InputItem(to_bgr(image, f"image {i}"), None, None) for i, image in enumerate(images)]
        return self._run(items, opts, det_params)

    def _call_options(self, options: Mapping[str, Any]) -> Tuple[OCROptions, DetParams]:
        opts = self.options
        given = {k: v for k, v in options.items() if v is not None}
        if given:
            opts = validate_params(OCROptions, {**opts.model_dump(), **given}, "OCR predict()")
        if opts.use_doc_orientation_classify and self.doc_preprocessor is None:
            raise ConfigError("use_doc_orientation_classify=True needs the pipeline created with it on (the model is not loaded)")
        if opts.use_textline_orientation and self.textline_cls is None:
            raise ConfigError("use_textline_orientation=True needs the pipeline created with it on (the model is not loaded)")
        cap, own = opts.text_det_max_side_limit, self.text_det.params.max_side_limit
        det_params = self.text_det.with_overrides({
            "limit_side_len": opts.text_det_limit_side_len, "limit_type": opts.text_det_limit_type,
            "thresh": opts.text_det_thresh, "box_thresh": opts.text_det_box_thresh,
            "unclip_ratio": opts.text_det_unclip_ratio, "max_side_limit": min(cap, own or cap) if cap else None,
        })
        return opts, det_params

    def _run(self, items: Sequence[InputItem], opts: OCROptions, det_params: DetParams) -> List[Result]:
        return self._complete(*self._analyse(items, opts, det_params), opts, det_params)

    def _analyse(self, items: Sequence[InputItem], opts: OCROptions, det_params: DetParams):
        """Pages upright (if asked) and their text lines detected and cropped: the first half of ``_run``."""
        doc_results: List[Dict[str, Any]] = [{} for _ in items]
        if opts.use_doc_orientation_classify:
            upright_items = []
            for i, item in enumerate(items):
                image, doc_res = self.doc_preprocessor.process(item.image, True)
                doc_results[i] = {"doc_preprocessor_res": doc_res}
                upright_items.append(InputItem(image, item.input_path, item.page_index))
            items = upright_items  # boxes are in the upright page's pixels, so results show that page
        pages = self._detect([item.image for item in items], opts, det_params)
        return items, doc_results, pages

    def _complete(self, items, doc_results, pages, opts: OCROptions, det_params: DetParams) -> List[Result]:
        """Every line of every page recognised together, then one result per page: the second half of ``_run``."""
        crops = [crop for page in pages for crop in page.crops]
        groups = [index for index, page in enumerate(pages) for _ in page.crops]
        angles, recognised = self._recognise(crops, groups, opts)
        results, start = [], 0
        for item, page, doc_res in zip(items, pages, doc_results):
            end = start + len(page.crops)
            data = {"input_path": item.input_path, "page_index": item.page_index, **doc_res}
            data.update(self._assemble(page, angles[start:end], recognised[start:end], opts, det_params))
            results.append(Result(data, item.image, _draw, "ocr_res_img"))
            start = end
        return results

    def _detect(self, images: Sequence[np.ndarray], opts: OCROptions, det_params: DetParams) -> List["_DetectedPage"]:
        """Text lines of each image; pages whose detector inputs share a shape are detected in one engine call."""
        if not opts.use_det:
            return [_DetectedPage(_whole(image)[None], [image]) for image in images]
        with self.timer.stage("pre"):
            prepared = []
            for image in images:
                if opts.profile == "paddlex":
                    prepared.append((image, 0, 1.0, 1.0))
                    continue
                work, ratio_h, ratio_w = fit_side_bounds(image, opts.min_side_len, opts.max_side_len)
                work, pad_top = pad_flat_image(work, opts.min_height, opts.width_height_ratio)
                prepared.append((work, pad_top, ratio_h, ratio_w))
        with self.text_det.timer.stage("call"):
            detected = self.text_det.detect_many([work for work, *_ in prepared], det_params)
        pages = []
        for image, (work, pad_top, ratio_h, ratio_w), (boxes, _) in zip(images, prepared, detected):
            with self.timer.stage("post"):
                polys = to_input_coords(boxes, pad_top, ratio_h, ratio_w, image.shape[0], image.shape[1])
            with self.timer.stage("crop"):
                if opts.profile == "paddlex":  # PaddleX crops the rounded box's minimum-area rectangle
                    crops = [crop_quad(work, min_area_quad(poly)) for poly in polys]
                else:
                    crops = [crop_quad(work, box) for box in boxes]
            pages.append(_DetectedPage(polys, crops))
        return pages

    def _recognise(self, crops: List[np.ndarray], groups: List[int], opts: OCROptions) -> Tuple[List[int], List[Tuple[str, float]]]:
        angles = [-1] * len(crops)
        if not crops:
            return angles, []
        paddlex = opts.profile == "paddlex"
        if opts.use_textline_orientation:
            with self.textline_cls.timer.stage("call"):
                # The classifier's input is image_shape whatever the batch holds (lines or their tiles), so
                # batching cannot change a line's result: the call's lines go in batches as large as the engine's
                # default shapes take.
                cls = self.textline_cls
                lines_per_call = min(len(crops), cls.kind.default_shapes(cls.params)[2][0])
                profile = _PADDLEX_CLS if paddlex else {}
                cls_params = cls.with_overrides({**profile, "batch_size": max(lines_per_call, cls.params.batch_size)})
                crops, angles = cls.upright(crops, cls_params)
        with self.text_rec.timer.stage("call"):
            rec_params = self.text_rec.with_overrides({"resize": "paddlex"} if paddlex else {})
            return angles, self.text_rec.recognize(crops, rec_params, groups=groups)

    def _assemble(self, page: "_DetectedPage", angles, recognised, opts: OCROptions, det_params: DetParams) -> Dict[str, Any]:
        with self.timer.stage("post"):
            # Whitespace-only lines stay, as in the references (rapidocr_onnxruntime, PaddleX); empty ones go.
            keep = [  # PaddleX (profile paddlex) keeps empty lines too: its default threshold 0 keeps every line
                i for i, (text, score) in enumerate(recognised)
                if score >= opts.text_rec_score_thresh and (text or opts.profile == "paddlex")
            ]
            rec_polys = page.polys[keep]
            return {
                "model_settings": {
                    "use_doc_orientation_classify": opts.use_doc_orientation_classify,
                    "use_textline_orientation": opts.use_textline_orientation,
                },
                "text_det_params": {k: getattr(det_params, k) for k in ("limit_side_len", "limit_type", "thresh", "box_thresh", "unclip_ratio")},
                "text_rec_score_thresh": opts.text_rec_score_thresh,
                "dt_polys": page.polys,
                "textline_orientation_angles": list(angles),
                "rec_texts": [recognised[i][0] for i in keep],
                "rec_scores": [recognised[i][1] for i in keep],
                "rec_polys": rec_polys,
                "rec_boxes": np.concatenate([rec_polys.min(axis=1), rec_polys.max(axis=1)], axis=1) if keep else np.zeros((0, 4), np.int32),
            }


def _whole(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.int32)


def _several(inputs: Any) -> bool:
    """Whether ``inputs`` may hold more than one image, judged without reading it: a list or tuple of
    several, a directory or a PDF file."""
    if isinstance(inputs, (list, tuple)):
        return len(inputs) > 1
    if isinstance(inputs, (str, os.PathLike)):
        path = os.fspath(inputs)
        return "://" not in path and (os.path.isdir(path) or path.lower().endswith(".pdf"))
    return False


def _item_of(page: Page) -> InputItem:
    if page.image is None:
        raise InputError(page.error)
    return InputItem(page.image, page.input_path, page.page_index)


def _draw(result: Result) -> np.ndarray:
    return draw_ocr(result.image, result["rec_polys"], result["rec_texts"])
