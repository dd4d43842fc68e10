"""layout_parsing over a long PDF made from the shared images: wall time with and without stage
parallelism (``use_queues``), and peak memory, each run in a fresh subprocess.

    python benchmarks/layout_parsing_pdf.py [--pages 20] [--modes queues,sequential] [--rounds 1]
                                            [--hpi_config JSON] [--json out.json] [--pdf your.pdf]

The PDF cycles through four A4-sized pages: doc_page_zh_en.jpg as it is, the same page turned 90°
(the pipeline turns it back), and two lighter pages (paragraph_en.jpg, and the top of the paper page, on
white). PDFium renders them at 2x (1242 x 1754 pixels), as ``iter_inputs`` does for every PDF.
``--pdf`` runs a PDF of your own instead.

Each run is a child process (``--child``) that loads the pipeline, then streams every page through
``predict_iter`` and reports: load time, time for all pages, pages per second, CPU seconds, engine
seconds per page in the layout and the recognition stage (the larger bounds what overlapping them
can gain: at best sum / max), page statuses, and its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after the first page and at the end: the end
value is the peak for the whole document, and the difference shows whether memory grows with the page
count. Rounds alternate the modes (queues, sequential, queues, ...) so that drift from other load on
the machine hits both; the speed-up is the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
from PIL import Image

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
MODES = {"queues": True, "sequential": False}


def on_white(part: np.ndarray, size=(877, 621), top: int = 40) -> np.ndarray:
    """``part`` centred near the top of a white page (h, w) at most 560 pixels wide."""
    page = np.full((*size, 3), 255, np.uint8)
    scale = min(1.0, 560 / part.shape[1])
    part = cv2.resize(part, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else part
    h, w = part.shape[:2]
    left = (size[1] - w) // 2
    page[top : top + h, left : left + w] = part
    return page


def page_cycle() -> List[np.ndarray]:
    paper = cv2.imread(str(IMAGES / "doc_page_zh_en.jpg"))
    paragraph = cv2.imread(str(IMAGES / "paragraph_en.jpg"))
    turned = np.ascontiguousarray(np.rot90(paper, 3))  # 90° clockwise
    return [paper, turned, on_white(paragraph), on_white(paper[85:205, 50:570])]


def write_pdf(path: Path, pages: int) -> Path:
    """A ``pages``-page PDF at 72 dpi (one PDF point per pixel), pages cycling through ``page_cycle``."""
    cycle = [Image.fromarray(p[:, :, ::-1]) for p in page_cycle()]
    images = [cycle[i % len(cycle)] for i in range(pages)]
    images[0].save(path, save_all=True, append_images=images[1:], resolution=72.0)
    return path


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def child(pdf: str, use_queues: bool, hpi_config: str | None) -> Dict[str, Any]:
    import hpinfer

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    start = time.perf_counter()
    options: Dict[str, Any] = {"use_queues": use_queues}
    if hpi_config:
        options.update(use_hpip=True, hpi_config=json.loads(hpi_config))
    pipeline = hpinfer.create_pipeline("layout_parsing", **options)
    for predictor in pipeline.predictors:
        predictor.timer.enabled = True  # engine runs ("infer" spans), to split the work by stage
    loaded, cpu_at_load = time.perf_counter(), cpu_s()
    statuses: Dict[str, int] = {}
    first_page_peak, pages = 0.0, 0
    for result in pipeline.predict_iter(pdf):
        statuses[result["status"]] = statuses.get(result["status"], 0) + 1
        pages += 1
        if pages == 1:
            first_page_peak = peak_mb()
    done = time.perf_counter()
    infer = {key: sum(end - begin for name, begin, end in p.timer.drain() if name == "infer")
             for key, p in pipeline.sub_modules.items()}
    layout_stage = infer.get("DocOrientationClassify", 0.0) + infer["LayoutDetection"]
    return {
        "use_queues": use_queues, "pages": pages, "statuses": statuses,
        "load_s": round(loaded - start, 2), "pages_s": round(done - loaded, 2),
        "pages_per_s": round(pages / (done - loaded), 3), "cpu_s": round(cpu_s() - cpu_at_load, 1),
        # engine time per page in the layout stage and in the recognition stage (OCR models)
        "infer_s_per_page": {"layout": round(layout_stage / pages, 3),
                             "recognition": round((sum(infer.values()) - layout_stage) / pages, 3)},
        "peak_rss_mb_after_first_page": round(first_page_peak, 1), "peak_rss_mb": round(peak_mb(), 1),
        "engines": sorted({p.session.settings.split(" CPU")[0] for p in pipeline.predictors}),
    }


def run_child(pdf: Path, mode: str, hpi_config: str | None) -> Dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(pdf), "--modes", mode]
    if hpi_config:
        command += ["--hpi_config", hpi_config]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=20)
    parser.add_argument("--modes", default="queues,sequential", help="comma-separated: queues, sequential")
    parser.add_argument("--rounds", type=int, default=1, help="times each mode runs, alternating")
    parser.add_argument("--hpi_config", default=None, help="JSON; also turns use_hpip on")
    parser.add_argument("--json", default=None, help="write the report here too")
    parser.add_argument("--pdf", default=None, help="run this PDF instead of making one (--pages is then ignored)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}")
    if args.child:
        print(json.dumps(child(args.child, MODES[modes[0]], args.hpi_config)))
        return 0

    import hpinfer
    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        pdf = Path(args.pdf) if args.pdf else write_pdf(Path(tmp) / "document.pdf", args.pages)
        runs: Dict[str, List[Dict[str, Any]]] = {mode: [] for mode in modes}
        for round_index in range(args.rounds):
            for mode in modes if round_index % 2 == 0 else modes[::-1]:
                runs[mode].append(run_child(pdf, mode, args.hpi_config))
                print(f"round {round_index + 1} {mode}: {json.dumps(runs[mode][-1])}", file=sys.stderr)
    report: Dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "machine": cpu_model(),
        "cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
        "hpinfer": hpinfer.__version__, "onnxruntime": onnxruntime.__version__,
        "pdf": args.pdf or f"{args.pages} pages cycling through page_cycle()", "hpi_config": args.hpi_config,
        "runs": runs,
        "median_pages_s": {m: statistics.median(r["pages_s"] for r in rs) for m, rs in runs.items()},
        "max_peak_rss_mb": {m: max(r["peak_rss_mb"] for r in rs) for m, rs in runs.items()},
    }
    if set(MODES) <= set(runs):
        ratios = [s["pages_s"] / q["pages_s"] for q, s in zip(runs["queues"], runs["sequential"])]
        report["speedup_queues"] = round(statistics.median(ratios), 3)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
