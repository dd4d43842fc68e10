"""The PaddleOCR-VL pipeline, two-tier as PaddleOCR-VL deploys it: layout in this process, every block
recognised by a separate recogniser behind an OpenAI-compatible API (``hpinfer genai-server``, vLLM,
SGLang, llama.cpp), or, without ``vl_rec_server_url``, by the native recogniser loaded in-process.

Per page: turn it upright (optional) → layout regions in reading order (as layout_parsing) → each block's
prompt from its label (block_recognition.prompt_for; pictures are not sent) → all blocks of the page
submitted at once → ``parsing_res_list`` of ``{block_label, block_content, block_bbox, block_id,
block_order, group_id}`` as PaddleX's PaddleOCR-VL writes it, plus Markdown and JSON. A table's content is
HTML: the native recogniser answers a ``<table>``, and OTSL (the PaddleOCR-VL model's answer) is converted
as PaddleX converts it (``otsl_to_html``); a table without an HTML answer stays a picture in the Markdown.

``use_queues`` runs reading/rendering, layout, submission and collection in four threads joined by bounded
queues (stages.py), so while one page's blocks are being recognised the next pages are laid out and their
blocks submitted too: the recogniser sees up to ``queue_size`` + 2 pages' blocks at once. A block that
fails (server gone, timeout, 5xx after retries) carries ``block_error`` and its page gets ``status:
"partial"`` and an ``error`` summary; the rest of the document goes on either way. With
``use_layout_detection: false`` the whole page is one block asked ``prompt_label``'s prompt (the
``doc_vlm`` pipeline: one image, one question).
"""

from __future__ import annotations

import html
import logging
import re
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Tuple

import numpy as np
from pydantic import Field

from ..device import Device
from ..errors import HpinferError, InputError
from ..io.inputs import PageRange
from ..models.base import Predictor
from ..tasks import layout_detection
from ..tasks.base import Params, validate_params
from ..results import Result
from . import block_recognition as prompts
from .block_recognition import Answer, NativeRecogniser, prompt_for
from .config import PipelineSettings, sub_settings
from .doc_preprocessor import DocPreprocessor
from .layout_parsing import draw_regions, join_lines, ordered_regions
from .markdown import FURNITURE_LABELS, crop, escape
from .ocr import OCROptions
from ..io.pages import OnError, Page, readable_pages
from .stages import Outcome, run_stages
from .sub_modules import PipelineBase, create_sub_module
from .vl_client import make_recogniser

log = logging.getLogger("hpinfer")

BACKENDS = ("native", "vllm-server", "sglang-server", "llama-cpp-server", "fastdeploy-server", "mlx-vlm-server")
PROMPT_LABELS = {"ocr": prompts.OCR, "table": prompts.TABLE, "formula": prompts.FORMULA, "chart": prompts.CHART,
                 "seal": prompts.SEAL, "spotting": prompts.SPOTTING}
TITLE_LABELS = frozenset({"title", "doc_title", "paragraph_title"})
# Not numbered in PaddleX's block_order (page furniture, pictures and their captions).
UNORDERED_LABELS = frozenset({"header", "footer", "figure", "image", "table", "figure_caption", "table_caption",
                              "figure_title", "header_image", "footer_image", "footnote", "aside_text", "number"})


class PaddleOCRVLOptions(Params):
    use_doc_orientation_classify: bool = False
    use_layout_detection: bool = True
    prompt_label: Literal["ocr", "table", "formula", "chart", "seal", "spotting"] = "ocr"  # without layout detection
    use_chart_recognition: bool = False  # charts are pictures unless on
    use_seal_recognition: bool = False  # seals are pictures unless on
    use_queues: bool = True
    queue_size: int = Field(2, ge=1)
    layout_threshold: Optional[float] = Field(None, ge=0, le=1)
    duplicate_overlap: float = Field(0.8, gt=0, le=1)
    block_padding: int = Field(0, ge=0)  # pixels of margin around a block sent to the recogniser
    # The recogniser (creation only): PaddleOCR's --vl_rec_* options.
    vl_rec_backend: Literal[BACKENDS] = "native"  # type: ignore[valid-type]
    vl_rec_server_url: Optional[str] = None  # e.g. http://127.0.0.1:8118/v1; none: the native recogniser in-process
    vl_rec_api_model_name: Optional[str] = None  # none: GET /models' first
    vl_rec_api_key: Optional[str] = None
    vl_rec_max_concurrency: int = Field(200, ge=1)
    vl_rec_timeout_s: float = Field(600, gt=0)
    vl_rec_retries: int = Field(3, ge=0)  # on 429, 502-504 and connection errors
    vl_rec_retry_backoff_s: float = Field(0.5, ge=0)  # doubled after each retry
    # Sampling, sent with every block (None: the server's default).
    max_new_tokens: Optional[int] = Field(None, gt=0)
    temperature: Optional[float] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    repetition_penalty: Optional[float] = Field(None, gt=0)


