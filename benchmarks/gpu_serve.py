"""Issue 17 on a GPU: how many requests per second ``hpinfer serve`` answers when several pipeline instances
(``--instances N`` worker processes, each with its own pipeline and CUDA context) share one device.

    python benchmarks/gpu_serve.py --out DIR --device gpu:0 --hpi_config JSON --instances 1,4,8 \
        [--pipeline OCR --endpoint /ocr --payloads images --concurrency 64 --count 1280] [--batching 4]

Steps, each in fresh servers (a time budget skips what no longer fits and keeps what is done):
- one server per instance count, loaded alone at ``--concurrency`` after ``--warm_up`` uncounted requests:
  requests/s, p50/p99 latency, errors, start time, GPU busy share and memory (``nvidia-smi`` sampled);
- ``--batching N``: cross-request batching on (``--max_batch_size 8``) vs off (``--max_batch_size 1``), both
  with N instances, at concurrency 8, rounds alternating (``serve_load.compare``);
- answers of the first and the last instance count compared with each other (instances change nothing).

Payloads: ``images`` = every shared image (10 sizes, incl. an empty and a tiny one) as single-image requests;
``pages`` = A4 pages composed from them (``pages.compose_page``) for ``/layout-parsing``. Writes
DIR/gpu_serve_<tag>.json after every step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import serve_load
from serve_load import (ENGINE_ARGS, Server, answers, bodies, compare, environment, load, page_bodies, stage_seconds,
                        summarize)


class GpuSampler:
    """``nvidia-smi`` every 0.5 s while the block runs: mean GPU busy %, peak memory in use (MiB)."""

    def __init__(self) -> None:
        self.busy: List[float] = []
        self.memory: List[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                line = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=5).stdout.splitlines()[0]
                busy, memory = (float(x) for x in line.split(","))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return
            self.busy.append(busy)
            self.memory.append(memory)

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def summary(self) -> Dict[str, Any]:
        if not self.busy:
            return {"gpu": "no nvidia-smi samples"}
        return {"gpu_busy_mean_pct": round(statistics.mean(self.busy), 1), "gpu_memory_peak_mib": max(self.memory)}


def one_count(args: argparse.Namespace, n: int, payloads: List[Dict[str, Any]], extra: List[str]) -> Dict[str, Any]:
    started = time.monotonic()
    with Server(args.pipeline, "--instances", str(n), *extra) as server:
        ready_s = time.monotonic() - started
        asyncio.run(load(server.url + args.endpoint, payloads, args.concurrency, 0, args.warm_up))  # uncounted
        warm_s = time.monotonic() - started - ready_s
        with GpuSampler() as gpu:
            run = asyncio.run(load(server.url + args.endpoint, payloads, args.concurrency, args.count, 0))
        result = {"instances": n, "concurrency": args.concurrency, "ready_s": round(ready_s, 1),
                  "warm_up_requests": args.warm_up, "warm_up_s": round(warm_s, 1), **summarize([run]), **gpu.summary(),
                  "stages": stage_seconds(server.url)}
        result["answers"] = answers(server.url, args.endpoint, payloads)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tag", default=None, help="output file suffix (default: the pipeline and payloads)")
    parser.add_argument("--images", type=Path, default=serve_load.ROOT.parent / "shared" / "data" / "images")
    parser.add_argument("--pipeline", default="OCR", help="a pipeline name or YAML")
    parser.add_argument("--endpoint", default="/ocr")
    parser.add_argument("--payloads", choices=["images", "pages"], default="images")
    parser.add_argument("--device", default="gpu:0")
    parser.add_argument("--hpi_config", default=None, help="JSON, given with --use_hpip to every server")
    parser.add_argument("--server_args", default="", help="more serve options for every server, e.g. '--inference_threads 2'")
    parser.add_argument("--instances", default="1,4,8", help="instance counts, one server each, in this order")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--count", type=int, default=1280, help="timed requests per instance count")
    parser.add_argument("--warm_up", type=int, default=256, help="uncounted requests before timing")
    parser.add_argument("--batching", type=int, default=None, metavar="N", help="batching on vs off at concurrency 8 with N instances")
    parser.add_argument("--batching_requests", default="8:400", help="concurrency:count per round for --batching")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--start_timeout", type=float, default=600)
    parser.add_argument("--budget", type=float, default=540, help="seconds; a step that would start after this is skipped")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    begin = time.monotonic()
    serve_load.START_TIMEOUT_S = args.start_timeout
    ENGINE_ARGS.extend(["--device", args.device, *(["--use_hpip", "--hpi_config", args.hpi_config] if args.hpi_config else [])])
    extra = args.server_args.split()
    payloads = (bodies(args.images, sorted(p.name for p in args.images.iterdir() if p.is_file()))
                if args.payloads == "images" else page_bodies(args.images, 5))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_serve_{args.tag or Path(args.pipeline).stem + '_' + args.payloads}.json"
    report: Dict[str, Any] = {"environment": {**environment(), "engine_args": " ".join(ENGINE_ARGS), "server_args": args.server_args},
                              "payloads": args.payloads, "requests": len(payloads), "counts": []}

    def save() -> None:
        report["environment"]["elapsed_s"] = round(time.monotonic() - begin, 1)
        path.write_text(json.dumps(report, indent=2) + "\n")

    first_answers: Optional[List[Any]] = None
    for n in (int(x) for x in args.instances.split(",")):
        if time.monotonic() - begin > args.budget:
            report["counts"].append({"instances": n, "skipped": "budget"})
            break
        try:
            result = one_count(args, n, payloads, extra)
        except Exception as error:  # a server that did not start: record it, go on with the next count
            result = {"instances": n, "error": f"{type(error).__name__}: {str(error)[-2000:]}"}
        got = result.pop("answers", None)
        if got is not None:
            first_answers = first_answers or got
            result["answers_equal_first_count"] = got == first_answers
        report["counts"].append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "stages"}), file=sys.stderr, flush=True)
        save()
    if args.batching and time.monotonic() - begin < args.budget:
        levels = [tuple(int(x) for x in pair.split(":")) for pair in args.batching_requests.split(",")]
        with Server(args.pipeline, "--instances", str(args.batching), "--max_batch_size", "1", *extra) as off, \
                Server(args.pipeline, "--instances", str(args.batching), "--max_batch_size", "8", *extra) as on:
            servers = {"batching off": off, "batching on": on}
            report["batching"] = {"instances": args.batching,
                                  "levels": compare(servers, args.endpoint, payloads, levels, args.rounds, args.warm_up),
                                  "stages": {label: stage_seconds(s.url) for label, s in servers.items()}}
    save()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
