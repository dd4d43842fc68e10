"""Runs jobs page by page through the server's batcher, with interactive work ahead of batch jobs.

Each job reads its file lazily (``iter_inputs``: one PDF page rendered per step), sends that page through
the same ``Batcher`` and adapter as the synchronous endpoint (so a job's pages equal the endpoint's
results), encodes it and stores it before the next page is read. Cancelling a job cancels its task: the
page in the engine finishes (at most one page of work), nothing after it runs.

Priority (``Priority``): synchronous requests and pages of ``interactive`` jobs go straight to the batcher.
``batch`` pages take turns, one at a time server-wide, each only once no interactive work has been in flight
for ``GRACE_S`` (so a client sending request after request keeps its turn); interactive work then waits at
most for the one batch page already running (its read, inference and encoding). Under unbroken interactive
load a batch page still goes after ``BATCH_MAX_WAIT_S``, so batch jobs advance by at least a page per interval.
A running job's file and each of its pages also take the server's memory budget (``limits.PixelBudget``),
at the job's priority: batch reservations are granted only when no interactive one waits.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Coroutine, Dict, Iterator, Optional, Set, Tuple

import numpy as np

from ...errors import HpinferError, InputError
from ...io.inputs import InputItem, iter_inputs
from ..adapters import Encoding, jpeg_base64
from ..limits import BATCH, INTERACTIVE, bytes_cost, read_page
from .store import Job, Store
from .webhooks import deliver

log = logging.getLogger("hpinfer.serving.jobs")
MAX_RUNNING = 8  # jobs with a page in progress at once (each holds at most one decoded page)
BATCH_MAX_WAIT_S = 2.0
GRACE_S = 0.05
POLL_S = 0.005


class Priority:
    """Two levels: interactive (synchronous requests, interactive jobs) ahead of batch jobs."""

    def __init__(self, admission: Any):
        self._admission = admission
        self._batch = asyncio.Lock()
        self.interactive_pages = 0
        self._interactive_left_at = 0.0

    def _interactive_busy(self) -> bool:
        recent = max(self._admission.left_at, self._interactive_left_at) > time.monotonic() - GRACE_S
        return bool(self._admission.active or self.interactive_pages or recent)

    @contextlib.asynccontextmanager
    async def turn(self, priority: str) -> AsyncIterator[float]:
        """Holds one page's turn; yields the seconds it waited for it."""
        start = time.perf_counter()
        if priority == "interactive":
            self.interactive_pages += 1
            try:
                yield 0.0
            finally:
                self.interactive_pages -= 1
                self._interactive_left_at = time.monotonic()
            return
        async with self._batch:
            deadline = time.monotonic() + BATCH_MAX_WAIT_S
            while self._interactive_busy() and time.monotonic() < deadline:
                await asyncio.sleep(POLL_S)
            yield time.perf_counter() - start


