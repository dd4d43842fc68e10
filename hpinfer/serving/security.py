"""What a request may make the server do: bearer-token auth, and URL downloads behind an SSRF guard.

The guard resolves each host once, refuses it if any of its addresses is not public (``refusal``: an
explicit table of IPv4 and IPv6 ranges, with IPv4 embedded in IPv6 unwrapped and judged as IPv4) unless
allowed, and then connects to that checked address
itself (Host header and TLS SNI keep the name), so a second DNS answer can't swap in an internal one.
Redirects are followed by hand, each hop checked the same way. Only http and https are fetched.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import socket
from typing import Dict, List, Optional, Tuple, Union

import httpx

from ..errors import InputError

MAX_REDIRECTS = 5

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_UNWRAP_LOW32 = "unwrap the IPv4 in the last 32 bits"
_UNWRAP_6TO4 = "unwrap the IPv4 in bits 16-48 (6to4)"
_GLOBAL = None  # allowed

# First match wins (more specific ranges first). A string is why the range is refused.
IPV4_RANGES: Tuple[Tuple[str, Optional[str]], ...] = (
    ("0.0.0.0/8", "'this network'"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT (shared)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes 255.255.255.255, broadcast
    ("0.0.0.0/0", _GLOBAL),
)
IPV6_RANGES: Tuple[Tuple[str, Optional[str]], ...] = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", _UNWRAP_LOW32),  # IPv4-mapped
    ("::ffff:0:0:0/96", _UNWRAP_LOW32),  # IPv4-translated (SIIT)
    ("64:ff9b::/96", _UNWRAP_LOW32),  # NAT64, well-known prefix
    ("::/96", _UNWRAP_LOW32),  # IPv4-compatible (deprecated)
    ("2002::/16", _UNWRAP_6TO4),
    ("64:ff9b:1::/48", "NAT64 local-use"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo (embeds an obfuscated IPv4)"),
    ("2001:db8::/32", "documentation"),
    ("2001::/23", "IETF protocol assignments"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing (SRv6)"),
    ("fc00::/7", "unique local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
    ("2000::/3", _GLOBAL),  # global unicast
    ("::/0", "reserved (outside global unicast 2000::/3)"),
)
_TABLES = {
    version: [(ipaddress.ip_network(net), verdict) for net, verdict in table]
    for version, table in ((4, IPV4_RANGES), (6, IPV6_RANGES))
}


def refusal(address: IPAddress) -> Optional[str]:
    """Why URL downloads may not reach ``address`` (the range it falls in), or None for a public address."""
    for network, verdict in _TABLES[address.version]:
        if address not in network:
            continue
        if verdict == _UNWRAP_LOW32:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        elif verdict == _UNWRAP_6TO4:
            inner = ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
        else:
            return verdict
        why = refusal(inner)
        return None if why is None else f"{why}: embeds {inner}"
    raise AssertionError("the tables end with a catch-all range")


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
            why = refusal(address)
            if why:
                raise InputError(
                    f"{target.host} resolves to {address} ({why}): refused, only public addresses are fetched "
                    "(start the server with --allow_private_urls to allow)"
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
