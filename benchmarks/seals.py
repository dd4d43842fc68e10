"""Seal text recognition on rendered seals (tests/test_seal.py's ``draw_seal``: text along the top 240° of a
ring, "专用章" straight below): CER over both lines and time per seal for the bundled seal_recognition pipeline.

    .venv/bin/python benchmarks/seals.py [--repeat 3] [--json benchmarks/raw/seals_<date>.json]
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
from test_seal import draw_seal  # noqa: E402

SEALS = [
    ("上海市浦东新区人民政府办公室", 400), ("北京华夏科技有限公司", 300), ("广州市天河区市场监督管理局", 500),
    ("深圳市南山区教育局", 360), ("杭州西湖文化旅游发展有限公司", 440), ("成都市人民医院", 320),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
