"""layout_parsing with the real models on rendered pages: seals found without a seal class in the layout model
(seal_locator.py: coloured rings, confirmed by the seal text detector) become seal blocks with their text and
leave the body text; a bordered table the layout model calls "equation" is read as a table (ruled grid)."""

from __future__ import annotations

import base64
import random
import sys
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from rapidfuzz.distance import Levenshtein

import hpinfer
from hpinfer.errors import ConfigError
from hpinfer.pipelines.seal_locator import find_seals
from hpinfer.pipelines.table_recognition import ruled_cells
from hpinfer.serving import ServeSettings, create_app
from test_seal import draw_seal
from test_serving_support import running

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import heldout  # noqa: E402
from layout_tables import stamp  # noqa: E402
from tables import SAMPLES, render_table, teds, truth_html  # noqa: E402

SEAL = "上海市浦东新区人民政府办公室"


@pytest.fixture(scope="module")
def pipeline():
    with hpinfer.create_pipeline("layout_parsing", use_doc_orientation_classify=False) as pipe:
        yield pipe


@pytest.fixture(scope="module")
def sealed_page():
    """An English page of three paragraphs, a red seal stamped over its last lines."""
    sample = heldout.page(random.Random(7), "sealed", lang="en", columns=1, style="spaced",
                          font_name=heldout.available_latin_fonts()[0], size=24, paragraphs=3)
    image = sample.image.copy()
    bottom = max(line.box[3] for line in sample.lines)
    stamp(image, draw_seal(SEAL, 300), 700, bottom - 200)
    return sample, image[: bottom + 200]


def test_seal_candidates_on_pages_with_and_without_seals(shared_images):
    page = np.full((1200, 900, 3), 255, np.uint8)
    stamp(page, draw_seal(SEAL, 300), 80, 100)
    stamp(page, np.ascontiguousarray(draw_seal("北京华夏科技有限公司", 240)[:, :, ::-1]), 500, 800)  # blue
    found = find_seals(page)
    assert [c.colour for c in found] == ["red", "blue"]
    assert np.allclose([c.box[:2] for c in found], [[80, 100], [500, 800]], atol=40)
    # Coloured things that are no seal: a pie chart, a red headline, blue links, concentric rings.
    other = Image.new("RGB", (1000, 1000), "white")
    draw = ImageDraw.Draw(other)
    draw.pieslice((50, 50, 350, 350), 0, 120, fill=(220, 30, 30))
    draw.pieslice((50, 50, 350, 350), 120, 360, fill=(30, 30, 220))
    face = ImageFont.truetype(str(heldout.CJK_FONT), 40)
    draw.text((50, 420), "URGENT: A RED HEADLINE", font=face, fill=(220, 30, 30))
    for i in range(5):
        draw.text((50, 500 + 50 * i), f"https://example.com/a/blue/link/{i}", font=face, fill=(30, 30, 220))
    for r in range(40, 200, 40):
        draw.ellipse((700 - r, 780 - r, 700 + r, 780 + r), outline=(220, 30, 30), width=3)
    assert find_seals(np.asarray(other)[:, :, ::-1].copy()) == []
    for path in sorted(shared_images.iterdir()):  # no seal on any shared image, nor on the held-out set
        image = cv2.imread(str(path))
        assert image is None or find_seals(image) == [], path.name
    assert [s.name for s in heldout.samples(receipts=2, scenes=10, rotations=2) if find_seals(s.image)] == []


def test_seal_block_with_its_text_and_out_of_the_body(pipeline, sealed_page, tmp_path):
    sample, image = sealed_page
    (res,) = pipeline.predict(image)
    (seal,) = [b for b in res["blocks"] if b["label"] == "seal"]
    read = "".join(seal["text"].split())
    assert Levenshtein.distance(read, SEAL + "专用章") <= 0.05 * (len(SEAL) + 3), read
    assert len(seal["seal_res"]["rec_polys"]) == len(seal["seal_res"]["rec_texts"]) >= 2
    body = "".join(b["text"] for b in res["blocks"] if b["label"] != "seal")
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in body), body  # no seal text read as body text
    assert heldout.cer(" ".join(sample.paragraphs), body) < 0.02
    markdown = res.save_to_markdown(tmp_path / "page.md").read_text(encoding="utf-8")
    assert "![seal](imgs/" in markdown and SEAL in markdown.replace(" ", "")

    ok, png = cv2.imencode(".png", image)
    body = {"file": base64.b64encode(png.tobytes()).decode(), "useSealRecognition": False, "visualize": False}
    with running(create_app(ServeSettings(), pipeline)) as url:  # off per request (and so per predict call)
        (off,) = httpx.post(f"{url}/layout-parsing", json=body, timeout=120).json()["result"]["layoutParsingResults"]
    labels = [b["label"] for b in off["prunedResult"]["blocks"]]
    assert "seal" not in labels and "text" in labels
    with hpinfer.create_pipeline("layout_parsing", use_seal_recognition=False, use_table_recognition=False) as pipe:
        assert "SealTextDetection" not in pipe.sub_modules
        with pytest.raises(ConfigError, match="use_seal_recognition"):
            pipe.predict(image, use_seal_recognition=True)


def test_bordered_table_the_layout_model_calls_an_equation(pipeline):
    name, header, rows = SAMPLES[0]
    page = np.full((900, 800, 3), 255, np.uint8)
    cv2.putText(page, "Office supplies, May", (80, 120), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    table = render_table(rows, header, True)
    page[250 : 250 + table.shape[0], 80 : 80 + table.shape[1]] = table
    assert "equation" in [b["label"] for b in pipeline.layout.predict_image(page, pipeline.layout.params)["boxes"]]
    (res,) = pipeline.predict(page)
    (block,) = [b for b in res["blocks"] if b["label"] == "table"]
    assert block["cls_id"] == list(pipeline.layout.params.labels).index("table")
    assert teds(block["html"], truth_html(header, rows)) >= 0.90
    assert "equation" not in [b["label"] for b in res["blocks"]]


def test_ruled_grid_only_where_rules_wall_in_cells(shared_images):
    for name, header, rows in SAMPLES:
        assert len(ruled_cells(render_table(rows, header, True))) >= 8, name
        assert len(ruled_cells(render_table(rows, header, False))) == 0, name  # three rules wall in nothing
    for path in sorted(shared_images.iterdir()):
        image = cv2.imread(str(path))
        assert image is None or len(ruled_cells(image)) == 0, path.name
