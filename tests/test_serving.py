"""The OCR server end to end: a real uvicorn server on 127.0.0.1 (ephemeral port) with the real models.

One pipeline is loaded for the module and shared by the apps under test (each app has its own batcher,
limits and settings), so every test talks HTTP to a server like the one ``hpinfer serve`` runs.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

import hpinfer
from hpinfer.errors import ConfigError, InputError
from hpinfer.pipelines.config import BUNDLED_DIR
from hpinfer.serving import AsyncClient, Client, ServeSettings, ServingError, create_app
from hpinfer.serving.cli import main as serving_main
from hpinfer.serving.client import save_response
from hpinfer.serving.security import fetch_url
from hpinfer.serving.settings import SETTINGS_ENV
from test_serving_support import b64, make_pdf, running, static_files, wait_until

IMAGE = "bilevel_test.png"  # one text line, fast to OCR
OTHER = "single_line.jpg"
SETTINGS = ServeSettings(max_pdf_pages=3, max_pixels=2_000_000, max_body_mb=1)


@pytest.fixture(scope="module")
def pipeline():
    with hpinfer.create_pipeline("OCR") as ocr:
        yield ocr


@pytest.fixture(scope="module")
def files(tmp_path_factory, shared_images):
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "page.png").write_bytes((shared_images / IMAGE).read_bytes())
    (folder / "other.jpg").write_bytes((shared_images / OTHER).read_bytes())
    make_pdf([shared_images / IMAGE] * 2, folder / "two.pdf")
    make_pdf([shared_images / IMAGE] * 4, folder / "four.pdf")
    Image.new("RGB", (2100, 1000), "white").save(folder / "huge.png")  # 2.1 MP, above the 2 MP limit
    (folder / "noise.bin").write_bytes(np.random.default_rng(0).bytes(600_000))
    return folder


@pytest.fixture(scope="module")
def expected(pipeline, files):
    """In-process results, which the server's must equal."""
    return {name: pipeline.predict(cv2.imread(str(files / name)))[0]["rec_texts"] for name in ("page.png", "other.jpg")}


@pytest.fixture(scope="module")
def server(pipeline):
    app = create_app(SETTINGS, pipeline)
    with running(app) as url:
        yield url, app


