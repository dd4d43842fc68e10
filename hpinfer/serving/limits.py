"""Admission (bounded in-flight requests, draining) and turning a request's file into bounded pages.

A request's ``file`` is base64 or an http(s) URL, never a server path. Its bytes go through
``hpinfer.io`` (content sniffing, EXIF, PDF rendering) with the server's pixel limit, after a cheap
page count so that an over-long PDF is refused before anything is rendered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..io.inputs import count_inputs, iter_inputs

_IO_NAME = "input (bytes): "  # how hpinfer.io names a bytes input in its messages


class Admission:
    """Counts requests admitted to the inference endpoint: refuses above capacity, and all while draining."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.active = 0
        self.draining = False
        self.left_at = 0.0  # when the last request left (monotonic seconds)
        self._idle = asyncio.Event()
        self._idle.set()

    def refusal(self) -> Optional[str]:
        """Why a new request can't be admitted now, or None."""
        if self.draining:
            return "server is shutting down; retry on another instance"
        if self.active >= self.capacity:
            return f"server busy: {self.active} requests in flight (limit {self.capacity}); retry later"
        return None

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        self.left_at = time.monotonic()
        if not self.active:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True once nothing is in flight; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


def is_url(text: str) -> bool:
    return text[:8].lower().startswith(("http://", "https://"))


def decode_base64(text: str, field: str) -> bytes:
    """Strict base64; MIME-style line breaks are tolerated, anything else is an error, not silently dropped."""
    if "://" in text[:16]:
        raise InputError(f"{field}: only http:// and https:// URLs are fetched")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{field}: neither an http(s) URL nor valid base64") from None


@dataclass(frozen=True)
class Pages:
    images: List[np.ndarray]  # BGR, one per image or rendered PDF page
    page_indices: List[Optional[int]]  # 0-based for PDF pages, None for an image
    data_info: Dict[str, Any]  # PaddleX's dataInfo


def read_pages(data: bytes, field: str, file_type: Optional[int], max_pixels: int, max_pdf_pages: int) -> Pages:
    """Bytes → pages, checking PaddleX's ``fileType`` (0 PDF, 1 image, None: whatever the content is)."""
    with _named(field):
        _count(data, max_pdf_pages)
        items = list(iter_inputs(data, max_pixels=max_pixels))
    is_pdf = items[0].page_index is not None
    _check_type(is_pdf, file_type, field)
    images = [item.image for item in items]
    indices = [item.page_index for item in items]
    sizes = [{"width": image.shape[1], "height": image.shape[0]} for image in images]
    if is_pdf:
        return Pages(images, indices, {"numPages": len(images), "pages": sizes, "type": "pdf"})
    return Pages(images, indices, {**sizes[0], "type": "image"})


def count_pages(data: bytes, field: str, file_type: Optional[int], max_pixels: int, max_pdf_pages: int) -> Tuple[bool, int]:
    """``(is_pdf, pages)`` with the same checks as ``read_pages``, reading only the first page (for jobs, which
    read the rest one page at a time)."""
    with _named(field):
        count = _count(data, max_pdf_pages)
        is_pdf = next(iter_inputs(data, page_range=(1, 1), max_pixels=max_pixels)).page_index is not None
    _check_type(is_pdf, file_type, field)
    return is_pdf, count


def _count(data: bytes, max_pdf_pages: int) -> int:
    count = count_inputs(data)
    if count > max_pdf_pages:
        raise InputError(f"{_IO_NAME}PDF has {count} pages, above the limit of {max_pdf_pages}")
    return count


@contextlib.contextmanager
def _named(field: str) -> Iterator[None]:
    """hpinfer.io's errors about the bytes, told about the request field instead."""
    try:
        yield
    except InputError as err:
        raise InputError(f"{field}: {str(err).removeprefix(_IO_NAME)}") from None


def _check_type(is_pdf: bool, file_type: Optional[int], field: str) -> None:
    """PaddleX's ``fileType``: 0 PDF, 1 image, None: whatever the content is."""
    if file_type is not None and is_pdf != (file_type == 0):
        found, wanted = ("an image", "a PDF (fileType 0)") if file_type == 0 else ("a PDF", "an image")
        raise InputError(f"{field}: is {found} but {wanted} was expected")
