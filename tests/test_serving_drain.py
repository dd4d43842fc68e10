"""SIGTERM drains a real ``python -m hpinfer.serving serve`` process: the request in flight completes
with 200, requests arriving meanwhile get 503, and once it has exited connections are refused."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from test_serving_support import b64, make_pdf


def _in_flight(url: str) -> float:
    match = re.search(r"^hpinfer_requests_in_flight (\S+)$", httpx.get(f"{url}/metrics").text, re.M)
    return float(match.group(1))


def test_sigterm_drains_in_flight_requests(tmp_path, shared_images):
    pdf = make_pdf([shared_images / "bilevel_test.png"] * 6, tmp_path / "six.pdf")
    server = subprocess.Popen(
        [sys.executable, "-m", "hpinfer.serving", "serve", "--pipeline", "OCR", "--host", "127.0.0.1", "--port", "0"],
        stderr=subprocess.PIPE, text=True,
    )
    log: list = []
    started = threading.Event()

    def read_log() -> None:
        for line in server.stderr:
            log.append(line)
            if "Uvicorn running on" in line:
                started.set()

    threading.Thread(target=read_log, daemon=True).start()
    try:
        assert started.wait(120), "".join(log)
        url = re.search(r"Uvicorn running on (http://\S+)", "".join(log)).group(1)
        while httpx.get(f"{url}/health/ready").status_code != 200:
            time.sleep(0.05)

        answers: list = []
        slow = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{url}/ocr", json={"file": b64(pdf.read_bytes()), "visualize": False}, timeout=120)))
        slow.start()
        while _in_flight(url) < 1:
            time.sleep(0.01)
        server.send_signal(signal.SIGTERM)
        while httpx.get(f"{url}/health/ready").status_code != 503:
            time.sleep(0.01)
        late = httpx.post(f"{url}/ocr", json={"file": b64(pdf.read_bytes())})
        assert late.status_code == 503 and "shutting down" in late.json()["errorMsg"]
        assert late.headers["retry-after"]
        slow.join(120)
        assert answers[0].status_code == 200, answers[0].text
        assert answers[0].json()["result"]["dataInfo"]["numPages"] == 6
        server.wait(60)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health")
        assert any("draining: 1 request(s) in flight" in line for line in log), "".join(log)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
