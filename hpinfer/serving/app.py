"""The HTTP app: FastAPI routes, the PaddleX error envelope, the request gate, lifespan and SIGTERM drain.

``create_app(settings, pipeline=None)`` serves the one pipeline it is given (or builds it from
``settings``), as PaddleX does. Per request: the ``Gate`` (plain ASGI, before the body is read)
assigns the logId, checks the bearer token, the body size and admission (503 + Retry-After when
``max_queue`` requests are in flight or the server is draining); the route fetches the file, then
decodes or renders its pages one at a time in worker threads as the ``PixelBudget`` lets it, hands each
to the ``Batcher`` and encodes each page's result as it comes.

Shutdown: on the first SIGTERM/SIGINT the server keeps listening but answers new inference requests
with 503, waits (at most ``drain_timeout_s``) for those in flight, answers any still running with a
JSON 503, then lets uvicorn shut down (bounded by ``SHUTDOWN_GRACE_S``); a second signal answers
everything in flight with a JSON 503 at once and then shuts down. ``Service.cut`` counts the requests
cut short, which decides the exit status (``hpinfer serve``: 0 when none, 1 otherwise).

(No ``from __future__ import annotations`` here: FastAPI must see the route's body model, a local
variable of ``create_app``, as a class and not as a string.)
"""

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Set, Tuple

import cv2
import httpx
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import HpinferError
from ..pipelines import resolve_pipeline
from .adapters import ADAPTERS, Adapter, Encoding
from .schemas import ErrorResponse, success_model
from .batcher import Batcher
from .limits import (
    BODY_COPIES, PDF_SCALE, Admission, Overloaded, PageStream, PixelBudget, bytes_cost, decode_base64, det_clamp, is_url,
    read_page, return_freed_pages,
)
from .metrics import Metrics, record_stages, stage_timers
from .security import authorized, fetch_url
from .settings import LOG_LEVEL_ENV, SHUTDOWN_GRACE_S, ServeSettings

log = logging.getLogger("hpinfer.serving")
RETRY_AFTER_S = "1"
PAGES_IN_FLIGHT = 2  # of one request: one in the pipeline while the next is decoded or rendered
OPEN_PATHS = ("/health", "/health/ready", "/docs", "/docs/oauth2-redirect", "/openapi.json")  # no token needed


