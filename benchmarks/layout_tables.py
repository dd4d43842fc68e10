"""layout_parsing on a rendered multi-page PDF with paragraphs, bordered and borderless tables and seals:
document CER against the OCR pipeline's on the same pages, TEDS of the tables layout_parsing finds, the seals'
text CER, and time per page.

    python benchmarks/layout_tables.py [--layout layout_parsing] [--ocr OCR_PP-OCRv5_mobile] [--json out.json]

Pages (``document()``): heldout.py's A4 pages (a heading and a few English or Chinese paragraphs) with a table
from tables.py's SAMPLES below the text (bordered or borderless, merged cells included), and a round seal
(tests/test_seal.py's ``draw_seal``, red or blue) stamped over the end of the page as ink is (multiplied, so
the text under it stays black). Written at 144 dpi, so PDFium's 2x rendering gives back the drawn pixels.

- document CER: layout_parsing's text blocks (tables, figures and seals left out) in its reading order against
  the pages' paragraphs in theirs, whitespace removed; the OCR pipeline (layout_parsing's recogniser, no line
  orientation classifier) scored on the same paragraph lines, order-free (heldout.line_errors), its lines
  inside the drawn table and seal left out;
- TEDS (table-recognition-metric) of each page's table: the best-matching table block's HTML (0 when none);
- seal CER: the seal block's text against the seal's ("专用章" included), 1 when no seal block is found;
- false seals: seal blocks on pages without one.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import heldout  # noqa: E402
import tables  # noqa: E402
from layout_text import compared_pipelines, timed  # noqa: E402

NOT_TEXT = {"figure", "table", "equation", "seal"}
SEAL_TEXTS = ["上海市浦东新区人民政府办公室", "北京华夏科技有限公司", "广州市天河区市场监督管理局", "杭州西湖文化旅游发展有限公司"]


@dataclass
class Page:
    sample: heldout.Sample  # paragraphs and their lines
    image: np.ndarray
    table_html: Optional[str]
    bordered: Optional[bool]
    seal_text: Optional[str]  # both lines of the seal, joined
    drawn: List[List[int]]  # boxes of the table and the seal: their lines are no paragraph text


def stamp(page: np.ndarray, seal: np.ndarray, x: int, y: int) -> None:
    """``seal`` (BGR on white) printed onto ``page`` at (x, y) as ink: the darker of the two wins per channel."""
    h, w = seal.shape[:2]
    area = page[y : y + h, x : x + w]
    area[:] = (area.astype(np.float32) * seal.astype(np.float32) / 255).astype(np.uint8)


def make_page(rng: random.Random, index: int, table: Optional[int], bordered: bool, seal: Optional[int],
              lang: str = "en", paragraphs: int = 3) -> Page:
    """A page of ``paragraphs`` paragraphs, then tables.SAMPLES[table] (when given), then seal SEAL_TEXTS[seal]
    stamped at the bottom right over the page's last lines (when given)."""
    from test_seal import draw_seal

    fonts = heldout.available_latin_fonts()
    sample = heldout.page(rng, f"p{index}", lang=lang, columns=1, style=("spaced", "indented")[index % 2],
                          font_name="cjk" if lang != "en" else fonts[index % len(fonts)], size=22 + 2 * (index % 3),
                          paragraphs=paragraphs)
    image = sample.image.copy()
    bottom = max(line.box[3] for line in sample.lines)
    truth_html, drawn_boxes = None, []
    if table is not None:
        name, header, rows = tables.SAMPLES[table]
        drawn = tables.render_table(rows, header, bordered)
        h, w = drawn.shape[:2]
        top = bottom + 40
        if top + h > image.shape[0] - 60 or w > image.shape[1] - 160:
            raise ValueError(f"table {name} does not fit under the text of page {index}")
        image[top : top + h, 80 : 80 + w] = np.minimum(image[top : top + h, 80 : 80 + w], drawn)
        truth_html = tables.truth_html(header, rows)
        drawn_boxes.append([80, top, 80 + w, top + h])
        bottom = top + h
    seal_text = None
    if seal is not None:
        size = 260 + 40 * (seal % 3)
        drawn = draw_seal(SEAL_TEXTS[seal], size)
        if seal % 2:
            drawn = np.ascontiguousarray(drawn[:, :, ::-1])  # blue ink
        y = min(image.shape[0] - size - 40, max(bottom - size // 2, 200))
        stamp(image, drawn, image.shape[1] - 110 - size, y)
        drawn_boxes.append([image.shape[1] - 110 - size, y, image.shape[1] - 110, y + size])
        seal_text = SEAL_TEXTS[seal] + "专用章"
    return Page(sample, image, truth_html, bordered if table is not None else None, seal_text, drawn_boxes)


def document(seed: int = 22) -> List[Page]:
    """Six pages: every table of tables.SAMPLES once bordered, two of them borderless too, two seals (red,
    blue), one page of Chinese paragraphs."""
    rng = random.Random(seed)
    specs = [dict(table=0, bordered=True, seal=None), dict(table=1, bordered=False, seal=0),
             dict(table=2, bordered=True, seal=None, lang="zh"), dict(table=3, bordered=True, seal=1, paragraphs=2),
             dict(table=0, bordered=False, seal=None), dict(table=1, bordered=True, seal=None)]
    return [make_page(rng, i, **spec) for i, spec in enumerate(specs)]


def inside_any(box: List[float], areas: List[List[int]]) -> bool:
    """Whether the box's centre lies in one of ``areas``."""
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return any(a[0] <= x <= a[2] and a[1] <= y <= a[3] for a in areas)


def best_teds(truth: str, blocks: List[Dict[str, Any]]) -> float:
    candidates = [b["html"] for b in blocks if b.get("html")]
    return max((tables.teds(html, truth) for html in candidates), default=0.0)


def main() -> int:
    args, layout, ocr = compared_pipelines(__doc__.splitlines()[0])
    pages = document()
    with tempfile.TemporaryDirectory() as tmp:
        pdf = heldout.write_pdf(Path(tmp) / "document.pdf", [p.image for p in pages])
        layout.predict(str(pdf), page_range=(1, 1))  # warm-up
        results, layout_s = timed(layout, pdf)
        plain, ocr_s = timed(ocr, pdf)
    found, truth, ocr_errors, ocr_chars, rows = [], [], 0, 0, []
    seal_errors = seal_chars = false_seals = 0
    for number, (page, res, flat) in enumerate(zip(pages, results, plain), 1):
        blocks = res["blocks"]
        found += [p for b in blocks if b["label"] not in NOT_TEXT for p in b["text"].split("\n") if p.strip()]
        truth += page.sample.paragraphs
        text_lines = [i for i, box in enumerate(flat["rec_boxes"].tolist()) if not inside_any(box, page.drawn)]
        errors, chars = heldout.line_errors(page.sample.truth()["lines"], [flat["rec_texts"][i] for i in text_lines],
                                            [flat["rec_boxes"][i].tolist() for i in text_lines])
        ocr_errors, ocr_chars = ocr_errors + errors, ocr_chars + chars
        seals = [b for b in blocks if b["label"] == "seal"]
        row: Dict[str, Any] = {"page": number, "labels": sorted({b["label"] for b in blocks}), "seals_found": len(seals)}
        if page.table_html:
            row.update(bordered=page.bordered, teds=round(best_teds(page.table_html, blocks), 4))
        if page.seal_text:
            read = "".join("".join(b["text"].split()) for b in seals)
            row.update(seal_read=read, seal_errors=heldout.levenshtein(page.seal_text, read))
            seal_errors, seal_chars = seal_errors + row["seal_errors"], seal_chars + len(page.seal_text)
        else:
            false_seals += len(seals)
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
    teds = {kind: [r["teds"] for r in rows if r.get("bordered") is kind] for kind in (True, False)}
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg(), "layout": args.layout,
        "ocr": args.ocr, "pages": len(pages),
        "layout_cer": round(heldout.cer(" ".join(truth), " ".join(found)), 5), "ocr_cer": round(ocr_errors / max(1, ocr_chars), 5),
        "teds_bordered": round(float(np.mean(teds[True])), 4), "teds_borderless": round(float(np.mean(teds[False])), 4),
        "seal_cer": round(seal_errors / max(1, seal_chars), 4), "false_seals": false_seals,
        "layout_s_per_page": round(layout_s / len(pages), 2), "ocr_s_per_page": round(ocr_s / len(pages), 2), "rows": rows,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}))
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
