"""Stage parallelism over page streams (``hpinfer.io.pages``).

``run_stages`` pushes items through a list of per-item functions. With ``use_threads`` the source and each
stage run in their own thread, connected by bounded queues: rendering (PDFium), layout and recognition
(ONNX Runtime, OpenVINO) spend their time in native code that releases the GIL, so consecutive pages
overlap in different stages, while the queue bounds cap how many pages are in memory at once. One thread
per stage, first in first out, keeps the results in input order. An item whose stage raised skips the
later stages and comes out as an ``Outcome`` with the error, so one bad page never stops a document.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence

Stage = Callable[[Any], Any]
_POLL_S = 0.1  # how often a blocked thread looks whether the consumer has gone


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
