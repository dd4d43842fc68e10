"""Load test of ``hpinfer serve`` on loopback: latency and throughput with cross-request batching on and off,
the HTTP overhead over in-process ``predict``, and an optional soak. Bounded request counts; stops by itself.

    python benchmarks/serve_load.py [--pipeline OCR] [--requests 1:6,8:16,32:32] [--rounds 3] [--two_threads_too] [--json out.json]
    python benchmarks/serve_load.py --soak 600          # concurrency 16 for 10 minutes, errors and RSS growth
    python benchmarks/serve_load.py --soak 600 --mixed  # the same with hostile requests mixed in (issue 18)
    python benchmarks/serve_load.py --device gpu:0 --use_hpip --hpi_config '{"backend": "torch", ...}'   # on a GPU
    python benchmarks/serve_load.py --payloads pages     # A4 pages of one size instead of 5 images of 5 sizes
    .venv-triton/bin/python benchmarks/serve_load.py --engines basic,triton,ray   # the engines, one instance each

``--engines``: one server per engine (``--engine basic|triton|ray``, one instance, the default batching),
loaded in turn as above; ratios are to "basic", and every payload's answer is compared with basic's. The
overhead at concurrency 1 is measured paired: ``--overhead_pairs`` times, the same request goes to every
engine in turn (order rotated), each request followed by ``PAUSE_S``; an engine's overhead is the median of
its per-pair differences to basic. Two requests: the HTTP overhead's cheap one (small model time, so
little noise) and the largest of the five payloads (the hop's cost grows with the pixels sent). Run it with an interpreter that has every
engine (PyTriton needs .venv-triton, where numpy < 2 gives slightly different scores than numpy 2). Each server
runs in the interpreter its engine needs (``_python``): basic serving is measurably faster in .venv than in
.venv-triton, so ``--triton_baseline`` also pairs Triton with basic serving in .venv-triton (only the engine differs).

The configurations run as real server processes at once (``python -m hpinfer.serving serve --port 0``,
visualize off), loaded in turn by this asyncio client process (httpx): "batching off" is
``--max_batch_size 1 --inference_threads 1``, one page per pipeline call and one call at a time, which is
how PaddleX's basic serving runs its pipeline; "batching on" is ``--max_batch_size 8 --inference_threads 1``
(pages of concurrent requests in shared ``predict_batch`` calls, one call at a time; the server's default on a
CPU). ``--two_threads_too`` adds "batching on, 2 threads" (batches of 8, two in flight) and "batching off, 2 threads" (two single pages in flight:
what the second thread alone gives). Each concurrency level runs
``--rounds`` rounds, each round measuring every configuration (order reversed every round) with the same
requests, so that drift in machine load hits all alike; a ratio to "off" is the median of the per-round
throughput ratios. Latency is per request (send → full response), pooled over rounds; throughput is
requests / wall time. A few uncounted requests warm each level up first. The machine's load average is
recorded at the start and the end: other work on the machine makes every number slower and noisier.

HTTP overhead: requests at concurrency 1 alternate with in-process ``pipeline.predict(<same bytes>,
same options)`` in this process (its own copy of the models), and the overhead is the median of the
paired differences. A cheap detection setting (longest side 320) keeps the model time small next to it.
Each call is followed by a short pause (``PAUSE_S``): ONNX Runtime's worker threads keep spinning for a
while after a call, and on a 2-core machine the spinning of one process's threads slows the other
process's next call (unpaused, both timings grow by ~50% and their difference by a few ms). The server's
own time for each of those requests (its access log: first byte in → response out) is reported as well.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
IMAGES = ["bilevel_test.png", "single_line.jpg", "exif_rotated.jpg", "wide_line.jpg", "ja_lines.jpg"]
OVERHEAD_IMAGE = "bilevel_test.png"
OVERHEAD_OPTIONS = {"text_det_limit_type": "max", "text_det_limit_side_len": 320}
PAUSE_S = 0.05
TRITON_BASELINE = "basic_in_triton_venv"
START_TIMEOUT_S = 180.0  # until a server answers ready (GPU instances that warm up many shapes need more)


ENGINE_ARGS: List[str] = []  # --device/--use_hpip/--hpi_config given to this script, passed to every server


def _python(args) -> str:
    """Triton in the interpreter that runs PyTriton (.venv-triton: numpy < 2, Debian's Python), everything else in
    the project's .venv (Ray lives there), whichever of them runs this script."""
    venv = ROOT / (".venv-triton" if "triton" in args else ".venv") / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


class Server:
    """A ``python -m hpinfer.serving serve`` process on 127.0.0.1:<free port>, ready when entered."""

    def __init__(self, pipeline: str, *extra: str, python: Optional[str] = None):
        if "triton" in extra:  # Triton's own ports, free ones
            extra = (*extra, "--triton_ports", "0,0,0")
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [python or _python(extra), "-m", "hpinfer.serving", "serve", "--pipeline", pipeline, "--host", "127.0.0.1",
             "--port", "0", "--no_visualize", "--log_level", "INFO", *ENGINE_ARGS, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
        )

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (match := re.search(r"Uvicorn running on (http://\S+)", Path(self.log.name).read_text())):
            self._alive(deadline)
        self.url = match.group(1)
        while not self._ready():  # worker processes (--instances) listen a moment after the supervisor says it runs
            self._alive(deadline)
        print(f"server {' '.join(self.process.args[-4:])} ready", file=sys.stderr, flush=True)
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    def _alive(self, deadline: float) -> None:
        if self.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not start:\n{Path(self.log.name).read_text()[-4000:]}")
        time.sleep(0.1)

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024

    def __exit__(self, *exc: Any) -> None:
        self.process.terminate()
        self.process.wait(90)



def bodies(images_dir: Path, names: List[str], **options: Any) -> List[Dict[str, Any]]:
    return [_body((images_dir / n).read_bytes(), **options) for n in names]


def page_bodies(images_dir: Path, count: int) -> List[Dict[str, Any]]:
    """``count`` A4 pages of one size (150 dpi, the shared images laid out on white; JPEG as a scanner sends
    them): the traffic of a document service, where detection inputs share a shape and batch."""
    import cv2

    from hpinfer.io import iter_inputs
    from pages import compose_page

    images = [item.image for item in iter_inputs(str(images_dir))]
    return [_body(cv2.imencode(".jpg", compose_page(images, i), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
            for i in range(count)]


def _body(data: bytes, **options: Any) -> Dict[str, Any]:
    camel = {"".join(p if i == 0 else p.title() for i, p in enumerate(k.split("_"))): v for k, v in options.items()}
    return {"file": base64.b64encode(data).decode(), "fileType": 1, **camel}


Run = Tuple[List[float], float, Dict[str, int]]  # latencies (s), wall time (s), errors by status


async def load(url: str, payloads: List[Dict[str, Any]], concurrency: int, count: int, warm_up: int) -> Run:
    """``count`` requests (cycling through ``payloads``) from ``concurrency`` workers, after ``warm_up`` uncounted ones."""
    latencies: List[float] = []
    errors: Dict[str, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:
        async def worker(indices: List[int], record: bool) -> None:
            for i in indices:
                start = time.perf_counter()
                response = await client.post(url, json=payloads[i % len(payloads)])
                if response.status_code != 200:
                    errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                elif record:
                    latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker(list(range(w, warm_up, concurrency)), False) for w in range(min(concurrency, warm_up))))
        start = time.perf_counter()
        await asyncio.gather(*(worker(list(range(w, count, concurrency)), True) for w in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, wall, errors


def summarize(runs: List[Run]) -> Dict[str, Any]:
    ordered = sorted(t for latencies, _, _ in runs for t in latencies) or [float("nan")]
    wall = sum(w for _, w, _ in runs)
    errors: Dict[str, int] = {}
    for _, _, run_errors in runs:
        for status, n in run_errors.items():
            errors[status] = errors.get(status, 0) + n
    return {
        "requests": len(ordered), "errors": errors, "wall_s": round(wall, 2),
        "throughput_rps": round(len(ordered) / wall, 3), "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 1),
    }


def compare(servers: Dict[str, "Server"], endpoint: str, payloads: List[Dict[str, Any]], levels: List[Tuple[int, int]],
            rounds: int, warm_up: Optional[int] = None, baseline: str = "batching off") -> Dict[str, Any]:
    """Per level: each configuration's pooled stats and its median per-round throughput ratio to ``baseline``."""
    out: Dict[str, Any] = {}
    for concurrency, count in levels:
        runs: Dict[str, List[Run]] = {label: [] for label in servers}
        for r in range(rounds):
            for label in (list(servers) if r % 2 == 0 else list(reversed(servers))):
                uncounted = (min(concurrency, 4) if warm_up is None else warm_up) if r == 0 else 0
                started = time.perf_counter()
                runs[label].append(asyncio.run(load(servers[label].url + endpoint, payloads, concurrency, count, uncounted)))
                print(f"c={concurrency} round {r + 1}/{rounds} {label}: {_rps(runs[label][-1]):.2f} requests/s "
                      f"({time.perf_counter() - started:.0f} s with {uncounted} warm-up requests)", file=sys.stderr, flush=True)
        level: Dict[str, Any] = {label: summarize(label_runs) for label, label_runs in runs.items()}
        for label in servers:
            if label == baseline:
                continue
            ratios = [_rps(on) / _rps(off) for off, on in zip(runs[baseline], runs[label])]
            if baseline != "batching off":
                key = f"throughput_ratio_{label}_{baseline}"
                level[f"p50_overhead_ms_{label}"] = round(level[label]["p50_ms"] - level[baseline]["p50_ms"], 1)
            elif label == "batching on":
                key = "throughput_ratio_on_off"
            else:
                key = f"throughput_ratio_{label.replace(' ', '_').replace(',', '')}_off"
            level[key] = round(statistics.median(ratios), 2)
            level[key.replace("throughput_ratio", "per_round_ratios")] = [round(x, 2) for x in ratios]
        out[str(concurrency)] = level
    return out


def answers(url: str, endpoint: str, payloads: List[Dict[str, Any]]) -> List[Any]:
    """The server's answer to each payload, one at a time (logId aside)."""
    out = []
    for payload in payloads:
        body = httpx.post(url + endpoint, json=payload, timeout=600).json()
        body.pop("logId", None)
        out.append(body)
    return out


def same_answers(servers: Dict[str, "Server"], endpoint: str, payloads: List[Dict[str, Any]]) -> Dict[str, bool]:
    """Whether each server answers every payload exactly as the first one does (logId aside)."""
    expected = answers(next(iter(servers.values())).url, endpoint, payloads)
    return {label: answers(server.url, endpoint, payloads) == expected for label, server in servers.items()}


def stage_seconds(url: str) -> Dict[str, Any]:
    """The server's own account (its /metrics): seconds per pipeline module and stage, and its batch sizes."""
    text = httpx.get(f"{url}/metrics").text
    stages = {f"{m}/{s}": round(float(v), 2) for m, s, v in
              re.findall(r'^hpinfer_stage_seconds_total\{module="([^"]+)",stage="([^"]+)"\} (\S+)', text, re.M)}
    count = re.search(r"^hpinfer_batch_size_count (\S+)", text, re.M)
    total = re.search(r"^hpinfer_batch_size_sum (\S+)", text, re.M)
    batches = float(count.group(1)) if count else 0.0
    return {"stages": stages, "batches": batches, "mean_batch_size": round(float(total.group(1)) / batches, 2) if batches else None}


def _rps(run: Run) -> float:
    latencies, wall, _ = run
    return len(latencies) / wall if wall else float("nan")


def http_overhead(server: "Server", endpoint: str, pipeline_name: str, images_dir: Path, pairs: int,
                  engine: Dict[str, Any]) -> Dict[str, Any]:
    """Median of paired (HTTP request − in-process predict) times, same bytes, same options."""
    import hpinfer

    data = (images_dir / OVERHEAD_IMAGE).read_bytes()
    (payload,) = bodies(images_dir, [OVERHEAD_IMAGE], **OVERHEAD_OPTIONS)
    http_ms, local_ms = [], []
    with hpinfer.create_pipeline(pipeline_name, **engine) as pipeline, httpx.Client(timeout=600) as client:
        for i in range(pairs + 3):  # the first 3 pairs warm up
            start = time.perf_counter()
            assert client.post(server.url + endpoint, json=payload).status_code == 200
            mid = time.perf_counter()
            time.sleep(PAUSE_S)
            local = time.perf_counter()
            pipeline.predict(data, **OVERHEAD_OPTIONS)
            end = time.perf_counter()
            time.sleep(PAUSE_S)
            if i >= 3:
                http_ms.append((mid - start) * 1000)
                local_ms.append((end - local) * 1000)
    diffs = [h - p for h, p in zip(http_ms, local_ms)]
    logged = re.findall(r'"POST ' + re.escape(endpoint) + r'" 200 ([\d.]+)ms', Path(server.log.name).read_text())[-pairs:]
    server_ms = [float(x) for x in logged]
    return {
        "pairs": pairs, "http_p50_ms": round(statistics.median(http_ms), 2),
        "in_process_p50_ms": round(statistics.median(local_ms), 2), "overhead_median_ms": round(statistics.median(diffs), 2),
        "server_side_p50_ms": round(statistics.median(server_ms), 2) if server_ms else None,
        "server_side_overhead_ms": round(statistics.median(server_ms) - statistics.median(local_ms), 2) if server_ms else None,
    }


def engine_overhead(servers: Dict[str, "Server"], endpoint: str, payloads: List[Dict[str, Any]], pairs: int,
                    also: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Median of paired (engine − first server) latencies at concurrency 1: same request, back to back; ``also``:
    {engine: another server} to pair it with as well."""
    labels = list(servers)
    times: Dict[str, List[float]] = {label: [] for label in labels}
    with httpx.Client(timeout=600) as client:
        for i in range(pairs + 3):  # the first 3 rounds warm up
            for label in labels[i % len(labels):] + labels[:i % len(labels)]:
                start = time.perf_counter()
                assert client.post(servers[label].url + endpoint, json=payloads[i % len(payloads)]).status_code == 200
                elapsed = time.perf_counter() - start
                time.sleep(PAUSE_S)
                if i >= 3:
                    times[label].append(elapsed * 1000)
    base = labels[0]
    out: Dict[str, Any] = {"pairs": pairs, **{f"p50_ms_{label}": round(statistics.median(times[label]), 1) for label in labels}}
    for label, other, suffix in [(label, base, "") for label in labels[1:]] + [
            (label, other, f"_vs_{other}") for label, other in (also or {}).items() if label in times]:
        diffs = sorted(t - b for t, b in zip(times[label], times[other]))
        out[f"overhead_median_ms_{label}{suffix}"] = round(statistics.median(diffs), 2)
        out[f"overhead_iqr_ms_{label}{suffix}"] = [round(diffs[len(diffs) // 4], 2), round(diffs[3 * len(diffs) // 4], 2)]
    return out


def hostile_requests(images_dir: Path) -> List[Tuple[str, Dict[str, Any]]]:
    """(kind, httpx.post keywords): each invalid request the hostile-input tests send, and the issue's one-image DoS
    (clamped now), between the valid ones; every kind is expected to get its 2xx or 4xx, never a 5xx."""
    image = base64.b64encode((images_dir / "paragraph_en.jpg").read_bytes()).decode()
    as_json = {"Content-Type": "application/json"}
    return [
        ("dos_det_4096_min", {"json": {"file": image, "textDetLimitSideLen": 4096, "textDetLimitType": "min"}}),
        ("bad_base64", {"json": {"file": "not base64 !"}}),
        ("not_an_image", {"json": {"file": base64.b64encode(b"hello " * 100).decode()}}),
        ("unknown_field", {"json": {"file": image, "textDetLimit": 5}}),
        ("file_type_true", {"json": {"file": image, "fileType": True}}),
        ("pdf_expected", {"json": {"file": image, "fileType": 0}}),
        ("not_utf8", {"content": b'{"file": "\xff"}', "headers": as_json}),
        ("too_deep", {"content": b"[" * 50_000 + b"]" * 50_000, "headers": as_json}),
        ("text_plain", {"content": b'{"file": "x"}', "headers": {"Content-Type": "text/plain"}}),
        ("private_url", {"json": {"file": "http://127.0.0.1:9/x.png"}}),
    ]


def soak(pipeline: str, endpoint: str, images_dir: Path, seconds: float, concurrency: int = 16,
         mixed: bool = False) -> Dict[str, Any]:
    """Concurrency 16 for ``seconds`` after a warm-up: statuses, and RSS growth. ``mixed``: every other request is
    one of ``hostile_requests``. Warm-up (not measured): each kind of request of the mix sent ``concurrency``
    times at once, the worst (the DoS image) first, so that the largest batches the mix can make have been
    served. RSS is sampled every half second (a DoS request in flight lifts a few seconds of samples: with 5 s
    samples one request moved a tenth's median by 300-500 MB). Growth: the median RSS of the last tenth of the
    samples against that of the first tenth (single requests make RSS spike: a median shows a trend, the max a
    spike), the same for the halves, the max against the first tenth, and the least RSS of each minute."""
    requests = [("valid", {"json": body}) for body in bodies(images_dir, IMAGES)]
    if mixed:
        hostile = hostile_requests(images_dir)
        requests = [r for pair in zip(requests * len(hostile), hostile * len(requests)) for r in pair]
    kinds = sorted({kind: request for kind, request in requests}.items(), key=lambda kv: not kv[0].startswith("dos"))
    warm_up = [request for _, request in kinds] + [request for kind, request in requests if kind == "valid"][:len(IMAGES)]
    samples: List[Tuple[float, float]] = []
    with Server(pipeline) as server:
        async def run() -> Dict[str, Any]:
            statuses: Dict[str, Dict[str, int]] = {}
            done = 0
            async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:
                started = time.monotonic()
                for request in warm_up:
                    await asyncio.gather(*(client.post(server.url + endpoint, **request) for _ in range(concurrency)))
                warmed_s = time.monotonic() - started
                print(f"warm-up: {len(warm_up)} x {concurrency} requests in {warmed_s:.0f} s", file=sys.stderr, flush=True)
                stop = time.monotonic() + seconds
                async def worker(w: int) -> None:
                    nonlocal done
                    i = w * 7  # each worker walks the whole list (a stride of 16 would keep it to one parity: all valid or all hostile)
                    while time.monotonic() < stop:
                        kind, request = requests[i % len(requests)]
                        try:
                            response = await client.post(server.url + endpoint, **request)
                            key = str(response.status_code)
                        except httpx.HTTPError as err:
                            key = type(err).__name__
                        counts = statuses.setdefault(kind, {})
                        counts[key] = counts.get(key, 0) + 1
                        done += 1
                        i += 1

                async def sampler() -> None:
                    start = time.monotonic()
                    while time.monotonic() < stop:
                        samples.append((time.monotonic() - start, server.rss_mb()))
                        await asyncio.sleep(0.5)

                await asyncio.gather(sampler(), *(worker(w) for w in range(concurrency)))
            return {"requests": done, "statuses": statuses, "warm_up_s": round(warmed_s, 1)}

        outcome = asyncio.run(run())
    after_warm = [rss for _, rss in samples]
    tenth = max(1, len(after_warm) // 10)
    first, last = statistics.median(after_warm[:tenth]), statistics.median(after_warm[-tenth:])
    half = len(after_warm) // 2
    by_status = [(key, n) for counts in outcome["statuses"].values() for key, n in counts.items()]
    # Per-minute floor (the least RSS sampled in each minute): a leak raises it; single large requests don't.
    floors = [min((rss for t, rss in samples if m * 60 <= t < (m + 1) * 60), default=None) for m in range(int(seconds // 60))]
    return {
        **outcome, "seconds": seconds, "concurrency": concurrency, "mixed": mixed,
        "warm_up": f"each kind of request x {concurrency} at once, the DoS image first ({len(warm_up)} rounds)",
        "server_errors_5xx": sum(n for key, n in by_status if key.startswith("5")),
        "transport_errors": sum(n for key, n in by_status if not key.isdigit()),
        "rss_after_warm_up_mb": round(first, 1), "rss_end_mb": round(last, 1), "rss_max_after_mb": round(max(after_warm), 1),
        "rss_growth_pct": round((last / first - 1) * 100, 2),
        "rss_growth_halves_pct": round((statistics.median(after_warm[half:]) / statistics.median(after_warm[:half]) - 1) * 100, 2),
        "rss_spike_pct": round((max(after_warm) / first - 1) * 100, 2),
        "rss_floor_per_minute_mb": [None if f is None else round(f, 1) for f in floors],
        "rss_samples": [(round(t, 1), round(rss, 1)) for t, rss in samples],
    }


def environment() -> Dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    versions = {p: _version(p) for p in ("hpinfer", "fastapi", "uvicorn", "httpx", "onnxruntime", "torch")}
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu, "cores": str(os.cpu_count()),
            "python": platform.python_version(), "load_average_at_start": _load(), **versions}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # e.g. hpinfer run from a checkout on PYTHONPATH
        return "not installed"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default="OCR")
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "images")
    parser.add_argument("--requests", default="1:6,8:16,32:32", help="concurrency:count pairs, per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overhead_pairs", type=int, default=30)
    parser.add_argument("--soak", type=float, default=None, metavar="SECONDS", help="run only the soak, this long")
    parser.add_argument("--mixed", action="store_true", help="soak: hostile requests between the valid ones")
    parser.add_argument("--endpoint", default="/ocr", help="the pipeline's endpoint (the OCR request bodies are sent)")
    parser.add_argument("--two_threads_too", action="store_true",
                        help='also measure "batching on, 2 threads" and "batching off, 2 threads" (what the threads alone give)')
    parser.add_argument("--payloads", choices=["images", "pages"], default="images",
                        help="images: 5 shared images of 5 sizes (default); pages: 5 A4 pages of one size")
    parser.add_argument("--warm_up", type=int, default=None,
                        help="uncounted requests per server before each level's first round (default: min(concurrency, 4)); "
                             "engines that prepare per input shape (CUDA graphs, cuDNN autotuning) need many")
    parser.add_argument("--device", default=None, help="passed to the servers and the in-process pipeline, e.g. gpu:0")
    parser.add_argument("--use_hpip", action="store_true", help="likewise")
    parser.add_argument("--hpi_config", default=None, help="likewise (JSON)")
    parser.add_argument("--engines", default=None, help="compare these engines (e.g. basic,triton,ray) instead of batching on/off")
    parser.add_argument("--triton_baseline", action="store_true",
                        help=f"with --engines: also pair Triton's c=1 requests with basic serving run in Triton's interpreter "
                             f"({TRITON_BASELINE!r}): the engine's own overhead, without the interpreters' difference")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    # Stopped by a signal (``timeout``, Ctrl-C from a shell script): exit through the ``with`` blocks, which stop the servers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    engine = {"device": args.device, "use_hpip": args.use_hpip or None, "hpi_config": json.loads(args.hpi_config) if args.hpi_config else None}
    ENGINE_ARGS.extend([*(["--device", args.device] if args.device else []), *(["--use_hpip"] if args.use_hpip else []),
                        *(["--hpi_config", args.hpi_config] if args.hpi_config else [])])
    report: Dict[str, Any] = {"environment": {**environment(), "engine_args": " ".join(ENGINE_ARGS)}}
    if args.soak:
        report["soak"] = soak(args.pipeline, args.endpoint, args.images, args.soak, mixed=args.mixed)
    elif args.engines:
        levels = [tuple(int(x) for x in pair.split(":")) for pair in args.requests.split(",")]
        payloads = bodies(args.images, IMAGES)
        report["payloads"] = IMAGES
        with contextlib.ExitStack() as stack:
            servers = {name: stack.enter_context(Server(args.pipeline, "--engine", name)) for name in args.engines.split(",")}
            report["answers_identical_to_first"] = same_answers(servers, args.endpoint, payloads)
            paired = dict(servers)
            if args.triton_baseline:
                paired[TRITON_BASELINE] = stack.enter_context(Server(args.pipeline, "--engine", "basic", python=_python(["triton"])))
            (cheap,) = bodies(args.images, [OVERHEAD_IMAGE], **OVERHEAD_OPTIONS)
            largest = max(payloads, key=lambda body: len(body["file"]))
            report["overhead_c1"] = {what: engine_overhead(paired, args.endpoint, [body], args.overhead_pairs,
                                                           also={"triton": TRITON_BASELINE})
                                     for what, body in (("cheap", cheap), ("largest", largest))}
            report["levels"] = compare(servers, args.endpoint, payloads, levels, args.rounds, args.warm_up, baseline=next(iter(servers)))
    else:
        levels = [tuple(int(x) for x in pair.split(":")) for pair in args.requests.split(",")]
        with contextlib.ExitStack() as stack:
            servers = {
                "batching off": stack.enter_context(Server(args.pipeline, "--max_batch_size", "1", "--inference_threads", "1")),
                "batching on": stack.enter_context(Server(args.pipeline, "--max_batch_size", "8", "--inference_threads", "1")),
            }
            if args.two_threads_too:
                servers["batching on, 2 threads"] = stack.enter_context(
                    Server(args.pipeline, "--max_batch_size", "8", "--inference_threads", "2"))
                servers["batching off, 2 threads"] = stack.enter_context(
                    Server(args.pipeline, "--max_batch_size", "1", "--inference_threads", "2"))
            payloads = bodies(args.images, IMAGES) if args.payloads == "images" else page_bodies(args.images, 5)
            report["payloads"] = IMAGES if args.payloads == "images" else "5 A4 pages, 1240x1754 JPEG (benchmarks/pages.py)"
            report["levels"] = compare(servers, args.endpoint, payloads, levels, args.rounds, args.warm_up)
            report["server_stage_seconds"] = {label: stage_seconds(server.url) for label, server in servers.items()}
            report["http_overhead"] = http_overhead(servers["batching on"], args.endpoint, args.pipeline, args.images,
                                                    args.overhead_pairs, engine)
    write_report(report, args.json)
    return 0


def write_report(report: Dict[str, Any], path: Optional[Path]) -> None:
    """Prints the report, with the load average now, and writes it to ``path`` too if given."""
    report["environment"]["load_average_at_end"] = _load()
    print(json.dumps(report, indent=2))
    if path:
        path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
