"""The HTTP app: FastAPI routes, the PaddleX error envelope, the request gate, lifespan and SIGTERM drain.

``create_app(settings, pipeline=None)`` serves the one pipeline it is given (or builds it from
``settings``), as PaddleX does. Per request: the ``Gate`` (plain ASGI, before the body is read)
assigns the logId, checks the bearer token, the body size and admission (503 + Retry-After when
``max_queue`` requests are in flight or the server is draining); the route fetches/decodes the file in
a worker thread, hands the pages to the ``Batcher`` and encodes the results in a worker thread.

Drain: on the first SIGTERM/SIGINT the server keeps listening but answers new inference requests with
503, waits (at most ``drain_timeout_s``) for those in flight, then lets uvicorn shut down; a second
signal stops at once.

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
from typing import Any, Dict, List, Optional

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
from .adapters import ADAPTERS, Adapter, Encoding, ErrorResponse, success_model
from .batcher import Batcher
from .limits import Admission, Pages, decode_base64, is_url, read_pages
from .metrics import Metrics, record_stages, stage_timers
from .security import authorized, fetch_url
from .settings import LOG_LEVEL_ENV, ServeSettings

log = logging.getLogger("hpinfer.serving")
RETRY_AFTER_S = "1"
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


class Service:
    """Everything one app holds while it runs: pipeline, batcher, admission, metrics, HTTP client."""

    def __init__(self, settings: ServeSettings, adapter: Adapter, pipeline: Any):
        self.settings = settings
        self.adapter = adapter
        self.pipeline = pipeline
        self.admission = Admission(settings.max_queue)
        self.metrics = Metrics()
        self.ready = False
        self.batcher: Optional[Batcher] = None
        self.http: Optional[httpx.AsyncClient] = None
        self.extensions: List[Any] = []  # started after, stopped before the batcher (the jobs runner)
        self.open_paths = OPEN_PATHS  # plus the web page's files when it is on
        self.upload_paths = {adapter.path}  # POST bodies capped at max_body_mb

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
        image = np.full((160, 640, 3), 255, np.uint8)
        cv2.putText(image, "hpinfer warm-up 0123", (10, 100), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (0, 0, 0), 3)
        try:
            with self.batcher.ticket() as ticket:
                await ticket.submit([image], {})
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

    async def infer(self, request: Any, log_id: str) -> bytes:
        """Request model → the JSON answer. Each step off the event loop is one thread hop (they add up
        on a busy machine): fetch, then decode (base64 and pages together), the batch, then encode (on the
        loop for one page without pictures, a small JSON document)."""
        settings, adapter = self.settings, self.adapter
        options = adapter.options(request, self.pipeline)
        text, field = getattr(request, adapter.file_field), adapter.file_field
        file_type = getattr(request, "fileType", None) if adapter.accepts_pdf else 1

        def read(data: Optional[bytes]) -> Pages:
            data = decode_base64(text, field) if data is None else data
            return read_pages(data, field, file_type, settings.max_pixels, settings.max_pdf_pages)

        visualize = settings.visualize if request.visualize is None else request.visualize

        def encode(results: List[Any]) -> bytes:
            for result, page_index in zip(results, pages.page_indices):
                result["page_index"] = page_index  # the batch saw bare arrays
            result = adapter.encode(results, Encoding(request, pages.images, pages.data_info, visualize))
            envelope = {"logId": log_id, "errorCode": 0, "errorMsg": "Success", "result": result}
            return json.dumps(envelope, ensure_ascii=False).encode()

        with self.batcher.ticket() as ticket:
            data = None
            if is_url(text):
                data = await fetch_url(
                    self.http, text, allow_private=settings.allow_private_urls,
                    max_bytes=settings.max_download_bytes, timeout=settings.url_timeout_s,
                )
            pages = await asyncio.to_thread(read, data)
            results = await ticket.submit(pages.images, options)
        if not visualize and len(results) == 1:  # one page's JSON, no pictures: cheaper here than a thread hop
            return encode(results)
        return await asyncio.to_thread(encode, results)

    async def drain(self) -> None:
        self.admission.draining = True
        self.ready = False
        log.info("draining: %d request(s) in flight; new requests get 503", self.admission.active)
        if not await self.admission.wait_idle(self.settings.drain_timeout_s):
            log.warning("drain timeout (%g s): %d request(s) still in flight", self.settings.drain_timeout_s, self.admission.active)


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
            elif path == self.path and scope["method"] == "POST":
                service.admission.enter()
                try:
                    await self.app(scope, self._capped(receive), send_logged)
                finally:
                    service.admission.leave()
            elif path in self.upload_paths and scope["method"] == "POST":
                await self.app(scope, self._capped(receive), send_logged)
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
    """Wrap the server's SIGTERM/SIGINT handlers (uvicorn's, installed before the lifespan starts):
    the first signal drains, then hands over; a second one goes straight to the server."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals belong to the main thread (an app run inside a test thread has none)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            if service.admission.draining:
                return previous(signum, frame)
            service.admission.draining = True

            async def drain_then_exit() -> None:
                await service.drain()
                previous(signum, None)

            loop.call_soon_threadsafe(lambda: loop.create_task(drain_then_exit()))

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

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request.state.log_id, 422, _one_line(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request.state.log_id, exc.status_code, str(exc.detail), exc.headers)

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
            content = await asyncio.wait_for(service.infer(body, log_id), settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"request timed out after {settings.request_timeout_s:g} s") from None
        except (HpinferError, HTTPException):
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
