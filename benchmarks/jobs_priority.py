"""Interactive latency next to batch jobs: sequential OCR requests to ``hpinfer serve --jobs_dir`` alone, then
while a 100-page batch job is queued, with batch pages smaller than and as large as the interactive page.

    python benchmarks/jobs_priority.py [--requests 200] [--json out.json]

Interactive: ``single_line.jpg`` (445x39), back to back, and with a 100 ms pause between requests (idle gaps the
batch pages may fill). Batch pages: PDF pages of its left half, or of the whole image. Detection at the image's
own size (longest side 736), so one page is tens of milliseconds of model time. Each busy phase starts a fresh
job and cancels it afterwards. The load average is recorded: other work on the machine slows everything.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import ROOT, Server, _load, environment  # noqa: E402

IMAGES = ROOT.parent / "shared" / "data" / "images"
FAST = {"textDetLimitType": "max", "textDetLimitSideLen": 736, "visualize": False}


def latencies(url: str, body: Dict[str, Any], count: int, pause_s: float) -> List[float]:
    times = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(count):
            start = time.perf_counter()
            client.post("/ocr", json=body).raise_for_status()
            times.append(time.perf_counter() - start)
            time.sleep(pause_s)
    return times


def summary(times: List[float]) -> Dict[str, float]:
    cuts = statistics.quantiles(times, n=100)
    return {"p50_ms": round(cuts[49] * 1000, 1), "p90_ms": round(cuts[89] * 1000, 1), "p99_ms": round(cuts[98] * 1000, 1),
            "max_ms": round(max(times) * 1000, 1), "n": len(times)}


def pdf(image: Image.Image, pages: int, path: Path) -> str:
    image.save(path, save_all=True, append_images=[image] * (pages - 1), resolution=144.0)
    return base64.b64encode(path.read_bytes()).decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="jobs-priority-"))
    line = Image.open(IMAGES / "single_line.jpg").convert("RGB")
    batches = {"half page": pdf(line.crop((0, 0, 222, 39)), 100, folder / "half.pdf"),
               "same page": pdf(line, 100, folder / "same.pdf")}
    body = {"file": base64.b64encode((IMAGES / "single_line.jpg").read_bytes()).decode(), **FAST}
    report: Dict[str, Any] = {"environment": environment(), "rows": []}
    with Server("OCR", "--jobs_dir", str(folder / "store")) as server:
        latencies(server.url, body, 10, 0)  # warm
        for pause_s in (0.0, 0.1):
            idle = summary(latencies(server.url, body, args.requests, pause_s))
            report["rows"].append({"interactive pause_s": pause_s, "batch": "none", **idle, "batch pages done": 0})
            for name, data in batches.items():
                job = httpx.post(f"{server.url}/jobs", json={"file": data, "priority": "batch", **FAST}).json()["result"]["jobId"]
                busy = summary(latencies(server.url, body, args.requests, pause_s))
                done = httpx.get(f"{server.url}/jobs/{job}").json()["result"]["pagesDone"]
                httpx.delete(f"{server.url}/jobs/{job}")
                report["rows"].append({"interactive pause_s": pause_s, "batch": name, **busy, "batch pages done": done})
                print(json.dumps(report["rows"][-1]), file=sys.stderr, flush=True)
    report["load_average_at_end"] = _load()
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
