"""Clients for hpinfer's (and PaddleX's) serving API: ``Client`` (sync) and ``AsyncClient``, over httpx.

    with Client("http://127.0.0.1:8080/ocr", api_key=...) as client:
        response = client.predict("scan.pdf", textDetThresh=0.4)   # or use_textline_orientation=False
        save_response(response, "out/", "scan")

``predict`` takes a file path, raw bytes, or an http(s) URL for the server to fetch; options go by
their PaddleX names or our snake_case names. It returns the whole response (``logId``, ``result``...)
and raises ``ServingError`` (one line: status, message, logId) for any error answer.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import httpx

from ..errors import HpinferError, InputError
from .adapters import file_field

Source = Union[str, Path, bytes]


class ServingError(HpinferError):
    """An error answer (``status``, PaddleX's ``errorMsg``, ``log_id``), or no answer at all (``status`` None)."""

    def __init__(self, status: Optional[int], message: str, log_id: Optional[str] = None):
        said = f"server answered {status}: {message}" if status else message
        super().__init__(said + (f" (logId {log_id})" if log_id else ""))
        self.status, self.message, self.log_id = status, message, log_id


@contextlib.contextmanager
def _reaching(url: str, timeout: Any) -> Iterator[None]:
    try:
        yield
    except httpx.ConnectTimeout:
        raise ServingError(None, f"cannot reach {url}: connecting timed out") from None
    except httpx.TimeoutException as err:  # read, write or pool: the server took the request but did not answer
        seconds = getattr(timeout, "read", None)
        within = f" within {seconds:g} s" if seconds else ""
        raise ServingError(None, f"timed out: {url} did not answer{within} ({type(err).__name__}; raise --timeout "
                                 "or the server's request_timeout_s)") from None
    except httpx.TransportError as err:
        raise ServingError(None, f"cannot reach {url}: {err or type(err).__name__}") from None


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def build_request(url: str, source: Source, options: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON body: the file under the endpoint's field name, ``fileType`` from a path's suffix."""
    field = file_field(httpx.URL(url).path)
    body = {camel(k): v for k, v in options.items()}
    if isinstance(source, bytes):
        body[field] = base64.b64encode(source).decode("ascii")
    elif str(source).lower().startswith(("http://", "https://")):
        body[field] = str(source)
    else:
        path = Path(source)
        try:
            body[field] = base64.b64encode(path.read_bytes()).decode("ascii")
        except OSError as err:
            raise InputError(f"{path}: cannot read file ({err.strerror or err})") from None
        if field == "file" and "fileType" not in body:
            body["fileType"] = 0 if path.suffix.lower() == ".pdf" else 1
    return body


def parse_response(response: httpx.Response) -> Dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ServingError(response.status_code, _not_ours(response), None) from None
    if not isinstance(body, dict):
        raise ServingError(response.status_code, _not_ours(response), None)
    if response.status_code != 200 or body.get("errorCode", 0) != 0:
        message = body.get("errorMsg") or _not_ours(response)
        raise ServingError(response.status_code, str(message), body.get("logId"))
    return body


def _not_ours(response: httpx.Response) -> str:
    """An answer that is not PaddleX's envelope (a proxy's or another server's page), as one short line."""
    text = " ".join(re.sub(r"<[^>]*>", " ", response.text).split())
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    shown = f": {text[:120]}{'...' if len(text) > 120 else ''}" if text else ""
    return f"not an hpinfer/PaddleX answer ({kind}, {len(response.content)} bytes){shown}"


class _Base:
    """``url`` is the endpoint (e.g. ``http://host:8080/ocr``); extra keywords go to the httpx client."""

    _http_class: Any

    def __init__(self, url: str, *, api_key: Optional[str] = None, timeout: float = 300.0, **httpx_options: Any):
        self.url = url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = self._http_class(timeout=timeout, headers=headers, **httpx_options)


class Client(_Base):
    _http_class = httpx.Client

    def predict(self, source: Source, **options: Any) -> Dict[str, Any]:
        body = build_request(self.url, source, options)
        with _reaching(self.url, self._http.timeout):
            return parse_response(self._http.post(self.url, json=body))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncClient(_Base):
    _http_class = httpx.AsyncClient

    async def predict(self, source: Source, **options: Any) -> Dict[str, Any]:
        body = build_request(self.url, source, options)
        with _reaching(self.url, self._http.timeout):
            return parse_response(await self._http.post(self.url, json=body))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def _images(result: Dict[str, Any]) -> List[tuple]:
    """(key path for the file name, holder dict, field) of every base64 image in a PaddleX result."""
    found = []
    for key, value in result.items():
        if isinstance(value, str) and (key == "image" or key.endswith("Image")):
            found.append((key, result, key))
        elif key == "outputImages" and isinstance(value, dict):  # layout parsing: {name: base64}
            found += [(name, value, name) for name, item in value.items() if isinstance(item, str)]
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    found += [(f"{sub}_{i}", holder, name) for sub, holder, name in _images(item)]
    return found


def save_response(response: Dict[str, Any], save_path: Union[str, Path], stem: str) -> List[Path]:
    """Writes each result image as ``<stem>_<field>[_<page>].jpg`` and the JSON (image fields → file names)."""
    folder = Path(save_path)
    folder.mkdir(parents=True, exist_ok=True)
    result = json.loads(json.dumps(response.get("result", {})))  # a copy whose images we replace by file names
    written = []
    for name, holder, key in _images(result):
        target = folder / f"{stem}_{name}.jpg"
        target.write_bytes(base64.b64decode(holder[key]))
        holder[key] = target.name
        written.append(target)
    for i, page in enumerate(result.get("layoutParsingResults", [])):  # each page's Markdown and its images
        markdown = page.get("markdown") or {}
        for name, data in (markdown.get("images") or {}).items():
            target = (folder / name).resolve()
            if folder.resolve() not in target.parents:  # a path from the server must stay inside save_path
                raise ServingError(None, f"markdown image path {name!r} leaves the save folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(base64.b64decode(data))
            markdown["images"][name] = name
            written.append(target)
        if "text" in markdown:
            target = folder / f"{stem}_{i}.md"
            target.write_text(markdown["text"] + "\n", encoding="utf-8")
            written.append(target)
    target = folder / f"{stem}_res.json"
    target.write_text(json.dumps({**response, "result": result}, ensure_ascii=False, indent=2), encoding="utf-8")
    return [target, *written]


def summary(source: Any, response: Dict[str, Any]) -> str:
    """Readable lines: each page's texts for OCR, the result JSON (without images) otherwise."""
    result = response.get("result", {})
    if "ocrResults" in result:
        lines = []
        pages = result["ocrResults"]
        for i, page in enumerate(pages):
            texts, scores = page["prunedResult"].get("rec_texts", []), page["prunedResult"].get("rec_scores", [])
            lines.append(f"{source}{f' [page {i + 1}]' if len(pages) > 1 else ''}: {len(texts)} text line(s)")
            lines += [f"  {score:.3f}  {text}" for text, score in zip(texts, scores)]
        return "\n".join(lines)
    if "layoutParsingResults" in result:
        pages = result["layoutParsingResults"]
        return "\n".join(
            f"{source}{f' [page {i + 1}]' if len(pages) > 1 else ''}:\n{page['markdown']['text']}" for i, page in enumerate(pages)
        )
    plain = {k: v for k, v in result.items() if not (k == "image" or k.endswith("Image"))}
    return f"{source}: {json.dumps(plain, ensure_ascii=False)}"