def error_response(log_id: str, status: int, message: str, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    body = {"logId": log_id, "errorCode": status, "errorMsg": message}
    return JSONResponse(body, status_code=status, headers=headers)


def _one_line(exc: RequestValidationError) -> str:
    """Pydantic's errors as one readable line, without echoing the (possibly huge) input back."""
    parts = []
    for error in exc.errors():
        if error["type"] == "json_invalid":
            return f"body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')} at character {error['loc'][-1]})"
        where = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def warm_up_image() -> np.ndarray:
    image = np.full((160, 640, 3), 255, np.uint8)
    cv2.putText(image, "hpinfer warm-up 0123", (10, 100), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (0, 0, 0), 3)
    return image


FASTAPI_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's one message for every undecodable body


async def _unparseable(request: Request) -> str:
    """Why FastAPI could not parse the body (it says only that it could not)."""
    try:
        body = await request.body()
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"body is not UTF-8 (byte 0x{err.object[err.start]:02x} at position {err.start}): send JSON encoded in UTF-8"
    except Exception:  # noqa: BLE001 - the body can't be read again: keep FastAPI's message
        return FASTAPI_PARSE_ERROR
    try:
        json.loads(text)
    except RecursionError:
        return "body is JSON nested too deeply to parse"
    except ValueError as err:
        return f"body is not valid JSON ({err})"
    return FASTAPI_PARSE_ERROR


class Service:
    """Everything one app holds while it runs: pipeline, batcher, admission, metrics, HTTP client."""

    def __init__(self, settings: ServeSettings, adapter: Adapter, pipeline: Any):
        self.settings = settings
        self.adapter = adapter
        self.pipeline = pipeline
        self.admission = Admission(settings.max_queue)
        self.budget = PixelBudget(settings.max_inflight_pixels)
        self._aborts: Set[asyncio.Future] = set()  # one per request in flight: set to stop it with a 503
        self.cut = 0  # requests answered 503 because the server stopped
        self.metrics = Metrics()
        self.metrics.budget_used.set_function(lambda: self.budget.used)
        self.ready = False
        self.batcher: Optional[Batcher] = None
        self.http: Optional[httpx.AsyncClient] = None
        self.extensions: List[Any] = []  # started after, stopped before the batcher (the jobs runner)
        self.open_paths = OPEN_PATHS  # plus the web page's files when it is on
        self.upload_paths = {adapter.path} if adapter else set()  # POST bodies capped at max_body_mb (genai: none here)

    async def start(self) -> None:
        settings = self.settings
        timers = stage_timers(self.pipeline)
        def run(images: List[np.ndarray], options: Dict[str, Any]) -> List[Any]:
            try:
                return self.adapter.run(self.pipeline, images, options)
            finally:
                record_stages(self.metrics, timers)

        self.batcher = Batcher(
            run, max_batch_size=settings.max_batch_size, max_delay_s=settings.max_batch_delay_ms / 1000,
            on_batch=self.metrics.observe_batch, workers=settings.inference_threads,
        )
        self.batcher.start()
        log.info("batching: up to %d page(s) per pipeline call, %d inference thread(s) (device %s)",
                 settings.max_batch_size, settings.inference_threads, settings.device or "cpu")
        self.metrics.track(lambda: self.admission.active, lambda: self.batcher.queued)
        self.http = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=settings.url_timeout_s)
        for extension in self.extensions:
            await extension.start()

    async def warm_up(self) -> None:
        """One request's worth of work through the whole path, so the first client doesn't pay for lazy set-up."""
        try:
            with self.batcher.ticket() as ticket:
                await ticket.submit([warm_up_image()], {})
            self.ready = True
            log.info("warm-up done: ready")
        except Exception:  # noqa: BLE001 - stay alive and not ready; the log says why
            log.exception("warm-up failed: the server stays not ready")

    async def stop(self) -> None:
        for extension in self.extensions:
            await extension.stop()
        if self.batcher:
            await self.batcher.close()
        if self.http:
            await self.http.aclose()

    async def infer(self, request: Any, log_id: str, start_by: float) -> bytes:
        """Request model → the JSON answer. The file's bytes and then its pages are counted in the budget, the
        file and its first page by ``start_by`` (monotonic; ``Overloaded`` after it). Pages are decoded or
        rendered one at a time, each once the budget has room for it, and at most ``PAGES_IN_FLIGHT`` of a
        request are held at once; each page's JSON is encoded as soon as its result comes, and the page and
        its result are dropped."""
        settings, adapter = self.settings, self.adapter
        options = self.pipeline_options(request)
        text, field = getattr(request, adapter.file_field), adapter.file_field
        file_type = getattr(request, "fileType", None) if adapter.accepts_pdf else 1
        how = Encoding(request, settings.visualize if request.visualize is None else request.visualize)

        with self.batcher.ticket() as ticket:
            data, held = await self.read_file(text, field, start_by, log_id)
            try:
                stream = await asyncio.to_thread(
                    PageStream, data, field, file_type, settings.max_pixels, settings.max_pdf_pages, settings.max_render_side)
                del data
                try:
                    pages, clamps = await self._pages(stream, ticket, options, how, start_by, log_id)
                finally:
                    await asyncio.to_thread(stream.close)
            finally:
                self.budget.release(held, log_id)
        envelope = {"logId": log_id, "errorCode": 0, "errorMsg": "Success",
                    "result": adapter.result(pages, stream.data_info, clamps, request)}
        if not how.visualize and len(pages) == 1:  # one page's JSON, no pictures: cheaper here than a thread hop
            return json.dumps(envelope, ensure_ascii=False).encode()
        return await asyncio.to_thread(lambda: json.dumps(envelope, ensure_ascii=False).encode())

    async def read_file(self, text: str, field: str, start_by: float, owner: str) -> Tuple[bytes, int]:
        """A request's file (base64, or an http(s) URL fetched) and what the budget holds for its bytes for
        ``owner`` (release it when they go), counted by ``start_by`` (``Overloaded`` after it)."""
        settings = self.settings
        guess = settings.max_download_bytes if is_url(text) else len(text) * 3 // 4
        held = await self.budget.acquire(bytes_cost(guess), max(0.0, start_by - time.monotonic()), owner=owner)
        try:
            if is_url(text):
                data = await fetch_url(self.http, text, allow_private=settings.allow_private_urls,
                                       max_bytes=settings.max_download_bytes, timeout=settings.url_timeout_s)
            else:
                data = await asyncio.to_thread(decode_base64, text, field)
        except BaseException:
            self.budget.release(held, owner)
            raise
        return data, self.budget.resize(held, bytes_cost(len(data)), owner)

    @property
    def det_side(self) -> Optional[int]:
        """The cap of the text detector input's longer side, for pipelines that detect text."""
        return self.settings.max_det_side if self.adapter.detects_text else None

    def pipeline_options(self, request: Any) -> Dict[str, Any]:
        """The request's pipeline options (422 for what can't be honoured), with the detector input's cap."""
        options = self.adapter.options(request, self.pipeline)
        if self.adapter.detects_text:
            options["text_det_max_side_limit"] = self.settings.max_det_side
        return options

    async def _pages(self, stream: PageStream, ticket: Any, options: Dict[str, Any], how: Encoding, start_by: float,
                     log_id: str):
        """Each page's JSON in page order, and the size limits that changed how pages were processed."""
        window = asyncio.Semaphore(PAGES_IN_FLIGHT)
        tasks: List[asyncio.Task] = []
        clamps: List[Dict[str, Any]] = []
        try:
            while True:
                await window.acquire()
                failed = next((t for t in tasks if t.done() and not t.cancelled() and t.exception()), None)
                if failed is not None:
                    raise failed.exception()
                wait = None if tasks else max(0.0, start_by - time.monotonic())  # later pages: request_timeout_s
                item, reserved = await read_page(
                    self.budget, stream.next_page, self.settings.max_pixels, self.det_side, wait, owner=log_id)
                if item is None:
                    break
                clamps += self._clamps(item, how.request)
                tasks.append(asyncio.create_task(self._page(item, reserved, window, ticket, options, how, log_id)))
            return list(await asyncio.gather(*tasks)), clamps
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _page(self, item: Any, reserved: int, window: asyncio.Semaphore, ticket: Any,
                    options: Dict[str, Any], how: Encoding, log_id: str) -> Dict[str, Any]:
        try:
            (result,) = await ticket.submit([item.image], options)
            result["page_index"] = item.page_index  # the batch saw a bare array
            if not how.visualize and self.adapter.pages_key != "layoutParsingResults":  # no pictures: small JSON
                return self.adapter.encode_page(result, item.image, how)
            return await asyncio.to_thread(self.adapter.encode_page, result, item.image, how)
        finally:
            self.budget.release(reserved, log_id)
            window.release()

    def _clamps(self, item: Any, request: Any) -> List[Dict[str, Any]]:
        """What the server's size limits changed for this page (stated in the answer)."""
        settings, found = self.settings, []
        if item.render_scale is not None and item.render_scale < PDF_SCALE:
            found.append({"page": item.page_index, "what": "PDF page rendering",
                          "limit": f"longer side at most {settings.max_render_side} px (--max_render_side)",
                          "applied": f"{72 * item.render_scale:.1f} dpi instead of {72 * PDF_SCALE:g}"})
        if self.adapter.detects_text:
            height, width = item.image.shape[:2]
            wanted = det_clamp(height, width, request.textDetLimitSideLen, request.textDetLimitType, settings.max_det_side)
            if wanted:
                found.append({"page": item.page_index, "what": "text detection input",
                              "limit": f"longer side at most {settings.max_det_side} px (--max_det_side)",
                              "applied": f"{settings.max_det_side} px instead of the {wanted} px that "
                                         f"textDetLimitSideLen {request.textDetLimitSideLen} would give"})
        return found

    async def run_abortable(self, work: Any, log_id: str) -> Optional[Response]:
        """Awaits ``work`` (a coroutine); None when it finished, or the JSON 503 sent instead when the server
        stopped first (``abort_all``). The result or error of ``work`` stays on the returned task's side."""
        abort = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(work)
        self._aborts.add(abort)
        try:
            await asyncio.wait({task, abort}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._aborts.discard(abort)
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            self.cut += 1
            return error_response(log_id, 503, abort.result(), {"Retry-After": RETRY_AFTER_S})
        return task

    def abort_all(self, why: str) -> None:
        for abort in list(self._aborts):
            if not abort.done():
                abort.set_result(why)

    async def drain(self) -> None:
        self.admission.draining = True
        self.ready = False
        log.info("draining: %d request(s) in flight; new requests get 503", self.admission.active)
        timeout = self.settings.drain_timeout_s
        if not await self.admission.wait_idle(timeout):
            log.warning("drain timeout (%g s): %d request(s) still in flight get 503", timeout, self.admission.active)
            self.abort_all(f"server shut down: its drain timeout ({timeout:g} s) passed before this request finished; retry")
            await self.admission.wait_idle(SHUTDOWN_GRACE_S)

    async def stop_now(self) -> None:
        """Second signal: everything in flight gets a JSON 503 now."""
        log.warning("second signal: stopping now; %d request(s) in flight get 503", self.admission.active)
        self.abort_all("server stopped (second signal) before this request finished; retry")
        await self.admission.wait_idle(SHUTDOWN_GRACE_S)


class Gate:
    """Plain ASGI middleware for what must happen before the body is read, plus metrics and the access log."""

    def __init__(self, app: ASGIApp, service: Service, path: Optional[str] = None):
        self.app = app
        self.service = service
        self.path = path or service.adapter.path  # the inference endpoint: admission applies there
        self.upload_paths = {self.path, *service.upload_paths}  # POST bodies capped at max_body_mb
        self.known_paths = {"/metrics", *self.upload_paths, *service.open_paths}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        service, path = self.service, scope["path"]
        log_id = str(uuid.uuid4())
        scope.setdefault("state", {})["log_id"] = log_id
        start, status = time.perf_counter(), 500

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope, log_id)
            if refusal is not None:
                await refusal(scope, receive, send_logged)
            elif path in self.upload_paths and scope["method"] == "POST":
                inference = path == self.path
                if inference:
                    service.admission.enter()
                try:
                    await self._budgeted(scope, receive, send_logged, log_id)
                finally:
                    if inference:
                        service.admission.leave()
            else:
                await self.app(scope, receive, send_logged)
        finally:
            elapsed = time.perf_counter() - start
            service.metrics.observe_request(path if path in self.known_paths else "other", status, elapsed)
            level = logging.DEBUG if path.startswith(("/health", "/metrics")) else logging.INFO
            client = "%s:%s" % tuple(scope["client"]) if scope.get("client") else "-"
            log.log(level, '%s "%s %s" %d %.1fms logId=%s', client, scope["method"], path, status, elapsed * 1000, log_id)

    def _refusal(self, scope: Scope, log_id: str) -> Optional[Response]:
        settings, service = self.service.settings, self.service
        path = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if settings.api_key and scope["method"] != "OPTIONS" and path not in service.open_paths:
            if not authorized(headers.get("authorization"), settings.api_key):
                return error_response(log_id, 401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                      {"WWW-Authenticate": "Bearer"})
        if path not in self.upload_paths or scope["method"] != "POST":
            return None
        reason = service.admission.refusal() if path == self.path else None
        if reason:
            return error_response(log_id, 503, reason, {"Retry-After": RETRY_AFTER_S})
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_body_bytes:
            return error_response(log_id, 413, self._too_large())
        return None

    async def _budgeted(self, scope: Scope, receive: Receive, send: Send, log_id: str) -> None:
        """Runs the request with its body counted in the budget until it answers (what is not yet read is held
        by the client: uvicorn stops reading a connection whose body isn't asked for); 503 when the body can't
        be counted within ``max_queue_wait_s``, the deadline for the request's start (``state.start_by``)."""
        budget, settings = self.service.budget, self.service.settings
        wait = settings.max_queue_wait_s
        scope["state"]["start_by"] = time.monotonic() + wait
        length = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        size = min(int(length), settings.max_body_bytes) if length.isdigit() else settings.max_body_bytes
        try:
            held = await budget.acquire(bytes_cost(size, BODY_COPIES), wait, owner=log_id)
        except Overloaded as exc:
            return await error_response(log_id, 503, str(exc), {"Retry-After": RETRY_AFTER_S})(scope, receive, send)
        try:
            await self.app(scope, self._capped(receive), send)
        finally:
            budget.release(held, log_id)

    def _too_large(self) -> str:
        return f"request body is above the limit of {self.service.settings.max_body_mb:g} MiB"

    def _capped(self, receive: Receive) -> Receive:
        """Counts body bytes as they arrive, for bodies sent without (or lying about) Content-Length."""
        remaining = self.service.settings.max_body_bytes

        async def capped() -> Message:
            nonlocal remaining
            message = await receive()
            if message["type"] == "http.request":
                remaining -= len(message.get("body", b""))
                if remaining < 0:
                    raise HTTPException(413, self._too_large())
            return message

        return capped


