"""Job-completion webhooks: a signed JSON POST, retried with backoff, through the inputs' SSRF guard.

Signature (the Stripe/Standard Webhooks idea, so receivers can reject forged or replayed calls): header
``X-Hpinfer-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``. The secret is the job's
``webhookSecret`` (the client's, or one the server made and returned with the job id).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any, Dict, Optional

import httpx

from ...errors import InputError
from ..security import post_checked

log = logging.getLogger("hpinfer.serving.jobs")
SIGNATURE_HEADER = "X-Hpinfer-Signature"
RETRY_DELAYS_S = (0.5, 2.0, 8.0, 30.0)  # after the first attempt: five attempts over about 40 s
TIMEOUT_S = 10.0


def sign(secret: str, body: bytes, timestamp: Optional[int] = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, max_age_s: float = 300) -> bool:
    """What a receiver does (Python receivers may import it): right key, right body, recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if not fields.get("t", "").isdigit() or abs(time.time() - int(fields["t"])) > max_age_s:
        return False
    expected = sign(secret, body, int(fields["t"])).partition("v1=")[2]
    return hmac.compare_digest(expected, fields.get("v1", ""))


async def deliver(client: httpx.AsyncClient, url: str, secret: str, payload: Dict[str, Any], allow_private: bool) -> str:
    """POST until a 2xx answer or the retries run out; what happened, in words (stored with the job)."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    outcome = "not sent"
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S), 1):
        await asyncio.sleep(delay)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body), "User-Agent": "hpinfer"}
        try:
            status = await post_checked(client, url, body, headers, allow_private=allow_private, timeout=TIMEOUT_S)
        except InputError as err:
            outcome = str(err)
        else:
            if 200 <= status < 300:
                return f"delivered (HTTP {status}, attempt {attempt})"
            outcome = f"HTTP {status}"
        log.warning("job %s: webhook attempt %d failed: %s", payload.get("jobId"), attempt, outcome)
    return f"failed after {len(RETRY_DELAYS_S) + 1} attempts: {outcome}"
