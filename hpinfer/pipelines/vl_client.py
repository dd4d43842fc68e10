"""The recogniser tier of PaddleOCR-VL as a client: blocks → answers, remote (an OpenAI-compatible server) or
in-process (the native recogniser, when no server URL is given).

Remote requests follow PaddleX's GenAI client: one ``POST {base}/chat/completions`` per block (one user
message: the block as a JPEG data URL — PNG for llama.cpp — and the task prompt; ``temperature`` 0;
``max_completion_tokens``, or ``max_tokens`` for llama.cpp and MLX-VLM), all blocks submitted at once on one
event loop in a background thread and throttled by a semaphore of ``max_concurrency``, each request bounded
by ``timeout_s``. On top of PaddleX's client: 429, 502-504 and connection errors are retried with exponential
backoff; one block's failure becomes that block's error, while a refusal that would fail every block (401,
403, 404: wrong key, URL or model) cancels the page's pending requests and fails the page. A prompt the
server declines (HTTP 400, code ``unsupported_prompt``) leaves its blocks as pictures and is not sent again.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import logging
import threading
from typing import Any, Dict, List, Optional, Sequence, Set

import cv2
import numpy as np

from ..errors import ConfigError, HpinferError
from .block_recognition import Answer, NativeRecogniser

log = logging.getLogger("hpinfer")

RETRY_STATUS = frozenset({429, 502, 503, 504})
FATAL_STATUS = frozenset({401, 403, 404})
DISCOVERY_TIMEOUT_S = 10.0  # PaddleX's, for GET /models
_PNG_BACKENDS = ("llama-cpp-server",)
_MAX_TOKENS_BACKENDS = ("llama-cpp-server", "mlx-vlm-server")


class RecogniserError(HpinferError):
    """The recogniser refused every block of a page (wrong API key, URL or model name)."""


def declined(prompt: str, why: str) -> Answer:
    return Answer("", note=f"not recognised: the recogniser does not serve {prompt!r} ({why})")


class LocalRecogniser:
    """The native recogniser in this process; ``submit`` runs at once (the engines batch a page's blocks)."""

    def __init__(self, native: NativeRecogniser):
        self.native = native

    def submit(self, images: Sequence[np.ndarray], prompts: Sequence[str], sampling: Dict[str, Any]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        served = [i for i, p in enumerate(prompts) if p in self.native.handlers]
        answers: List[Answer] = [declined(p, "no model for it") for p in prompts]
        try:
            for i, answer in zip(served, self.native.recognise([images[i] for i in served], [prompts[i] for i in served])):
                answers[i] = answer
            future.set_result(answers)
        except Exception as err:  # noqa: BLE001 - the page reports it
            future.set_exception(err)
        return future

    def close(self) -> None:
        self.native.close()


class RemoteRecogniser:
    def __init__(
        self, url: str, *, backend: str, model_name: Optional[str], api_key: Optional[str], max_concurrency: int,
        timeout_s: float, retries: int, backoff_s: float,
    ):
        import httpx

        self.base = url.rstrip("/") if httpx.URL(url).path.strip("/") else url.rstrip("/") + "/v1"
        self.backend = backend
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.declined: Set[str] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hpinfer-vl-client", daemon=True)
        self._thread.start()
        headers = {"Authorization": f"Bearer {api_key or 'null'}"}
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)

        async def setup():
            self._semaphore = asyncio.Semaphore(max_concurrency)
            self._http = httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout_s, trust_env=False)

        self._call(setup())
        try:
            self.model = model_name or self._call(self._discover())
        except BaseException:
            self.close()
            raise

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _discover(self) -> str:
        import httpx

        try:
            response = await self._http.get(f"{self.base}/models", timeout=DISCOVERY_TIMEOUT_S)
            response.raise_for_status()
            return response.json()["data"][0]["id"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as err:
            raise ConfigError(
                f"vl_rec_server_url {self.base}: cannot read the served model from GET /models ({_describe(err)}); "
                "check the URL and that the recogniser (e.g. hpinfer genai-server) is running"
            ) from None

    def submit(self, images: Sequence[np.ndarray], prompts: Sequence[str], sampling: Dict[str, Any]) -> concurrent.futures.Future:
        """A future of one ``Answer`` per block (failed blocks carry ``error``); raises ``RecogniserError``."""
        bodies = [self._body(image, prompt, sampling) for image, prompt in zip(images, prompts)]
        return asyncio.run_coroutine_threadsafe(self._page(bodies, list(prompts)), self._loop)

    def _body(self, image: np.ndarray, prompt: str, sampling: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        if prompt in self.declined:
            return None
        kind = "png" if self.backend in _PNG_BACKENDS else "jpeg"
        ok, data = cv2.imencode(f".{kind}", image)
        if not ok:
            raise RuntimeError(f"{kind.upper()} encoding of a block failed")
        url = f"data:image/{kind};base64," + base64.b64encode(data.tobytes()).decode("ascii")
        body: Dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt}]}],
            "temperature": 0,
        }
        extra = dict(sampling)
        max_tokens = extra.pop("max_new_tokens", None)
        if max_tokens is not None:
            body["max_tokens" if self.backend in _MAX_TOKENS_BACKENDS else "max_completion_tokens"] = max_tokens
        body.update({k: v for k, v in extra.items() if v is not None})
        return body

    async def _page(self, bodies: List[Optional[Dict[str, Any]]], prompts: List[str]) -> List[Answer]:
        tasks = [asyncio.ensure_future(self._block(body, prompt)) for body, prompt in zip(bodies, prompts)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:  # a fatal refusal (or the page abandoned): the rest would only fail alike
                task.cancel()
            raise

    async def _block(self, body: Optional[Dict[str, Any]], prompt: str) -> Answer:
        import httpx

        if body is None or prompt in self.declined:
            return declined(prompt, "the server said so earlier")
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                async with self._semaphore:
                    response = await self._http.post(f"{self.base}/chat/completions", json=body)
            except httpx.TimeoutException:
                return Answer("", error=f"no answer within {self.timeout_s:g} s")
            except httpx.TransportError as err:
                if last:
                    return Answer("", error=f"recogniser unreachable after {attempt + 1} attempt(s): {_describe(err)}")
            else:
                status = response.status_code
                if status == 200:
                    try:
                        data = response.json()
                        return Answer(data["choices"][0]["message"]["content"] or "", note=data.get("hpinfer_note"))
                    except (ValueError, KeyError, IndexError, TypeError):
                        return Answer("", error="the recogniser's answer has no choices[0].message.content")
                message = _error_message(response)
                if status in FATAL_STATUS:
                    raise RecogniserError(f"recogniser at {self.base} refused the request: HTTP {status}: {message}")
                if status == 400 and _error_code(response) == "unsupported_prompt":
                    if prompt not in self.declined:
                        self.declined.add(prompt)
                        log.warning("PaddleOCR-VL: %s; those blocks stay pictures", message)
                    return declined(prompt, message)
                if status not in RETRY_STATUS or last:
                    return Answer("", error=f"HTTP {status}: {message}")
            await asyncio.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if hasattr(self, "_http"):
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._http.aclose(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def _describe(err: BaseException) -> str:
    return str(err) or type(err).__name__


def _error_json(response: Any) -> Dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_message(response: Any) -> str:
    """OpenAI's ``{"error": {"message"}}``, PaddleX's ``errorMsg``, or the body's start."""
    data = _error_json(response)
    error = data.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(data.get("errorMsg") or data.get("detail") or response.text[:200] or response.reason_phrase)


def _error_code(response: Any) -> Optional[str]:
    error = _error_json(response).get("error")
    return error.get("code") if isinstance(error, dict) else None


def make_recogniser(options: Any, native: "NativeRecogniser | None") -> "LocalRecogniser | RemoteRecogniser":
    """The remote client when ``options.vl_rec_server_url`` is set, else the native recogniser in-process."""
    if options.vl_rec_server_url:
        return RemoteRecogniser(
            options.vl_rec_server_url, backend=options.vl_rec_backend, model_name=options.vl_rec_api_model_name,
            api_key=options.vl_rec_api_key, max_concurrency=options.vl_rec_max_concurrency,
            timeout_s=options.vl_rec_timeout_s, retries=options.vl_rec_retries, backoff_s=options.vl_rec_retry_backoff_s,
        )
    if native is None:
        raise ConfigError("PaddleOCR-VL: no vl_rec_server_url and no native recogniser")
    return LocalRecogniser(native)
