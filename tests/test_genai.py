"""``hpinfer genai-server`` and the PaddleOCR-VL pipeline, two-tier, end to end on 127.0.0.1.

One native recogniser (real OCR models) is loaded for the module and shared by the servers under test: a
native genai-server (in a thread, real uvicorn), a second one proxying to it (the "remote" path), and for
the crash test a genai-server in its own process, killed mid-document. The clients are the official
``openai`` package (async, as PaddleX's GenAI client uses it) and the pipeline's own.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

import hpinfer
from hpinfer.pipelines import block_recognition as prompts
from hpinfer.pipelines.block_recognition import NativeRecogniser
from hpinfer.serving import ServeSettings, create_app
from hpinfer.serving.genai.app import create_genai_app
from hpinfer.serving.genai.backends import NativeBackend, ProxyBackend
from hpinfer.serving.genai.launchers import build_command, free_port
from test_serving_support import b64, make_pdf, running

openai = pytest.importorskip("openai")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # tables.py: rendered tables, TEDS

MODEL = "PaddleOCR-VL-0.9B"
SETTINGS = ServeSettings(pipeline="PaddleOCR-VL", max_pixels=2_000_000, max_body_mb=2, max_batch_size=16, inference_threads=1)
PAGE = "doc_page_zh_en.jpg"


@pytest.fixture(scope="module")
def recogniser():
    with NativeRecogniser("PaddleOCR-VL") as native:
        yield native


@pytest.fixture(scope="module")
def server(recogniser):
    with running(create_genai_app(SETTINGS, MODEL, NativeBackend(SETTINGS, recogniser))) as url:
        yield url


@pytest.fixture(scope="module")
def block(shared_images):
    return cv2.imread(str(shared_images / "paragraph_en.jpg"))


def data_url(image: np.ndarray, kind: str = "jpeg") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(cv2.imencode(f".{kind}", image)[1].tobytes()).decode()


def message(url: str, prompt: str):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt}]}]


def test_openai_client_every_prompt_and_streaming(server, block, recogniser):
    url = data_url(block)
    expected = "\n".join(recogniser.ocr.predict_batch([cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",")[1]), np.uint8), 1)])[0]["rec_texts"])

    async def main():
        async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="null") as client:
            name = (await client.models.list()).data[0].id
            assert name == MODEL
            ocr = await client.chat.completions.create(
                model=name, messages=message(url, "OCR:"), temperature=0, max_completion_tokens=4096, timeout=600,
                extra_body={"skip_special_tokens": True, "repetition_penalty": 1.0, "mm_processor_kwargs": {"min_pixels": 112896}},
            )
            assert ocr.choices[0].message.content == expected and "MovieShots" in expected
            stream = await client.chat.completions.create(model=name, messages=message(url, "OCR:"), stream=True)
            chunks = [chunk async for chunk in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
            assert chunks[-1].choices[0].finish_reason == "stop"
            for prompt in (prompts.FORMULA, prompts.CHART, prompts.SEAL, prompts.SPOTTING):
                with pytest.raises(openai.BadRequestError) as refused:
                    await client.chat.completions.create(model=name, messages=message(url, prompt))
                assert refused.value.code == "unsupported_prompt" and prompt in refused.value.message

    asyncio.run(main())
    raw = httpx.post(f"{server}/v1/chat/completions", timeout=60,
                     json={"model": MODEL, "messages": message(url, "OCR:"), "stream": True}).text
    assert raw.rstrip().endswith("data: [DONE]") and raw.count("data: ") == 3


def test_doc_vlm_asks_one_question_about_the_whole_image(server, shared_images, block):
    with hpinfer.create_pipeline("doc_vlm", vl_rec_server_url=f"{server}/v1") as vlm:
        (result,) = vlm.predict(str(shared_images / "paragraph_en.jpg"))
        (table,) = vlm.predict(block, prompt_label="table")
    (only,) = result["parsing_res_list"]
    assert only["block_label"] == "ocr" and only["block_bbox"] == [0, 0, 709, 132] and "MovieShots" in only["block_content"]
    answer = table["parsing_res_list"][0]["block_content"]
    assert answer.startswith("<table>") and "MovieShots" in answer


def test_tables_answer_html_scored_by_teds(server, recogniser, block):
    """"Table Recognition:" → SLANet's structure filled with the block's OCR lines, as a <table>: rendered
    tables (cropped as a layout box would) sent together with text blocks, scored with TEDS; the same answer
    as the in-process recogniser gives for the decoded block."""
    from tables import SAMPLES, render_table, teds, truth_html

    chosen = [(rows, header, bordered) for name, header, rows in SAMPLES for bordered in (True, False)
              if (name, bordered) in (("quarters", False), ("schedule", True))]
    images = [render_table(rows, header, bordered)[25:-25, 25:-25] for rows, header, bordered in chosen]
    urls = [data_url(image, "png") for image in images]

    async def main():
        async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="null") as client:
            asked = [(url, "Table Recognition:") for url in urls] + [(data_url(block), "OCR:")] * 2
            answers = await asyncio.gather(*(
                client.chat.completions.create(model=MODEL, messages=message(url, prompt)) for url, prompt in asked))
        return [a.choices[0].message.content for a in answers]

    answers = asyncio.run(main())
    assert answers[:2] == [a.content for a in recogniser.recognise(images, ["Table Recognition:"] * 2)]
    for (rows, header, _), answer in zip(chosen, answers):
        assert answer.startswith("<table><thead><tr>") and answer.endswith("</tbody></table>")
        assert teds(f"<html><body>{answer}</body></html>", truth_html(header, rows)) >= 0.9
    assert "MovieShots" in answers[2]


def test_otsl_answers_become_html():
    """What the PaddleOCR-VL model answers for a table (OTSL) is shown as HTML, as PaddleX's pipeline does."""
    from hpinfer.pipelines.paddleocr_vl import is_otsl, otsl_to_html

    otsl = "<fcel>Region<fcel>2025<lcel><nl><ucel><fcel>H1<fcel>H2<nl><fcel>a&b<ecel><fcel>3<nl><fcel>short<nl>"
    assert is_otsl(otsl) and not is_otsl("<table><tr><td>x</td></tr></table>") and not is_otsl("plain text")
    assert otsl_to_html(otsl) == (
        '<table><tr><td rowspan="2">Region</td><td colspan="2">2025</td></tr><tr><td>H1</td><td>H2</td></tr>'
        "<tr><td>a&amp;b</td><td></td><td>3</td></tr><tr><td>short</td><td></td><td></td></tr></table>")


