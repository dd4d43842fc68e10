"""Framework overhead per model: ``predict`` on a pre-decoded input against the engine's raw run on the very
tensors that ``predict`` fed it, both timed in the same run, interleaved (predict, raw, raw, predict, ...).

The issue's bar (issue 7): ``predict`` takes at most 1.05x the raw engine time. ``predict`` includes our
pre-processing (resize, normalise, pad), the session wrapper and post-processing (DB boxes, CTC decoding,
NMS); "raw" is the engine's own call (``EngineSession._run``: OpenVINO's infer request or ONNX Runtime's
``run``, outputs copied out of the engine's buffers) on the recorded feeds. Inputs: the shared images for
page-level models, and the text-line crops the OCR pipeline cuts from them for the line models.

    python benchmarks/framework_overhead.py [--use_hpip] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hpinfer  # noqa: E402
from hpinfer.io.inputs import iter_inputs  # noqa: E402
from hpinfer.tasks import image_classification, layout_detection, text_detection  # noqa: E402
from hpinfer.pipelines.ocr import crop_quad  # noqa: E402

PAGE_MODELS = ("PP-OCRv4_mobile_det", "PP-LCNet_x1_0_doc_ori", "PicoDet_layout_1x_CDLA")
LINE_MODELS = ("ch_ppocr_mobile_v2.0_cls", "PP-OCRv4_mobile_rec")
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "images"


def line_crops(images: List[np.ndarray]) -> List[np.ndarray]:
    det = hpinfer.create_model("PP-OCRv4_mobile_det")
    crops = []
    for image in images:
        for box in det.predict(image)[0]["dt_polys"]:
            crops.append(crop_quad(image, np.asarray(box, dtype=np.float32)))
    det.close()
    return crops


HOST_PREPROCESS = {  # page models' float inputs, normalised on the host as the model file expects them
    "text_detection": text_detection.preprocess,
    "layout_detection": layout_detection.preprocess,
    "image_classification": image_classification.preprocess,
}


def record_feeds(model: Any, image: np.ndarray) -> List[Dict[str, np.ndarray]]:
    """The float feeds the model file takes for ``image``: those ``predict(image)`` hands the engine (through
    ``_run``, or ``_run_best`` where only each position's arg-max is read), or, where predict hands it uint8
    pixels to normalise itself (OpenVINO's image entry), the host-normalised tensor of the same pixels: raw
    then runs the model as given, and the in-engine normalisation counts as ours."""
    session = model.session
    feeds_seen: List[Dict[str, np.ndarray]] = []
    with session.watching_feeds(lambda feeds: feeds_seen.append({k: np.array(v, copy=True) for k, v in feeds.items()})):
        model.predict(image)
    if not feeds_seen:
        feeds_seen.append({session.inputs[0].name: HOST_PREPROCESS[model.task](image, model.params)})
    return feeds_seen


def measure(model: Any, inputs: List[np.ndarray], rounds: int) -> Dict[str, Any]:
    feeds = [record_feeds(model, image) for image in inputs]
    predict_best = [float("inf")] * len(inputs)
    raw_best = [float("inf")] * len(inputs)
    def timed_predict(i: int) -> None:
        start = time.perf_counter()
        model.predict(inputs[i])
        predict_best[i] = min(predict_best[i], time.perf_counter() - start)

    def timed_raw(i: int) -> None:
        start = time.perf_counter()
        for f in feeds[i]:
            model.session._run(f)
        raw_best[i] = min(raw_best[i], time.perf_counter() - start)

    # The first call after an input of another shape pays the engine's shape switch (OpenVINO re-plans its
    # kernels; a few tenths of a ms): every other round raw goes first, so each side has rounds without it.
    for r in range(rounds):
        for i in range(len(inputs)):
            for timed in ((timed_predict, timed_raw) if r % 2 == 0 else (timed_raw, timed_predict)):
                timed(i)
    predict_s, raw_s = sum(predict_best), sum(raw_best)
    per_input = [p / r for p, r in zip(predict_best, raw_best) if r > 0]
    return {
        "inputs": len(inputs), "engine": model.session.settings,
        "predict_ms_total": predict_s * 1000, "raw_engine_ms_total": raw_s * 1000,
        "ratio_total": predict_s / raw_s, "ratio_median_input": statistics.median(per_input),
        "ratio_worst_input": max(per_input),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default=str(DEFAULT_IMAGES))
    parser.add_argument("--use_hpip", action="store_true", help="engines as use_hpip picks them (default: ONNX Runtime)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the fastest of each counts")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    images = [item.image for item in iter_inputs(args.images)]
    crops = line_crops(images)
    report: Dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "machine": f"{os.cpu_count()} CPU(s)",
        "use_hpip": args.use_hpip, "rounds": args.rounds, "models": {},
    }
    print(f"{len(images)} images, {len(crops)} line crops; {args.rounds} interleaved rounds; use_hpip={args.use_hpip}")
    print(f"{'model':28s} {'inputs':>6s} {'predict ms':>11s} {'raw ms':>9s} {'ratio':>6s} {'median':>7s} {'worst':>6s}  engine")
    for name in PAGE_MODELS + LINE_MODELS:
        model = hpinfer.create_model(name, use_hpip=args.use_hpip)
        inputs = images if name in PAGE_MODELS else crops
        model.predict(inputs[0])  # warm-up
        row = measure(model, inputs, args.rounds)
        report["models"][name] = row
        print(
            f"{name:28s} {row['inputs']:6d} {row['predict_ms_total']:11.1f} {row['raw_engine_ms_total']:9.1f} "
            f"{row['ratio_total']:6.3f} {row['ratio_median_input']:7.3f} {row['ratio_worst_input']:6.2f}  {row['engine']}"
        )
    report["load_average_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
