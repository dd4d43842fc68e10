"""Asynchronous jobs for long documents: ``POST /jobs`` answers 202 with a job id at once; the job's pages run
one by one behind interactive work, their results persist (SQLite + files) and survive restarts.

Routes (answers in the PaddleX envelope unless said otherwise; pages are numbered from 0, as ``page_index``):

- ``POST /jobs``: the pipeline endpoint's body, plus ``priority`` (``batch``, the default, or ``interactive``),
  ``webhookUrl`` and ``webhookSecret``; 202 with ``jobId``.
- ``GET /jobs/{id}``: status (queued, running, done, failed, cancelled), pages done/total, per-page errors, timings.
- ``GET /jobs/{id}/result``: the endpoint's result for the pages done so far (``?format=markdown``: the
  Markdown document, for pipelines that make one).
- ``GET /jobs/{id}/events``: Server-Sent Events, a ``page`` event per finished page, then ``end`` (or
  ``closing`` when the server stops first: reconnect with ``Last-Event-ID``).
- ``GET /jobs/{id}/pages/{n}`` (one page's result) and ``/pages/{n}/image`` (the page as JPEG).
- ``DELETE /jobs/{id}``: cancels an unfinished job (its engine work stops within one page); removes a finished one.
"""

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
import typing
import uuid
from typing import Any, AsyncIterator, Dict, Literal, Optional

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import Field, create_model

from ..limits import count_pages
from ..security import check_url
from .runner import Jobs
from .store import FINISHED, Job

JOBS_PATH = "/jobs"
KEEPALIVE_S = 15.0

__all__ = ["JOBS_PATH", "install_jobs"]