def test_concurrent_blocks_share_engine_calls(server, block):
    """PaddleX submits every block at once; the server recognises blocks of many requests together."""
    before = _metric(server, "hpinfer_batch_size_count")
    crops = [block[:, i * 40: i * 40 + 300] for i in range(12)]

    async def main():
        async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="null") as client:
            answers = await asyncio.gather(*(
                client.chat.completions.create(model=MODEL, messages=message(data_url(c), "OCR:")) for c in crops))
        return [a.choices[0].message.content for a in answers]

    assert all(asyncio.run(main()))
    assert _metric(server, "hpinfer_batch_size_count") - before < len(crops)  # fewer engine batches than blocks


def _metric(url: str, name: str) -> float:
    line = next(line for line in httpx.get(f"{url}/metrics").text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


@pytest.mark.parametrize("case, status, words", [
    ("no_image", 400, "one image_url part"),
    ("two_images", 400, "got 2"),
    ("no_prompt", 400, "task prompt"),
    ("unknown_prompt", 400, "unknown prompt 'Describe:'"),
    ("audio_part", 400, "'input_audio' is not supported"),
    ("text_data_url", 400, "expected an image"),
    ("not_base64", 400, "base64"),
    ("not_an_image", 400, "image_url.url"),
    ("huge_image", 400, "limit"),
    ("loopback_url", 400, "refused"),
    ("wrong_model", 404, "not served here"),
    ("bad_json", 400, "not valid JSON"),
    ("form_body", 415, "application/json"),
    ("too_large", 413, "above the limit"),
])
def test_bad_requests_get_a_4xx_that_says_why(server, block, case, status, words):
    ok = data_url(block)
    huge = data_url(np.full((1500, 1500, 3), 255, np.uint8), "png")  # 2.25 MP, above the 2 MP limit
    parts = {
        "no_image": [{"type": "text", "text": "OCR:"}],
        "two_images": [{"type": "image_url", "image_url": {"url": ok}}] * 2 + [{"type": "text", "text": "OCR:"}],
        "no_prompt": [{"type": "image_url", "image_url": {"url": ok}}],
        "unknown_prompt": message(ok, "Describe:")[0]["content"],
        "audio_part": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
        "text_data_url": message("data:text/plain;base64,aGVsbG8=", "OCR:")[0]["content"],
        "not_base64": message("data:image/png;base64,%%%", "OCR:")[0]["content"],
        "not_an_image": message("data:image/png;base64," + b64(b"not an image at all"), "OCR:")[0]["content"],
        "huge_image": message(huge, "OCR:")[0]["content"],
        "loopback_url": message(f"{server}/health", "OCR:")[0]["content"],
    }
    kwargs = {"json": {"model": "other" if case == "wrong_model" else MODEL,
                       "messages": [{"role": "user", "content": parts.get(case, parts["no_prompt"] + [{"type": "text", "text": "OCR:"}])}]}}
    if case == "bad_json":
        kwargs = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    if case == "form_body":
        kwargs = {"data": {"model": MODEL}}
    if case == "too_large":
        kwargs = {"content": b"x" * (3 << 20), "headers": {"content-type": "application/json"}}
    response = httpx.post(f"{server}/v1/chat/completions", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    assert words in response.text


def test_api_key_and_limits_as_basic_serving(recogniser, block):
    settings = ServeSettings(pipeline="PaddleOCR-VL", api_key="s3cret", max_batch_size=4, inference_threads=1)
    with running(create_genai_app(settings, MODEL, NativeBackend(settings, recogniser))) as url:
        body = {"model": MODEL, "messages": message(data_url(block), "OCR:")}
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, headers=good, timeout=60).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200
        # a refusal that would fail every block (wrong key) fails the page at once: pending requests cancelled
        results = {}
        for key in (None, "s3cret"):
            with hpinfer.create_pipeline("PaddleOCR-VL", vl_rec_server_url=f"{url}/v1", vl_rec_api_model_name=MODEL,
                                         vl_rec_api_key=key) as vl:
                (results[key],) = vl.predict(block, use_layout_detection=False)
        assert results[None]["status"] == "error" and "HTTP 401" in results[None]["error"]
        assert results["s3cret"]["status"] == "ok" and "MovieShots" in results["s3cret"]["parsing_res_list"][0]["block_content"]


@pytest.fixture(scope="module")
def pdf(tmp_path_factory, shared_images):
    return make_pdf([shared_images / PAGE] * 2, tmp_path_factory.mktemp("vl") / "two.pdf")


@pytest.fixture(scope="module")
def in_process(shared_images):
    with hpinfer.create_pipeline("PaddleOCR-VL") as pipeline:
        yield pipeline.predict(str(shared_images / PAGE))[0]


def _blocks(result):
    return [(b["block_label"], b["block_bbox"], b["block_content"]) for b in result["parsing_res_list"]]


def test_pipeline_against_the_server_and_through_a_proxy(server, shared_images, in_process, tmp_path):
    """Lossless blocks (PNG, as sent to llama.cpp) give exactly the in-process answers, direct and proxied;
    PaddleX's JPEG blocks the same blocks and prompts with text read."""
    proxy_settings = ServeSettings(pipeline="PaddleOCR-VL")
    with running(create_genai_app(proxy_settings, MODEL, ProxyBackend(f"{server}/v1"))) as proxy:
        # the proxy's URL has no /v1 path: the client adds it
        with hpinfer.create_pipeline("PaddleOCR-VL", vl_rec_server_url=proxy, vl_rec_backend="llama-cpp-server") as vl:
            proxied = vl.predict(str(shared_images / PAGE))[0]
        assert proxied["status"] == "ok" and _blocks(proxied) == _blocks(in_process)
        with hpinfer.create_pipeline("PaddleOCR-VL", vl_rec_server_url=f"{server}/v1", vl_rec_api_model_name=MODEL) as vl:
            result = vl.predict(str(shared_images / PAGE))[0]
        stream = httpx.post(f"{proxy}/v1/chat/completions", timeout=60, json={
            "model": MODEL, "stream": True,
            "messages": message(data_url(cv2.imread(str(shared_images / "paragraph_en.jpg"))), "OCR:")}).text
        assert stream.rstrip().endswith("data: [DONE]")
    assert [b[:2] for b in _blocks(result)] == [b[:2] for b in _blocks(in_process)]
    assert any("表格结构识别" in b["block_content"] for b in result["parsing_res_list"] if b["block_label"] == "title")
    tables = [b for b in result["parsing_res_list"] if b["block_label"] == "table"]
    assert tables and all(b["block_content"] and "block_error" not in b for b in tables)
    figure = next(b for b in result["parsing_res_list"] if b["block_label"] == "figure")
    assert figure["block_content"] == ""  # pictures are not sent
    equations_or_none = [b for b in result["parsing_res_list"] if b["block_label"] == "equation"]
    assert all("block_note" in b for b in equations_or_none)  # declined: "Formula Recognition:" is not served
    path = result.save_to_markdown(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert "## 1.3.2" in text and "<table><thead>" in text and "![table](imgs/" not in text and "![figure](imgs/" in text
    assert result.save_to_json(tmp_path).exists()


def test_unreachable_proxy_upstream_is_a_502():
    with running(create_genai_app(ServeSettings(pipeline="PaddleOCR-VL"), MODEL,
                                  ProxyBackend(f"http://127.0.0.1:{free_port()}/v1")), wait_ready=False) as proxy:
        response = httpx.post(f"{proxy}/v1/chat/completions", json={"model": MODEL, "messages": []}, timeout=30)
        assert response.status_code == 502 and "unreachable" in response.json()["error"]["message"]
        assert httpx.get(f"{proxy}/health/ready").status_code == 503


def test_server_killed_mid_document(tmp_path, shared_images):
    """A genai-server process killed after the first page: the later pages come back with per-block errors,
    their layout intact, and the document finishes (bounded retries, no hang)."""
    document = make_pdf([shared_images / PAGE] * 3, tmp_path / "three.pdf")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hpinfer.cli", "genai-server", "--host", "127.0.0.1", "--port", str(port), "--log_level", "WARNING"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not _ready(port):
            assert process.poll() is None and time.monotonic() < deadline, "genai-server did not start"
            time.sleep(0.2)
        options = dict(vl_rec_server_url=f"http://127.0.0.1:{port}/v1", vl_rec_retries=1, vl_rec_retry_backoff_s=0.05, queue_size=1)
        with hpinfer.create_pipeline("PaddleOCR-VL", **options) as vl:
            def run():
                results = []
                for result in vl.predict_iter(str(document)):
                    if not results:
                        os.killpg(process.pid, signal.SIGKILL)
                    results.append(result)
                return results

            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                results = pool.submit(run).result(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    assert [r["page_index"] for r in results] == [0, 1, 2]
    assert results[0]["status"] == "ok"
    last = results[-1]
    assert last["status"] == "partial" and "not recognised" in last["error"]
    assert len(last["parsing_res_list"]) == len(results[0]["parsing_res_list"])  # layout still there
    failed = [b for b in last["parsing_res_list"] if "block_error" in b]
    assert failed and all("unreachable" in b["block_error"] or "HTTP" in b["block_error"] for b in failed)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_layout_parsing_and_restructure_pages_endpoints(server, pdf, in_process):
    settings = ServeSettings(pipeline="PaddleOCR-VL", max_pdf_pages=3, max_body_mb=5,
                             pipeline_options={"vl_rec_server_url": f"{server}/v1", "vl_rec_backend": "llama-cpp-server"})
    with running(create_app(settings)) as url:
        response = httpx.post(f"{url}/layout-parsing", timeout=300, json={
            "file": b64(pdf.read_bytes()), "fileType": 0, "visualize": False, "restructurePages": True})
        assert response.status_code == 200, response.text
        pages = response.json()["result"]["layoutParsingResults"]
        assert len(pages) == 2
        first = pages[0]["prunedResult"]
        assert [b["block_label"] for b in first["parsing_res_list"]] == [b[0] for b in _blocks(in_process)]
        assert "表格结构识别" in first["parsing_res_list"][0]["block_content"]  # the PDF page's pixels differ a little
        assert pages[1]["prunedResult"]["parsing_res_list"][0]["global_block_id"] == len(first["parsing_res_list"])
        assert "## 1.3.2" in pages[0]["markdown"]["text"] and pages[0]["markdown"]["images"]
        refused = httpx.post(f"{url}/layout-parsing", json={"file": b64(pdf.read_bytes()), "useDocUnwarping": True})
        assert refused.status_code == 422 and "useDocUnwarping" in refused.json()["errorMsg"]

        table = {"block_label": "table", "block_bbox": [0, 0, 10, 10], "block_id": 0, "block_order": None, "group_id": 0}
        html_a = "<table><tr><td>h</td></tr><tr><td>1</td></tr></table>"
        html_b = "<table><tr><td>h</td></tr><tr><td>2</td></tr></table>"
        joined = httpx.post(f"{url}/restructure-pages", timeout=60, json={"concatenatePages": True, "pages": [
            {"prunedResult": {"page_index": 0, "parsing_res_list": [dict(table, block_content=html_a)]}},
            {"prunedResult": {"page_index": 1, "parsing_res_list": [dict(table, block_content=html_b)]}},
        ]})
        assert joined.status_code == 200, joined.text
        (page,) = joined.json()["result"]["layoutParsingResults"]
        (merged,) = page["prunedResult"]["parsing_res_list"]
        assert merged["block_content"] == "<table><tr><td>h</td></tr><tr><td>1</td></tr><tr><td>2</td></tr></table>"
        assert page["markdown"]["text"] == merged["block_content"]


def test_launcher_command_lines(tmp_path, monkeypatch):
    """The real servers' command lines with PaddleOCR-VL's defaults, and plain errors for what is missing."""
    model = tmp_path / "PaddleOCR-VL-0.9B"
    model.mkdir()
    with pytest.raises(hpinfer.errors.ConfigError, match="needs --model_dir"):
        build_command("vllm", None, MODEL, 9000)
    for backend, package in (("vllm", "vllm"), ("sglang", "sglang")):
        if __import__("importlib").util.find_spec(package) is None:
            with pytest.raises(hpinfer.errors.EngineUnavailableError, match=f"the {package} package is not installed"):
                build_command(backend, str(model), MODEL, 9000)
    packages = tmp_path / "site"
    for package in ("vllm", "sglang"):  # installed, as far as the launcher can tell
        (packages / package).mkdir(parents=True)
        (packages / package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(packages))
    vllm = build_command("vllm", str(model), MODEL, 9000, {"max-num-seqs": 128, "trust-remote-code": False})
    assert vllm[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert " ".join(vllm[3:]) == (
        f"--model {model} --served-model-name {MODEL} --host 127.0.0.1 --port 9000 --gpu-memory-utilization 0.5 "
        "--max-model-len 16384 --max-num-batched-tokens 131072 --no-enable-prefix-caching --max-num-seqs 128")
    sglang = build_command("sglang", str(model), MODEL, 9001)
    assert " ".join(sglang[1:]) == (
        f"-m sglang.launch_server --model-path {model} --served-model-name {MODEL} --host 127.0.0.1 --port 9001 "
        "--trust-remote-code --mem-fraction-static 0.5 --context-length 16384")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(hpinfer.errors.EngineUnavailableError, match="llama-server is not on PATH"):
        build_command("llama.cpp", str(model), MODEL, 9002)
    (bin_dir / "llama-server").write_text("#!/bin/sh\n")
    (bin_dir / "llama-server").chmod(0o755)
    with pytest.raises(hpinfer.errors.ConfigError, match="mmproj"):
        build_command("llama.cpp", str(model), MODEL, 9002)
    (model / "PaddleOCR-VL-0.9B-Q8.gguf").write_bytes(b"")
    (model / "mmproj-PaddleOCR-VL-0.9B.gguf").write_bytes(b"")
    llama = build_command("llama.cpp", str(model), MODEL, 9002)
    assert llama == [str(bin_dir / "llama-server"), "--model", str(model / "PaddleOCR-VL-0.9B-Q8.gguf"),
                     "--mmproj", str(model / "mmproj-PaddleOCR-VL-0.9B.gguf"), "--alias", MODEL,
                     "--host", "127.0.0.1", "--port", "9002", "--ctx-size", "16384"]


def test_cli_says_what_is_missing(capsys):
    from hpinfer.cli import main

    assert main(["genai-server", "--backend", "vllm"]) == 2
    assert "needs --model_dir" in capsys.readouterr().err
    assert main(["genai-server", "--backend", "proxy"]) == 2
    assert "--upstream_url" in capsys.readouterr().err
    assert main(["genai-server", "--model_dir", "x"]) == 2
    assert "--model_dir is for --backend vllm" in capsys.readouterr().err


def test_predict_command_works_out_of_the_box(tmp_path, shared_images):
    """No server URL: the native recogniser runs in-process; a PDF's pages give JSON and one Markdown file."""
    from hpinfer.cli import main

    document = make_pdf([shared_images / PAGE], tmp_path / "doc.pdf")
    assert main(["predict", "--pipeline", "PaddleOCR-VL", "--input", str(document), "--save_path", str(tmp_path / "out")]) == 0
    markdown = (tmp_path / "out" / "doc_res.md").read_text(encoding="utf-8")
    assert markdown.startswith("## 1.3.2") and "表格结构识别" in markdown and "<table><thead>" in markdown
    assert [p.name for p in (tmp_path / "out").glob("*.json")] == ["doc_0_res.json"]
