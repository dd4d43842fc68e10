"""How often the 0/180 line classifier turns a line the wrong way, per ``long_lines`` mode (tasks/textline_orientation.py).

    python benchmarks/cls_long_lines.py [--json out.json]

Every sample of the held-out set (heldout.py) is detected once (PP-OCRv5 mobile's detector, as in the OCR
pipeline); each line crop is classified as it is and turned 180 degrees. A wrong turn is an upright line turned
over or an upside-down line left; counted per kind of sample, with the classifier's time for all crops.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout  # noqa: E402

MODES = {"squeeze": {"long_lines": "squeeze"}, "tiles": {"long_lines": "tiles"}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import hpinfer
    from hpinfer.pipelines.ocr import crop_quad

    detector = hpinfer.create_model("PP-OCRv5_mobile_det")
    classifier = hpinfer.create_model("ch_ppocr_mobile_v2.0_cls")
    crops, upside_down, kinds = [], [], []
    for sample in heldout.samples():
        turned = sample.kind == "rotated" and abs(sample.angle) == 180
        boxes, _ = detector.detect(sample.image)
        for crop in (crop_quad(sample.image, box) for box in boxes):
            for flip in (False, True):
                crops.append(cv2.rotate(crop, cv2.ROTATE_180) if flip else crop)
                upside_down.append(turned != flip)
                kinds.append(sample.kind + ("_turned" if flip else ""))
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "crops": len(crops), "modes": {}}
    for mode, overrides in MODES.items():
        params = classifier.with_overrides(overrides)
        start = time.perf_counter()
        _, angles = classifier.upright(crops, params)
        seconds = time.perf_counter() - start
        wrong = Counter(kind for kind, angle, down in zip(kinds, angles, upside_down) if (angle == 180) != down)
        report["modes"][mode] = {"wrong": sum(wrong.values()), "by_kind": dict(wrong), "seconds": round(seconds, 2)}
        print(f"{mode}: {sum(wrong.values())} wrong turns of {len(crops)} ({dict(wrong)}), {seconds:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
