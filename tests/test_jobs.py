"""The async jobs API against real ``hpinfer serve`` processes on 127.0.0.1: a job killed mid-way resumes after a
restart and ends with the uninterrupted result; cancelling stops engine work within one page; the webhook
arrives signed; queued batch pages leave interactive latency within 2x of idle."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import statistics
import threading
import time

import httpx
import pytest
from PIL import Image

from hpinfer.errors import InputError
from hpinfer.serving.jobs.webhooks import SIGNATURE_HEADER, verify
from hpinfer.serving.security import check_url
from hpinfer.serving.app import create_app
from hpinfer.serving.settings import ServeSettings
from test_serving_support import ServerProcess, b64, make_pdf, running, wait_for

SMALL = "single_line.jpg"  # 445x39
# Detection at the page's own size (the default scales the short side up to 736: 8400x736 for SMALL).
FAST = {"textDetLimitType": "max", "textDetLimitSideLen": 736}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jobs")
    process = ServerProcess("--pipeline", "OCR", "--jobs_dir", str(folder / "store"), "--allow_private_urls")
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory, shared_images):
    folder = tmp_path_factory.mktemp("pdfs")
    half = folder / "half.png"  # the left half of SMALL: a batch page smaller than the interactive one
    Image.open(shared_images / SMALL).crop((0, 0, 222, 39)).save(half)
    big = folder / "big.png"
    Image.new("RGB", (1500, 1500), "white").save(big)
    pages = [shared_images / name for name in ("paragraph_en.jpg", SMALL, "bilevel_test.png", "wide_line.jpg")]
    return {
        "six": make_pdf((pages * 2)[:6], folder / "six.pdf").read_bytes(),
        # The middle page renders to 1500x1500 pixels: above a 1-megapixel limit, it fails alone.
        "three": make_pdf([shared_images / SMALL, big, shared_images / SMALL], folder / "three.pdf").read_bytes(),
        "hundred": make_pdf([half] * 100, folder / "hundred.pdf").read_bytes(),
    }


def submit(url: str, data: bytes, **fields) -> str:
    answer = httpx.post(f"{url}/jobs", json={"file": b64(data), "visualize": False, **FAST, **fields}, timeout=60)
    assert answer.status_code == 202, answer.text
    return answer.json()["result"]["jobId"]


def status(url: str, job_id: str) -> dict:
    return httpx.get(f"{url}/jobs/{job_id}", timeout=30).json()["result"]


def finished(url: str, job_id: str, timeout: float = 120) -> dict:
    return wait_for(lambda: (s := status(url, job_id))["status"] in ("done", "failed", "cancelled") and s, timeout,
                    f"job {job_id} to finish")


def batches(url: str) -> float:
    return float(re.search(r"^hpinfer_batch_size_count (\S+)$", httpx.get(f"{url}/metrics").text, re.M).group(1))


def test_restart_mid_job_resumes_with_the_uninterrupted_result(server, pdfs):
    job_id = submit(server.url, pdfs["six"])
    wait_for(lambda: status(server.url, job_id)["pagesDone"] >= 2, 120, "two pages done")
    server.kill()  # no drain, no clean-up: as a crash would
    server.start()
    done = finished(server.url, job_id)
    assert done["status"] == "done" and done["pagesDone"] == 6 and not done["errors"], done
    assert any(f"job {job_id}: resuming at page" in line for line in server.log), "".join(server.log)
    resumed = httpx.get(f"{server.url}/jobs/{job_id}/result").json()
    assert resumed["jobStatus"] == "done"
    direct = httpx.post(f"{server.url}/ocr", json={"file": b64(pdfs["six"]), "visualize": False, **FAST}, timeout=120).json()
    assert resumed["result"] == direct["result"]  # pages, texts, boxes and dataInfo: as one uninterrupted request

    # The events replay every page, then the end.
    with httpx.stream("GET", f"{server.url}/jobs/{job_id}/events", timeout=30) as stream:
        events = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
    assert [e.get("page") for e in events] == [0, 1, 2, 3, 4, 5, None] and events[-1]["status"] == "done"


def test_cancel_stops_engine_work_within_one_page(server, pdfs):
    job_id = submit(server.url, pdfs["hundred"])
    wait_for(lambda: status(server.url, job_id)["pagesDone"] >= 1, 120, "a page done")
    answer = httpx.delete(f"{server.url}/jobs/{job_id}")
    assert answer.json()["result"]["status"] == "cancelled"
    before = batches(server.url)
    at_cancel = status(server.url, job_id)
    page_s = max(p["total"] for p in at_cancel["timings"]["pages"])
    time.sleep(min(10, 3 * page_s + 0.5))  # long enough for several more pages, had the work gone on
    after = status(server.url, job_id)
    assert after["status"] == "cancelled"
    assert batches(server.url) - before <= 1  # at most the page that was in the engine
    assert after["pagesDone"] <= at_cancel["pagesDone"] + 1 < 100
    assert httpx.delete(f"{server.url}/jobs/{job_id}").json()["result"]["status"] == "deleted"
    assert httpx.get(f"{server.url}/jobs/{job_id}").status_code == 404


class _Receiver(http.server.BaseHTTPRequestHandler):
    calls: list = []

    def do_POST(self):  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.calls.append((dict(self.headers), body))
        self.send_response(503 if len(_Receiver.calls) == 1 else 204)  # the first attempt fails: retried
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_is_signed_and_retried(server, shared_images):
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        answer = httpx.post(f"{server.url}/jobs", json={"file": b64((shared_images / SMALL).read_bytes()), "webhookUrl": hook, **FAST})
        assert answer.status_code == 202, answer.text
        job_id, secret = answer.json()["result"]["jobId"], answer.json()["result"]["webhookSecret"]
        wait_for(lambda: len(_Receiver.calls) >= 2, 60, "the retried webhook")
        headers, body = _Receiver.calls[-1]
        assert verify(secret, body, headers[SIGNATURE_HEADER])
        assert not verify(secret, body.replace(b"done", b"fail"), headers[SIGNATURE_HEADER])
        assert not verify("another secret of enough length", body, headers[SIGNATURE_HEADER])
        assert json.loads(body) == {"jobId": job_id, "status": "done", "pagesDone": 1, "pagesTotal": 1, "error": None}
        assert wait_for(lambda: (status(server.url, job_id)["webhook"] or {}).get("status", "") or "", 10, "webhook status"
                        ).startswith("delivered (HTTP 204, attempt 2)")
    finally:
        receiver.shutdown()
        receiver.server_close()
    # Without --allow_private_urls, the SSRF guard refuses loopback webhooks as it refuses loopback inputs.
    with pytest.raises(InputError, match="loopback"):
        asyncio.run(check_url(hook, allow_private=False))


def test_batch_pages_keep_interactive_p99_within_2x(server, pdfs, shared_images):
    page = b64((shared_images / SMALL).read_bytes())

    def p99(count: int) -> float:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            times = []
            for _ in range(count):
                start = time.perf_counter()
                assert client.post("/ocr", json={"file": page, "visualize": False, **FAST}).status_code == 200
                times.append(time.perf_counter() - start)
        return statistics.quantiles(times, n=100)[98]

    p99(5)  # warm
    # On a shared 2-core machine one spike from another process decides a 40-sample p99: a second round tells
    # such a spike from a real slowdown (a real one fails both).
    rounds = []
    for _ in range(2):
        idle = p99(40)
        job_id = submit(server.url, pdfs["hundred"], priority="batch")
        wait_for(lambda: status(server.url, job_id)["status"] == "running", 30, "the batch job to start")
        busy = p99(40)
        progress = status(server.url, job_id)["pagesDone"]
        httpx.delete(f"{server.url}/jobs/{job_id}")
        assert 1 <= progress < 100, f"{progress} batch pages done: starved, or finished before the measurement ended"
        rounds.append(f"{busy * 1000:.0f} ms with batch pages queued, {idle * 1000:.0f} ms idle")
        if busy <= 2 * idle:
            return
    pytest.fail(f"interactive p99 above 2x idle in both rounds: {rounds}")


def test_auth_quota_page_errors_and_retention(tmp_path, pdfs):
    key = "jobs-test-key-0123456789"
    settings = ServeSettings(jobs_dir=str(tmp_path / "store"), api_key=key, jobs_per_key=1, jobs_retention_h=0.0005,
                             max_pixels=1_000_000)
    with running(create_app(settings)) as url:
        assert httpx.post(f"{url}/jobs", json={"file": b64(pdfs["three"])}).status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        body = {"file": b64(pdfs["three"]), "visualize": False, **FAST}
        long_job = httpx.post(f"{url}/jobs", json={**body, "file": b64(pdfs["hundred"])}, headers=auth).json()["result"]
        refused = httpx.post(f"{url}/jobs", json=body, headers=auth)
        assert refused.status_code == 429 and "1 unfinished jobs" in refused.json()["errorMsg"]
        assert httpx.get(f"{url}/jobs/{long_job['jobId']}").status_code == 401
        assert httpx.delete(f"{url}/jobs/{long_job['jobId']}", headers=auth).json()["result"]["status"] == "cancelled"
        job_id = httpx.post(f"{url}/jobs", json=body, headers=auth).json()["result"]["jobId"]
        done = wait_for(lambda: (s := httpx.get(f"{url}/jobs/{job_id}", headers=auth).json()["result"])["status"] == "done"
                        and s, 120, "done")
        assert [e["page"] for e in done["errors"]] == [1] and "above the limit of 1000000" in done["errors"][0]["error"]
        texts = [p["prunedResult"].get("rec_texts") for p in
                 httpx.get(f"{url}/jobs/{job_id}/result", headers=auth).json()["result"]["ocrResults"]]
        assert texts[0] == texts[2] == ["在中国作家协会第三届儿童文学"] and texts[1] is None  # the page after the error ran
        assert (tmp_path / "store" / job_id / "page-2.json").is_file()
        # Kept 1.8 s (0.0005 h) after finishing, then removed with its files.
        wait_for(lambda: httpx.get(f"{url}/jobs/{job_id}", headers=auth).status_code == 404
                 and not (tmp_path / "store" / job_id).exists(), 10, "the job's removal")
