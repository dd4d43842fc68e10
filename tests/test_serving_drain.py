"""SIGTERM drains a real ``python -m hpinfer.serving serve`` process: the request in flight completes
with 200, requests arriving meanwhile get 503, and once it has exited connections are refused."""

from __future__ import annotations

import re
import signal
import threading

import httpx
import pytest

from test_serving_support import b64, make_pdf, serve_process, wait_until


def _in_flight(url: str) -> float:
    match = re.search(r"^hpinfer_requests_in_flight (\S+)$", httpx.get(f"{url}/metrics").text, re.M)
    return float(match.group(1))


def test_sigterm_drains_in_flight_requests(tmp_path, shared_images):
    pdf = make_pdf([shared_images / "bilevel_test.png"] * 6, tmp_path / "six.pdf")
    with serve_process("--pipeline", "OCR") as (server, url, log):
        answers: list = []
        slow = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{url}/ocr", json={"file": b64(pdf.read_bytes()), "visualize": False}, timeout=120)))
        slow.start()
        wait_until(lambda: _in_flight(url) >= 1, 30, "the request to be in flight", 0.01)
        server.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{url}/health/ready").status_code == 503, 30, "readiness 503", 0.01)
        late = httpx.post(f"{url}/ocr", json={"file": b64(pdf.read_bytes())})
        assert late.status_code == 503 and "shutting down" in late.json()["errorMsg"]
        assert late.headers["retry-after"]
        slow.join(120)
        assert answers[0].status_code == 200, answers[0].text
        assert answers[0].json()["result"]["dataInfo"]["numPages"] == 6
        assert server.wait(60) == 0  # nothing was cut short
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health")
        assert any("draining: 1 request(s) in flight" in line for line in log), "".join(log)
