"""Seal text recognition on rendered seals (tests/test_seal.py's ``draw_seal``: text along the top 240° of a
ring, "专用章" straight below): CER over both lines and time per seal for the bundled seal_recognition pipeline.

    .venv/bin/python benchmarks/seals.py [--repeat 3] [--json benchmarks/raw/seals_<date>.json]

``--locate``: layout_parsing's seal finder instead (seal_locator.find_seals, each candidate confirmed by the
seal text detector on its ink alone): recall on held-out pages with one of these seals stamped on each (red
and blue, over the text or beside it), and false seals on the shared images and the held-out set (pages,
receipts, scenes, rotations; none has a seal).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
from test_seal import draw_seal  # noqa: E402

SEALS = [
    ("上海市浦东新区人民政府办公室", 400), ("北京华夏科技有限公司", 300), ("广州市天河区市场监督管理局", 500),
    ("深圳市南山区教育局", 360), ("杭州西湖文化旅游发展有限公司", 440), ("成都市人民医院", 320),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--locate", action="store_true")
    args = parser.parse_args()
    if args.locate:
        return locate(args.json)
    import hpinfer

    rows = []
    with hpinfer.create_pipeline("seal_recognition") as pipe:
        for text, size in SEALS:
            image, truth = draw_seal(text, size), text + "专用章"
            pipe.predict(image)  # warm-up
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                (res,) = pipe.predict(image)
                times.append(time.perf_counter() - start)
            got = "".join(res["seal_res_list"][0]["rec_texts"])
            rows.append({"seal": text, "size": size, "read": got, "errors": Levenshtein.distance(got, truth),
                         "chars": len(truth), "seconds": round(float(np.median(times)), 4)})
            print(json.dumps(rows[-1], ensure_ascii=False))
    cer = sum(r["errors"] for r in rows) / sum(r["chars"] for r in rows)
    print(f"CER {cer:.4f} over {len(rows)} seals, median s/seal {np.median([r['seconds'] for r in rows]):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"load": os.getloadavg(), "cer": cer, "results": rows}, ensure_ascii=False, indent=1),
                             encoding="utf-8")


def locate(out: "Path | None") -> None:
    import random

    import cv2

    import hpinfer
    from hpinfer.pipelines.seal_locator import find_seals, isolate
    from hpinfer.pipelines.seal_recognition import SealOptions, detect_seal_text

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import heldout
    from layout_tables import stamp

    rng = random.Random(5)
    fonts = heldout.available_latin_fonts()
    with hpinfer.create_model("PP-OCRv4_mobile_seal_det") as detector:
        def seals_on(image: np.ndarray) -> tuple:
            start = time.perf_counter()
            found = [c for c in find_seals(image) if len(detect_seal_text(detector, isolate(image, c), SealOptions())[0])]
            return found, time.perf_counter() - start

        rows = []
        for i, (text, size) in enumerate(SEALS * 2):
            blue = i >= len(SEALS)
            sample = heldout.page(rng, f"p{i}", lang=("en", "zh")[i % 2], columns=1, style="spaced",
                                  font_name="cjk" if i % 2 else fonts[i % len(fonts)], size=22, paragraphs=6)
            page, seal = sample.image.copy(), draw_seal(text, size - 100)
            x, y = rng.randint(100, page.shape[1] - seal.shape[1] - 100), rng.randint(300, page.shape[0] - seal.shape[0] - 100)
            stamp(page, np.ascontiguousarray(seal[:, :, ::-1]) if blue else seal, x, y)
            found, seconds = seals_on(page)
            hit = [c for c in found if abs(c.box[0] - x) < 60 and abs(c.box[1] - y) < 60]
            rows.append({"seal": text, "blue": blue, "found": len(hit), "other": len(found) - len(hit), "seconds": round(seconds, 3)})
            print(json.dumps(rows[-1], ensure_ascii=False))
        negatives = [(p.name, cv2.imread(str(p))) for p in sorted(IMAGES.iterdir())]
        negatives += [(s.name, s.image) for s in heldout.samples()]
        false = {name: len(seals_on(image)[0]) for name, image in negatives if image is not None}
    report = {"load": os.getloadavg(), "recall": sum(r["found"] > 0 for r in rows) / len(rows),
              "false_on_seal_pages": sum(r["other"] for r in rows), "negative_images": len(false),
              "false_seals": sum(false.values()), "false_where": [n for n, k in false.items() if k],
              "median_s_per_page": float(np.median([r["seconds"] for r in rows])), "results": rows}
    print(json.dumps({k: v for k, v in report.items() if k != "results"}))
    if out:
        out.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
