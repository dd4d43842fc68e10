"""``hpinfer genai-server``'s HTTP app: the OpenAI-compatible recogniser service PaddleOCR-VL's pipelines call.

Routes: ``GET /v1/models`` (the served model: PaddleX's client takes ``data[0].id``), ``POST
/v1/chat/completions`` (one block: one user message with an ``image_url`` part and a ``text`` part holding
the task prompt; ``stream: true`` answers in OpenAI's server-sent events, ending with ``data: [DONE]``),
``/health`` (liveness), ``/health/ready`` (models loaded and warmed up, or the upstream answering),
``/metrics``. The basic server's gate sits in front (API key, body size, admission: 503 + Retry-After
above ``max_queue`` requests in flight); its refusals use the basic server's envelope, everything from the
routes OpenAI's ``{"error": {...}}`` (400 for a bad request, naming what is wrong; 404 for another model's
name; 502 when an upstream is unreachable).
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, Optional, Union

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import HpinferError
from ...pipelines.block_recognition import Answer, UnsupportedPrompt
from ..app import Gate, Service, _install_drain_handlers
from ..settings import ServeSettings
from .backends import NativeBackend, ProxyBackend, UpstreamError
from .schemas import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ImagePart, TextPart

log = logging.getLogger("hpinfer.serving")
COMPLETIONS = "/v1/chat/completions"
Backend = Union[NativeBackend, ProxyBackend]


def openai_error(status: int, message: str, code: Optional[str] = None, param: Optional[str] = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


@dataclass(frozen=True)
class Block:
    url: str
    prompt: str


def parse_block(request: ChatCompletionRequest) -> Block:
    """The one image and the one prompt of the request's user message(s); a ValueError names what is wrong."""
    images, texts = [], []
    for message in request.messages:
        if message.role != "user":
            continue
        parts = message.content if isinstance(message.content, list) else (
            [{"type": "text", "text": message.content}] if message.content else [])
        for index, part in enumerate(parts):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image_url":
                images.append(ImagePart.model_validate(part).image_url.url)
            elif kind == "text":
                texts.append(TextPart.model_validate(part).text)
            else:
                raise ValueError(f"messages: content part type {kind!r} is not supported (send 'image_url' and 'text' parts)")
    if len(images) != 1:
        raise ValueError(f"messages: one image_url part expected (the block), got {len(images)}")
    prompt = " ".join(text.strip() for text in texts if text.strip())
    if not prompt:
        raise ValueError("messages: no text part with the task prompt (e.g. 'OCR:')")
    return Block(images[0], prompt)


class GenAIService(Service):
    """The basic server's service (settings, admission, metrics, readiness, drain) with a backend in place of
    a pipeline."""

    def __init__(self, settings: ServeSettings, model_name: str, backend: Backend):
        super().__init__(settings, adapter=None, pipeline=None)
        self.model_name = model_name
        self.backend = backend


def create_genai_app(settings: ServeSettings, model_name: str, backend: Backend, on_stop: Any = None) -> FastAPI:
    """The app for one backend; ``on_stop`` (e.g. ending a launched server) runs after the backend stopped."""
    service = GenAIService(settings, model_name, backend)
    if isinstance(backend, NativeBackend):
        backend.metrics = service.metrics

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await backend.start()
        _install_drain_handlers(service)
        service.metrics.track(lambda: service.admission.active, lambda: getattr(backend.batcher, "queued", 0)
                              if isinstance(backend, NativeBackend) else 0)
        warm = asyncio.create_task(_warm_up(service))
        try:
            yield
        finally:
            warm.cancel()
            await backend.stop()
            if on_stop:
                on_stop()

    app = FastAPI(title="hpinfer genai-server", lifespan=lifespan,
                  description="OpenAI-compatible block recogniser for PaddleOCR-VL pipelines.")
    app.state.service = service

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return openai_error(exc.status_code, str(exc.detail))

    @app.get("/health")
    async def health() -> Dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready() -> Response:
        if service.ready:
            return JSONResponse({"status": "ready"})
        reason = "draining" if service.admission.draining else "warming up"
        return JSONResponse({"status": f"not ready: {reason}"}, status_code=503, headers={"Retry-After": "1"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> Response:
        try:
            return JSONResponse(await backend.models(model_name))
        except UpstreamError as err:
            return openai_error(502, str(err))

    @app.post(COMPLETIONS)
    async def completions(request: Request) -> Response:
        body = await request.body()
        if isinstance(backend, ProxyBackend):
            return await _forward(backend, body, request.headers.get("content-type", ""))
        if "json" not in request.headers.get("content-type", "application/json"):
            return openai_error(415, "send the request as application/json")
        try:
            chat = ChatCompletionRequest.model_validate_json(body)
            block = parse_block(chat)
        except ValidationError as err:
            return openai_error(400, _one_line(err))
        except ValueError as err:
            return openai_error(400, str(err), param="messages")
        if chat.model != model_name:
            return openai_error(404, f"model {chat.model!r} is not served here (served: {model_name!r}; GET /v1/models)",
                                code="model_not_found")
        try:
            answer = await asyncio.wait_for(backend.recognise(block.url, block.prompt), settings.request_timeout_s)
        except UnsupportedPrompt as err:
            return openai_error(400, str(err), code="unsupported_prompt", param="messages")
        except HpinferError as err:
            return openai_error(400, str(err), param="messages")
        except asyncio.TimeoutError:
            return openai_error(504, f"request timed out after {settings.request_timeout_s:g} s")
        except Exception as exc:  # noqa: BLE001 - this request fails, the server goes on
            log.error("%s: %s", type(exc).__name__, exc, exc_info=exc)
            return openai_error(500, "internal server error (the server log has details)")
        return _answer(chat, answer, model_name)

    app.add_middleware(Gate, service=service, path=COMPLETIONS)
    return app


async def _warm_up(service: GenAIService) -> None:
    deadline = time.monotonic() + service.settings.request_timeout_s
    while True:
        try:
            await service.backend.warm_up()
            service.ready = True
            log.info("genai-server ready")
            return
        except Exception as err:  # noqa: BLE001 - stay alive and not ready; the log says why
            if time.monotonic() > deadline:
                log.error("warm-up failed: the server stays not ready (%s)", err)
                return
            await asyncio.sleep(1)


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        if e["type"] == "json_invalid":
            return "body is not valid JSON"
        parts.append(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}")
    return "; ".join(parts)


def _answer(chat: ChatCompletionRequest, answer: Answer, model: str) -> Response:
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    headers = {"X-Hpinfer-Note": answer.note} if answer.note else None
    if not chat.stream:
        completion = ChatCompletion(id=ident, created=created, model=model, hpinfer_note=answer.note,
                                    choices=[{"message": {"content": answer.content}}])
        return JSONResponse(completion.model_dump(exclude_none=True), headers=headers)

    async def events() -> AsyncIterator[bytes]:
        for delta, finish in (({"role": "assistant", "content": answer.content}, None), ({}, "stop")):
            chunk = ChatCompletionChunk(id=ident, created=created, model=model,
                                        choices=[{"delta": delta, "finish_reason": finish}])
            yield f"data: {json.dumps(chunk.model_dump(exclude_none=True), ensure_ascii=False)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def _forward(backend: ProxyBackend, body: bytes, content_type: str) -> Response:
    try:
        upstream = await backend.forward(body, content_type)
    except UpstreamError as err:
        return openai_error(502, str(err))
    keep = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "x-hpinfer-note", "retry-after")}
    return StreamingResponse(upstream.aiter_bytes(), status_code=upstream.status_code, headers=keep,
                             background=BackgroundTask(upstream.aclose))
