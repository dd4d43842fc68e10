"""Admission (bounded in-flight requests, draining), the memory budget of what requests and jobs in flight
hold (bodies, files, pages), and turning a request's file into a stream of bounded pages.

A request's ``file`` is base64 or an http(s) URL, never a server path. Its bytes go through
``hpinfer.io`` (content sniffing, EXIF, PDF rendering) with the server's pixel limit, after a cheap
page count so that an over-long PDF is refused before anything is rendered; pages are then decoded or
rendered one at a time, each only once the ``PixelBudget`` has room for it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ctypes
import threading
import time
from collections import deque
from typing import Any, AsyncIterator, Callable, Deque, Dict, Hashable, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..io.inputs import InputItem, count_inputs, iter_inputs
from .settings import BYTES_PER_PIXEL

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


PDF_SCALE = 2.0  # 144 dpi, as hpinfer.io renders for the CLI and Python
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # glibc's mallopt parameters


def return_freed_pages() -> None:
    """Call before the models load. glibc only: allocations above 1 MiB (page images, detector inputs) come from
    and go back to the OS, and worker threads share a few heaps. By default glibc raises that threshold up to
    32 MiB after freeing a large block, so later pages land on a heap, and each thread that decodes or encodes
    gets a heap of its own whose high-water mark stays: the server's memory would not come back after a burst.
    ONNX Runtime: the arenas of models whose input size varies give back each run's memory."""
    from ..runtime.engines.onnxruntime import return_memory_after_runs

    return_memory_after_runs()
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass  # not glibc


class Overloaded(Exception):
    """No room in the budget within the request's queue wait: answered 503 + Retry-After."""


INTERACTIVE, BATCH = 0, 1  # budget priorities: requests and interactive jobs, then batch jobs