def _install_drain_handlers(service: Service) -> None:
    """Wrap the server's SIGTERM/SIGINT handlers (uvicorn's, installed before the lifespan starts): the first
    signal drains, then hands over to the server; a second one answers what is in flight at once, then hands over."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals belong to the main thread (an app run inside a test thread has none)
    loop = asyncio.get_running_loop()
    state = {"signals": 0, "handed_over": False}

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            state["signals"] += 1
            if state["handed_over"]:
                return None
            first = state["signals"] == 1
            service.admission.draining = True

            async def then_exit() -> None:
                await (service.drain() if first else service.stop_now())
                if not state["handed_over"]:
                    state["handed_over"] = True
                    previous(signum, None)

            loop.call_soon_threadsafe(lambda: loop.create_task(then_exit()))

        signal.signal(sig, handler)


def create_app(settings: ServeSettings, pipeline: Any = None) -> FastAPI:
    """The app for one pipeline: built here from ``settings`` unless a loaded ``pipeline`` is given (then not closed)."""
    name = pipeline.settings.pipeline_name if pipeline is not None else resolve_pipeline(settings.pipeline).pipeline_name
    adapter = ADAPTERS.get(name)
    if adapter is None:
        raise HpinferError(f"no serving endpoint for pipeline {name!r} yet (served: {', '.join(ADAPTERS)})")
    owned = pipeline is None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        return_freed_pages()
        if service.pipeline is None:
            service.pipeline = await asyncio.to_thread(settings.load_pipeline)
        await service.start()
        _install_drain_handlers(service)
        warm_up = asyncio.create_task(service.warm_up())
        try:
            yield
        finally:
            warm_up.cancel()
            await service.stop()
            if owned:
                service.pipeline.close()

    service = Service(settings, adapter, pipeline)
    app = FastAPI(
        title=f"hpinfer {name} serving", lifespan=lifespan,
        description="PaddleX-compatible basic serving API. Errors use the envelope {logId, errorCode, errorMsg}.",
    )
    app.state.service = service

    @app.exception_handler(HpinferError)
    async def _input_error(request: Request, exc: HpinferError) -> JSONResponse:
        return error_response(request.state.log_id, 422, str(exc))

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return error_response(request.state.log_id, 503, str(exc), {"Retry-After": RETRY_AFTER_S})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        kind = request.headers.get("content-type", "")
        if kind and "json" not in kind.lower():  # FastAPI doesn't parse it and reports the body as missing
            return error_response(request.state.log_id, 415,
                                  f"Content-Type {kind.split(';')[0]!r}: send the body as JSON (Content-Type: application/json)")
        return error_response(request.state.log_id, 422, _one_line(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 400 and message == FASTAPI_PARSE_ERROR:
            message = await _unparseable(request)
        return error_response(request.state.log_id, exc.status_code, message, exc.headers)

    @app.get("/health", response_model=ErrorResponse, operation_id="checkHealth")
    async def health(request: Request) -> Dict[str, Any]:
        """Liveness: the process answers."""
        return {"logId": request.state.log_id, "errorCode": 0, "errorMsg": "Healthy"}

    @app.get("/health/ready", response_model=ErrorResponse, responses={503: {"model": ErrorResponse}},
             operation_id="checkReady")
    async def ready(request: Request) -> Any:
        """Readiness: models loaded and warmed up, and not draining."""
        if service.ready:
            return {"logId": request.state.log_id, "errorCode": 0, "errorMsg": "Ready"}
        reason = "draining" if service.admission.draining else "warming up"
        return error_response(request.state.log_id, 503, f"not ready: {reason}", {"Retry-After": RETRY_AFTER_S})

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}}, include_in_schema=False)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    request_model = adapter.request_model
    errors = {code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 500, 503, 504)}

    @app.post(adapter.path, response_model=success_model(adapter.result_model), responses=errors, operation_id="infer")
    async def infer(request: Request, body: request_model) -> Response:  # type: ignore[valid-type]
        log_id = request.state.log_id
        try:
            work = service.infer(body, log_id, request.state.start_by)
            outcome = await service.run_abortable(asyncio.wait_for(work, settings.request_timeout_s), log_id)
            if isinstance(outcome, Response):
                return outcome
            content = outcome.result()
        except asyncio.TimeoutError:
            raise HTTPException(504, f"request timed out after {settings.request_timeout_s:g} s") from None
        except (HpinferError, HTTPException, Overloaded):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug or a broken model: this request fails, the server goes on
            log.error("logId=%s: %s: %s", log_id, type(exc).__name__, exc, exc_info=exc)
            return error_response(log_id, 500, "internal server error (the server log has details under this logId)")
        return Response(content, media_type="application/json")

    if adapter.routes:
        adapter.routes(app)
    if settings.jobs_dir or settings.ui:
        from .jobs import install_jobs

        service.extensions.append(install_jobs(app, service))
    if settings.ui:
        from .web import install_web

        install_web(app, service)
    app.add_middleware(Gate, service=service)
    if settings.cors_origins:  # outermost, so that preflights are answered before the gate asks for a token
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for worker processes (``--workers`` > 1): settings come in environment variables."""
    logging.basicConfig(level=os.environ.get(LOG_LEVEL_ENV, "INFO"), format="%(levelname)s %(name)s: %(message)s")
    return create_app(ServeSettings.from_env())