_CREATION_ONLY = tuple(k for k in PaddleOCRVLOptions.model_fields if k.startswith("vl_rec_"))


def split_options(options: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """→ (this pipeline's options, the native recogniser's OCR options); unknown ones stay with the first."""
    ocr = {k: v for k, v in options.items() if k in OCROptions.model_fields and k not in PaddleOCRVLOptions.model_fields}
    return {k: v for k, v in options.items() if k not in ocr}, ocr


class PaddleOCRVLResult(Result):
    """One page: ``parsing_res_list`` in reading order, ``status`` ok / empty / partial / error."""

    def image_blocks(self) -> List[Tuple[int, str, List[int]]]:
        """(block_id, label, bbox) of the blocks the Markdown shows as pictures."""
        return [(b["block_id"], b["block_label"], b["block_bbox"]) for b in self.get("parsing_res_list", []) if _is_picture(b)]

    def markdown(self, image_names: Mapping[int, str]) -> str:
        if self.get("status") == "error":
            from .markdown import page_markdown

            return page_markdown(self, {})
        parts: List[str] = []
        for block in self["parsing_res_list"]:
            label, content = block["block_label"], block["block_content"] or ""
            if _is_picture(block):
                if block["block_id"] in image_names:
                    parts.append(f"![{label}]({image_names[block['block_id']]})")
            elif label in FURNITURE_LABELS or not content.strip():
                continue
            elif label == "table":
                parts.append(content.strip())
            elif prompts.LABEL_PROMPTS.get(label) == prompts.FORMULA:
                parts.append(f"$$\n{content.strip()}\n$$")
            else:
                parts.append(("## " if label in TITLE_LABELS else "") + escape(join_lines(content.splitlines())))
        return "\n\n".join(parts)

    def save_to_markdown(self, path: "str | Path") -> Path:
        from .markdown import MarkdownDocument

        target = self._target(path, "res", ".md")
        with MarkdownDocument(target) as doc:
            doc.add(self)
        return target


def _is_picture(block: Mapping[str, Any]) -> bool:
    """Pictures, and tables whose answer is not HTML (no table model), stay images in the Markdown."""
    if block["block_label"] in prompts.IMAGE_BLOCK_LABELS or block.get("block_error") or block.get("block_note"):
        return True
    return block["block_label"] == "table" and not (block["block_content"] or "").lstrip().startswith("<")


@dataclass(frozen=True, eq=False)
class _Laid:
    """A page after layout: its blocks in reading order, and which of them go to the recogniser."""

    page: Page
    image: np.ndarray
    doc_res: Dict[str, Any]
    regions: List[Dict[str, Any]]
    sent: List[int]  # indices into regions
    prompts: List[str]


@dataclass(frozen=True, eq=False)
class _Submitted:
    laid: _Laid
    future: Any  # concurrent.futures.Future of List[Answer]


class PaddleOCRVLPipeline(PipelineBase):
    """SubModules: DocOrientationClassify (optional), LayoutDetection, and for the native recogniser the OCR
    pipeline's TextDetection, TextLineOrientation, TextRecognition and TableStructureRecognition (loaded only
    without vl_rec_server_url)."""

    def __init__(self, settings: PipelineSettings, device: "str | Device | None" = None, **options: Any):
        own, _ = split_options({**settings.options, **options})
        self.settings = settings
        self.options: PaddleOCRVLOptions = validate_params(PaddleOCRVLOptions, own, settings.source)
        doc_options = {"use_doc_orientation_classify": self.options.use_doc_orientation_classify}
        self.doc = DocPreprocessor(sub_settings(settings, "doc_preprocessor", ["DocOrientationClassify"], doc_options), device)
        self.layout: Optional[Predictor] = None
        if self.options.use_layout_detection:
            self.layout = create_sub_module(settings, "LayoutDetection", layout_detection.TASK.name, device)
        native = None
        try:
            if not self.options.vl_rec_server_url:
                _, ocr = split_options(options)
                native = NativeRecogniser(_with_options(settings, ocr), device)
                log.info("PaddleOCR-VL: no vl_rec_server_url, blocks are recognised in-process by the native recogniser")
            self.recogniser = make_recogniser(self.options, native)
        except BaseException:  # e.g. the server can't be reached: free what is loaded
            for part in (native, self.doc, self.layout):
                if part is not None:
                    part.close()
            raise

    @property
    def sub_modules(self) -> Dict[str, Predictor]:
        modules: Dict[str, Predictor] = {**self.doc.sub_modules}
        if self.layout is not None:
            modules["LayoutDetection"] = self.layout
        native = getattr(self.recogniser, "native", None)
        if native is not None:
            modules.update(native.sub_modules)
        return modules

    def close(self) -> None:
        self.recogniser.close()
        self.doc.close()
        if self.layout is not None:
            self.layout.close()

    def predict_iter(
        self, inputs: Any, page_range: Optional[PageRange] = None, on_error: OnError = "result", **options: Any
    ) -> Iterator[PaddleOCRVLResult]:
        """One result per image or PDF page, in input order; options as at creation, for this call only. A page
        that cannot be read or processed gives a result with status "error" (``on_error="raise"``: an unreadable
        page raises instead)."""
        given = {k: v for k, v in options.items() if v is not None}
        fixed = [k for k in given if k in _CREATION_ONLY or (k not in PaddleOCRVLOptions.model_fields and k in OCROptions.model_fields)]
        if fixed:
            raise InputError(f"PaddleOCR-VL predict(): {', '.join(fixed)} can only be set when the pipeline is created")
        opts = validate_params(PaddleOCRVLOptions, {**self.options.model_dump(), **given}, "PaddleOCR-VL predict()")
        if opts.use_layout_detection and self.layout is None:
            raise InputError("use_layout_detection=True needs the pipeline created with it on (the model is not loaded)")
        layout_params = self.layout.with_overrides({"threshold": opts.layout_threshold}) if self.layout else None
        sampling = {"max_new_tokens": opts.max_new_tokens, "temperature": opts.temperature, "top_p": opts.top_p,
                    "repetition_penalty": opts.repetition_penalty}
        stages = [
            lambda page: self._lay_out(page, opts, layout_params),
            lambda laid: _Submitted(laid, self.recogniser.submit([_crop(laid, i, opts) for i in laid.sent], laid.prompts, sampling)),
            lambda submitted: self._collect(submitted, opts),
        ]
        for outcome in run_stages(readable_pages(inputs, page_range, on_error), stages, opts.use_queues, opts.queue_size):
            yield outcome.value if outcome.error is None else _failed(outcome, opts)

    def _lay_out(self, page: Page, opts: PaddleOCRVLOptions, layout_params: Any) -> _Laid:
        if page.image is None:
            raise InputError(page.error)
        image, doc_res = self.doc.process(page.image, opts.use_doc_orientation_classify)
        h, w = image.shape[:2]
        if opts.use_layout_detection:
            regions = ordered_regions(self.layout.predict_image(image, layout_params)["boxes"], opts.duplicate_overlap)
        else:
            regions = [{"label": opts.prompt_label, "score": 1.0, "coordinate": [0, 0, w, h], "box": [0, 0, w, h]}]
        sent, asked = [], []
        for index, region in enumerate(regions):
            prompt = PROMPT_LABELS[opts.prompt_label] if not opts.use_layout_detection else prompt_for(region["label"], opts)
            if prompt is not None and crop(image, region["box"]).size:
                sent.append(index)
                asked.append(prompt)
        return _Laid(page, image, doc_res, regions, sent, asked)

    def _collect(self, submitted: _Submitted, opts: PaddleOCRVLOptions) -> PaddleOCRVLResult:
        laid = submitted.laid
        answers: Dict[int, Answer] = dict(zip(laid.sent, submitted.future.result()))
        blocks, order = [], 0
        for index, region in enumerate(laid.regions):
            answer = answers.get(index, Answer(""))
            label = region["label"]
            if label == "table" and is_otsl(answer.content):  # the PaddleOCR-VL model's answer, as PaddleX shows it
                answer = replace(answer, content=otsl_to_html(answer.content))
            numbered = label not in UNORDERED_LABELS
            order += numbered
            block = {
                "block_label": label, "block_content": answer.content, "block_bbox": region["box"],
                "block_id": index, "block_order": order if numbered else None, "group_id": index,
            }
            if answer.error:
                block["block_error"] = answer.error
            if answer.note:
                block["block_note"] = answer.note
            blocks.append(block)
        failed = [b for b in blocks if "block_error" in b]
        status, error = ("ok" if blocks else "empty"), None
        if failed:
            status = "partial"
            error = f"{len(failed)} of {len(laid.sent)} block(s) not recognised; first: {failed[0]['block_error']}"
        h, w = laid.image.shape[:2]
        data = {
            **laid.doc_res, "width": w, "height": h, "model_settings": _settings(opts),
            "layout_det_res": {"boxes": [{k: r[k] for k in ("label", "score", "coordinate") if k in r} for r in laid.regions]},
            "parsing_res_list": blocks,
        }
        return _result(laid.page, laid.image, status, error, data)


def _with_options(settings: PipelineSettings, ocr: Dict[str, Any]) -> PipelineSettings:
    return PipelineSettings(settings.pipeline_name, settings.source, {**settings.options, **ocr}, settings.modules)


def _crop(laid: _Laid, index: int, opts: PaddleOCRVLOptions) -> np.ndarray:
    return np.ascontiguousarray(crop(laid.image, laid.regions[index]["box"], opts.block_padding))


def _settings(opts: PaddleOCRVLOptions) -> Dict[str, Any]:
    keys = ("use_doc_orientation_classify", "use_layout_detection", "use_chart_recognition", "use_seal_recognition")
    return {**{k: getattr(opts, k) for k in keys}, "vl_rec_backend": opts.vl_rec_backend}


def _result(page: Page, image: Optional[np.ndarray], status: str, error: Optional[str], data: Dict[str, Any]) -> PaddleOCRVLResult:
    head = {"input_path": page.input_path, "page_index": page.page_index, "status": status, "error": error}
    return PaddleOCRVLResult({**head, **data}, image, _draw, "layout_order_res")


def _failed(outcome: Outcome, opts: PaddleOCRVLOptions) -> PaddleOCRVLResult:
    value = outcome.value
    page = value if isinstance(value, Page) else (value.laid.page if isinstance(value, _Submitted) else value.page)
    err = outcome.error
    message = str(err) if isinstance(err, HpinferError) else f"{type(err).__name__}: {err}"
    where = f"{page.input_path or 'input'}" + ("" if page.page_index is None else f" page {page.page_index + 1}")
    log.warning("PaddleOCR-VL: %s", message if isinstance(err, InputError) else f"{where}: {message}")
    return _result(page, page.image, "error", message, {"model_settings": _settings(opts), "parsing_res_list": []})


def _draw(result: Result) -> np.ndarray:
    """Blocks coloured by label and numbered in reading order (failed ones marked)."""
    blocks = result.get("parsing_res_list", [])
    names = [f"{b['block_id'] + 1} {b['block_label']}" + (" (failed)" if "block_error" in b else "") for b in blocks]
    classes = [zlib.crc32(b["block_label"].encode()) % 64 for b in blocks]  # a label's colour, the same in every run
    return draw_regions(result, [b["block_bbox"] for b in blocks], names, classes)


_HTML_ROW = re.compile(r"<tr\b.*?</tr>", re.S | re.I)


def restructure_pages(pages: Sequence[Mapping[str, Any]], merge_tables: bool = True, concatenate_pages: bool = False) -> List[Dict[str, Any]]:
    """Pages' results (their JSON ``res``) as one document: block ids numbered across pages
    (``global_block_id``), a table split by a page break merged into its first part (the continuation's
    repeated header row dropped), and with ``concatenate_pages`` all blocks in one page-less result."""
    out = [dict(page, parsing_res_list=[dict(b) for b in page.get("parsing_res_list", [])]) for page in pages]
    if merge_tables:
        for before, after in zip(out, out[1:]):
            first, second = _last_content(before), _first_content(after)
            if first is not None and second is not None and first["block_label"] == second["block_label"] == "table":
                first["block_content"] = _join_tables(first["block_content"], second["block_content"])
                first.setdefault("merged_from", []).append({"page_index": after.get("page_index"), "block_id": second["block_id"]})
                after["parsing_res_list"].remove(second)
    number = 0
    for page in out:
        for block in page["parsing_res_list"]:
            block["global_block_id"] = block["global_group_id"] = number
            number += 1
    if concatenate_pages and out:
        return [dict(out[0], page_index=None, page_count=len(out),
                     parsing_res_list=[b for page in out for b in page["parsing_res_list"]])]
    return out


def _content_blocks(page: Mapping[str, Any]) -> List[Dict[str, Any]]:
    return [b for b in page["parsing_res_list"] if b["block_label"] not in FURNITURE_LABELS | {"number", "footnote"}]


def _last_content(page: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    blocks = _content_blocks(page)
    return blocks[-1] if blocks else None


def _first_content(page: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    blocks = _content_blocks(page)
    return blocks[0] if blocks else None


def _join_tables(first: str, second: str) -> str:
    """HTML tables: the second's rows appended inside the first's (its first row dropped when it repeats the
    first table's header); plain text: one after the other."""
    rows_a, rows_b = _HTML_ROW.findall(first or ""), _HTML_ROW.findall(second or "")
    if not rows_a or not rows_b:
        return "\n".join(part for part in (first, second) if part)
    if _text(rows_b[0]) == _text(rows_a[0]):
        rows_b = rows_b[1:]
    end = first.rfind(rows_a[-1]) + len(rows_a[-1])
    return first[:end] + "".join(rows_b) + first[end:]


def _text(markup: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", markup).split())


_OTSL = re.compile(r"(<fcel>|<ecel>|<lcel>|<ucel>|<xcel>|<nl>)")


def is_otsl(content: str) -> bool:
    return "<nl>" in content and ("<fcel>" in content or "<ecel>" in content)


def otsl_to_html(otsl: str) -> str:
    """OTSL (the PaddleOCR-VL model's table answer: ``<fcel>`` a cell with the text after it, ``<ecel>`` an
    empty one, ``<lcel>``/``<ucel>``/``<xcel>`` the cell to the left / above / both spans over this one,
    ``<nl>`` ends a row) → ``<table>`` HTML with rowspan/colspan, as PaddleX's pipeline writes it. Short rows
    are padded with empty cells."""
    rows: List[List[List[str]]] = [[]]  # rows of [tag, text]
    for part in _OTSL.split(otsl):
        if part == "<nl>":
            rows.append([])
        elif _OTSL.fullmatch(part):
            rows[-1].append([part, ""])
        elif rows[-1]:
            rows[-1][-1][1] += part
    rows = [row for row in rows if row]
    width = max((len(row) for row in rows), default=0)
    grid = [row + [["<ecel>", ""]] * (width - len(row)) for row in rows]
    out = []
    for r, row in enumerate(grid):
        cells = []
        for c, (tag, text) in enumerate(row):
            if tag not in ("<fcel>", "<ecel>"):
                continue
            colspan = next((k for k in range(c + 1, width) if row[k][0] not in ("<lcel>", "<xcel>")), width) - c
            rowspan = next((k for k in range(r + 1, len(grid)) if grid[k][c][0] not in ("<ucel>", "<xcel>")), len(grid)) - r
            spans = (f' rowspan="{rowspan}"' if rowspan > 1 else "") + (f' colspan="{colspan}"' if colspan > 1 else "")
            cells.append(f"<td{spans}>{html.escape(text.strip())}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "".join(out) + "</table>"
