"""Recognisers alone on the held-out set's truth line crops (heldout.py, rotated samples left out): CER, WER with
spaces kept, and the seconds each takes for all crops, PP-OCRv6 also with the input scaled to [0, 1] instead of
[-1, 1] (a third-party claim about the PP-OCRv6 exports, checked here).

    python benchmarks/rec_models.py
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import heldout  # noqa: E402


def unit_norm_into(out: np.ndarray, crop: np.ndarray) -> None:
    """resize_norm_into with x / 255 in place of x * 2 / 255 - 1."""
    _, height, width = out.shape
    h, w = crop.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / float(h))))
    out[:, :, :resized_w] = (cv2.resize(crop, (resized_w, height)).astype(np.float32) / 255.0).transpose(2, 0, 1)


def main() -> int:
    import hpinfer.tasks.text_recognition as rec_module
    from hpinfer.models.text_recognition import TextRecognizer
    from hpinfer.models.registry import resolve_model

    crops, refs = [], []
    for sample in heldout.samples():
        if sample.kind == "rotated":
            continue
        for line in sample.lines:
            x1, y1, x2, y2 = line.box
            crop = sample.image[max(0, y1 - 3) : y2 + 3, max(0, x1 - 3) : x2 + 3]
            if crop.size:
                crops.append(np.ascontiguousarray(crop))
                refs.append(line.text)
    print(f"{len(crops)} line crops")
    chars = sum(len(heldout.squash(r)) for r in refs)
    words = sum(len(r.split()) for r in refs)
    for name in ("PP-OCRv4_mobile_rec", "PP-OCRv5_mobile_rec", "PP-OCRv6_small_rec", "PP-OCRv6_tiny_rec"):
        recogniser = TextRecognizer(resolve_model(name))
        for norm in ("[-1, 1]", "[0, 1]") if "v6" in name else ("[-1, 1]",):
            saved = rec_module.resize_norm_into
            if norm == "[0, 1]":
                rec_module.resize_norm_into = unit_norm_into
            start = time.perf_counter()
            try:
                got = [text for text, _ in recogniser.recognize(crops)]
            finally:
                rec_module.resize_norm_into = saved
            seconds = time.perf_counter() - start
            cer = sum(heldout.levenshtein(heldout.squash(r), heldout.squash(g)) for r, g in zip(refs, got)) / chars
            wer = sum(heldout.levenshtein(r.split(), g.split()) for r, g in zip(refs, got)) / words
            print(f"{name} input {norm}: CER {cer:.4%} WER {wer:.2%} {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
