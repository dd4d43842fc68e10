"""What a recogniser does with one layout block: the task prompts PaddleOCR-VL sends, which block label gets
which prompt, and hpinfer's own ("native") recogniser that answers them with the OCR models.

PaddleOCR-VL asks its vision-language model one question per block, the prompt naming the task. The native
recogniser answers the prompts it has a model for and refuses the others with ``UnsupportedPrompt`` (which
names the prompt), so a client can tell "not served here" from a failure. ``HANDLERS`` is the one table to
extend when a model arrives (a table-structure model, a seal recogniser): prompt → how to answer it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..device import Device
from ..errors import InputError
from .config import PipelineSettings, resolve_pipeline, sub_settings
from .layout_parsing import OCR_MODULES
from .ocr import OCRPipeline
from .sub_modules import PipelineBase

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


class NativeRecogniser(PipelineBase):
    """Answers block prompts with the OCR models of a pipeline YAML (``source``: a bundled name or a path).

    ``engine_key(prompt)`` names the engine work a prompt needs, so that a server can batch blocks of
    different requests (and prompts) that need the same work; ``run(key, images)`` does it for many blocks at
    once (every text line of every block through the recogniser together); ``answer(prompt, work)`` turns one
    block's output into the reply."""

    def __init__(self, source: "str | PipelineSettings" = "PaddleOCR-VL", device: "str | Device | None" = None):
        settings = source if isinstance(source, PipelineSettings) else resolve_pipeline(source)
        self.ocr = OCRPipeline(ocr_settings(settings), device)
        self.handlers: Dict[str, Callable[[Dict[str, Any]], Answer]] = {
            OCR: lambda res: Answer(_lines(res)),
            TABLE: lambda res: Answer(_lines(res), TABLE_NOTE),
        }

    @property
    def predictors(self) -> List[Any]:
        return self.ocr.predictors

    @property
    def timer(self):
        return self.ocr.timer

    @property
    def prompts(self) -> List[str]:
        return list(self.handlers)

    def engine_key(self, prompt: str) -> str:
        if prompt not in self.handlers:
            if prompt in PROMPTS:
                raise UnsupportedPrompt(
                    f"prompt {prompt!r} is not served by the native backend (no model for it); "
                    f"served prompts: {', '.join(self.handlers)}"
                )
            raise InputError(f"unknown prompt {prompt!r}; PaddleOCR-VL's prompts: {', '.join(PROMPTS)}")
        return "ocr"

    def run(self, key: str, images: Sequence[np.ndarray]) -> List[Dict[str, Any]]:
        return self.ocr.predict_batch(list(images))

    def answer(self, prompt: str, work: Dict[str, Any]) -> Answer:
        return self.handlers[prompt](work)

    def recognise(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> List[Answer]:
        """Many blocks at once, in-process: one ``run`` per engine key."""
        keys = [self.engine_key(prompt) for prompt in prompts]
        answers: List[Optional[Answer]] = [None] * len(images)
        for key in dict.fromkeys(keys):
            chosen = [i for i, k in enumerate(keys) if k == key]
            for i, work in zip(chosen, self.run(key, [images[i] for i in chosen])):
                answers[i] = self.answer(prompts[i], work)
        return answers  # type: ignore[return-value]


def _lines(result: Dict[str, Any]) -> str:
    """The block's text lines in reading order (the detector sorts them top to bottom, left to right)."""
    return "\n".join(result["rec_texts"])
