"""Page streams that survive bad pages, and the one contract every ``predict_iter`` keeps about them.

``iter_pages`` is ``iter_inputs`` for long documents: a file or PDF page that cannot be read becomes a
``Page`` carrying the error, and the stream goes on with the next one. ``readable_pages`` applies a
``predict_iter``'s ``on_error``: "raise" (the default of OCR and single models: the first unreadable page
raises its ``InputError``) or "result" (that page comes out as a ``FailedPage`` result and the rest still runs;
what the CLI asks for, and layout_parsing's default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Optional

import numpy as np

from ..errors import ConfigError, InputError
from ..results import Result
from .inputs import PageRange, _expand_path, count_inputs, iter_inputs

OnError = Literal["raise", "result"]
ON_ERROR = ("raise", "result")


@dataclass(frozen=True, eq=False)
class Page:
    """One image or PDF page; ``image`` is None when it could not be read, and ``error`` says why."""

    input_path: Optional[str]
    page_index: Optional[int]
    image: Optional[np.ndarray]
    error: Optional[str] = None


def iter_pages(inputs: Any, page_range: Optional[PageRange] = None) -> Iterator[Page]:
    """Pages of every input, in ``iter_inputs`` order; a directory is read file by file and a PDF file
    page by page, so an unreadable file or page is reported where it is and the rest still comes.
    (A PDF given as bytes or URL is read in one go: a bad page there ends that input.)"""
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if not items:
        raise InputError("no inputs given")
    for item in items:
        path = os.fspath(item) if isinstance(item, (str, os.PathLike)) else None
        if path is None or "://" in path:
            yield from _pages_of(item, page_range, path)
            continue
        try:
            files = _expand_path(path)
        except InputError as err:
            yield Page(path, None, None, str(err))
            continue
        for file in files:
            if file.lower().endswith(".pdf"):
                yield from _pdf_pages(file, page_range)
            else:
                yield from _pages_of(file, page_range, file)


def _pages_of(item: Any, page_range: Optional[PageRange], name: Optional[str]) -> Iterator[Page]:
    try:
        for got in iter_inputs(item, page_range=page_range):
            yield Page(got.input_path, got.page_index, got.image)
    except InputError as err:
        yield Page(name, None, None, str(err))


def _pdf_pages(path: str, page_range: Optional[PageRange]) -> Iterator[Page]:
    """After a page fails, reading resumes at the next one (the PDF is reopened there)."""
    try:
        count = count_inputs(path, page_range)
    except InputError as err:
        yield Page(path, None, None, str(err))
        return
    first = page_range[0] if page_range else 1
    last = first + count - 1
    while first <= last:
        try:
            for got in iter_inputs(path, page_range=(first, last)):
                yield Page(got.input_path, got.page_index, got.image)
                first = got.page_index + 2
        except InputError as err:
            yield Page(path, first - 1, None, str(err))
            first += 1


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")


def readable_pages(inputs: Any, page_range: Optional[PageRange] = None, on_error: OnError = "raise") -> Iterator[Page]:
    """``iter_pages`` under ``on_error``: "raise" raises at the first page that cannot be read, "result" lets it
    through (``page.image`` None; make it a ``failed_page``)."""
    check_on_error(on_error)
    for page in iter_pages(inputs, page_range):
        if page.error is not None and on_error == "raise":
            raise InputError(page.error)
        yield page


class FailedPage(Result):
    """The result of a page that could not be read (``on_error="result"``): where it was and why."""

    def __init__(self, page: Page):
        super().__init__({"input_path": page.input_path, "page_index": page.page_index, "error": page.error}, None, _no_picture, "error")


def _no_picture(result: Result) -> np.ndarray:
    raise InputError(f"{result['input_path'] or 'input'}: could not be read, so there is no picture: {result['error']}")
