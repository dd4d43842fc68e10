"""Page streams that survive bad pages, and stage parallelism over them.

``iter_pages`` is ``iter_inputs`` for long documents: a file or PDF page that cannot be read becomes a
``Page`` carrying the error, and the stream goes on with the next one.

``run_stages`` pushes items through a list of per-item functions. With ``use_threads`` the source and each
stage run in their own thread, connected by bounded queues: rendering (PDFium), layout and recognition
(ONNX Runtime, OpenVINO) spend their time in native code that releases the GIL, so consecutive pages
overlap in different stages, while the queue bounds cap how many pages are in memory at once. One thread
per stage, first in first out, keeps the results in input order. An item whose stage raised skips the
later stages and comes out as an ``Outcome`` with the error, so one bad page never stops a document.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..io import count_inputs, iter_inputs
from ..io.inputs import PageRange, _expand_path

Stage = Callable[[Any], Any]
_POLL_S = 0.1  # how often a blocked thread looks whether the consumer has gone


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


@dataclass(frozen=True, eq=False)
class Outcome:
    """An item after the stages: ``value`` is the last stage's output, or, with ``error``, the input of the
    stage that raised it."""

    value: Any
    error: Optional[Exception] = None


@dataclass(frozen=True)
class _End:
    error: Optional[BaseException]  # why the source stopped early, if it did


def run_stages(
    source: Iterable[Any], stages: Sequence[Stage], use_threads: bool = True, queue_size: int = 2
) -> Iterator[Outcome]:
    """Each item of ``source`` through every stage, in input order. An error raised by the source itself
    (not by a stage) ends the stream: it is raised to the consumer after the items before it."""
    if queue_size < 1:
        raise ValueError(f"queue_size must be at least 1, got {queue_size}")
    if not use_threads:
        return (_through(stages, Outcome(item)) for item in source)
    return _threaded(source, stages, queue_size)


def _apply(stage: Stage, outcome: Outcome) -> Outcome:
    if outcome.error is not None:
        return outcome
    try:
        return Outcome(stage(outcome.value))
    except Exception as err:  # the item failed, not the pipeline: report it and carry on
        return Outcome(outcome.value, err)


def _through(stages: Sequence[Stage], outcome: Outcome) -> Outcome:
    for stage in stages:
        outcome = _apply(stage, outcome)
    return outcome


def _put(box: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            box.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            pass
    return False


def _get(box: queue.Queue, stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return box.get(timeout=_POLL_S)
        except queue.Empty:
            pass
    return None


def _threaded(source: Iterable[Any], stages: Sequence[Stage], queue_size: int) -> Iterator[Outcome]:
    stop = threading.Event()
    boxes: List[queue.Queue] = [queue.Queue(queue_size) for _ in range(len(stages) + 1)]

    def feed() -> None:
        items = iter(source)
        try:
            for item in items:
                if not _put(boxes[0], Outcome(item), stop):
                    return
        except BaseException as err:  # handed to the consumer, which raises it
            _put(boxes[0], _End(err), stop)
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator left early (consumer gone) frees its files here, in its own thread
        _put(boxes[0], _End(None), stop)

    def work(stage: Stage, inbox: queue.Queue, outbox: queue.Queue) -> None:
        while (got := _get(inbox, stop)) is not None:
            if isinstance(got, _End):
                _put(outbox, got, stop)
                return
            try:
                done = _apply(stage, got)
            except BaseException as err:  # not an item's failure (e.g. SystemExit): end the stream with it
                _put(outbox, _End(err), stop)
                return
            if not _put(outbox, done, stop):
                return

    threads = [threading.Thread(target=feed, name="hpinfer-source", daemon=True)]
    threads += [
        threading.Thread(target=work, args=(stage, boxes[i], boxes[i + 1]), name=f"hpinfer-stage-{i}", daemon=True)
        for i, stage in enumerate(stages)
    ]
    for thread in threads:
        thread.start()
    try:
        while True:
            got = boxes[-1].get()
            if isinstance(got, _End):
                if got.error is not None:
                    raise got.error
                return
            yield got
    finally:
        stop.set()
        for thread in threads:
            thread.join()