class Jobs:
    """The jobs of one server: store, runner, change notifications and webhooks."""

    def __init__(self, service: Any):
        self.service = service
        self.settings = service.settings
        self.store: Optional[Store] = None
        self.priority = Priority(service.admission)
        self.changed = asyncio.Event()  # replaced on every change; waiters keep the one they saw
        self._tasks: Dict[str, asyncio.Task] = {}
        self._background: Set[asyncio.Task] = set()
        self._temporary: Optional[Path] = None
        self._stopping = False

    async def start(self) -> None:
        folder = self.settings.jobs_dir
        if folder is None:  # --ui without --jobs_dir: jobs work, but don't outlive the process
            folder = self._temporary = Path(tempfile.mkdtemp(prefix="hpinfer-jobs-"))
            log.info("jobs: in %s, removed at exit (start with --jobs_dir to keep them across restarts)", folder)
        self.store = await asyncio.to_thread(Store, Path(folder))
        for job in self.store.unfinished():
            if job.pages_done or job.status == "running":
                log.info("job %s: resuming at page %d of %d", job.id, job.pages_done + 1, job.pages_total)
        for job in self.store.unsent_webhooks():
            self._spawn(self._webhook(job))
        self._spawn(self._clean_up())
        self._schedule()

    async def stop(self) -> None:
        """Running jobs stay 'running' in the store, so the next start resumes them at their next page."""
        self._stopping = True
        tasks = [*self._tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.store:
            self.store.close()
        if self._temporary:
            shutil.rmtree(self._temporary, ignore_errors=True)

    async def add(self, job: Job, data: bytes) -> None:
        await asyncio.to_thread(self.store.add, job, data)
        self._notify()
        self._schedule()

    async def cancel(self, job_id: str) -> bool:
        """False when the job had already finished."""
        if not self.store.set_status(job_id, "cancelled"):
            return False
        task = self._tasks.get(job_id)
        if task:
            task.cancel()
        log.info("job %s: cancelled", job_id)
        self._finished(job_id)
        return True

    # ---- running ----

    def _schedule(self) -> None:
        for job in self.store.unfinished():
            if len(self._tasks) >= MAX_RUNNING:
                return
            if job.id not in self._tasks:
                self._tasks[job.id] = asyncio.get_running_loop().create_task(self._run(job), name=f"job-{job.id}")

    async def _run(self, job: Job) -> None:
        try:
            if not self.store.set_status(job.id, "running"):
                return
            self._notify()
            errors = await self._pages(job)
            if errors == job.pages_total:
                self._finish(job.id, "failed", f"no page could be processed (page 1: {self.store.pages(job.id)[0]['error']})")
            else:
                self._finish(job.id, "done")
        except asyncio.CancelledError:
            raise
        except HpinferError as err:  # the stored file can't be read any more, or the options became invalid
            self._finish(job.id, "failed", str(err))
        except Exception as err:  # noqa: BLE001 - a bug: this job fails, the server goes on
            log.error("job %s: %s: %s", job.id, type(err).__name__, err, exc_info=err)
            self._finish(job.id, "failed", "internal server error (the server log has details under this job id)")
        finally:
            self._tasks.pop(job.id, None)
            if not self._stopping:
                self._schedule()

    async def _pages(self, job: Job) -> int:
        """Runs the job's remaining pages; the number of pages that failed (all of them, not only these). The
        job's file and each page are counted in the server's budget, at the job's priority."""
        priority = INTERACTIVE if job.priority == "interactive" else BATCH
        budget = self.service.budget
        size = await asyncio.to_thread(self.store.input_size, job.id)
        async with budget.held(bytes_cost(size), priority=priority, owner=job.id):
            data = await asyncio.to_thread(self.store.input, job.id)
            return await self._read_pages(job, data, priority)

    async def _read_pages(self, job: Job, data: bytes, priority: int) -> int:
        adapter, settings, budget = self.service.adapter, self.settings, self.service.budget
        request = adapter.request_model.model_validate({**job.request, adapter.file_field: ""})
        options = self.service.pipeline_options(request)
        visualize = settings.visualize if request.visualize is None else request.visualize
        errors = sum(1 for page in self.store.pages(job.id) if page["error"])
        pages: Optional[Iterator[InputItem]] = None
        for n in range(job.pages_done, job.pages_total):
            if pages is None:  # from page n on; again after a page that can't be read (the generator then ends)
                pages = iter_inputs(data, page_range=(n + 1, job.pages_total) if job.is_pdf else None,
                                    max_pixels=settings.max_pixels, max_render_side=settings.max_render_side)
            async with self.priority.turn(job.priority) as waited:
                timings = {"wait": waited}
                reserved = 0
                try:  # "read" includes the wait for the budget
                    item, reserved = await _timed(timings, "read", read_page(
                        budget, functools.partial(next, pages, None), settings.max_pixels, self.service.det_side,
                        priority=priority, owner=job.id))
                except InputError as err:
                    pages = None
                    item, error = None, str(err)
                else:
                    if item is None:
                        raise InputError(f"the file has fewer pages than the {job.pages_total} counted at submission")
                    error = None
                try:
                    stored = await self._page(job, n, item, error, request, options, visualize, timings)
                finally:
                    budget.release(reserved, job.id)
            errors += stored is not None
        return errors

    async def _page(self, job: Job, n: int, item: Optional[InputItem], error: Optional[str], request: Any,
                    options: Dict[str, Any], visualize: bool, timings: Dict[str, float]) -> Optional[str]:
        """Page ``n`` through the batcher, encoded and stored; its error, if any."""
        adapter = self.service.adapter
        stages = None
        if item is not None:
            try:
                before = _stage_seconds(self.service.metrics)
                with self.service.batcher.ticket() as ticket:
                    (result,) = await _timed(timings, "infer", ticket.submit([item.image], options))
                after = _stage_seconds(self.service.metrics)
                stages = {k: v - before.get(k, 0.0) for k, v in after.items() if v > before.get(k, 0.0)}
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except HpinferError as err:
                error = str(err)
            except Exception as err:  # noqa: BLE001 - this page fails, the job goes on
                log.error("job %s page %d: %s: %s", job.id, n + 1, type(err).__name__, err, exc_info=err)
                error = f"{type(err).__name__} while processing the page (the server log has details)"
        start = time.perf_counter()
        if error is None:
            encoded, picture = await asyncio.to_thread(_encode, adapter, result, item, request, visualize)
            if result.get("status") == "error":  # a pipeline that reports a failed page in its result (layout_parsing)
                error = str(result.get("error"))
        else:
            encoded, picture = {"prunedResult": {"page_index": n if job.is_pdf else None, "status": "error", "error": error}}, None
            if item is not None:
                picture = await asyncio.to_thread(page_picture, item.image)
        timings["encode"] = time.perf_counter() - start
        timings["total"] = sum(timings.values())
        if stages:
            timings["stages"] = stages
        size = None if item is None else (item.image.shape[1], item.image.shape[0])
        await asyncio.to_thread(self.store.add_page, job.id, n, encoded, picture, error, size, timings)
        self._notify()
        return error

    # ---- endings, notifications, webhooks, clean-up ----

    def _finish(self, job_id: str, status: str, error: Optional[str] = None) -> None:
        if self.store.set_status(job_id, status, error):
            log.info("job %s: %s%s", job_id, status, f" ({error})" if error else "")
            self._finished(job_id)

    def _finished(self, job_id: str) -> None:
        self._notify()
        job = self.store.get(job_id)
        if job is not None and job.webhook_url:
            self._spawn(self._webhook(job))

    def _notify(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    async def _webhook(self, job: Job) -> None:
        payload = {"jobId": job.id, "status": job.status, "pagesDone": job.pages_done, "pagesTotal": job.pages_total,
                   "error": job.error}
        outcome = await deliver(self.service.http, job.webhook_url, job.webhook_secret, payload,
                                self.settings.allow_private_urls)
        self.store.set_webhook_status(job.id, outcome)
        log.info("job %s: webhook %s", job.id, outcome)

    async def _clean_up(self) -> None:
        keep_s = self.settings.jobs_retention_h * 3600
        while True:
            for job_id in self.store.expired(time.time() - keep_s):
                await asyncio.to_thread(self.store.delete, job_id)
                log.info("job %s: removed (finished more than %g h ago)", job_id, self.settings.jobs_retention_h)
            await asyncio.sleep(min(60.0, max(0.5, keep_s / 4)))

    def _spawn(self, coroutine: Coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _stage_seconds(metrics: Any) -> Dict[str, float]:
    """The server's time per "<model> <stage>" so far (the batch threads add each batch's spans before answering):
    the difference around one page is that page's, plus that of any request served at the same moment."""
    return {f"{sample.labels['module']} {sample.labels['stage']}": sample.value
            for family in metrics.stage_seconds.collect() for sample in family.samples if sample.name.endswith("_total")}


async def _timed(timings: Dict[str, float], name: str, awaitable: Any) -> Any:
    start = time.perf_counter()
    try:
        return await awaitable
    finally:
        timings[name] = time.perf_counter() - start


def _encode(adapter: Any, result: Any, item: InputItem, request: Any, visualize: bool) -> Tuple[Dict[str, Any], bytes]:
    """One page as the synchronous endpoint would answer it (its entry of the result list), and its picture."""
    result["page_index"] = item.page_index
    return adapter.encode_page(result, item.image, Encoding(request, visualize)), page_picture(item.image)


def page_picture(image: np.ndarray) -> bytes:
    """The page as JPEG, shrunk as result images are (the web page scales boxes to fit)."""
    return base64.b64decode(jpeg_base64(image))
