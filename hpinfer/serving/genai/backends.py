"""What answers ``/v1/chat/completions`` behind ``hpinfer genai-server``.

``NativeBackend``: hpinfer's OCR models (block_recognition.NativeRecogniser). Blocks of concurrent requests go
through the basic server's ``Batcher`` together, grouped by the engine work their prompt needs, so the text
lines of many blocks share one detector call per shape and one recogniser call.

``ProxyBackend``: another OpenAI-compatible server (``--upstream_url``, or the vLLM / SGLang / llama.cpp server
a launcher started on a loopback port): requests and answers pass through unchanged, streams too, behind
this server's API key, limits and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Dict, List, Optional

import cv2
import httpx
import numpy as np

from ...errors import InputError
from ...pipelines.block_recognition import Answer, NativeRecogniser
from ..batcher import Batcher
from ..limits import decode_base64, is_url, read_image
from ..metrics import Metrics, record_stages, stage_timers
from ..security import fetch_url
from ..settings import ServeSettings

log = logging.getLogger("hpinfer.serving")


class NativeBackend:
    proxy = False

    def __init__(self, settings: ServeSettings, recogniser: NativeRecogniser):
        self.settings = settings
        self.recogniser = recogniser
        self.metrics = Metrics()  # the app puts its own here
        self.batcher: Optional[Batcher] = None
        self.http: Optional[httpx.AsyncClient] = None

    async def start(self) -> None:
        timers = stage_timers(self.recogniser)

        def run(images: List[np.ndarray], options: Dict[str, Any]) -> List[Any]:
            try:
                return self.recogniser.run(options["work"], images)
            finally:
                record_stages(self.metrics, timers)

        s = self.settings
        self.batcher = Batcher(run, max_batch_size=s.max_batch_size, max_delay_s=s.max_batch_delay_ms / 1000,
                               on_batch=self.metrics.observe_batch, workers=s.inference_threads)
        self.batcher.start()
        self.http = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=s.url_timeout_s)
        log.info("native recogniser: prompts %s; up to %d block(s) per engine call, %d inference thread(s)",
                 ", ".join(self.recogniser.prompts), s.max_batch_size, s.inference_threads)

    async def warm_up(self) -> None:
        image = np.full((48, 320, 3), 255, np.uint8)
        cv2.putText(image, "warm-up 0123", (8, 34), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
        for work in dict.fromkeys(w for prompt in self.recogniser.prompts for w in self.recogniser.works(prompt)):
            with self.batcher.ticket() as ticket:  # every model's first call (allocations) before "ready"
                await ticket.submit([image], {"work": work})

    async def stop(self) -> None:
        if self.batcher:
            await self.batcher.close()
        if self.http:
            await self.http.aclose()

    async def recognise(self, url: str, prompt: str) -> Answer:
        """One block: ``url`` (data URL or http(s)) and its prompt → the answer; InputError for bad input. Each
        kind of work the prompt needs (a table's OCR and its structure) joins its own batches, at once."""
        works = self.recogniser.works(prompt)  # an unknown or unserved prompt fails before any decoding
        with contextlib.ExitStack() as held:  # held while decoding: an idle batcher waits for this block
            tickets = [held.enter_context(self.batcher.ticket()) for _ in works]
            image = await self._image(url)
            outputs = await asyncio.gather(*(t.submit([image], {"work": w}) for t, w in zip(tickets, works)))
        return self.recogniser.answer(prompt, {w: out for w, (out,) in zip(works, outputs)})

    async def _image(self, url: str) -> np.ndarray:
        s, field = self.settings, "image_url.url"
        data: Optional[bytes] = None
        if url[:5].lower() == "data:":
            head, comma, text = url.partition(",")
            mime = head[5:].split(";")[0].strip().lower()
            if not comma or not head.lower().endswith(";base64"):
                raise InputError(f"{field}: a data URL must be data:image/<type>;base64,<data>")
            if not mime.startswith("image/"):
                raise InputError(f"{field}: data URL of type {mime or 'none'!r}, expected an image (image/jpeg, image/png, ...)")
        elif is_url(url):
            data = await fetch_url(self.http, url, allow_private=s.allow_private_urls, max_bytes=s.max_download_bytes,
                                   timeout=s.url_timeout_s)
            text = ""
        else:
            raise InputError(f"{field}: expected a data:image/...;base64 URL or an http(s) URL")

        def read() -> np.ndarray:
            raw = decode_base64(text, field) if data is None else data
            return read_image(raw, field, s.max_pixels)

        return await asyncio.to_thread(read)

    async def models(self, model_name: str) -> Dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "hpinfer-native"}]}


class UpstreamError(Exception):
    """The upstream server could not be reached (HTTP 502 to the client)."""


class ProxyBackend:
    proxy = True

    def __init__(self, upstream_url: str, api_key: Optional[str] = None, timeout_s: float = 600.0):
        self.base = upstream_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.http: Optional[httpx.AsyncClient] = None

    async def start(self) -> None:
        self.http = httpx.AsyncClient(trust_env=False, timeout=self.timeout_s,
                                      limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
        log.info("proxy: /v1 requests go to %s", self.base)

    async def warm_up(self) -> None:
        await self.models("")

    async def stop(self) -> None:
        if self.http:
            await self.http.aclose()

    def _headers(self, content_type: Optional[str] = None) -> Dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def models(self, model_name: str) -> Dict[str, Any]:
        try:
            response = await self.http.get(f"{self.base}/models", headers=self._headers(), timeout=10)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as err:
            raise UpstreamError(f"upstream {self.base}: GET /models failed ({err or type(err).__name__})") from None

    async def forward(self, body: bytes, content_type: str) -> httpx.Response:
        """POST the body to the upstream's chat completions; the response is open (streamed): close it."""
        request = self.http.build_request("POST", f"{self.base}/chat/completions", content=body,
                                          headers=self._headers(content_type or "application/json"))
        try:
            return await self.http.send(request, stream=True)
        except httpx.HTTPError as err:
            raise UpstreamError(f"upstream {self.base} unreachable ({err or type(err).__name__})") from None
