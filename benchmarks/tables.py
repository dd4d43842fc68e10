"""Table recognition on rendered tables of known structure: TEDS (the standard PubTabNet tree-edit-distance
similarity, ``table-recognition-metric``) with and without cell text, and time per table (the whole
table_recognition pipeline, and the SLANet structure model alone).

Tables are drawn with PIL: bordered (every cell ruled) and borderless (three horizontal rules, as papers
print them), some with merged cells; the ground truth HTML is known exactly. The test suite imports
``render_table``/``SAMPLES``/``teds`` from here.

    .venv/bin/python benchmarks/tables.py [--repeat 3] [--genai] [--json benchmarks/raw/tables_<date>.json]

``--genai``: the same tables asked of a native ``hpinfer genai-server`` ("Table Recognition:", openai client).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
Cell = Union[str, Tuple[str, int, int]]  # text, or (text, rowspan, colspan)

# (name, header rows, rows); each row lists the cells that start in it, left to right.
SAMPLES: List[Tuple[str, int, List[List[Cell]]]] = [
    ("prices", 1, [
        ["Item", "Qty", "Unit price", "Total"],
        ["Paper A4", "10", "4.50", "45.00"],
        ["Toner", "2", "38.00", "76.00"],
        ["Stapler", "1", "12.90", "12.90"],
        ["Envelopes", "200", "0.05", "10.00"],
    ]),
    ("quarters", 2, [
        [("Region", 2, 1), ("2025", 1, 2), ("2026", 1, 2)],
        ["H1", "H2", "H1", "H2"],
        ["North", "120", "135", "150", "161"],
        ["South", "98", "102", "110", "117"],
        ["East", "143", "139", "152", "170"],
    ]),
    ("staff", 1, [
        ["Name", "Team", "Room", "Phone"],
        ["Anna Berg", ("Research", 2, 1), "B12", "4021"],
        ["Omar Haddad", "B14", "4022"],
        ["Li Wei", "Sales", "C03", "4107"],
        ["Maria Rossi", "Support", "C05", "4110"],
        ["Tom Evans", "Finance", "A01", "4001"],
    ]),
    ("schedule", 1, [
        ["Day", "Time", "Session", "Speaker", "Room"],
        ["Monday", "09:00", "Opening remarks and welcome", "J. Smith", "Hall A"],
        ["Monday", "10:30", "Scaling document parsing", "R. Gupta", "Hall B"],
        ["Monday", "12:00", ("Lunch break", 1, 3)],
        ["Tuesday", "09:30", "Table structure recognition", "M. Chen", "Room 101"],
        ["Tuesday", "11:00", "Seal text in archives", "A. Novak", "Room 102"],
        ["Tuesday", "14:00", "Panel: models on small devices", "Various", "Hall A"],
    ]),
]


def _grid(rows: Sequence[Sequence[Cell]]) -> List[Tuple[str, int, int, int, int]]:
    """Cells as (text, row, col, rowspan, colspan), placing each in the first free column of its row."""
    taken, cells = set(), []
    for r, row in enumerate(rows):
        c = 0
        for cell in row:
            text, rs, cs = (cell, 1, 1) if isinstance(cell, str) else cell
            while (r, c) in taken:
                c += 1
            taken |= {(r + i, c + j) for i in range(rs) for j in range(cs)}
            cells.append((text, r, c, rs, cs))
            c += cs
    return cells


def truth_html(header_rows: int, rows: Sequence[Sequence[Cell]]) -> str:
    """The table as PubTabNet writes its ground truth: thead/tbody, span attributes, escaped text."""
    cells = _grid(rows)
    parts = []
    for r in range(len(rows)):
        tds = "".join(
            "<td" + (f' rowspan="{rs}"' if rs > 1 else "") + (f' colspan="{cs}"' if cs > 1 else "") + f">{html.escape(t)}</td>"
            for t, rr, _, rs, cs in cells if rr == r
        )
        parts.append(f"<tr>{tds}</tr>")
    head, body = "".join(parts[:header_rows]), "".join(parts[header_rows:])
    return f"<html><body><table><thead>{head}</thead><tbody>{body}</tbody></table></body></html>"


def render_table(rows: Sequence[Sequence[Cell]], header_rows: int, bordered: bool, size: int = 22) -> np.ndarray:
    """BGR picture of the table: text centred vertically, left-aligned with padding; column widths fit the text."""
    font = ImageFont.truetype(str(FONT), size)
    cells = _grid(rows)
    ncols = max(c + cs for _, _, c, _, cs in cells)
    pad, row_h = size, int(size * 2.0)
    widths = [0] * ncols
    for text, _, c, _, cs in cells:
        if cs == 1:
            widths[c] = max(widths[c], int(font.getlength(text)) + 2 * pad)
    xs = np.concatenate([[0], np.cumsum(widths)]).astype(int) + 30
    ys = np.arange(len(rows) + 1) * row_h + 30
    image = Image.new("RGB", (int(xs[-1]) + 30, int(ys[-1]) + 30), "white")
    draw = ImageDraw.Draw(image)
    for text, r, c, rs, cs in cells:
        x1, y1, x2, y2 = xs[c], ys[r], xs[c + cs], ys[r + rs]
        if bordered:
            draw.rectangle((x1, y1, x2, y2), outline="black", width=2)
        draw.text((x1 + pad, (y1 + y2) // 2), text, font=font, fill="black", anchor="lm")
    if not bordered:  # three rules: top, under the header, bottom
        for y in (ys[0], ys[header_rows], ys[-1]):
            draw.line((xs[0], y, xs[-1], y), fill="black", width=2)
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1])


def teds(pred: str, truth: str, structure_only: bool = False) -> float:
    from table_recognition_metric import TEDS

    return float(TEDS(structure_only=structure_only)(pred, truth))


def genai_rows(repeat: int) -> List[Dict]:
    """The native ``hpinfer genai-server``'s "Table Recognition:" answers through the official openai client
    (as PaddleX's PaddleOCR-VL calls it), on each table cropped 5 px around as a layout box would hug it;
    TEDS of the answer (a ``<table>``) and seconds per request, one request at a time."""
    import asyncio
    import base64
    import signal

    import cv2
    import openai
    from genai_two_tier import start_server

    process, url = start_server([])
    rows_out: List[Dict] = []

    async def ask(client, image: np.ndarray) -> Tuple[str, float]:
        data = "data:image/png;base64," + base64.b64encode(cv2.imencode(".png", image)[1].tobytes()).decode()
        start = time.perf_counter()
        answer = await client.chat.completions.create(model="PaddleOCR-VL-0.9B", temperature=0, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data}}, {"type": "text", "text": "Table Recognition:"}]}])
        return answer.choices[0].message.content, time.perf_counter() - start

    async def run() -> None:
        async with openai.AsyncOpenAI(base_url=url, api_key="null") as client:
            for name, header, rows in SAMPLES:
                for bordered in (True, False):
                    image = render_table(rows, header, bordered)[25:-25, 25:-25]
                    answers = [await ask(client, image) for _ in range(repeat + 1)][1:]  # the first warms up
                    pred, truth = f"<html><body>{answers[0][0]}</body></html>", truth_html(header, rows)
                    rows_out.append({"table": name, "bordered": bordered, "teds": round(teds(pred, truth), 4),
                                     "teds_structure": round(teds(pred, truth, True), 4),
                                     "seconds": round(float(np.median([a[1] for a in answers])), 4)})
                    print(json.dumps(rows_out[-1]))

    try:
        asyncio.run(run())
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
    return rows_out


def pipeline_rows(repeat: int) -> List[Dict]:
    """The table_recognition pipeline on each whole rendered table: TEDS, seconds, and SLANet's share."""
    import hpinfer

    rows_out: List[Dict] = []
    with hpinfer.create_pipeline("table_recognition") as pipe:
        for name, header, rows in SAMPLES:
            truth = truth_html(header, rows)
            for bordered in (True, False):
                image = render_table(rows, header, bordered)
                pipe.predict(image)  # warm-up
                times, structure_times = [], []
                for _ in range(repeat):
                    start = time.perf_counter()
                    (res,) = pipe.predict(image)
                    times.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    pipe.structurer.predict_image(image, pipe.structurer.params)
                    structure_times.append(time.perf_counter() - start)
                pred = res["table_res_list"][0]["pred_html"] if res["table_res_list"] else ""
                rows_out.append({
                    "table": name, "bordered": bordered, "teds": round(teds(pred, truth), 4),
                    "teds_structure": round(teds(pred, truth, True), 4), "seconds": round(float(np.median(times)), 4),
                    "structure_seconds": round(float(np.median(structure_times)), 4),
                })
                print(json.dumps(rows_out[-1]))
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--genai", action="store_true", help="score a native genai-server's 'Table Recognition:' answers instead")
    args = parser.parse_args()

    rows_out = genai_rows(args.repeat) if args.genai else pipeline_rows(args.repeat)
    for bordered in (True, False):
        sel = [r for r in rows_out if r["bordered"] == bordered]
        print(f"{'bordered' if bordered else 'borderless'}: mean TEDS {np.mean([r['teds'] for r in sel]):.4f}, "
              f"structure {np.mean([r['teds_structure'] for r in sel]):.4f}, "
              f"median s/table {np.median([r['seconds'] for r in sel]):.3f}"
              + ("" if args.genai else f" (SLANet alone {np.median([r['structure_seconds'] for r in sel]):.3f})"))
    if args.json:
        args.json.write_text(json.dumps({"load": os.getloadavg(), "results": rows_out}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