def ocr(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/ocr", json=body, timeout=120)


def test_health_readiness_and_docs(server):
    url, _ = server
    assert httpx.get(f"{url}/health").json()["errorMsg"] == "Healthy"
    ready = httpx.get(f"{url}/health/ready")
    assert ready.status_code == 200 and ready.json()["errorCode"] == 0
    assert "swagger" in httpx.get(f"{url}/docs").text.lower()
    schema = httpx.get(f"{url}/openapi.json").json()
    fields = schema["components"]["schemas"]["OCRRequest"]["properties"]
    assert {"file", "fileType", "useTextlineOrientation", "textDetLimitSideLen", "textRecScoreThresh", "visualize"} <= set(fields)


def test_image_matches_in_process_predict(server, files, expected):
    url, _ = server
    body = ocr(url, file=b64((files / "page.png").read_bytes()), fileType=1).json()
    assert body["errorCode"] == 0 and body["errorMsg"] == "Success" and body["logId"]
    result = body["result"]
    image = cv2.imread(str(files / "page.png"))
    assert result["dataInfo"] == {"width": image.shape[1], "height": image.shape[0], "type": "image"}
    (page,) = result["ocrResults"]
    assert page["prunedResult"]["rec_texts"] == expected["page.png"]
    assert "input_path" not in page["prunedResult"]
    for key in ("ocrImage", "inputImage"):  # visualize defaults to true, as in PaddleX
        picture = cv2.imdecode(np.frombuffer(base64.b64decode(page[key]), np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and picture.size
    plain = ocr(url, file=b64((files / "page.png").read_bytes()), visualize=False).json()["result"]["ocrResults"][0]
    assert set(plain) == {"prunedResult"}


def test_pdf_pages(server, files, expected):
    url, _ = server
    for file_type in (0, None):
        result = ocr(url, file=b64((files / "two.pdf").read_bytes()), fileType=file_type, visualize=False).json()["result"]
        assert result["dataInfo"]["type"] == "pdf" and result["dataInfo"]["numPages"] == 2
        assert len(result["dataInfo"]["pages"]) == 2
        assert [p["prunedResult"]["page_index"] for p in result["ocrResults"]] == [0, 1]
        assert all(p["prunedResult"]["rec_texts"] == expected["page.png"] for p in result["ocrResults"])


def test_options_reach_the_pipeline(server, files):
    url, _ = server
    body = ocr(
        url, file=b64((files / "page.png").read_bytes()), visualize=False, useTextlineOrientation=False,
        textDetThresh=0.4, textRecScoreThresh=0.2, textDetLimitType="max", textDetLimitSideLen=960,
    ).json()
    pruned = body["result"]["ocrResults"][0]["prunedResult"]
    assert pruned["model_settings"]["use_textline_orientation"] is False
    assert pruned["text_det_params"]["thresh"] == 0.4 and pruned["text_det_params"]["limit_type"] == "max"
    assert pruned["text_rec_score_thresh"] == 0.2


BAD_INPUTS = {
    "bad base64": ({"file": "@@@ not base64 @@@"}, "neither an http(s) URL nor valid base64"),
    "empty": ({"file": ""}, "empty"),
    "not an image": ({"file": b64(b"hello, world")}, "not a supported image"),
    "truncated image": (lambda f: {"file": b64((f / "page.png").read_bytes()[:300])}, "corrupt or truncated"),
    "too many pixels": (lambda f: {"file": b64((f / "huge.png").read_bytes())}, "above the limit of 2000000"),
    "too many PDF pages": (lambda f: {"file": b64((f / "four.pdf").read_bytes())}, "4 pages, above the limit of 3"),
    "corrupt PDF": ({"file": b64(b"%PDF-1.4 garbage")}, "PDF"),
    "fileType mismatch": (lambda f: {"file": b64((f / "page.png").read_bytes()), "fileType": 0}, "a PDF (fileType 0)"),
    "bad fileType": ({"file": b64(b"x"), "fileType": 7}, "fileType"),
    "missing file": ({}, "file: Field required"),
    "unknown field": ({"file": b64(b"x"), "textDetTresh": 0.3}, "textDetTresh: unknown field"),
    "wrong type": ({"file": 12345}, "file: Input should be a valid string"),
    "wrong option type": ({"file": b64(b"x"), "useTextlineOrientation": "maybe"}, "useTextlineOrientation"),
    "option out of range": ({"file": b64(b"x"), "textDetThresh": 1.5}, "textDetThresh"),
    "huge detection side": ({"file": b64(b"x"), "textDetLimitSideLen": 10**7}, "textDetLimitSideLen"),
    "unsupported option": ({"file": b64(b"x"), "useDocUnwarping": True}, "not supported"),
    "orientation model not loaded": ({"file": b64(b"x"), "useDocOrientationClassify": True}, "without the DocOrientationClassify model"),
    "file URL": ({"file": "file:///etc/passwd"}, "only http:// and https:// URLs"),
    "server path": ({"file": "/etc/passwd"}, "neither an http(s) URL nor valid base64"),
    "loopback URL refused by default": ({"file": "http://127.0.0.1:9/x.png"}, "--allow_private_urls"),
    "link-local URL refused": ({"file": "http://169.254.169.254/latest/meta-data"}, "link-local"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_gets_a_clear_422(server, files, case):
    url, _ = server
    body, fragment = BAD_INPUTS[case]
    response = ocr(url, **(body(files) if callable(body) else body))
    answer = response.json()
    assert response.status_code == 422 and answer["errorCode"] == 422, answer
    assert fragment in answer["errorMsg"] and "\n" not in answer["errorMsg"], answer
    assert answer["logId"]


def test_invalid_json_and_oversized_bodies(server, files):
    url, _ = server
    response = httpx.post(f"{url}/ocr", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["errorMsg"]
    big = b'{"file": "' + b"A" * (2 * 2**20) + b'"}'
    response = httpx.post(f"{url}/ocr", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "1 MiB" in response.json()["errorMsg"]
    chunked = httpx.post(f"{url}/ocr", content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
                         headers={"content-type": "application/json"})  # no Content-Length: counted as it arrives
    assert chunked.status_code == 413
    assert ocr(url, file=b64((files / "page.png").read_bytes()), visualize=False).status_code == 200  # still serving


def test_concurrent_requests_are_batched_and_routed_back(server, files, expected):
    url, app = server
    names = ["page.png", "other.jpg"] * 3
    before = app.state.service.metrics.batch_size.collect()[0].samples
    with ThreadPoolExecutor(len(names)) as pool:
        answers = list(pool.map(lambda n: ocr(url, file=b64((files / n).read_bytes()), visualize=False).json(), names))
    for name, answer in zip(names, answers):
        assert answer["result"]["ocrResults"][0]["prunedResult"]["rec_texts"] == expected[name]
    after = {s.name + s.labels.get("le", ""): s.value for s in app.state.service.metrics.batch_size.collect()[0].samples}
    earlier = {s.name + s.labels.get("le", ""): s.value for s in before}
    batches = after["hpinfer_batch_size_count"] - earlier["hpinfer_batch_size_count"]
    assert batches < len(names), "six concurrent requests should share batches"
    assert app.state.service.batcher.queued == 0


def test_two_batches_in_flight_give_the_same_results(pipeline, files, expected):
    names = ["page.png", "other.jpg"] * 4
    with running(create_app(ServeSettings(inference_threads=2, max_batch_size=2), pipeline)) as url:
        with ThreadPoolExecutor(len(names)) as pool:
            answers = list(pool.map(lambda n: ocr(url, file=b64((files / n).read_bytes()), visualize=False).json(), names))
    for name, answer in zip(names, answers):
        assert answer["result"]["ocrResults"][0]["prunedResult"]["rec_texts"] == expected[name]


def test_metrics_and_log_id_in_access_log(server, pipeline, files, caplog):
    url, _ = server
    caplog.set_level(logging.INFO, logger="hpinfer.serving")
    log_id = ocr(url, file=b64((files / "page.png").read_bytes()), visualize=False).json()["logId"]
    ocr(url, file="@@@")
    lines = [r.getMessage() for r in caplog.records if r.name == "hpinfer.serving"]
    assert any(f"logId={log_id}" in line and '"POST /ocr" 200' in line for line in lines), lines
    text = httpx.get(f"{url}/metrics").text
    for needle in (
        'hpinfer_requests_total{endpoint="/ocr",status="200"}', 'hpinfer_requests_total{endpoint="/ocr",status="422"}',
        "hpinfer_request_duration_seconds_bucket", "hpinfer_queue_depth", "hpinfer_requests_in_flight",
        "hpinfer_batch_size_count", f'hpinfer_stage_seconds_total{{module="{pipeline.text_rec.name}",stage="infer"}}',
        'hpinfer_stage_seconds_total{module="pipeline",stage="crop"}',
    ):
        assert needle in text, needle


def test_url_inputs(pipeline, files, expected):
    settings = ServeSettings(allow_private_urls=True, max_download_mb=0.5)  # loopback allowed for this test only
    with static_files(files) as files_url, running(create_app(settings, pipeline)) as url:
        by_name = files_url.replace("127.0.0.1", "localhost")  # resolved, checked, connected by address, Host kept
        image = ocr(url, file=f"{by_name}/page.png", visualize=False).json()
        assert image["result"]["ocrResults"][0]["prunedResult"]["rec_texts"] == expected["page.png"]
        pdf = ocr(url, file=f"{files_url}/two.pdf", visualize=False).json()["result"]
        assert pdf["dataInfo"]["numPages"] == 2
        missing = ocr(url, file=f"{files_url}/nothing.png").json()
        assert missing["errorCode"] == 422 and "HTTP 404" in missing["errorMsg"]
        too_big = ocr(url, file=f"{files_url}/noise.bin").json()
        assert too_big["errorCode"] == 422 and "limit" in too_big["errorMsg"]


@pytest.mark.parametrize("url", [
    "http://localhost:1/x.png", "http://[::1]:1/x.png", "http://[::ffff:127.0.0.1]:1/x.png", "http://10.1.2.3/x.png",
    "http://0.0.0.0:1/x.png", "http://224.0.0.1/x.png", "http://[fe80::1]/x.png",
])
def test_ssrf_guard_refuses_internal_addresses(url):
    async def fetch():
        async with httpx.AsyncClient() as client:
            await fetch_url(client, url, allow_private=False, max_bytes=1000, timeout=5)

    with pytest.raises(InputError, match="refused"):
        asyncio.run(fetch())


def test_auth(pipeline, files, monkeypatch):
    with running(create_app(ServeSettings(api_key="s3cret"), pipeline)) as url:
        body = {"file": b64((files / "page.png").read_bytes()), "visualize": False}
        refused = httpx.post(f"{url}/ocr", json=body)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["errorCode"] == 401
        assert httpx.post(f"{url}/ocr", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(f"{url}/ocr", json=body, headers={"Authorization": "Bearer s3cret"}, timeout=60).status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200 and httpx.get(f"{url}/health/ready").status_code == 200
        with Client(f"{url}/ocr", api_key="s3cret") as client:
            assert client.predict(files / "page.png", visualize=False)["errorCode"] == 0
    monkeypatch.setenv("HPINFER_API_KEY", "from-env")  # the CLI takes the key from the environment too
    from hpinfer.serving.cli import add_commands, settings_from_args
    import argparse

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"), argparse.ArgumentParser(add_help=False))
    assert settings_from_args(parser.parse_args(["serve", "--pipeline", "OCR"])).api_key == "from-env"


def test_batching_defaults_are_per_device_and_pipeline_and_flags_win(monkeypatch, tmp_path):
    """Measured defaults (settings.measured_defaults): batches of 8 in one thread on a CPU, single pages in two
    threads on a GPU and for layout_parsing (named or in a YAML); what the command line gives is kept."""
    from hpinfer.serving.cli import add_commands, settings_from_args
    import argparse

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"), argparse.ArgumentParser(add_help=False))
    resolved = lambda *flags: settings_from_args(parser.parse_args(["serve", "--pipeline", "OCR", *flags]))  # noqa: E731
    assert (resolved().max_batch_size, resolved().inference_threads) == (8, 1)
    gpu = resolved("--device", "gpu:0")
    assert (gpu.max_batch_size, gpu.inference_threads) == (1, 2)
    layout = settings_from_args(parser.parse_args(["serve", "--pipeline", "layout_parsing"]))
    assert (layout.max_batch_size, layout.inference_threads) == (1, 2)
    own_yaml = tmp_path / "mine.yaml"
    own_yaml.write_text((BUNDLED_DIR / "layout_parsing.yaml").read_text())
    assert ServeSettings(pipeline=str(own_yaml)).inference_threads == 2
    chosen = resolved("--device", "gpu:1", "--max_batch_size", "4", "--inference_threads", "1")
    assert (chosen.max_batch_size, chosen.inference_threads) == (4, 1)
    monkeypatch.setenv(SETTINGS_ENV, gpu.to_env())  # worker processes (--workers) get the resolved values
    assert ServeSettings.from_env() == gpu
    with pytest.raises(ConfigError, match="inference_threads must be > 0"):
        ServeSettings(inference_threads=0)


def test_full_queue_gets_503_with_retry_after(pipeline, files):
    app = create_app(ServeSettings(max_queue=1), pipeline)
    with running(app) as url:
        slow = threading.Thread(target=lambda: results.append(ocr(url, file=b64((files / "four.pdf").read_bytes()))))
        results: list = []
        slow.start()
        wait_until(lambda: app.state.service.admission.active > 0, 30, "the request to be admitted", 0.005)
        busy = ocr(url, file=b64((files / "page.png").read_bytes()))
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "busy" in busy.json()["errorMsg"]
        slow.join(120)
        assert results[0].status_code == 200  # the admitted one is not lost


def test_timeout_gets_504_and_the_server_goes_on(pipeline, files):
    app = create_app(ServeSettings(request_timeout_s=0.05), pipeline)
    with running(app) as url:
        answer = ocr(url, file=b64((files / "four.pdf").read_bytes()))
        assert answer.status_code == 504 and "timed out after 0.05 s" in answer.json()["errorMsg"]
        wait_until(lambda: not (app.state.service.batcher.queued or app.state.service.admission.active), 30,
                   "the cut request's pages to leave", 0.05)


def test_clients_and_client_command(server, files, expected, tmp_path, capsys):
    url, _ = server
    with Client(f"{url}/ocr") as client:
        response = client.predict(files / "two.pdf")
        assert response["result"]["dataInfo"]["numPages"] == 2
        written = save_response(response, tmp_path, "two")
        assert {p.name for p in written} >= {"two_res.json", "two_ocrImage_0.jpg", "two_inputImage_1.jpg"}
        with pytest.raises(ServingError, match="422.*not a supported image"):
            client.predict(b"not an image")

    async def both():
        async with AsyncClient(f"{url}/ocr") as client:
            return await asyncio.gather(*(client.predict(files / n, use_textline_orientation=True) for n in ("page.png", "other.jpg")))

    page, other = asyncio.run(both())
    assert page["result"]["ocrResults"][0]["prunedResult"]["rec_texts"] == expected["page.png"]
    assert other["result"]["ocrResults"][0]["prunedResult"]["rec_texts"] == expected["other.jpg"]

    code = serving_main(["client", "--url", f"{url}/ocr", "--input", str(files / "page.png"), "--save_path", str(tmp_path / "cli")])
    assert code == 0
    assert expected["page.png"][0] in capsys.readouterr().out
    assert (tmp_path / "cli" / "page_ocrImage_0.jpg").is_file()


def test_batches_in_flight_overlap_and_route_back():
    """Two inference threads: two batches run at once, each page's result (or error) goes to its own request."""
    from hpinfer.serving.batcher import Batcher

    running, most = [0], [0]
    lock = threading.Lock()

    def run(images, options):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        if any(int(image[0, 0, 0]) == 99 for image in images):
            raise ValueError("broken page")
        return [int(image[0, 0, 0]) * 10 + options["k"] for image in images]

    async def main():
        batcher = Batcher(run, max_batch_size=2, max_delay_s=0.0, workers=2)
        batcher.start()
        pages = [np.full((2, 2, 3), v, np.uint8) for v in (1, 2, 3, 4, 5, 99)]
        try:
            return await asyncio.gather(
                *(batcher.ticket().submit([page], {"k": i % 2}) for i, page in enumerate(pages)), return_exceptions=True
            )
        finally:
            await batcher.close()

    answers = asyncio.run(main())
    assert answers[:5] == [[10], [21], [30], [41], [50]]
    assert isinstance(answers[5], ValueError) and most[0] == 2
