"""What a recogniser does with one layout block: the task prompts PaddleOCR-VL sends, which block label gets
which prompt, and hpinfer's own ("native") recogniser that answers them with the OCR and table models.

PaddleOCR-VL asks its vision-language model one question per block, the prompt naming the task. The native
recogniser answers the prompts it has a model for and refuses the others with ``UnsupportedPrompt`` (which
names the prompt), so a client can tell "not served here" from a failure. ``Prompt`` entries in
``NativeRecogniser.handlers`` are the one table to extend when a model arrives: prompt → the engine work it
needs (named, so that a server batches the same work of many blocks together) and how to answer from it.

``Table Recognition:`` is answered as an HTML ``<table>`` (SLANet's structure, each cell filled with the
block's OCR lines as table_recognition does), which PaddleX's PaddleOCR-VL client keeps as it is (it turns
only OTSL, what the PaddleOCR-VL model answers, into HTML); without a table model, the block's text lines
with a note saying so.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..device import Device
from ..errors import InputError, ModelNotFoundError
from ..models.base import Predictor
from ..tasks import table_structure
from .config import PipelineSettings, resolve_pipeline, sub_settings
from .layout_parsing import OCR_MODULES
from .ocr import OCRPipeline
from .sub_modules import PipelineBase, create_sub_module
from .table_recognition import CROP_MARGIN, fill_table

log = logging.getLogger("hpinfer")

OCR = "OCR:"
TABLE = "Table Recognition:"
FORMULA = "Formula Recognition:"
CHART = "Chart Recognition:"
SEAL = "Seal Recognition:"
SPOTTING = "Spotting:"
PROMPTS = (OCR, TABLE, FORMULA, CHART, SEAL, SPOTTING)

TABLE_NOTE = "no table model is loaded: the answer is the table's text line by line, not its structure"

# Block labels that are pictures: cropped into the Markdown, never sent (CDLA's and PP-DocLayout's names).
IMAGE_BLOCK_LABELS = frozenset({"figure", "image", "header_image", "footer_image"})
LABEL_PROMPTS = {
    "table": TABLE, "equation": FORMULA, "formula": FORMULA, "display_formula": FORMULA, "inline_formula": FORMULA,
    "chart": CHART, "seal": SEAL, "spotting": SPOTTING,
}
_OPTIONAL = {CHART: "use_chart_recognition", SEAL: "use_seal_recognition"}  # off: the block stays a picture


def prompt_for(label: str, options: Any) -> Optional[str]:
    """The prompt PaddleOCR-VL sends for a block ``label``; None for a block kept as a picture. ``options``
    carries ``use_chart_recognition``/``use_seal_recognition`` (charts and seals are pictures unless on)."""
    if label in IMAGE_BLOCK_LABELS:
        return None
    prompt = LABEL_PROMPTS.get(label, OCR)
    switch = _OPTIONAL.get(prompt)
    return None if switch and not getattr(options, switch) else prompt


class UnsupportedPrompt(InputError):
    """A known task prompt that this recogniser has no model for (HTTP 400, code ``unsupported_prompt``)."""


@dataclass(frozen=True)
class Answer:
    content: str
    note: Optional[str] = None  # what the client should know about how the content was made
    error: Optional[str] = None  # the block could not be recognised (the page goes on)


def ocr_settings(settings: PipelineSettings) -> PipelineSettings:
    """The OCR pipeline a document pipeline runs inside its blocks: its OCR SubModules and the OCR options."""
    from .ocr import OCROptions

    options = {k: v for k, v in settings.options.items() if k in OCROptions.model_fields and k not in ("use_queues", "queue_size")}
    options["use_doc_orientation_classify"] = False  # the page, not each block, is turned upright
    return sub_settings(settings, "OCR", OCR_MODULES, options)


@dataclass(frozen=True)
class Prompt:
    works: Tuple[str, ...]  # engine work the prompt needs, by name (NativeRecogniser.run)
    answer: Callable[[Mapping[str, Any]], Answer]  # work name → that work's output for the block → the reply


class NativeRecogniser(PipelineBase):
    """Answers block prompts with the OCR models of a pipeline YAML (``source``: a bundled name or a path), and
    tables with its TableStructureRecognition model when it has one.

    ``works(prompt)`` names the engine work a prompt needs, so that a server can batch blocks of different
    requests (and prompts) that need the same work; ``run(work, images)`` does it for many blocks at once
    (every text line of every block through the recogniser together); ``answer(prompt, outputs)`` turns one
    block's outputs into the reply."""

    def __init__(self, source: "str | PipelineSettings" = "PaddleOCR-VL", device: "str | Device | None" = None):
        settings = source if isinstance(source, PipelineSettings) else resolve_pipeline(source)
        self.ocr = OCRPipeline(ocr_settings(settings), device)
        self.structurer: Optional[Predictor] = None
        if "TableStructureRecognition" in settings.modules:
            try:
                self.structurer = create_sub_module(settings, "TableStructureRecognition", table_structure.TASK.name, device)
            except ModelNotFoundError as err:  # an optional package: the text of tables is still served
                log.warning("native recogniser: tables are answered as text: %s", err)
        table = (Prompt(("ocr", "table"), _table) if self.structurer is not None
                 else Prompt(("ocr",), lambda out: Answer(_lines(out["ocr"]), TABLE_NOTE)))
        self.handlers: Dict[str, Prompt] = {OCR: Prompt(("ocr",), lambda out: Answer(_lines(out["ocr"]))), TABLE: table}

    @property
    def sub_modules(self) -> Dict[str, Predictor]:
        tables = {"TableStructureRecognition": self.structurer} if self.structurer is not None else {}
        return {**self.ocr.sub_modules, **tables}

    @property
    def timer(self):
        return self.ocr.timer

    @property
    def prompts(self) -> List[str]:
        return list(self.handlers)

    def works(self, prompt: str) -> Tuple[str, ...]:
        if prompt not in self.handlers:
            if prompt in PROMPTS:
                raise UnsupportedPrompt(
                    f"prompt {prompt!r} is not served by the native backend (no model for it); "
                    f"served prompts: {', '.join(self.handlers)}"
                )
            raise InputError(f"unknown prompt {prompt!r}; PaddleOCR-VL's prompts: {', '.join(PROMPTS)}")
        return self.handlers[prompt].works

    def run(self, work: str, images: Sequence[np.ndarray]) -> List[Any]:
        if work == "table":  # one table at a time: SLANet's decoder is a loop over tokens
            return [self.structurer.predict_image(_with_margin(image), self.structurer.params) for image in images]
        return self.ocr.predict_batch(list(images))

    def answer(self, prompt: str, outputs: Mapping[str, Any]) -> Answer:
        return self.handlers[prompt].answer(outputs)

    def recognise(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> List[Answer]:
        """Many blocks at once, in-process: one ``run`` per kind of work, over every block that needs it."""
        needs = [self.works(prompt) for prompt in prompts]
        outputs: List[Dict[str, Any]] = [{} for _ in images]
        for work in dict.fromkeys(w for works in needs for w in works):
            chosen = [i for i, works in enumerate(needs) if work in works]
            for i, output in zip(chosen, self.run(work, [images[i] for i in chosen])):
                outputs[i][work] = output
        return [self.answer(prompt, output) for prompt, output in zip(prompts, outputs)]


def _lines(result: Mapping[str, Any]) -> str:
    """The block's text lines in reading order (the detector sorts them top to bottom, left to right)."""
    return "\n".join(result["rec_texts"])


def _with_margin(image: np.ndarray) -> np.ndarray:
    """The block with CROP_MARGIN pixels of its border's colour around it: SLANet reads spans better with
    some page around the table (table_recognition.CROP_MARGIN), and a layout block hugs the table."""
    ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    colour = np.atleast_1d(np.median(ring, axis=0)).tolist()
    return cv2.copyMakeBorder(image, *[CROP_MARGIN] * 4, cv2.BORDER_CONSTANT, value=colour)


def _table(outputs: Mapping[str, Any]) -> Answer:
    """SLANet's structure (of the block with its margin) filled with the block's OCR lines, as a ``<table>``."""
    ocr = outputs["ocr"]
    table = fill_table(outputs["table"], (-CROP_MARGIN, -CROP_MARGIN), ocr["rec_boxes"], ocr["rec_texts"])
    return Answer(_TABLE_TAGS.sub("", table["pred_html"]))


_TABLE_TAGS = re.compile(r"</?(?:html|body)>")
