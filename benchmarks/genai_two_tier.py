"""Two-tier document parsing vs in-process: pages/s of the PaddleOCR-VL pipeline whose blocks go to an
``hpinfer genai-server`` on loopback, against in-process ``layout_parsing`` on the same PDF, for
``vl_rec_max_concurrency`` 1 / 8 / 64 / 200.

    python benchmarks/genai_two_tier.py [--pages 4] [--rounds 2] [--device gpu:0] [--server_args "--inference_threads 2"] [--json out.json]

The server runs as its own process (``hpinfer genai-server --backend native``, its defaults), started once
and warmed up; the pipelines run in this process, one after the other, each over the whole PDF (stage threads
on, as by default). Every round measures every configuration (order reversed every other round), so drift in
machine load hits all alike; reported: the median pages/s over rounds and its ratio to layout_parsing's, and
where a page's time went in the last round: seconds per page in each model, in this process and (``server
...``) in the genai-server (its /metrics, which also has its OCR's own cropping and post-processing as
``server pipeline``). Spans of concurrent threads add up, so their sum can exceed the wall time.

The two pipelines read the same page differently: layout_parsing runs OCR once over the whole page and gives
each region its lines, PaddleOCR-VL asks the recogniser about every block ("OCR:", and "Table Recognition:"
for tables; equations are declined by the native server); both turn tables into HTML with SLANet.
``PaddleOCR-VL in-process`` (the native recogniser in this process, no HTTP) is measured too, to tell the
tier's cost from the pipeline's own work. Load average is recorded before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PAGE = ROOT.parent / "shared" / "data" / "images" / "doc_page_zh_en.jpg"
CONCURRENCY = (1, 8, 64, 200)


def make_pdf(pages: int, target: Path) -> Path:
    from PIL import Image

    image = Image.open(PAGE).convert("RGB")
    image.save(target, save_all=True, append_images=[image] * (pages - 1), resolution=72.0)
    return target


def start_server(extra: List[str]) -> tuple:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "hpinfer.cli", "genai-server", "--host", "127.0.0.1", "--port", str(port), "--log_level", "WARNING", *extra],
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return process, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("genai-server did not become ready")
        time.sleep(0.5)


def per_module(spans: Dict[Tuple[str, str], float]) -> Dict[str, float]:
    """(module, stage) → seconds as module → seconds: a model's "call" span (engine call with its batching and
    decoding) where it has one, else its "infer"; the pipeline's own stages summed."""
    out: Dict[str, float] = {}
    for module in {m for m, _ in spans}:
        stages = {stage: v for (m, stage), v in spans.items() if m == module}
        out[module] = sum(stages.values()) if module == "pipeline" else stages.get("call", stages.get("infer", 0.0))
    return out


def client_spans(pipeline: Any) -> Dict[Tuple[str, str], float]:
    """Seconds per (model, stage) this process spent since the last call (the models' timers)."""
    spans: Dict[Tuple[str, str], float] = {}
    for predictor in pipeline.predictors:
        predictor.timer.enabled = True
        for stage, start, end in predictor.timer.drain():
            spans[(predictor.name, stage)] = spans.get((predictor.name, stage), 0.0) + end - start
    return spans


def server_spans(url: str) -> Dict[Tuple[str, str], float]:
    """The genai-server's cumulative seconds per (model, stage), from its /metrics."""
    text = httpx.get(url.rsplit("/v1", 1)[0] + "/metrics", timeout=10).text
    found = re.findall(r'hpinfer_stage_seconds_total\{module="([^"]+)",stage="([^"]+)"\} (\S+)', text)
    return {(module, stage): float(value) for module, stage, value in found}


def pages_per_second(pipeline: Any, pdf: Path, **options: Any) -> float:
    start = time.perf_counter()
    results = list(pipeline.predict_iter(str(pdf), **options))
    elapsed = time.perf_counter() - start
    bad = [r.get("error") for r in results if r.get("status") not in ("ok", "empty")]
    if bad:
        raise SystemExit(f"pages failed: {bad[:2]}")
    return len(results) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default=None, help="for the pipelines and the server, e.g. gpu:0")
    parser.add_argument("--server_args", default="", help="more genai-server flags, e.g. '--inference_threads 2'")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import hpinfer

    load_before = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="genai_two_tier_"))
    pdf = make_pdf(args.pages, folder / "doc.pdf")
    process, url = start_server(args.server_args.split() + (["--device", args.device] if args.device else []))
    pipelines: Dict[str, Any] = {}
    try:
        pipelines["layout_parsing"] = hpinfer.create_pipeline("layout_parsing", device=args.device)
        pipelines["PaddleOCR-VL in-process"] = hpinfer.create_pipeline("PaddleOCR-VL", device=args.device)
        runs: Dict[str, Callable[[], float]] = {
            "layout_parsing": lambda: pages_per_second(pipelines["layout_parsing"], pdf),
            "PaddleOCR-VL in-process": lambda: pages_per_second(pipelines["PaddleOCR-VL in-process"], pdf),
        }
        for concurrency in CONCURRENCY:
            name = f"two-tier c={concurrency}"
            pipelines[name] = hpinfer.create_pipeline("PaddleOCR-VL", device=args.device, vl_rec_server_url=url,
                                                     vl_rec_max_concurrency=concurrency)
            runs[name] = (lambda p: lambda: pages_per_second(p, pdf))(pipelines[name])
        one_page = make_pdf(1, folder / "one.pdf")
        for pipeline in pipelines.values():  # warm-up: first calls build caches and allocate
            list(pipeline.predict_iter(str(one_page)))
        measured: Dict[str, List[float]] = {name: [] for name in runs}
        seconds: Dict[str, Dict[str, float]] = {}  # where a page's time went, the last round: model → seconds
        for round_index in range(args.rounds):
            order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
            for name in order:
                client_spans(pipelines[name])
                served = server_spans(url)
                measured[name].append(runs[name]())
                here = per_module(client_spans(pipelines[name]))
                there = {f"server {k}": v for k, v in per_module(
                    {key: v - served.get(key, 0.0) for key, v in server_spans(url).items()}).items() if v > 0}
                seconds[name] = {k: round(v / args.pages, 3) for k, v in sorted({**here, **there}.items())}
                print(f"round {round_index + 1} {name}: {measured[name][-1]:.3f} pages/s; s/page {seconds[name]}", flush=True)
    finally:
        for pipeline in pipelines.values():
            pipeline.close()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
    base = statistics.median(measured["layout_parsing"])
    summary = {name: {"pages_per_s": statistics.median(v), "ratio_to_layout_parsing": statistics.median(v) / base, "runs": v,
                      "model_seconds_per_page": seconds[name]} for name, v in measured.items()}
    print(f"\n{'configuration':28s} {'pages/s':>8s} {'vs layout_parsing':>18s}")
    for name, row in summary.items():
        print(f"{name:28s} {row['pages_per_s']:8.3f} {row['ratio_to_layout_parsing']:17.2f}x")
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "pages": args.pages, "rounds": args.rounds,
        "server_args": args.server_args, "device": args.device,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "results": summary,
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }
    print(f"load average before {load_before}, after {report['loadavg_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
