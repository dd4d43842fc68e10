"""Cross-request dynamic batching: pages of concurrent requests that share options go through the
pipeline's ``predict_batch`` together, in ``workers`` inference threads off the event loop (at most that
many batches in flight; 1: one call at a time).

When to run one is ``batching.next_batch``'s decision; this is the asyncio loop around it.

Two batches in flight overlap one batch's Python work (resizing, normalising, DB post-processing,
crops, CTC decoding) and its model calls with the other's, so the next batch's detection runs while
this one's recognition does; each batch is its own ``predict_batch`` call, so results don't change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Hashable, List, Optional, Sequence, Set

import numpy as np

from .batching import Waiting, next_batch

RunBatch = Callable[[List[np.ndarray], Dict[str, Any]], Sequence[Any]]
OnBatch = Callable[[int, float], None]  # images in the batch, seconds it took


@dataclass(eq=False)
class _Page:
    image: np.ndarray
    key: Hashable
    options: Dict[str, Any]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    def __init__(self, run: RunBatch, *, max_batch_size: int, max_delay_s: float, on_batch: Optional[OnBatch] = None,
                 workers: int = 1):
        self._run = run
        self._max_batch_size = max_batch_size
        self._max_delay_s = max_delay_s
        self._on_batch = on_batch
        self._workers = workers
        self._waiting: Deque[_Page] = deque()
        self._coming = 0  # open tickets: admitted requests that haven't submitted their pages yet
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="hpinfer-infer")
        self._task: Optional[asyncio.Task] = None
        self._running: Set[asyncio.Task] = set()  # batches in flight

    @property
    def queued(self) -> int:
        """Pages waiting for a batch."""
        return len(self._waiting)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="hpinfer-batcher")

    async def close(self) -> None:
        """Stops taking batches; one still running is not waited for. Pages still waiting get an error."""
        for task in (self._task, *self._running):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for page in self._waiting:
            if not page.future.done():
                page.future.set_exception(RuntimeError("server stopped before this request was processed"))
        self._waiting.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)  # a batch still running must not hold up shutdown

    def ticket(self) -> "Ticket":
        return Ticket(self)

    async def _submit(self, images: List[np.ndarray], options: Dict[str, Any]) -> List[Any]:
        loop = asyncio.get_running_loop()
        key = tuple(sorted(options.items()))
        pages = [_Page(image, key, options, loop.create_future()) for image in images]
        self._waiting.extend(pages)
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(page.future for page in pages)))
        finally:  # on timeout or error, pages not yet taken are skipped (their futures are cancelled)
            for page in pages:
                page.future.cancel()

    async def _loop(self) -> None:
        while True:
            self._drop_abandoned()
            decision = next_batch(
                [Waiting(page.key, page.arrived) for page in self._waiting], running=len(self._running),
                workers=self._workers, coming=self._coming, max_batch_size=self._max_batch_size,
                max_delay_s=self._max_delay_s, now=time.monotonic(),
            )
            if not decision.take:
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), decision.wait_s)
                continue
            if self._workers == 1:  # the loop itself waits for the batch: one in flight
                # (no name keeps the batch: its pages and results would stay in memory until the next one)
                await self._execute(self._take(decision.take))
                continue
            task = asyncio.get_running_loop().create_task(self._execute(self._take(decision.take)))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._wakeup.set()

    def _drop_abandoned(self) -> None:
        """Pages whose request gave up (timeout, error): their futures are cancelled."""
        if any(page.future.done() for page in self._waiting):
            self._waiting = deque(page for page in self._waiting if not page.future.done())

    def _take(self, indices: Sequence[int]) -> List[_Page]:
        chosen = set(indices)
        batch = [page for i, page in enumerate(self._waiting) if i in chosen]
        self._waiting = deque(page for i, page in enumerate(self._waiting) if i not in chosen)
        return batch

    async def _execute(self, batch: List[_Page]) -> None:
        if not batch:
            return
        start = time.perf_counter()
        images = [page.image for page in batch]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, images, batch[0].options)
            if len(results) != len(batch):
                raise RuntimeError(f"predict_batch returned {len(results)} results for {len(batch)} images")
        except Exception as err:  # noqa: BLE001 - handed to the requests, which report it
            if len(batch) > 1:  # retry page by page, so that a page that breaks the pipeline fails only its request
                for page in batch:
                    await self._execute([page])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(err)
        else:
            for page, result in zip(batch, results):
                if not page.future.done():
                    page.future.set_result(result)
        if self._on_batch:
            self._on_batch(len(batch), time.perf_counter() - start)


class Ticket:
    """Held by a request from admission until it submits its pages, so an idle batcher knows to wait for it."""

    def __init__(self, batcher: Batcher):
        self._batcher = batcher
        self._open = True
        batcher._coming += 1

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._batcher._coming -= 1
            self._batcher._wakeup.set()

    async def submit(self, images: List[np.ndarray], options: Dict[str, Any]) -> List[Any]:
        """One result per image, in order; raises what the pipeline raised for the batch."""
        self._close()
        return await self._batcher._submit(images, options)

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close()
