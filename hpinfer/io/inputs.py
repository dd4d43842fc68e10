"""Turn user inputs (paths, directories, URLs, PDFs, bytes, arrays) into a lazy stream of BGR images.

Everything is streamed: one image is decoded, or one PDF page rendered, per step, so a 300-page PDF
or a large directory never sits in memory at once. Every failure is an ``InputError`` naming the input.
"""

from __future__ import annotations

import http.client
import os
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import pypdfium2 as pdfium
from PIL import Image

from ..errors import ConfigError, InputError
from .images import DEFAULT_MAX_PIXELS, decode_image, pil_to_bgr, to_bgr

SUPPORTED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pdf")
_SUPPORTED_TEXT = ", ".join(ext[1:] for ext in SUPPORTED_EXTENSIONS)
_ACCEPTED_TYPES = "str or pathlib.Path (file, directory, http(s) URL), numpy array, bytes or PIL.Image"
_CHUNK = 1 << 20

# PDFium is not thread-safe, not even across different documents: serialize every call into it.
# Reentrant because a dropped generator's finally (closing its PDF) may run from GC inside a locked section.
_PDFIUM_LOCK = threading.RLock()

PageRange = Tuple[int, int]


@dataclass(frozen=True, eq=False)  # eq=False: comparing/hashing ndarray fields would raise
class InputItem:
    image: np.ndarray  # HxWx3 BGR uint8, contiguous
    input_path: Optional[str]  # file path as given, or URL; None for arrays/bytes
    page_index: Optional[int]  # 0-based PDF page index; None for plain images
    render_scale: Optional[float] = None  # PDF pages: the scale rendered at (below pdf_scale where max_render_side capped it)


class _Source(NamedTuple):
    """One input after directory expansion, not yet read: kind is url, pdf, image or decoded."""

    kind: str
    payload: Any  # path str / URL / bytes / ndarray / PIL.Image
    name: str  # for error messages
    input_path: Optional[str]