class PixelBudget:
    """What requests and jobs in flight hold, in page pixels (one pixel stands for ``BYTES_PER_PIXEL`` bytes:
    bodies and files count as ``bytes_cost``). A reservation waits until it fits, first come first served
    within its priority, interactive before batch. A reservation also fits when everything held is its
    ``owner``'s (a request, a job): one request alone always runs, so a page larger than the whole budget
    runs by itself, and a request's own body never keeps its pages waiting."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._owned: Dict[Hashable, int] = {}
        self._waiting: Tuple[Deque[Tuple[int, Hashable, asyncio.Future]], ...] = (deque(), deque())

    async def acquire(self, pixels: int, timeout: Optional[float] = None, priority: int = INTERACTIVE,
                      owner: Hashable = None) -> int:
        """Waits for room (at most ``timeout`` seconds, then ``Overloaded``); returns what was reserved (give it
        to ``release`` or ``resize`` with the same ``owner``)."""
        pixels = min(pixels, self.capacity)
        if not any(self._waiting[: priority + 1]) and self._fits(pixels, owner):
            self._take(pixels, owner)
            return pixels
        future = asyncio.get_running_loop().create_future()
        entry = (pixels, owner, future)
        queue = self._waiting[priority]
        queue.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except (asyncio.CancelledError, asyncio.TimeoutError) as err:
            if future.done() and not future.cancelled():
                self.release(pixels, owner)  # granted just as the request gave up
            else:
                future.cancel()
                if entry in queue:
                    queue.remove(entry)
                    self._grant()
            if isinstance(err, asyncio.TimeoutError):
                raise Overloaded(f"server busy: no memory budget (--max_inflight_pixels) freed up within "
                                 f"{timeout:g} s (--max_queue_wait_s); retry later") from None
            raise
        return pixels

    @contextlib.asynccontextmanager
    async def held(self, pixels: int, timeout: Optional[float] = None, priority: int = INTERACTIVE,
                   owner: Hashable = None) -> AsyncIterator[None]:
        reserved = await self.acquire(pixels, timeout, priority, owner)
        try:
            yield
        finally:
            self.release(reserved, owner)

    def resize(self, reserved: int, pixels: int, owner: Hashable = None) -> int:
        """Turns a reservation made on a guess into the real estimate (smaller or not)."""
        pixels = min(pixels, self.capacity)
        self._take(pixels - reserved, owner)
        self._grant()
        return pixels

    def release(self, pixels: int, owner: Hashable = None) -> None:
        self._take(-pixels, owner)
        self._grant()

    def _fits(self, pixels: int, owner: Hashable) -> bool:
        return self.used + pixels <= self.capacity or self.used == self._owned.get(owner, 0)

    def _take(self, pixels: int, owner: Hashable) -> None:
        self.used += pixels
        if owner is not None:
            left = self._owned.get(owner, 0) + pixels
            if left:
                self._owned[owner] = left
            else:
                del self._owned[owner]

    def _grant(self) -> None:
        for queue in self._waiting:
            while queue and self._fits(queue[0][0], queue[0][1]):
                pixels, owner, future = queue.popleft()
                if not future.done():
                    self._take(pixels, owner)
                    future.set_result(None)
            if queue:
                return  # batch waits while an interactive reservation does


# A request's body is held twice while the request runs: the bytes received and the JSON string parsed from
# them (the request model keeps that string); the decoded file is counted on its own.
BODY_COPIES = 2


def bytes_cost(size: int, copies: int = 1) -> int:
    """``copies`` x ``size`` bytes held, in the budget's unit."""
    return -(-size * copies // BYTES_PER_PIXEL)


async def read_page(budget: PixelBudget, read: Callable[[], Optional[InputItem]], max_pixels: int,
                    det_side: Optional[int], timeout: Optional[float] = None, priority: int = INTERACTIVE,
                    owner: Hashable = None) -> Tuple[Optional[InputItem], int]:
    """``read()`` (the next page, in a worker thread) once the budget has room for a page as large as allowed,
    and what stays reserved for it: the page's real cost (``page_cost``), or nothing when there was no page."""
    reserved = await budget.acquire(max_pixels + (det_side or 0) ** 2, timeout, priority, owner)
    try:
        item = await asyncio.to_thread(read)
    except BaseException:
        budget.release(reserved, owner)
        raise
    if item is None:
        budget.release(reserved, owner)
        return None, 0
    height, width = item.image.shape[:2]
    return item, budget.resize(reserved, page_cost(height, width, det_side), owner)


def page_cost(height: int, width: int, det_side: Optional[int]) -> int:
    """A page's pixels plus, for pipelines that detect text, its detector input at its worst: the longer side at
    the cap ``det_side``, the page's aspect kept (the memory bound that the budget counts in)."""
    cost = height * width
    if det_side:
        long_side, short_side = max(height, width), min(height, width)
        cost += det_side * max(32, min(det_side, det_side * short_side // long_side))
    return cost


def det_clamp(height: int, width: int, limit_side_len: Optional[int], limit_type: Optional[str], cap: int) -> Optional[int]:
    """The longer side a request's ``textDetLimitSideLen``/``textDetLimitType`` would give this page's detector
    input when that exceeds ``cap`` (the server then uses ``cap``), else None. Only for what the request asks:
    the pipelines' defaults stay under the cap."""
    if limit_side_len is None:
        return None
    long_side, short_side = max(height, width), min(height, width)
    if (limit_type or "min") == "min":
        ratio = limit_side_len / short_side if short_side < limit_side_len else 1.0
    else:
        ratio = limit_side_len / long_side if long_side > limit_side_len else 1.0
    wanted = round(long_side * ratio)
    return wanted if wanted > cap else None


class PageStream:
    """A request's pages, decoded or rendered one per ``next_page`` call (call it in a worker thread), with
    PaddleX's ``dataInfo`` built as they come. ``fileType`` (0 PDF, 1 image, None: whatever the content is) is
    checked on the first page; errors name the request field."""

    def __init__(self, data: bytes, field: str, file_type: Optional[int], max_pixels: int, max_pdf_pages: int,
                 max_render_side: Optional[int] = None):
        self.field, self.file_type = field, file_type
        with _named(field):
            self.count = _count(data, max_pdf_pages)
            self._items: Iterator[InputItem] = iter_inputs(
                data, pdf_scale=PDF_SCALE, max_pixels=max_pixels, max_render_side=max_render_side)
        self.sizes: List[Dict[str, int]] = []
        self.is_pdf = False
        self._lock = threading.Lock()  # a request cut short closes the stream while a thread may still render

    def next_page(self) -> Optional[InputItem]:
        with self._lock, _named(self.field):
            item = next(self._items, None)
        if item is None:
            return None
        if not self.sizes:
            self.is_pdf = item.page_index is not None
            _check_type(self.is_pdf, self.file_type, self.field)
        self.sizes.append({"width": item.image.shape[1], "height": item.image.shape[0]})
        return item

    def close(self) -> None:
        with self._lock:
            close = getattr(self._items, "close", None)
            if close:
                close()  # a PDF left half-read is closed now, not at garbage collection

    @property
    def data_info(self) -> Dict[str, Any]:
        if self.is_pdf:
            return {"numPages": len(self.sizes), "pages": self.sizes, "type": "pdf"}
        return {**self.sizes[0], "type": "image"}



def count_pages(data: bytes, field: str, file_type: Optional[int], max_pixels: int, max_pdf_pages: int) -> Tuple[bool, int]:
    """``(is_pdf, pages)`` with the same checks as ``PageStream``, reading only the first page (for jobs, which
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


def read_image(data: bytes, field: str, max_pixels: int) -> np.ndarray:
    """One image (not a PDF) from a request's bytes, BGR; errors name the field."""
    stream = PageStream(data, field, 1, max_pixels, 1)
    try:
        return stream.next_page().image
    finally:
        stream.close()
