"""Latency and accuracy drift of fp32, bf16 and int8 on each CPU engine, and the warm start from the cache.

    python benchmarks/precision.py [--iters 5] [--images DIR] [--samples 100] [--markdown RESULTS.md]

For PP-OCRv4 mobile det, PP-OCRv4 mobile rec and the OCR pipeline (det + line orientation + rec), every
(engine, precision) the CPU can run is built through the model cache (manual mode, so each precision is
measured even where safe mode would refuse it), int8 calibrated on the default set (bundled examples +
generated pages, ``--samples`` inputs), which shares no image with the test images.

Latency: all configurations of one subject loaded together, one untimed pass, then ``--iters`` rounds in
which every configuration processes every image before the next image starts (who goes first rotates),
so load from other processes falls on all alike; the median of the per-round means is shown.
Drift, against fp32 ONNX Runtime: on the test images (``--images``: det and pipeline on the images,
rec on the text lines fp32 finds in them) and on the calibration's held-back inputs (the guard's number).
Warm start: the OCR pipeline with ``precision: int8`` in safe mode, created in a fresh process twice
against an empty cache: the first builds every engine, the second loads them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = ROOT.parent / "shared" / "data" / "images"
CONFIGS = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]


def hpi(backend: str, precision: str, samples: int) -> Dict[str, Any]:
    return {"auto_config": False, "backend": backend,
            "backend_config": {"precision": precision, "calibration": {"num_samples": samples}}}


def held_back_drift(session) -> str:
    drift = json.loads((session.artifact / "manifest.json").read_text())["info"].get("drift")
    return "-" if drift is None else f"{drift['value']:.4f}"


def timed_rounds(runners: Dict[str, Callable[[Any], Any]], items: List[Any], iters: int) -> Dict[str, float]:
    """Median over rounds of the mean ms per item; within a round items interleave across runners."""
    names = list(runners)
    for name in names:  # warm-up
        for item in items:
            runners[name](item)
    per_round: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(iters):
        spent = {n: 0.0 for n in names}
        for i, item in enumerate(items):
            order = names[(r + i) % len(names):] + names[: (r + i) % len(names)]
            for name in order:
                start = time.perf_counter()
                runners[name](item)
                spent[name] += time.perf_counter() - start
        for name in names:
            per_round[name].append(spent[name] / len(items) * 1000)
    return {n: statistics.median(v) for n, v in per_round.items()}


def det_subject(images, samples, iters) -> List[Tuple]:
    from hpinfer import create_model
    from hpinfer.runtime.accuracy import box_scores

    models = {c: create_model("PP-OCRv4_mobile_det", use_hpip=True, hpi_config=hpi(*c, samples)) for c in CONFIGS}
    ms = timed_rounds({c: (lambda m: lambda im: m.detect(im))(m) for c, m in models.items()}, images, iters)
    reference = [list(models[("onnxruntime", "fp32")].detect(im)[0]) for im in images]
    rows = []
    for c, m in models.items():
        scores = box_scores(reference, [list(m.detect(im)[0]) for im in images])
        rows.append(("PP-OCRv4_mobile_det", *c, ms[c], f"{1 - scores['f1'] * scores['mean_iou']:.4f} (F1 {scores['f1']:.3f})",
                     held_back_drift(m.session)))
        m.close()
    return rows


def rec_subject(crops, samples, iters) -> List[Tuple]:
    from hpinfer import create_model
    from hpinfer.runtime.accuracy import text_scores

    models = {c: create_model("PP-OCRv4_mobile_rec", use_hpip=True, hpi_config=hpi(*c, samples)) for c in CONFIGS}
    batches = [crops[i : i + 6] for i in range(0, len(crops), 6)]
    ms = timed_rounds({c: (lambda m: lambda b: m.recognize(b))(m) for c, m in models.items()}, batches, iters)
    reference = [t for t, _ in models[("onnxruntime", "fp32")].recognize(crops)]
    rows = []
    for c, m in models.items():
        scores = text_scores(reference, [t for t, _ in m.recognize(crops)])
        rows.append(("PP-OCRv4_mobile_rec (per batch of 6 lines)", *c, ms[c], f"{scores['cer']:.4f} (exact {scores['exact']:.2f})",
                     held_back_drift(m.session)))
        m.close()
    return rows


def ocr_subject(images, samples, iters) -> List[Tuple]:
    from hpinfer import create_pipeline
    from hpinfer.runtime.accuracy import text_scores

    pipes = {c: create_pipeline("OCR", use_hpip=True, hpi_config=hpi(*c, samples)) for c in CONFIGS}
    ms = timed_rounds({c: (lambda p: lambda im: p.predict(im))(p) for c, p in pipes.items()}, images, iters)

    def texts(p):
        return ["\n".join(r["rec_texts"]) for im in images for r in p.predict(im)]

    reference = texts(pipes[("onnxruntime", "fp32")])
    rows = []
    for c, p in pipes.items():
        scores = text_scores(reference, texts(p))
        held = "/".join(held_back_drift(m.session) for m in p.predictors)
        rows.append(("OCR pipeline (det/cls/rec)", *c, ms[c], f"{scores['cer']:.4f} (pages exact {scores['exact']:.2f})", held))
        p.close()
    return rows


_WARM_START = """
import json, sys, time
start = time.perf_counter()
import hpinfer
ocr = hpinfer.create_pipeline("OCR", use_hpip=True, hpi_config={"backend_config": {"precision": "int8",
                               "calibration": {"num_samples": int(sys.argv[1])}}})
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "modules": [p.session.settings for p in ocr.predictors]}))
"""


def warm_start(samples: int) -> Tuple[float, float, List[str]]:
    with tempfile.TemporaryDirectory(prefix="hpinfer-warm-") as cache:
        env = {**os.environ, "HPINFER_CACHE_DIR": cache}
        runs = []
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", _WARM_START, str(samples)], env=env, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs[0]["seconds"], runs[1]["seconds"], runs[1]["modules"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--images", default=str(SHARED_IMAGES))
    parser.add_argument("--samples", type=int, default=100, help="calibration inputs per model (every 5th held back)")
    parser.add_argument("--markdown", default=None, help="append the results section to this file")
    args = parser.parse_args()

    from hpinfer.bench import environment
    from hpinfer.config import CalibrationConfig
    from hpinfer.io import iter_inputs
    from hpinfer.models import resolve_model
    from hpinfer.runtime.calibration import CalibrationSet
    from hpinfer.tasks.base import HelperModel
    from hpinfer.tasks.text_recognition import LINE_FINDER, line_crops

    images = [item.image for item in iter_inputs(args.images)]
    finder = resolve_model(LINE_FINDER)
    crops = line_crops(CalibrationSet(CalibrationConfig(data=args.images)), HelperModel(finder.model_file, dict(finder.params)))
    with tempfile.TemporaryDirectory(prefix="hpinfer-bench-cache-") as cache:
        os.environ["HPINFER_CACHE_DIR"] = cache
        start = time.perf_counter()
        rows = det_subject(images, args.samples, args.iters)
        rows += rec_subject(crops, args.samples, args.iters)
        rows += ocr_subject(images, args.samples, args.iters)
        build_minutes = (time.perf_counter() - start) / 60
    cold, warm, modules = warm_start(args.samples)

    env = environment()
    fp32 = {(r[0], r[1]): r[3] for r in rows if r[2] == "fp32"}
    lines = [
        f"## Precision: fp32 vs bf16 vs int8 per engine ({time.strftime('%Y-%m-%d')}, benchmarks/precision.py)",
        "",
        f"Machine: {env['cpu']}, {env['cores']} cores; onnxruntime {env.get('onnxruntime')}, openvino {env.get('openvino')}, "
        f"hpinfer {env['hpinfer']}, python {env['python']}. Other engineers' jobs shared these 2 cores during the run: "
        "absolute times are noisy; compare rows of one subject (measured interleaved in the same rounds).",
        f"Inputs: {len(images)} images of {args.images} ({len(crops)} text lines for rec, in batches of 6); "
        f"{args.iters} timed rounds. int8: static QDQ, minmax, {args.samples} calibration inputs from the default set "
        f"(every 5th held back); builds of all subjects took {build_minutes:.1f} min.",
        "Drift vs fp32 ONNX Runtime: det 1 - F1 x mean IoU of boxes; rec and pipeline CER of texts (pipeline: "
        "per page). Held-back: the accuracy guard's number (pipeline: det/cls/rec).",
        "",
        "| subject | engine | precision | ms / item | vs fp32 same engine | drift on test images | drift held-back |",
        "| --- | --- | --- | ---: | ---: | --- | --- |",
    ]
    for subject, engine, precision, ms, drift, held in rows:
        speed = fp32[(subject, engine)] / ms
        lines.append(f"| {subject} | {engine} | {precision} | {ms:.1f} | {speed:.2f}x | {drift} | {held} |")
    lines += [
        "",
        f"Warm start, OCR pipeline with `precision: int8` (safe mode), new process each: first (builds every engine) "
        f"{cold:.1f} s, second (loads from the cache) {warm:.2f} s: {cold / warm:.0f}x faster. Engines of the second: "
        + "; ".join(modules) + ".",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
