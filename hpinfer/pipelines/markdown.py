"""Markdown from layout_parsing results: one page, or a whole document written page after page.

Blocks come in reading order. Titles become headings, text and captions paragraphs, one per line of a
block's text (a caption stays where the reading order puts it, next to its table or figure); a paragraph
that starts with a bullet (•, ·, ▪, ●, -, –, *) becomes a list item, a table recognised as HTML is written as
its ``<table>``, and other tables, figures, equations and seals (followed by a seal's text) are cropped from the page into ``imgs/`` beside the
Markdown file and linked. Page headers and footers are
left out of the running text (they stay in the JSON). Pages are separated by a thematic break, and a page
that failed leaves an HTML comment saying why. ``MarkdownDocument`` writes each page as it is added, so
a long PDF never has to be held in memory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, TextIO

import cv2
import numpy as np

IMAGE_LABELS = frozenset({"figure", "table", "equation", "seal"})
HEADING_LABELS = frozenset({"title"})
FURNITURE_LABELS = frozenset({"header", "footer"})
PAGE_BREAK = "\n\n---\n\n"
IMAGE_DIR = "imgs"

_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")
_MARKER = re.compile(r"^([#=+-]+)(?=\s|$)")  # would start a heading, a rule or a bullet list
_NUMBERED = re.compile(r"^(\d+)([.)])(?=\s|$)")  # would start a numbered list
_BULLET = re.compile(r"^[•·▪●◦■\-–*]\s+")  # an OCR'd bullet: the paragraph is a list item


def escape(text: str) -> str:
    """OCR text as literal Markdown: one line, no emphasis, links, HTML, tables or lists by accident."""
    text = _SPECIAL.sub(r"\\\1", " ".join(text.split()))
    return _NUMBERED.sub(r"\1\\\2", _MARKER.sub(r"\\\1", text))


def as_image(block: Mapping[str, Any]) -> bool:
    """Whether the block shows in Markdown as a cropped picture (a table recognised as HTML shows as HTML)."""
    return block["label"] in IMAGE_LABELS and not block.get("html")


def table_html(html: str) -> str:
    """The ``<table>`` element of a recognised table's HTML page (Markdown renderers show it as a table)."""
    start, end = html.find("<table>"), html.rfind("</table>")
    return html[start : end + len("</table>")] if start >= 0 and end >= 0 else html


def page_markdown(result: Mapping[str, Any], image_names: Mapping[int, str]) -> str:
    """One page's Markdown; ``image_names`` maps an image block's ``order`` to its file, relative to the Markdown
    (a block without one, e.g. of zero size, is left out)."""
    if result.get("status") == "error":
        where = f"{result.get('input_path') or 'input'}" + (
            f", page {result['page_index'] + 1}" if result.get("page_index") is not None else ""
        )
        return f"<!-- {_comment(where)}: not processed: {_comment(result['error'])} -->"
    parts: List[str] = []
    for block in result["blocks"]:
        label = block["label"]
        if block.get("html"):
            parts.append(table_html(block["html"]))
        elif label in IMAGE_LABELS:
            if block["order"] in image_names:
                parts.append(f"![{label}]({image_names[block['order']]})")
            if label == "seal" and block["text"].strip():  # a seal's lines read, after its picture
                parts.append(escape(" ".join(block["text"].split("\n"))))
        elif label not in FURNITURE_LABELS:
            paragraphs = [p for p in block["text"].split("\n") if p.strip()]
            if label in HEADING_LABELS and paragraphs:
                parts.append("## " + escape(" ".join(paragraphs)))
            else:
                parts.extend(_paragraph(p) for p in paragraphs)
    return "\n\n".join(parts)


def _paragraph(text: str) -> str:
    bullet = _BULLET.match(text.strip())
    return "- " + escape(text.strip()[bullet.end():]) if bullet else escape(text)


def _comment(text: str) -> str:
    """Safe inside an HTML comment, which "--" would end."""
    return " ".join(str(text).replace("--", "- -").split())


def crop(image: np.ndarray, box: List[int], padding: int = 0) -> np.ndarray:
    """The box (x1, y1, x2, y2) grown by ``padding`` and clipped to the image."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    return image[max(0, y1 - padding) : min(h, y2 + padding), max(0, x1 - padding) : min(w, x2 + padding)]


class MarkdownDocument:
    """``path``.md plus its ``imgs/`` folder; ``add`` one result (page) at a time, in order, then ``close``."""

    def __init__(self, path: "str | Path"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.image_dir = self.path.parent / IMAGE_DIR
        self.pages = 0
        self._file: Optional[TextIO] = self.path.open("w", encoding="utf-8")

    def add(self, result: Any) -> None:
        """Write the page, and crops of its image blocks from ``result.image`` (the upright page)."""
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        self.pages += 1
        names: Dict[int, str] = {}
        # A result with its own Markdown (PaddleOCR-VL's) names its picture blocks and writes its page itself.
        pictures = result.image_blocks() if hasattr(result, "image_blocks") else [
            (b["order"], b["label"], b["box"]) for b in result.get("blocks", []) if as_image(b)]
        for key, label, box in pictures:
            pixels = crop(result.image, box) if result.image is not None else None
            if pixels is not None and pixels.size:
                name = f"{self.path.stem}_{self.pages}_{key}_{label}.png"
                self._save(pixels, self.image_dir / name)
                names[key] = f"{IMAGE_DIR}/{name}"
        if self.pages > 1:
            self._file.write(PAGE_BREAK)
        self._file.write(result.markdown(names) if hasattr(result, "markdown") else page_markdown(result, names))

    @staticmethod
    def _save(image: np.ndarray, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), image):
            raise OSError(f"cannot write {target}")

    def close(self) -> None:
        if self._file is not None:
            self._file.write("\n")
            self._file.close()
            self._file = None

    def __enter__(self) -> "MarkdownDocument":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
