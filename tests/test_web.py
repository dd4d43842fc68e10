"""The web page in a real browser: Playwright for Python drives Debian's chromium (no browser download) against a
real ``hpinfer serve --ui`` on 127.0.0.1 with an API key. Screenshots go to output/web_*.png."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from PIL import Image

from test_serving_support import ServerProcess, make_pdf

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY = "web-test-key-0123456789"
OUTPUT = Path(__file__).resolve().parent.parent / "output"
TIMEOUT_MS = 180_000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (scripts/install.sh --test)")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing: scripts/install.sh --test installs Debian's chromium (as root)",
                allow_module_level=True)
sync_api.expect.set_options(timeout=TIMEOUT_MS)  # a busy 2-core machine may take a while per page


@pytest.fixture(scope="module")
def server():
    process = ServerProcess("--pipeline", "layout_parsing", "--ui", "--api_key", KEY)
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server.url + "/")
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    sync_api.expect(page.locator("#server")).to_have_text("serving layout_parsing")
    yield page
    context.close()
    assert not errors, errors  # no script errors on the page


def run(page, path: Path) -> None:
    page.set_input_files("#file", str(path))
    page.click("#run")


def test_doc_page_regions_and_texts(page, shared_images):
    run(page, shared_images / "doc_page_zh_en.jpg")
    sync_api.expect(page.locator("#job-status")).to_have_text("done")
    sync_api.expect(page.locator("#progress")).to_have_text("1/1")
    regions = page.locator("#boxes polygon")
    assert regions.count() >= 10  # the CDLA layout model finds 14 regions on this page (shared/README.md)
    page.wait_for_function("document.getElementById('page-image').naturalWidth > 0")
    texts = " ".join(page.locator("#texts li").all_text_contents())
    assert "表格结构识别" in texts and "ICDAR2013" in texts and "CascadeTabNet" in texts, texts  # heading, caption, body
    # Hover a region: its label and text show at the pointer.
    regions.first.hover()
    tip = page.locator("#tip")
    sync_api.expect(tip).to_be_visible()
    sync_api.expect(tip).to_contain_text("表格结构识别")
    rows = page.locator("#models tbody tr").all_text_contents()
    assert any("onnxruntime" in row or "openvino" in row for row in rows), rows
    sync_api.expect(page.locator("#download-json")).to_be_enabled()
    timings = page.locator("#timings").inner_text()
    assert "PicoDet_layout_1x_CDLA infer" in timings and "_mobile_rec infer" in timings, timings
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "web_doc_page.png"), full_page=True)


def test_five_page_pdf_progress_and_markdown(page, shared_images, tmp_path):
    # A heading and a paragraph on a blank page (alone, the layout model takes the cut-out for a figure).
    blank = Image.new("RGB", (709, 400), "white")
    blank.paste(Image.open(shared_images / "paragraph_en.jpg").convert("RGB"), (0, 40))
    blank.save(tmp_path / "page.png")
    pdf = make_pdf([tmp_path / "page.png"] * 5, tmp_path / "five.pdf")
    run(page, pdf)
    sync_api.expect(page.locator("#progress")).to_have_text("5/5")
    sync_api.expect(page.locator("#job-status")).to_have_text("done")
    sync_api.expect(page.locator("#pages button")).to_have_count(5)
    assert page.locator("#pages button.pending").count() == 0
    sync_api.expect(page.locator("#markdown h3")).to_contain_text("MovieShots")  # the title, as a heading
    sync_api.expect(page.locator("#markdown p")).to_contain_text("shot")
    page.click("#pages button >> nth=4")
    sync_api.expect(page.locator("#pages button.current")).to_have_text("5")
    sync_api.expect(page.locator("#download-md")).to_be_enabled()
    with page.expect_download() as download:
        page.click("#download-md")
    assert Path(download.value.path()).read_text().count("## 3 MovieShots") == 5
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "web_pdf.png"), full_page=True)


def test_corrupt_file_and_refused_url_show_readable_errors(page, tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + base64.b64encode(os.urandom(300)))
    run(page, broken)
    error = page.locator("#error")
    sync_api.expect(error).to_be_visible()
    sync_api.expect(error).to_contain_text("corrupt, empty or unreadable PDF")
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "web_error.png"))
    # A pasted URL goes through the server's SSRF guard: a loopback address is refused, and the page says why.
    page.set_input_files("#file", [])
    page.fill("#url", "http://127.0.0.1:9/doc.pdf")
    page.click("#run")
    sync_api.expect(error).to_contain_text("loopback")


def test_markdown_from_ocr_text_cannot_inject_html(page):
    """OCR text is data: the page's Markdown renderer escapes it before adding its own few tags."""
    html = page.evaluate("""() => {
        const box = document.createElement("div");
        box.append(renderMarkdown('## <img src=x onerror="window.hacked=1">\\n\\n<script>window.hacked=2</script> **bold**'
                                  + '\\n\\n![figure](imgs/a.jpg)', {"imgs/a.jpg": '" onerror="window.hacked=3'}));
        return box.innerHTML;
    }""")
    assert "<img" not in html and "<script" not in html and "&lt;img src=x" in html and "<strong>bold</strong>" in html
    assert page.evaluate("window.hacked") is None


def test_recognised_tables_render_as_tables_and_nothing_else(page):
    """layout_parsing writes a recognised table as its HTML; the page keeps only the table's own tags and text."""
    html = page.evaluate("""() => {
        const box = document.createElement("div");
        box.append(renderMarkdown('<table><thead><tr><td colspan="2" onclick="window.hacked=1">Region</td></tr></thead>'
                                  + '<tbody><tr><td>&lt;img src=x onerror=window.hacked=2&gt;</td><td><img src=x onerror="window.hacked=3"></td>'
                                  + '</tr></tbody></table>', {}));
        return box.innerHTML;
    }""")
    assert '<td colspan="2">Region</td>' in html and "<tbody><tr><td>&lt;img src=x" in html
    assert "<img" not in html and "onclick" not in html and page.evaluate("window.hacked") is None
