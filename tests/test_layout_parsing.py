"""layout_parsing: reading order on the shared two-column paper page (asserted on order, not only presence),
Markdown with tables and figure as image files, a PDF with a corrupt and an empty page, memory over a
streamed PDF, the CLI; and the pieces (reading order, stage threads, Markdown escaping) on their own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import hpinfer
from hpinfer.cli import main as cli
from hpinfer.errors import ConfigError
from hpinfer.pipelines.layout_parsing import drop_duplicates, join_lines
from hpinfer.pipelines.markdown import MarkdownDocument, escape
from hpinfer.pipelines.reading_order import reading_order
from hpinfer.pipelines.stages import run_stages

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from layout_parsing_pdf import on_white  # noqa: E402  (the benchmark's page maker)

PAGE = "doc_page_zh_en.jpg"


@pytest.fixture(scope="module")
def pipeline():
    with hpinfer.create_pipeline("layout_parsing") as pipe:
        yield pipe


@pytest.fixture(scope="module")
def paper(pipeline, shared_images):
    # Tables as pictures, as before table recognition (test_tables.py covers tables as HTML).
    (res,) = pipeline.predict(str(shared_images / PAGE), use_table_recognition=False)
    return res


def position(text: str, *needles: str) -> list:
    """Where each needle first occurs in ``text``; fails naming a missing one."""
    found = [text.find(n) for n in needles]
    assert all(i >= 0 for i in found), [n for n, i in zip(needles, found) if i < 0]
    return found


def test_blocks_follow_the_columns(paper) -> None:
    blocks = paper["blocks"]
    assert paper["status"] == "ok" and paper["page_index"] is None and paper["angle"] == 0
    assert [b["order"] for b in blocks] == list(range(len(blocks)))
    labels = [b["label"] for b in blocks]
    assert labels.count("table") == 2 and labels.count("figure") == 1
    # The figure was also found as text, and one caption as both caption kinds: each is kept once.
    assert len(blocks) == 12
    text = "\n".join(f"[{b['label']}]{b['text']}" for b in blocks)
    # Top band: heading, left column, then right column; the tables with their captions across the page;
    # bottom band: left column (text, figure, its caption) before the right column.
    order = position(
        text, "[title]1.3.2", "在传统的表格结构识别算法", "针对近年来", "[table_caption]表4", "[table]", "[table_caption]表5",
        "基于单元格检测和单元格关系分类", "[figure]", "图1自底向上", "Fig.1 The framework", "Prasad",
    )
    assert order == sorted(order)
    for caption, table in (("表4", 0), ("表5", 1)):  # each table caption directly above its table
        at = next(i for i, b in enumerate(blocks) if b["label"] == "table_caption" and b["text"].startswith(caption))
        assert [i for i, b in enumerate(blocks) if b["label"] == "table"][table] == at + 1
    left, right = blocks[1], blocks[2]
    assert left["box"][2] < right["box"][0] and left["box"][1] > right["box"][1]  # right starts higher, read later


def test_markdown_with_images(paper, tmp_path) -> None:
    md_path = paper.save_to_markdown(tmp_path)
    assert md_path == tmp_path / "doc_page_zh_en_res.md"
    markdown = md_path.read_text(encoding="utf-8")
    assert markdown.startswith("## 1.3.2")
    images = re.findall(r"!\[(\w+)\]\((imgs/[^)]+)\)", markdown)
    assert [label for label, _ in images] == ["table", "table", "figure"]
    for (label, name), block in zip(images, [b for b in paper["blocks"] if b["label"] in ("table", "figure")]):
        pixels = cv2.imread(str(tmp_path / name))
        x1, y1, x2, y2 = block["box"]
        assert pixels.shape == (y2 - y1, x2 - x1, 3), name
    paragraphs = markdown.split("\n\n")
    for caption, image in (("表4", 0), ("表5", 1)):
        at = next(i for i, p in enumerate(paragraphs) if p.startswith(caption))
        assert paragraphs[at + 1] == f"![table]({images[image][1]})"
    order = position(markdown, "在传统的表格", "针对近年来", images[0][1], images[1][1], "基于单元格检测", images[2][1], "Prasad")
    assert order == sorted(order)
    saved = json.loads(paper.save_to_json(tmp_path).read_text())["res"]
    assert [b["text"] for b in saved["blocks"]] == [b["text"] for b in paper["blocks"]]
    drawn = cv2.imread(str(paper.save_to_img(tmp_path)))
    assert drawn.shape[:2] == (paper["height"], paper["width"])


def write_pdf(path: Path, pages: list, corrupt: tuple = ()) -> Path:
    """Pages from BGR images; a page in ``corrupt`` gets a page object PDFium can't load (its dictionary becomes
    an array of the same length, so the cross-reference offsets stay right)."""
    images = [Image.fromarray(p[:, :, ::-1]) for p in pages]
    images[0].save(path, save_all=True, append_images=images[1:], resolution=72.0)
    data = path.read_bytes()
    kids = re.search(rb"/Kids \[([^\]]*)\]", data).group(1).split(b"R")
    for k in corrupt:
        start = re.search(rb"(?m)^" + kids[k].split()[0] + rb" 0 obj", data).start()
        end = data.index(b"endobj", start)
        body_start, body_end = data.index(b"<<", start), data.rindex(b">>", start, end) + 2
        data = data[:body_start] + b"[" + b" " * (body_end - body_start - 2) + b"]" + data[body_end:]
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def light_page(shared_images) -> np.ndarray:
    """paragraph_en.jpg on a white page: a heading and a paragraph, cheap to parse. Mid-page, so that the page
    turned 90° still has text where the orientation model looks (the centre square)."""
    return on_white(cv2.imread(str(shared_images / "paragraph_en.jpg")), top=380)


def test_bad_pages_are_reported_and_the_rest_completes(pipeline, light_page, tmp_path) -> None:
    blank = np.full_like(light_page, 255)
    turned = np.ascontiguousarray(np.rot90(light_page, 1))  # 90° counter-clockwise: 270 clockwise
    pdf = write_pdf(tmp_path / "bad.pdf", [light_page, light_page, blank, turned], corrupt=(1,))
    results = pipeline.predict(str(pdf), use_queues=True)
    assert [r["page_index"] for r in results] == [0, 1, 2, 3]
    assert [r["status"] for r in results] == ["ok", "error", "empty", "ok"]
    assert "cannot load page 2" in results[1]["error"] and results[1]["blocks"] == []
    assert results[0]["error"] is None and results[2]["blocks"] == []
    assert [b["label"] for b in results[0]["blocks"]] == ["title", "text"]
    # The turned page renders with other resampling: the same text, spaces between words may differ.
    def squashed(result):
        return ["".join(b["text"].split()) for b in result["blocks"]]

    assert results[3]["angle"] == 270 and squashed(results[3]) == squashed(results[0])
    in_one_thread = pipeline.predict(str(pdf), use_queues=False, page_range=(2, 4))
    assert [r.json for r in in_one_thread] == [r.json for r in results[1:]]

    with MarkdownDocument(tmp_path / "bad.md") as doc:
        for res in results:
            doc.add(res)
    pages = (tmp_path / "bad.md").read_text(encoding="utf-8").split("\n\n---\n\n")
    assert len(pages) == 4 and doc.pages == 4 and re.match(r"## 3 ?MovieShots", pages[0])
    assert pages[1].startswith("<!-- ") and "page 2: not processed: " in pages[1] and "cannot load page 2" in pages[1]
    assert pages[2] == "" and re.match(r"## 3 ?MovieShots", pages[3])
    drawn = results[1].save_to_img(tmp_path)  # a page without pixels still gets a picture, with the message
    assert cv2.imread(str(drawn)) is not None


def test_memory_stays_flat_over_a_streamed_pdf(light_page, shared_images, tmp_path) -> None:
    """The benchmark, in its own process, on 4 light pages (the 50-page run is in benchmarks/RESULTS.md)."""
    top = on_white(cv2.imread(str(shared_images / PAGE))[85:205, 50:570])  # heading and two columns
    pdf = write_pdf(tmp_path / "light.pdf", [light_page, top] * 2)
    report = tmp_path / "report.json"
    command = [sys.executable, str(REPO / "benchmarks/layout_parsing_pdf.py"), "--pdf", str(pdf), "--modes", "queues"]
    subprocess.run([*command, "--json", str(report)], check=True, capture_output=True, timeout=300)
    (run,) = json.loads(report.read_text())["runs"]["queues"]
    assert run["pages"] == 4 and run["statuses"] == {"ok": 4}
    assert run["peak_rss_mb"] < 1536
    assert run["peak_rss_mb"] - run["peak_rss_mb_after_first_page"] < 300


def test_cli_shows_progress_and_saves_every_page(light_page, tmp_path, capsys) -> None:
    pdf = write_pdf(tmp_path / "two.pdf", [light_page] * 2)
    assert cli(["predict", "--pipeline", "layout_parsing", "--input", str(pdf), "--save_path", str(tmp_path / "out")]) == 0
    assert "2/2" in capsys.readouterr().err
    for page in range(2):
        saved = json.loads((tmp_path / "out" / f"two_{page}_res.json").read_text())["res"]
        assert saved["page_index"] == page and saved["status"] == "ok" and len(saved["blocks"]) == 2


def test_options(pipeline, light_page, tmp_path) -> None:
    (res,) = pipeline.predict(light_page, layout_threshold=0.99, text_rec_score_thresh=0.99)
    # No region scores 0.99: what is read comes from OCR alone (score None), and only lines scoring 0.99
    assert res["status"] in ("ok", "empty") and all(b["score"] is None for b in res["blocks"])
    (res,) = pipeline.predict(light_page, use_doc_orientation_classify=False)
    assert res["angle"] == -1 and res["status"] == "ok"
    with pytest.raises(ConfigError, match="unknown parameter"):
        pipeline.predict(light_page, layout_thresh=0.5)
    config = tmp_path / "lp.yaml"
    config.write_text("pipeline_name: layout_parsing\nuse_doc_orientation_classify: false\nSubModules: {}\n")
    with pytest.raises(ConfigError, match="SubModules.LayoutDetection is missing"):
        hpinfer.create_pipeline(config)


# ----------------------------------------------------------------------------------------- the pieces


def test_reading_order_columns_and_bands() -> None:
    boxes = {
        "heading": [50, 10, 550, 40],
        "left 1": [50, 60, 290, 200], "left 2": [50, 215, 292, 400],  # staggered with the right column
        "right 1": [310, 60, 550, 120], "right 2": [308, 140, 550, 400],
        "table": [50, 420, 550, 600],
        "left 3": [50, 620, 290, 700], "right 3": [310, 620, 550, 640], "right 4": [310, 650, 550, 700],
    }
    names = list(boxes)
    shuffled = [names[i] for i in np.random.default_rng(0).permutation(len(names))]
    got = [shuffled[i] for i in reading_order([boxes[n] for n in shuffled])]
    assert got == names
    # A few pixels of overlap (detector jitter) do not join the columns.
    assert reading_order([[0, 0, 102, 50], [98, 0, 200, 10], [98, 20, 200, 50]]) == [0, 1, 2]
    assert reading_order([]) == []


def test_duplicates_and_lines() -> None:
    regions = [
        {"label": "text", "score": 0.6, "coordinate": [0, 0, 100, 100]},
        {"label": "figure", "score": 0.9, "coordinate": [2, 1, 99, 100]},
        {"label": "text", "score": 0.8, "coordinate": [0, 90, 100, 200]},
    ]
    assert [r["score"] for r in drop_duplicates(regions, 0.8)] == [0.9, 0.8]
    assert join_lines(["在传统的表格", "结构识别 ", "", "Table 4 com-", "parison of", "CNN"]) == (
        "在传统的表格结构识别Table 4 comparison of CNN"
    )
    assert escape("1. *a* [b] <i> ---") == r"1\. \*a\* \[b\] \<i\> ---" and escape("--- x") == r"\--- x"


def test_stages_keep_order_bound_memory_and_carry_errors() -> None:
    produced = [0]

    def source():
        for i in range(40):
            produced[0] += 1
            yield i

    def slow(i):
        time.sleep(0.003 * (i % 3))
        if i == 7:
            raise ValueError("seven")
        return i * 10

    outcomes, ahead = [], []
    for outcome in run_stages(source(), [slow, lambda i: i + 1], use_threads=True, queue_size=2):
        outcomes.append(outcome)
        ahead.append(produced[0] - len(outcomes))
        time.sleep(0.005)  # a slow consumer: the source must wait, not read on
    assert [o.value for o in outcomes if o.error is None] == [i * 10 + 1 for i in range(40) if i != 7]
    assert [(o.value, str(o.error)) for o in outcomes if o.error] == [(7, "seven")]
    assert 4 <= max(ahead) <= 3 * 2 + 2 + 1  # three queues of 2, an item in each stage, one being read
    assert [o.value for o in run_stages(range(5), [lambda i: i + 1], use_threads=False)] == [1, 2, 3, 4, 5]


def test_stages_source_error_and_early_stop() -> None:
    def broken():
        yield 1
        raise OSError("disk gone")

    stream = run_stages(broken(), [lambda x: x])
    assert next(stream).value == 1
    with pytest.raises(OSError, match="disk gone"):
        next(stream)

    before = threading.active_count()
    stream = run_stages(iter(range(10**6)), [lambda x: x, lambda x: x], queue_size=1)
    assert next(stream).value == 0
    stream.close()  # the consumer leaves: every thread stops
    assert threading.active_count() == before