def install_jobs(app: FastAPI, service: Any) -> Jobs:
    """Adds the jobs routes to ``app``; the caller starts and stops the returned ``Jobs`` with the app."""
    jobs = Jobs(service)
    service.upload_paths.add(JOBS_PATH)
    adapter, settings = service.adapter, service.settings
    field = adapter.file_field
    pages_key = adapter.pages_key
    page_model = typing.get_args(adapter.result_model.model_fields[pages_key].annotation)[0] if pages_key else None
    has_markdown = page_model is not None and "markdown" in page_model.model_fields
    body_model = create_model(
        f"{adapter.request_model.__name__}Job", __base__=adapter.request_model,
        priority=(Literal["interactive", "batch"], Field(
            "batch", description="interactive: pages go straight to the engines; batch: only while no interactive work waits")),
        webhookUrl=(Optional[str], Field(None, description="POSTed to (signed) when the job ends; same address rules as URL inputs")),
        webhookSecret=(Optional[str], Field(None, min_length=16, max_length=256,
                                            description="HMAC key for the webhook's signature; default: one made for this job")),
    )
    job_fields = {field, "priority", "webhookUrl", "webhookSecret"}

    def envelope(request: Request, result: Any, status: int = 200, **extra: Any) -> JSONResponse:
        body = {"logId": request.state.log_id, "errorCode": 0, "errorMsg": "Success", "result": result, **extra}
        return JSONResponse(body, status_code=status)

    def owner(request: Request) -> str:
        """Whose job: the API key's hash when auth is on (each key sees and counts only its own jobs)."""
        if not settings.api_key:
            return ""
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        return hashlib.sha256(token.encode()).hexdigest()[:16]

    def find(request: Request, job_id: str) -> Job:
        job = jobs.store.get(job_id)
        if job is None or job.owner != owner(request):
            raise HTTPException(404, f"no job {job_id!r} (finished jobs are kept {settings.jobs_retention_h:g} h)")
        return job

    @app.post(JOBS_PATH, status_code=202, operation_id="submitJob", tags=["jobs"])
    async def submit(request: Request, body: body_model) -> JSONResponse:  # type: ignore[valid-type]
        """Queue the file for page-by-page processing; 202 with the job id."""
        who = owner(request)
        if settings.api_key and jobs.store.count_unfinished(who) >= settings.jobs_per_key:
            raise HTTPException(429, f"this API key already has {settings.jobs_per_key} unfinished jobs (the limit); "
                                     "wait for one to finish or cancel one")
        adapter.options(body, service.pipeline)  # unsupported options: 422 now, not at the first page
        if body.webhookUrl:
            await check_url(body.webhookUrl, settings.allow_private_urls)
        log_id, start_by = request.state.log_id, request.state.start_by
        data, held = await service.read_file(getattr(body, field), field, start_by, log_id)
        try:
            file_type = getattr(body, "fileType", None) if adapter.accepts_pdf else 1
            async with service.budget.held(settings.max_pixels, max(0.0, start_by - time.monotonic()), owner=log_id):
                is_pdf, total = await asyncio.to_thread(  # reads page 1
                    count_pages, data, field, file_type, settings.max_pixels, settings.jobs_max_pages)
            secret = body.webhookSecret or (secrets.token_urlsafe(32) if body.webhookUrl else None)
            job = Job(
                id=uuid.uuid4().hex, owner=who, status="queued", priority=body.priority,
                request=body.model_dump(exclude=job_fields), is_pdf=is_pdf, pages_total=total, pages_done=0, error=None,
                webhook_url=body.webhookUrl, webhook_secret=secret, webhook_status=None, created=time.time(),
                started=None, finished=None,
            )
            await jobs.add(job, data)
        finally:
            service.budget.release(held, log_id)
        result = {"jobId": job.id, "status": job.status, "pagesTotal": total}
        if body.webhookUrl and not body.webhookSecret:
            result["webhookSecret"] = secret
        response = envelope(request, result, 202)
        response.headers["Location"] = f"{JOBS_PATH}/{job.id}"
        return response

    @app.get(JOBS_PATH + "/{job_id}", operation_id="getJob", tags=["jobs"])
    async def status(request: Request, job_id: str) -> JSONResponse:
        """Status, pages done/total, per-page errors and timings (seconds)."""
        job = find(request, job_id)
        pages = jobs.store.pages(job_id)
        end = job.finished or time.time()
        timings = {
            "createdAt": job.created, "startedAt": job.started, "finishedAt": job.finished,
            "queuedSeconds": (job.started or end) - job.created, "runSeconds": end - job.started if job.started else 0.0,
            "pages": [{"page": p["page"], **p["timings"]} for p in pages],
        }
        result = {
            "jobId": job.id, "status": job.status, "priority": job.priority, "pagesDone": job.pages_done,
            "pagesTotal": job.pages_total, "error": job.error,
            "errors": [{"page": p["page"], "error": p["error"]} for p in pages if p["error"]],
            "timings": timings, "webhook": {"url": job.webhook_url, "status": job.webhook_status} if job.webhook_url else None,
        }
        return envelope(request, result)

    @app.get(JOBS_PATH + "/{job_id}/result", operation_id="getJobResult", tags=["jobs"],
             responses={200: {"content": {"text/markdown": {}}}})
    async def result(request: Request, job_id: str, format: Literal["json", "markdown"] = "json") -> Response:
        """The endpoint's result for the pages done so far (all of them once the job is done)."""
        job = find(request, job_id)
        pages = jobs.store.pages(job_id)
        items = await asyncio.to_thread(lambda: [jobs.store.page_item(job_id, p["page"]) for p in pages])
        if format == "markdown":
            if not has_markdown:
                raise HTTPException(422, f"format=markdown: the {adapter.path} pipeline makes no Markdown")
            text = "\n\n".join(item["markdown"]["text"] for item in items if "markdown" in item)
            return Response(text, media_type="text/markdown; charset=utf-8", headers={"X-Job-Status": job.status})
        if pages_key:
            sizes = [{"width": p["width"] or 0, "height": p["height"] or 0} for p in pages]
            if job.is_pdf:
                info: Dict[str, Any] = {"numPages": job.pages_total, "pages": sizes, "type": "pdf"}
            else:
                info = {**(sizes[0] if sizes else {"width": 0, "height": 0}), "type": "image"}
            out: Any = {pages_key: items, "dataInfo": info}
        else:
            out = items[0] if items else None
        return envelope(request, out, jobStatus=job.status, pagesDone=job.pages_done)

    @app.get(JOBS_PATH + "/{job_id}/pages/{n}", operation_id="getJobPage", tags=["jobs"])
    async def page(request: Request, job_id: str, n: int) -> JSONResponse:
        """One finished page: its size, error, timings and its entry of the result."""
        find(request, job_id)
        found = jobs.store.pages(job_id, n)
        if not found or found[0]["page"] != n:
            raise HTTPException(404, f"page {n} of job {job_id} is not done (yet)")
        item = await asyncio.to_thread(jobs.store.page_item, job_id, n)
        return envelope(request, {**found[0], "result": item})

    @app.get(JOBS_PATH + "/{job_id}/pages/{n}/image", operation_id="getJobPageImage", tags=["jobs"],
             response_class=FileResponse, responses={200: {"content": {"image/jpeg": {}}}})
    async def page_image(request: Request, job_id: str, n: int) -> FileResponse:
        """The page as the pipeline saw it (JPEG, at most 2000 pixels a side)."""
        find(request, job_id)
        path = jobs.store.page_image(job_id, n)
        if path is None:
            raise HTTPException(404, f"page {n} of job {job_id} has no picture (not done yet, or it could not be read)")
        return FileResponse(path, media_type="image/jpeg")

    @app.get(JOBS_PATH + "/{job_id}/events", operation_id="getJobEvents", tags=["jobs"],
             response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
    async def events(request: Request, job_id: str, after: Optional[int] = Query(None, description="last page seen")) -> StreamingResponse:
        """Server-Sent Events: ``page`` (one per finished page, id = page number), then ``end``."""
        find(request, job_id)
        last = request.headers.get("last-event-id", "")
        start = int(last) + 1 if last.lstrip("-").isdigit() else (after + 1 if after is not None else 0)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(_stream(jobs, job_id, start), media_type="text/event-stream", headers=headers)

    @app.delete(JOBS_PATH + "/{job_id}", operation_id="deleteJob", tags=["jobs"])
    async def delete(request: Request, job_id: str) -> JSONResponse:
        """Cancel an unfinished job (work stops within one page), or remove a finished one and its files."""
        job = find(request, job_id)
        if await jobs.cancel(job_id):
            return envelope(request, {"jobId": job_id, "status": "cancelled"})
        await asyncio.to_thread(jobs.store.delete, job.id)
        return envelope(request, {"jobId": job_id, "status": "deleted"})

    return jobs


async def _stream(jobs: Jobs, job_id: str, start: int) -> AsyncIterator[str]:
    """Replays the pages done since ``start``, then follows the job until it ends."""
    while True:
        changed = jobs.changed  # taken before reading, so a change made meanwhile still wakes us
        job = jobs.store.get(job_id)
        if job is None:
            yield _event("end", {"jobId": job_id, "status": "deleted"})
            return
        for page in jobs.store.pages(job_id, start):
            data = {"jobId": job_id, **page, "pagesDone": page["page"] + 1, "pagesTotal": job.pages_total}
            yield _event("page", data, page["page"])
            start = page["page"] + 1
        if job.status in FINISHED:
            yield _event("end", {"jobId": job_id, "status": job.status, "pagesDone": job.pages_done,
                                 "pagesTotal": job.pages_total, "error": job.error})
            return
        quiet = 0.0
        while not changed.is_set():
            if jobs.service.admission.draining:  # the server is stopping: don't hold its shutdown up
                yield _event("closing", {"jobId": job_id, "reason": "server shutting down; reconnect with Last-Event-ID"})
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), 1.0)
            quiet += 1.0
            if quiet >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                quiet = 0.0


def _event(name: str, data: Dict[str, Any], event_id: Optional[int] = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