def parse_page_range(text: str) -> PageRange:
    """Parse a user-typed 1-based inclusive range: "3" or "2-5"."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not match:
        raise ConfigError(f"page_range {text!r}: expected a page number or a range like 2-5")
    first = int(match.group(1))
    page_range = (first, int(match.group(2) or first))
    _check_page_range(page_range)
    return page_range


def iter_inputs(
    inputs: Any,
    *,
    page_range: Optional[PageRange] = None,
    pdf_scale: float = 2.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    url_timeout: float = 30.0,
    max_download_bytes: int = 200 * 2**20,
    max_render_side: Optional[int] = None,
) -> Iterator[InputItem]:
    """Yield one InputItem per image / PDF page. Options are checked now; inputs lazily, in order.
    ``max_render_side``: PDF pages render at ``pdf_scale`` but at most this long on their longer side."""
    _check_page_range(page_range)
    if not pdf_scale > 0:
        raise ConfigError(f"pdf_scale {pdf_scale!r}: must be > 0")
    render = _Render(pdf_scale, max_pixels, max_render_side)
    return _iter(inputs, page_range, render, url_timeout, max_download_bytes)


def count_inputs(inputs: Any, page_range: Optional[PageRange] = None) -> Optional[int]:
    """How many items iter_inputs will yield (for progress bars); None when a URL makes it unknowable.

    Cheap: lists directories and opens PDFs to count pages, never decodes images.
    """
    _check_page_range(page_range)
    total = 0
    for source in _sources(inputs):
        if source.kind == "url":
            return None
        if source.kind == "pdf":
            with _PDFIUM_LOCK:
                pdf = _open_pdf(source.payload, source.name)
                try:
                    total += len(_page_indices(len(pdf), page_range, source.name))
                finally:
                    pdf.close()
        else:
            total += 1
    return total


class _Render(NamedTuple):
    scale: float
    max_pixels: int
    max_side: Optional[int]


def _iter(
    inputs: Any,
    page_range: Optional[PageRange],
    render: _Render,
    url_timeout: float,
    max_download_bytes: int,
) -> Iterator[InputItem]:
    for source in _sources(inputs):
        if source.kind == "url":
            data = _download(source.payload, url_timeout, max_download_bytes)
            source = _bytes_source(data, source.payload, source.payload)
        if source.kind == "pdf":
            yield from _pdf_pages(source, page_range, render)
        elif source.kind == "image":
            data = source.payload
            if isinstance(data, str):
                data = _read_file(data)
            yield InputItem(decode_image(data, source.name, render.max_pixels), source.input_path, None)
        else:
            yield InputItem(_decoded_to_bgr(source.payload, source.name), None, None)


def _sources(inputs: Any) -> Iterator[_Source]:
    """Expand the inputs (and directories) into sources, validating paths but reading nothing."""
    items: List[Any] = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if not items:
        raise InputError("no inputs given")
    for index, item in enumerate(items):
        label = f"input {index}" if isinstance(inputs, (list, tuple)) else "input"
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if isinstance(item, str):
            if "://" in item:
                if not re.match(r"https?://", item, re.IGNORECASE):
                    raise InputError(f"{item}: only http:// and https:// URLs are supported")
                yield _Source("url", item, item, item)
            else:
                for path in _expand_path(item):
                    kind = "pdf" if path.lower().endswith(".pdf") else "image"
                    yield _Source(kind, path, path, path)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            yield _bytes_source(bytes(item), f"{label} (bytes)", None)
        elif isinstance(item, (np.ndarray, Image.Image)):
            yield _Source("decoded", item, f"{label} ({type(item).__name__})", None)
        else:
            raise InputError(f"{label}: unsupported input type {type(item).__name__} (accepted: {_ACCEPTED_TYPES})")


def _expand_path(path: str) -> List[str]:
    """A file gives itself; a directory its supported files, non-recursive, sorted by name."""
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as err:
            raise InputError(f"{path}: cannot list directory ({err.strerror or err})") from None
        files = [
            os.path.join(path, name)
            for name in names
            if not name.startswith(".")  # skip hidden files such as macOS "._x.jpg" resource forks
            and os.path.splitext(name)[1].lower() in SUPPORTED_EXTENSIONS
            and os.path.isfile(os.path.join(path, name))
        ]
        if not files:
            raise InputError(f"{path}: directory contains no supported files ({_SUPPORTED_TEXT})")
        return files
    if not os.path.exists(path):
        raise InputError(f"{path}: does not exist")
    if not os.path.isfile(path):
        raise InputError(f"{path}: not a regular file or directory")
    extension = os.path.splitext(path)[1].lower()
    if extension not in SUPPORTED_EXTENSIONS:
        shown = repr(extension) if extension else "(no extension)"
        raise InputError(f"{path}: unsupported file type {shown} (supported: {_SUPPORTED_TEXT})")
    return [path]


def _bytes_source(data: bytes, name: str, input_path: Optional[str]) -> _Source:
    """Content decides, not the name: PDFs may carry a few junk bytes before their header."""
    return _Source("pdf" if b"%PDF-" in data[:1024] else "image", data, name, input_path)


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as err:
        raise InputError(f"{path}: cannot read file ({err.strerror or err})") from None


def _decoded_to_bgr(image: Any, name: str) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return to_bgr(image, name)
    try:
        return pil_to_bgr(image)
    except (OSError, ValueError) as err:
        raise InputError(f"{name}: cannot convert image of mode {image.mode} ({err})") from None


def _download(url: str, timeout: float, max_bytes: int) -> bytes:
    """Read in chunks so an endless or huge response stops at max_bytes."""
    request = urllib.request.Request(url, headers={"User-Agent": "hpinfer"})
    chunks, total = [], 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise InputError(f"{url}: download is {int(length)} bytes, above the limit of {max_bytes}")
            while chunk := response.read(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise InputError(f"{url}: download exceeds the limit of {max_bytes} bytes")
                chunks.append(chunk)
    except urllib.error.HTTPError as err:
        err.close()
        raise InputError(f"{url}: download failed (HTTP {err.code} {err.reason})") from None
    except urllib.error.URLError as err:
        raise InputError(f"{url}: download failed ({err.reason})") from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise InputError(f"{url}: download failed ({err or type(err).__name__})") from None
    return b"".join(chunks)


def _check_page_range(page_range: Optional[PageRange]) -> None:
    if page_range is None:
        return
    if (
        not isinstance(page_range, (tuple, list))
        or len(page_range) != 2
        or not all(isinstance(page, int) for page in page_range)
        or not 1 <= page_range[0] <= page_range[1]
    ):
        raise ConfigError(
            f"page_range {page_range!r}: expected (first, last) with 1 <= first <= last, pages counted from 1"
        )


def _page_indices(count: int, page_range: Optional[PageRange], name: str) -> range:
    """0-based indices for a 1-based inclusive range, with last clamped to the page count."""
    if page_range is None:
        return range(count)
    first, last = page_range
    if first > count:
        raise InputError(f"{name}: page range {first}-{last} is beyond the last page ({count})")
    return range(first - 1, min(last, count))


def _open_pdf(source: Union[str, bytes], name: str) -> pdfium.PdfDocument:
    """Caller holds _PDFIUM_LOCK. PDFium refuses zero-page PDFs here too, and then leaves err_code stale."""
    try:
        return pdfium.PdfDocument(source)
    except pdfium.PdfiumError as err:
        if err.err_code == pdfium.raw.FPDF_ERR_PASSWORD:
            raise InputError(f"{name}: PDF is encrypted (password-protected)") from None
        raise InputError(f"{name}: corrupt, empty or unreadable PDF ({err})") from None
    except OSError as err:
        raise InputError(f"{name}: cannot read file ({err.strerror or err})") from None


def _pdf_pages(source: _Source, page_range: Optional[PageRange], render: _Render) -> Iterator[InputItem]:
    """Render one page per step; the document is closed even if the consumer stops early."""
    with _PDFIUM_LOCK:
        pdf = _open_pdf(source.payload, source.name)
    try:
        with _PDFIUM_LOCK:
            indices = _page_indices(len(pdf), page_range, source.name)
        for index in indices:
            with _PDFIUM_LOCK:
                image, scale = _render_page(pdf, index, render, source.name)
            yield InputItem(image, source.input_path, index, scale)
    finally:
        with _PDFIUM_LOCK:
            pdf.close()


def _render_page(pdf: pdfium.PdfDocument, index: int, render: _Render, name: str) -> Tuple[np.ndarray, float]:
    """Caller holds _PDFIUM_LOCK. Returns an owned BGR copy (the bitmap's buffer dies with it) and its scale."""
    try:
        page = pdf[index]
    except pdfium.PdfiumError as err:
        raise InputError(f"{name}: cannot load page {index + 1} ({err})") from None
    try:
        size = page.get_size()
        scale = render.scale
        if render.max_side and max(size) * scale > render.max_side:
            scale = render.max_side / max(size)
        width, height = (round(side * scale) for side in size)
        if width * height > render.max_pixels:
            raise InputError(
                f"{name}: page {index + 1} renders to {width}x{height} pixels, above the limit of {render.max_pixels}"
                " (lower pdf_scale)"
            )
        bitmap = page.render(scale=scale)  # PDFium's native BGR byte order
        try:
            return np.array(bitmap.to_numpy()[:, :, :3], dtype=np.uint8, order="C"), scale
        finally:
            bitmap.close()
    except pdfium.PdfiumError as err:
        raise InputError(f"{name}: cannot render page {index + 1} ({err})") from None
    finally:
        page.close()
