"""What one hop to an engine instance costs: the cheap request's page through ``RemotePipeline`` (Triton, Ray)
vs the same call on an in-process pipeline, paired, without the HTTP front-end (whose cost is basic serving's too).

    .venv-triton/bin/python benchmarks/engine_hop.py [--engines triton,ray] [--pairs 40]

Each pair: the in-process call, ``PAUSE_S``, the engine's call, ``PAUSE_S`` (see serve_load.py on why the
pauses); the hop is the median of the differences. For Triton the instance runs in this process, so the time
inside its infer function (``Replica.run_many``) is reported too: the rest is the client, gRPC and PyTriton.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import OVERHEAD_IMAGE, OVERHEAD_OPTIONS, PAUSE_S, _load  # noqa: E402


def hop(engine: str, settings: Any, local: Any, page: Any, pairs: int) -> Dict[str, Any]:
    from hpinfer.serving.remote import EngineOptions, Replica

    inside: List[float] = []
    run_many = Replica.run_many

    def timed(self: Replica, calls: Any) -> Any:
        start = time.perf_counter()
        try:
            return run_many(self, calls)
        finally:
            inside.append(time.perf_counter() - start)

    Replica.run_many = timed  # type: ignore[method-assign]
    if engine == "triton":
        from hpinfer.serving.triton import started
    else:
        from hpinfer.serving.ray_app import started
    diffs, remote_ms, local_ms = [], [], []
    try:
        with started(settings, EngineOptions(engine=engine, batching=False, triton_ports=(0, 0, 0))) as remote:
            for i in range(pairs + 3):  # 3 to warm up
                start = time.perf_counter()
                local.predict_batch([page], **OVERHEAD_OPTIONS)
                mid = time.perf_counter()
                time.sleep(PAUSE_S)
                again = time.perf_counter()
                remote.predict_batch([page], **OVERHEAD_OPTIONS)
                end = time.perf_counter()
                time.sleep(PAUSE_S)
                if i >= 3:
                    local_ms.append((mid - start) * 1000)
                    remote_ms.append((end - again) * 1000)
                    diffs.append(remote_ms[-1] - local_ms[-1])
    finally:
        Replica.run_many = run_many  # type: ignore[method-assign]
    out = {"in_process_p50_ms": round(statistics.median(local_ms), 2), "engine_p50_ms": round(statistics.median(remote_ms), 2),
           "hop_median_ms": round(statistics.median(diffs), 2)}
    if inside:  # Triton: the instance is in this process
        ms = sorted(1000 * (t) for t in inside[-pairs:])
        out["inside_infer_p50_ms"] = round(statistics.median(ms), 2)
        out["outside_infer_p50_ms"] = round(out["engine_p50_ms"] - out["inside_infer_p50_ms"], 2)
    return out


def main() -> int:
    import cv2

    from hpinfer.serving.settings import ServeSettings

    parser = argparse.ArgumentParser()
    parser.add_argument("--engines", default="triton,ray")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "images")
    args = parser.parse_args()
    settings = ServeSettings(pipeline="OCR", visualize=False, max_batch_size=1, inference_threads=1)
    page = cv2.imread(str(args.images / OVERHEAD_IMAGE))
    local = settings.load_pipeline()
    report: Dict[str, Any] = {"load_average_at_start": _load(), "page": [OVERHEAD_IMAGE, list(page.shape)]}
    for engine in args.engines.split(","):
        report[engine] = hop(engine, settings, local, page, args.pairs)
        print(engine, report[engine], file=sys.stderr, flush=True)
    report["load_average_at_end"] = _load()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
