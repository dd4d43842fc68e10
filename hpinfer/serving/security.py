"""What a request may make the server do: bearer-token auth, and URL downloads behind an SSRF guard.

The guard resolves each host once, refuses it if any of its addresses is not public (private,
loopback, link-local, reserved, multicast) unless allowed, and then connects to that checked address
itself (Host header and TLS SNI keep the name), so a second DNS answer can't swap in an internal one.
Redirects are followed by hand, each hop checked the same way. Only http and https are fetched.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import socket
from typing import Dict, List, Optional

import httpx

from ..errors import InputError

MAX_REDIRECTS = 5


def authorized(header: Optional[str], api_key: str) -> bool:
    """``Authorization: Bearer <key>``, compared in constant time."""
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


async def fetch_url(
    client: httpx.AsyncClient, url: str, *, allow_private: bool, max_bytes: int, timeout: float
) -> bytes:
    """The body at ``url``, or an InputError saying why not; ``timeout`` bounds the whole download."""
    try:
        return await asyncio.wait_for(_fetch(client, url, allow_private, max_bytes), timeout)
    except asyncio.TimeoutError:
        raise InputError(f"{url}: download did not finish within {timeout:g} s") from None
    except httpx.HTTPError as err:
        raise InputError(f"{url}: download failed ({err or type(err).__name__})") from None


async def _fetch(client: httpx.AsyncClient, url: str, allow_private: bool, max_bytes: int) -> bytes:
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as err:
        raise InputError(f"{url}: not a valid URL ({err})") from None
    for _ in range(MAX_REDIRECTS + 1):
        if target.scheme not in ("http", "https") or not target.host:
            raise InputError(f"{target}: only http:// and https:// URLs with a host are fetched")
        response = await _connect(client, target, await _checked_addresses(target, allow_private))
        try:
            if response.is_redirect:
                target = target.join(response.headers["location"])
                continue
            if response.status_code >= 400:
                raise InputError(f"{url}: download failed (HTTP {response.status_code} {response.reason_phrase})")
            return await _read_capped(response, url, max_bytes)
        finally:
            await response.aclose()
    raise InputError(f"{url}: more than {MAX_REDIRECTS} redirects")


async def post_checked(
    client: httpx.AsyncClient, url: str, body: bytes, headers: Dict[str, str], *, allow_private: bool, timeout: float
) -> int:
    """POST ``body`` to ``url`` through the same guard as downloads (redirects are not followed); the status code."""
    target = await check_url(url, allow_private)
    try:
        addresses = await _checked_addresses(target, allow_private)
        response = await asyncio.wait_for(_connect(client, target, addresses, "POST", body, headers), timeout)
    except asyncio.TimeoutError:
        raise InputError(f"{url}: no answer within {timeout:g} s") from None
    except httpx.HTTPError as err:
        raise InputError(f"{url}: POST failed ({err or type(err).__name__})") from None
    await response.aclose()
    return response.status_code


async def check_url(url: str, allow_private: bool) -> httpx.URL:
    """``url`` parsed, if it is http(s) and its host resolves to addresses the guard allows; else an InputError."""
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as err:
        raise InputError(f"{url}: not a valid URL ({err})") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise InputError(f"{url}: only http:// and https:// URLs with a host are allowed")
    await _checked_addresses(target, allow_private)
    return target


async def _connect(client: httpx.AsyncClient, target: httpx.URL, addresses: List[str], method: str = "GET",
                   content: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None) -> httpx.Response:
    """Send to the first checked address that accepts the connection (a host's IPv6 may be unreachable)."""

    def request(address: str) -> httpx.Request:
        return client.build_request(
            method, target.copy_with(host=address), content=content,
            headers={**(headers or {}), "Host": target.netloc.decode("ascii")}, extensions={"sni_hostname": target.host},
        )

    *others, last = addresses
    for address in others:
        try:
            return await client.send(request(address), stream=True)
        except httpx.ConnectError:
            continue
    return await client.send(request(last), stream=True)


async def _checked_addresses(target: httpx.URL, allow_private: bool) -> List[str]:
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(target.host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise InputError(f"{target.host}: cannot resolve host ({err.strerror})") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not allow_private:
        for address in addresses:
            plain = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1 is loopback too
            if not plain.is_global or plain.is_multicast:
                raise InputError(
                    f"{target.host} resolves to {address}, a private, loopback, link-local or reserved address: "
                    "refused (start the server with --allow_private_urls to allow)"
                )
    return list(dict.fromkeys(str(address) for address in addresses))


async def _read_capped(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise InputError(f"{url}: download is {int(length)} bytes, above the limit of {max_bytes}")
    chunks, total = [], 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > max_bytes:
            raise InputError(f"{url}: download exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
