"""GPU benchmark and fidelity check of the torch engine (issue 6): one script, several sections.

    python benchmarks/gpu_bench.py --out DIR --images IMAGES_DIR [--sections env,correct,table,...]
    python benchmarks/gpu_bench.py --out /tmp/b --images ../shared/data/images --device cpu --smoke   # dry run

Sections (each one's failure is recorded and the next one runs):
  env          versions: torch/CUDA/cuDNN, GPU, driver, onnxruntime, CPU cores
  correct      torch on the GPU vs ONNX Runtime fp32 on the CPU, real preprocessed inputs, per model and precision
  table        per model and shape: ONNX Runtime on all CPU cores, torch eager, + CUDA graph, end-to-end run()
  compile      torch.compile (Inductor) + CUDA graph, with compile time (slow: minutes)
  concurrency  end-to-end throughput of one session from 1 vs 2 threads (two execution contexts)
  profile      per-op GPU time of the detector (torch profiler), to see where the time goes
  pipeline     OCR pipeline: texts on the GPU (fp32/fp16/bf16) vs the CPU fp32 pipeline; throughput GPU vs CPU
  pipeline_threads  OCR pipeline throughput with 1, 2 and 4 threads sharing one pipeline (CPU work overlaps)
  aoti         torch.export + AOTInductor package of the detector: build time, load time, replay time
 (second session, issue 6 leftovers; options through backend_config.torch)
  fidelity     OCR texts on the shared images + rendered pages: GPU torch fp32/fp16 (uint8 upload, normalised on the
               GPU) vs the CPU ONNX Runtime fp32 pipeline
  throughput   pipeline images/s with several workers (processes x threads), GPU vs the same machine's CPU cores
               (each at its best concurrency), plus a per-stage breakdown of one GPU worker
  rec128       rec 128x3x48x320: fp32/fp16 graphs, compile modes, channels-last, 1x1 convolutions as matrix products,
               max-autotune (REC128_VARIANTS; each in a fresh process with a time limit)
  aot          AOTInductor packages in the model cache: first start (build) vs second start (load), in fresh processes
  profile2     ``hpinfer bench --profile`` of the OCR pipeline on the GPU (fp16), and rec 128 per kernel
 (third session, issue 5)
  best         recognition's arg-max on the GPU (run_best) vs scores copied to the host: rec run time, pipeline images/s
  queues       the OCR pipeline's stage threads (use_queues) on vs off on the GPU

Writes DIR/gpu_bench.json (all numbers), DIR/gpu_bench.md (tables), DIR/profile_det.txt. GPU times are CUDA-event
medians with inputs already on the device; "run()" times are wall-clock medians of ``session.run`` from numpy to
numpy (pinned staging, copies, graph replay). Inputs are real images through each model's own preprocessing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hpinfer  # noqa: E402
from hpinfer.config import BackendConfig  # noqa: E402
from hpinfer.device import Device  # noqa: E402
from hpinfer.io import iter_inputs  # noqa: E402
from hpinfer.tasks import text_detection  # noqa: E402
from hpinfer.models.registry import resolve_model  # noqa: E402
from hpinfer.tasks.text_recognition import resize_norm  # noqa: E402
from hpinfer.pipelines.ocr import crop_quad  # noqa: E402
from hpinfer.config import TorchConfig  # noqa: E402
from hpinfer.runtime.engines.torch_engine import TorchEngine  # noqa: E402
from hpinfer.runtime.hardware import cpu_name  # noqa: E402

DET, REC, CLS = "PP-OCRv4_mobile_det", "PP-OCRv4_mobile_rec", "ch_ppocr_mobile_v2.0_cls"
CASES = [(DET, (1, 3, 960, 960))] + [(REC, (b, 3, 48, 320)) for b in (1, 8, 32, 128)] + [(CLS, (64, 3, 48, 192))]
SMOKE_CASES = [(DET, (1, 3, 320, 320)), (REC, (8, 3, 48, 320)), (CLS, (8, 3, 48, 192))]
# Compiling takes ~20 s per model, shape and precision: fp32 and fp16 where the issue sets targets, fp16 elsewhere.
COMPILE_PRECISIONS = {(DET, 960): ("fp32", "fp16"), (REC, 128): ("fp32", "fp16"), (CLS, 64): ("fp32", "fp16")}
PRECISIONS = ("fp32", "fp16", "bf16")
DEVICE = Device.parse("gpu:0")  # --device cpu: a dry run of the script itself (no graphs, wall-clock times)
results: Dict[str, Any] = {}
_crops: List[np.ndarray] = []


def log(*parts: Any) -> None:
    print(*parts, flush=True)


def section(name: str, fn: Callable[[], Any]) -> None:
    start = time.perf_counter()
    log(f"\n=== {name} ===")
    try:
        results[name] = fn()
    except Exception as err:  # a broken section must not cost the others' numbers
        traceback.print_exc()
        results[name] = {"error": f"{type(err).__name__}: {err}"}
    log(f"=== {name}: {time.perf_counter() - start:.1f}s ===")


def attempt(out: Dict[str, Any], key: str, fn: Callable[[], Any]) -> Optional[Any]:
    """``out[key] = fn()``, or the error: one failing precision must not hide the others."""
    try:
        out[key] = fn()
    except Exception as err:
        traceback.print_exc()
        out[key] = {"error": f"{type(err).__name__}: {err}"}
        return None
    return out[key]


def images(directory: Path) -> Dict[str, np.ndarray]:
    return {p.name: next(iter(iter_inputs(str(p)))).image for p in sorted(directory.iterdir())}


def real_input(name: str, shape, pics: Dict[str, np.ndarray]) -> np.ndarray:
    """A batch of ``shape`` made from real images with the model's own preprocessing (no zeros, no noise)."""
    n, _, h, w = shape
    if name.endswith("_det"):
        page = cv2.resize(pics["doc_page_zh_en.jpg"], (w, h))
        spec = resolve_model(name)
        return text_detection.normalize_to_nchw(page, spec.params["mean"], spec.params["std"])
    if not _crops:
        page = pics["doc_page_zh_en.jpg"]
        with hpinfer.create_model(DET) as det:
            _crops.extend(crop_quad(page, b) for b in det.detect(page)[0])
    return np.stack([resize_norm(_crops[i % len(_crops)], h, w) for i in range(n)])


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def wall_ms(fn: Callable[[], Any], min_runs: int = 5, budget_s: float = 2.0) -> float:
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 200):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def gpu_ms(fn: Callable[[], Any], iters: int = 50) -> float:
    import torch

    if not DEVICE.is_gpu:
        return wall_ms(fn, min_runs=2, budget_s=0.5)
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def env() -> Dict[str, Any]:
    import onnxruntime as ort
    import torch

    info = {
        "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(), "cpu_cores": os.cpu_count(), "cpu": cpu_name(),
    }
    if DEVICE.is_gpu:
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        info.update(gpu=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    nvidia_smi=subprocess.run(query, capture_output=True, text=True).stdout.strip())
    log(json.dumps(info, indent=1))
    return info


def load(name: str, precision: str, **options: Any):
    if isinstance(options.get("compile"), bool):  # the first session's on/off flag
        options["compile"] = "default" if options["compile"] else "none"
    return TorchEngine.load(resolve_model(name).model_file, BackendConfig(precision=precision, torch=TorchConfig(**options)), DEVICE)


def correct(pics) -> Dict[str, Any]:
    out = {}
    det_shape = CASES[0][1]
    for name, shape in [(DET, det_shape), (REC, (8, 3, 48, 320)), (CLS, (8, 3, 48, 192)),
                        ("PP-OCRv5_mobile_det", det_shape), ("PP-OCRv5_mobile_rec", (8, 3, 48, 320))]:
        x = real_input(name, shape, pics)
        sess = ort_session(resolve_model(name).model_file)
        (ref,) = sess.run(None, {sess.get_inputs()[0].name: x})
        for precision in PRECISIONS:
            log(name, precision, attempt(out, f"{name} {precision}", lambda: _compare(load(name, precision), x, ref, name)))
    return out


def _compare(session, x: np.ndarray, ref: np.ndarray, name: str) -> Dict[str, float]:
    got = [session.run_one(x)[0] for _ in range(3)][-1]  # the third run replays the captured graph
    row = {"max_abs_err": float(np.abs(got - ref).max())}
    if name.endswith("_det"):
        row["mask_mismatch@0.3"] = float(((got > 0.3) != (ref > 0.3)).mean())
    else:
        row["argmax_agreement"] = float((got.argmax(-1) == ref.argmax(-1)).mean())
    return row


def table(pics, compiled: bool) -> Dict[str, Any]:
    out = {}
    for name, shape in CASES:
        x_np = real_input(name, shape, pics)
        key = f"{name} {'x'.join(map(str, shape))}"
        row: Dict[str, Any] = {}
        if not compiled:
            sess = ort_session(resolve_model(name).model_file)
            feed = {sess.get_inputs()[0].name: x_np}
            row["ort_cpu_ms"] = wall_ms(lambda: sess.run(None, feed))
        precisions = PRECISIONS
        if compiled:
            precisions = COMPILE_PRECISIONS.get((name, shape[0] if name != DET else shape[2]), ("fp16",))
        for precision in precisions:
            attempt(row, precision, lambda: _timings(name, precision, x_np, compiled))
        out[key] = {k: v for k, v in row.items() if not isinstance(v, dict) or "error" in v}
        for precision in precisions:
            if isinstance(row[precision], dict) and "error" not in row[precision]:
                out[key].pop(precision, None)
                out[key].update({f"{precision}_{k}": v for k, v in row[precision].items()})
        log(key, out[key])
    return out


def _timings(name: str, precision: str, x_np: np.ndarray, compiled: bool) -> Dict[str, float]:
    """Eager (or compile time), CUDA-graph replay and end-to-end run() of one model at one precision."""
    import torch

    session = load(name, precision, compile=compiled)
    fn, row = session.fn, {}
    x = torch.from_numpy(x_np).to(session.torch_device)
    with torch.inference_mode():
        start = time.perf_counter()
        fn(x)
        if compiled:
            torch.cuda.synchronize()
            row["compile_s"] = round(time.perf_counter() - start, 1)
        else:
            row["eager_ms"] = gpu_ms(lambda: fn(x))
        if DEVICE.is_gpu:
            stream = torch.cuda.Stream()
            with torch.cuda.stream(stream):
                fn(x)
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                fn(x)
            row["compiled_graph_ms" if compiled else "graph_ms"] = gpu_ms(graph.replay, iters=100)
        if not compiled:
            row["run_ms"] = wall_ms(lambda: session.run_one(x_np), min_runs=20 if DEVICE.is_gpu else 3)
    return row


def concurrency(pics) -> Dict[str, Any]:
    """Throughput of one session with 2 execution contexts from 1 and 2 threads; both contexts warmed first."""
    out = {}
    batches = [real_input(REC, (32, 3, 48, 320), pics) for _ in range(2)]
    for precision in ("fp32", "fp16"):
        session = load(REC, precision, contexts=2)

        def work(runs: int, k: int) -> None:
            for i in range(runs):
                session.run_one(batches[(i + k) % 2])

        for threads, runs in ((2, 6), (1, 60), (2, 30)):  # the first line only warms both contexts
            workers = [threading.Thread(target=work, args=(runs, k)) for k in range(threads)]
            start = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            out[f"rec 32x3x48x320 {precision} {threads} thread(s) batches/s"] = round(threads * runs / (time.perf_counter() - start), 1)
    log(out)
    return out


def profile(pics, out_dir: Path) -> Dict[str, Any]:
    text = []
    for name, shape, precision in [(DET, (1, 3, 960, 960), "fp16"), (REC, (128, 3, 48, 320), "fp16")]:
        session = load(name, precision)
        feeds = {session.inputs[0].name: real_input(name, shape, pics)}
        text.append(f"## {name} {shape} {precision} (eager, per ONNX op type, 10 runs)\n{session.profile(feeds)}")
    (out_dir / "profile_det.txt").write_text("\n\n".join(text))
    log(text[0][:4000])
    return {"file": "profile_det.txt"}


def pipeline(images_dir: Path, pics) -> Dict[str, Any]:
    from hpinfer.bench import benchmark

    out: Dict[str, Any] = {}
    configs = {"cpu onnxruntime fp32": ("cpu", "onnxruntime", "fp32")}
    configs.update({f"{DEVICE} torch {p}": (str(DEVICE), "torch", p) for p in PRECISIONS})
    texts = {}

    def run(device: str, backend: str, precision: str) -> Dict[str, Any]:
        hpi = {"auto_config": False, "backend": backend, "backend_config": {"precision": precision}}
        with hpinfer.create_pipeline("OCR", device=device, use_hpip=True, hpi_config=hpi) as pipe:
            texts[label] = {k: pipe.predict(v)[0]["rec_texts"] for k, v in pics.items()}
            report = benchmark(pipe, str(images_dir), warmup=2, iters=3)
        log(report.format())
        stages = {f"{m} {s}": (round(v.mean_ms, 2), round(v.share, 3)) for m, r in report.modules.items() for s, v in r.stages.items()}
        stages.update({f"pipeline {s}": (round(v.mean_ms, 2), round(v.share, 3)) for s, v in report.pipeline.items()})
        return {"images_per_s": round(report.throughput, 2), "latency_ms": report.latency_ms, "stages (mean ms, share)": stages}

    for label, spec in configs.items():
        attempt(out, label, lambda: run(*spec))
    reference = texts.get("cpu onnxruntime fp32", {})
    for label, got in texts.items():
        lines = sum(len(t) for t in reference.values())
        same = sum(a == b for k in reference for a, b in zip(reference[k], got[k]))
        out[label]["texts_identical_to_cpu_fp32"] = got == reference
        out[label]["lines_identical"] = f"{same}/{lines}"
        out[label]["differences"] = {k: [reference[k], got[k]] for k in reference if got[k] != reference[k]}
    fast, base = out.get(f"{DEVICE} torch fp32", {}), out.get("cpu onnxruntime fp32", {})
    if "images_per_s" in fast and "images_per_s" in base:
        out["speed-up fp32 vs cpu"] = round(fast["images_per_s"] / base["images_per_s"], 1)
    log(json.dumps(out, indent=1, ensure_ascii=False)[:3000])
    return out


def pipeline_threads(pics) -> Dict[str, Any]:
    """Images per second when 1, 2 or 4 threads share one pipeline: pre/post-processing (OpenCV, numpy) of one
    image overlaps the GPU work of another. The CPU baseline is the same pipeline on ONNX Runtime (all cores)."""
    import concurrent.futures

    out: Dict[str, Any] = {}

    def rates(device: str, backend: str, precision: str, thread_counts) -> Dict[str, float]:
        hpi = {"auto_config": False, "backend": backend, "backend_config": {"precision": precision}}
        found = {}
        with hpinfer.create_pipeline("OCR", device=device, use_hpip=True, hpi_config=hpi) as pipe:
            for threads in thread_counts:
                with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                    for _ in range(2):  # warm-up: every shape seen twice, so graphs are captured in each context
                        list(pool.map(pipe.predict, pics.values()))
                    start = time.perf_counter()
                    for _ in range(3):
                        list(pool.map(pipe.predict, pics.values()))
                    found[f"{threads} thread(s) images/s"] = round(3 * len(pics) / (time.perf_counter() - start), 2)
        log(device, backend, precision, found)
        return found

    attempt(out, "cpu onnxruntime fp32", lambda: rates("cpu", "onnxruntime", "fp32", (1,)))
    for precision in ("fp32", "fp16"):
        attempt(out, f"{DEVICE} torch {precision}", lambda: rates(str(DEVICE), "torch", precision, (1, 2, 4)))
    return out


def aoti(pics, out_dir: Path) -> Dict[str, Any]:
    import torch

    session = load(DET, "fp16")
    x = torch.from_numpy(real_input(DET, (1, 3, 960, 960), pics)).cuda()
    start = time.perf_counter()
    exported = torch.export.export(session.module, (x,), strict=False)
    path = torch._inductor.aoti_compile_and_package(exported, package_path=str(Path("/tmp") / "det_fp16.pt2"))
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    runner = torch._inductor.aoti_load_package(path)
    runner(x)
    torch.cuda.synchronize()
    load_s = time.perf_counter() - start
    with torch.inference_mode():
        want = session.module(x)[0]
        got = runner(x)[0]
        ms = gpu_ms(lambda: runner(x))
    out = {"build_s": round(build_s, 1), "load_s": round(load_s, 2), "run_ms": ms, "max_abs_err_vs_eager": float((got - want).abs().max()),
           "package_mb": round(os.path.getsize(path) / 2**20, 1)}
    log(out)
    return out


# ----------------------------------------------------------------------------------------------- session 2 sections

ARGS: Any = None  # the parsed command line (worker processes and sections read it)
PAGES_DIR = Path("/tmp/gpu_bench_pages")  # outside --out: only a few files may come back from the device
PAGES = 4  # rendered A4 pages (the shared images laid out, as benchmarks/compare_peers.py does) added to the inputs


def pipeline_inputs(images_dir: Path, workdir: Path, write: bool = True) -> Dict[str, np.ndarray]:
    """The shared images plus ``PAGES`` rendered pages, decoded; the pages are written to ``workdir`` first."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from compare_peers import compose_page

    pics = images(images_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    for index in range(PAGES if not ARGS.smoke else 1) if write else ():
        path = workdir / f"page_{index + 1}.png"
        cv2.imwrite(str(path), compose_page(list(pics.values()), index))
    if ARGS.smoke:  # a dry run: two small images and the page
        pics = {k: pics[k] for k in ("paragraph_en.jpg", "single_line.jpg")}
    return {**pics, **{p.name: next(iter(iter_inputs(str(p)))).image for p in sorted(workdir.glob("page_*.png"))}}


def _hpi(backend: str, precision: str, threads: Optional[int] = None, **torch_options: Any) -> Dict[str, Any]:
    config: Dict[str, Any] = {"precision": precision}
    if threads:
        config["cpu_num_threads"] = threads
    if torch_options:
        config["torch"] = torch_options
    return {"auto_config": False, "backend": backend, "backend_config": config}


def fidelity(inputs: Dict[str, np.ndarray]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    texts: Dict[str, Dict[str, List[str]]] = {}
    runs = {"cpu onnxruntime fp32": ("cpu", _hpi("onnxruntime", "fp32"))}
    for precision in ("fp32", "fp16"):
        runs[f"{DEVICE} torch {precision} (uint8 upload, GPU normalise)"] = (str(DEVICE), _hpi("torch", precision))
    runs[f"{DEVICE} torch fp32 (host normalise)"] = (str(DEVICE), _hpi("torch", "fp32", device_preprocess=False))
    for label, (device, hpi) in runs.items():
        def read() -> Dict[str, Any]:
            with hpinfer.create_pipeline("OCR", device=device, use_hpip=True, hpi_config=hpi) as pipe:
                texts[label] = {k: pipe.predict(v)[0]["rec_texts"] for k, v in inputs.items()}
            return {"lines": sum(len(t) for t in texts[label].values())}
        attempt(out, label, read)
    reference = texts.get("cpu onnxruntime fp32", {})
    lines = sum(len(t) for t in reference.values())
    for label, got in texts.items():
        same = sum(a == b for k in reference for a, b in zip(reference[k], got.get(k, [])))
        out[label].update(identical=got == reference, lines_identical=f"{same}/{lines}",
                          differences={k: [reference[k], got[k]] for k in reference if got.get(k) != reference[k]})
    log(json.dumps(out, indent=1, ensure_ascii=False)[:4000])
    return out


def worker_main(spec: Dict[str, Any]) -> None:
    """One worker process of ``throughput``: a pipeline shared by ``threads`` threads. After warming up (every input
    ``warmup`` times per thread, so graphs get captured) it waits for the go file, then each thread cycles through
    the inputs (its own starting point) for ``seconds`` and finishes the image in hand; the rate counts whole images."""
    import threading as _threading

    cv2.setNumThreads(spec["cv_threads"])
    inputs = pipeline_inputs(Path(spec["images"]), Path(spec["pages"]), write=False)
    names = sorted(inputs)
    order = [names[i] for i in np.random.default_rng(0).permutation(len(names))]
    counts = [0] * spec["threads"]
    ends = [0.0] * spec["threads"]
    with hpinfer.create_pipeline("OCR", device=spec["device"], use_hpip=True, hpi_config=spec["hpi"]) as pipe:
        def warm(t: int) -> None:
            for k in range(spec["warmup"] * len(order)):
                pipe.predict(inputs[order[(k + t) % len(order)]])

        def timed(t: int, go: float) -> None:
            k = (spec["rank"] * spec["threads"] + t) * len(order) // (spec["procs"] * spec["threads"])
            while time.time() - go < spec["seconds"]:
                pipe.predict(inputs[order[k % len(order)]])
                k += 1
                counts[t] += 1
            ends[t] = time.time()

        threads = [_threading.Thread(target=warm, args=(t,)) for t in range(spec["threads"])]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        Path(spec["ready"]).write_text("ready")
        while not Path(spec["go"]).exists():
            time.sleep(0.002)
        go = time.time()
        threads = [_threading.Thread(target=timed, args=(t, go)) for t in range(spec["threads"])]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    Path(spec["result"]).write_text(json.dumps({"start": go, "end": max(ends), "images": sum(counts)}))


def run_workers(label: str, device: str, hpi: Dict[str, Any], procs: int, threads: int, seconds: float, warmup: int,
                timeout: float) -> Dict[str, Any]:
    """``procs`` worker processes, timed together for ``seconds``: the sum of their images/s."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="hpw-"))
    started = time.perf_counter()
    workers = []
    for i in range(procs):
        spec = {"images": str(ARGS.images), "pages": str(PAGES_DIR), "device": device, "hpi": hpi,
                "threads": threads, "procs": procs, "rank": i, "warmup": warmup, "seconds": seconds,
                "cv_threads": max(1, (os.cpu_count() or 1) // procs), "ready": str(tmp / f"ready{i}"),
                "go": str(tmp / "go"), "result": str(tmp / f"result{i}.json")}
        workers.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec), "--out", str(ARGS.out),
                                         "--images", str(ARGS.images)] + (["--smoke"] if ARGS.smoke else []),
                                        stdout=subprocess.DEVNULL, stderr=open(tmp / f"stderr{i}.txt", "w")))
    try:
        while not all((tmp / f"ready{i}").exists() for i in range(procs)):
            if any(w.poll() not in (None, 0) for w in workers):
                bad = next(i for i, w in enumerate(workers) if w.poll() not in (None, 0))
                raise RuntimeError(f"a worker failed: {(tmp / f'stderr{bad}.txt').read_text()[-2000:]}")
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"workers not ready after {timeout:.0f}s")
            time.sleep(0.05)
        ready_s = time.perf_counter() - started
        (tmp / "go").write_text("go")
        for w in workers:
            w.wait(timeout=seconds + 120)
        results = [json.loads((tmp / f"result{i}.json").read_text()) for i in range(procs)]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    rate = sum(r["images"] / (r["end"] - r["start"]) for r in results)
    row = {"images_per_s": round(rate, 2), "procs": procs, "threads": threads, "images": sum(r["images"] for r in results),
           "seconds": seconds, "start_and_warmup_s": round(ready_s, 1)}
    log(label, row)
    return row


def throughput(inputs: Dict[str, np.ndarray]) -> Dict[str, Any]:
    from hpinfer.bench import benchmark

    out: Dict[str, Any] = {}
    cores = os.cpu_count() or 1
    cpu = [(1, 1, cores), (4, 1, max(1, cores // 4)), (cores // 2, 1, 2)] if not ARGS.smoke else [(1, 1, 2)]
    if ARGS.skip_cpu:
        cpu = []
    results["throughput"] = out  # partial results reach the JSON file after each configuration
    save = lambda: (ARGS.out / "gpu_bench.json").write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))  # noqa: E731
    for procs, threads, ort_threads in cpu:
        label = f"cpu onnxruntime fp32: {procs} proc x {threads} thread, {ort_threads} ORT threads each"
        attempt(out, label, lambda: run_workers(label, "cpu", _hpi("onnxruntime", "fp32", ort_threads), procs, threads,
                                                seconds=ARGS.cpu_seconds, warmup=0, timeout=90))
        save()
    gpu = [("fp32", 1, 1, 1), ("fp32", 4, 2, 2), ("fp32", 8, 2, 2), ("fp16", 8, 2, 2)]
    if ARGS.gpu_configs:  # precision:procs:threads:contexts,...
        gpu = [(p, int(a), int(b), int(c)) for p, a, b, c in (item.split(":") for item in ARGS.gpu_configs.split(","))]
    if ARGS.smoke:
        gpu = [("fp32", 1, 2, 2)]
    for precision, procs, threads, contexts in gpu:
        label = f"{DEVICE} torch {precision}: {procs} proc x {threads} thread, {contexts} context(s)"
        hpi = _hpi("torch", precision, contexts=contexts, capture_after=ARGS.capture_after)
        attempt(out, label, lambda: run_workers(label, str(DEVICE), hpi, procs, threads, seconds=ARGS.gpu_seconds, warmup=ARGS.gpu_warmup, timeout=ARGS.ready_limit))
        save()
    best = lambda prefix: max((v["images_per_s"] for k, v in out.items() if k.startswith(prefix) and "images_per_s" in v), default=None)  # noqa: E731
    cpu_best, gpu32, gpu16 = best("cpu "), best(f"{DEVICE} torch fp32"), best(f"{DEVICE} torch fp16")
    if cpu_best:
        out["summary"] = {"cpu best images/s": cpu_best, "gpu fp32 best": gpu32, "gpu fp16 best": gpu16,
                          "speed-up fp32": round(gpu32 / cpu_best, 1) if gpu32 else None,
                          "speed-up fp16": round(gpu16 / cpu_best, 1) if gpu16 else None}

    def stages() -> Dict[str, Any]:  # where one GPU worker's time goes (1 thread)
        hpi = _hpi("torch", "fp32")
        with hpinfer.create_pipeline("OCR", device=str(DEVICE), use_hpip=True, hpi_config=hpi) as pipe:
            report = benchmark(pipe, list(inputs.values()), warmup=2, iters=2)
        log(report.format())
        return {"text": report.format()}

    if not ARGS.gpu_configs:
        attempt(out, "one gpu worker, per stage", stages)
    log(json.dumps(out.get("summary"), indent=1))
    return out


def _graph_ms(fn: Callable, x) -> float:
    import torch

    if not DEVICE.is_gpu:
        return wall_ms(lambda: fn(x), min_runs=2, budget_s=0.5)
    stream = torch.cuda.Stream()
    with torch.inference_mode():
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn(x)
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            fn(x)
        return gpu_ms(graph.replay, iters=100)


# rec 128x3x48x320 variants: node dtypes ("fp32", the engine's "mixed" fp16 plan, or "fp16" end to end with only
# the always-fp32 op types kept), torch.compile mode, channels-last, Inductor options. conv_1x1_as_mm turns the
# 1x1 convolutions (most of the FLOPs) into matrix products whose pointwise epilogues Inductor can fuse.
REC128_VARIANTS: Dict[str, Dict[str, Any]] = {
    "fp32 graph": {"plan": "fp32"},
    "fp16 mixed graph": {"plan": "mixed"},
    "fp16 mixed compile default": {"plan": "mixed", "compile": "default"},
    "fp16 e2e compile default": {"plan": "fp16", "compile": "default"},
    "fp16 e2e compile default channels-last": {"plan": "fp16", "compile": "default", "channels_last": True},
    "fp16 e2e compile default 1x1-as-mm": {"plan": "fp16", "compile": "default", "inductor": {"conv_1x1_as_mm": True}},
    "fp16 e2e compile default 1x1-as-mm channels-last": {"plan": "fp16", "compile": "default", "channels_last": True,
                                                         "inductor": {"conv_1x1_as_mm": True}},
    "fp16 e2e max-autotune-no-cudagraphs 1x1-as-mm channels-last": {
        "plan": "fp16", "compile": "max-autotune-no-cudagraphs", "channels_last": True, "inductor": {"conv_1x1_as_mm": True}},
}


def rec128(pics) -> Dict[str, Any]:
    """Each variant in a fresh process with a time limit (a slow autotune costs only its own row)."""
    out: Dict[str, Any] = {}
    wanted = ARGS.rec_variants.split(",") if ARGS.rec_variants else list(REC128_VARIANTS)
    for label in wanted:
        code = ("import sys,json; sys.argv=['x','--out',%r,'--images',%r,'--device',%r]; sys.path.insert(0,%r); "
                "import gpu_bench as g; g.main_args(); print('RESULT', json.dumps(g.rec128_variant(%r)))") % (
            str(ARGS.out), str(ARGS.images), str(DEVICE), str(Path(__file__).parent), label)
        try:
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=ARGS.variant_limit)
            line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            out[label] = json.loads(line[0][7:]) if line else {"error": done.stderr[-1500:]}
        except subprocess.TimeoutExpired:
            out[label] = {"error": f"did not finish within {ARGS.variant_limit}s"}
        log(label, out[label])
    return out


def rec128_variant(label: str) -> Dict[str, Any]:
    """One REC128_VARIANTS row: first call (compile) time, CUDA-graph replay time, arg-max agreement with fp32."""
    import torch
    import torch._inductor.config as inductor_config

    from hpinfer.runtime.onnx_to_torch import KEEP_FP32_OPS, OnnxModule, load_graph

    spec = REC128_VARIANTS[label]
    shape = (128, 3, 48, 320) if not ARGS.smoke else (8, 3, 48, 320)
    x = torch.from_numpy(real_input(REC, shape, images(ARGS.images))).to(f"cuda:{DEVICE.index}" if DEVICE.is_gpu else "cpu")
    with torch.inference_mode():
        reference = load(REC, "fp32").module(x)[0].float()
    if spec["plan"] == "fp16":
        graph = load_graph(resolve_model(REC).model_file)
        plan = {i: torch.float32 if n.op in KEEP_FP32_OPS else torch.float16 for i, n in enumerate(graph.nodes)}
        module, x_in = OnnxModule(graph, plan).eval().to(x.device), x.half()
    else:
        module, x_in = load(REC, "fp32" if spec["plan"] == "fp32" else "fp16").module, x
    if spec.get("channels_last"):
        module, x_in = module.to(memory_format=torch.channels_last), x_in.contiguous(memory_format=torch.channels_last)
    fn = module
    if spec.get("compile"):
        fn = torch.compile(module, mode=spec["compile"], dynamic=False, fullgraph=True)
    with inductor_config.patch(spec.get("inductor", {})):
        start = time.perf_counter()
        with torch.inference_mode():
            y = fn(x_in)[0]
        if DEVICE.is_gpu:
            torch.cuda.synchronize()
        first_s = time.perf_counter() - start
    agree = float((y.float().argmax(-1) == reference.argmax(-1)).float().mean())
    return {"graph_ms": round(_graph_ms(fn, x_in), 3), "first_call_s": round(first_s, 1), "argmax_vs_fp32": round(agree, 5)}


def aot_section(pics) -> Dict[str, Any]:
    """First start builds each AOTInductor package (dynamic shapes), the second start, a fresh process, loads it."""
    out: Dict[str, Any] = {}
    cache = ARGS.out / "aot_cache" if ARGS.smoke else Path("/tmp/hpinfer-aot-cache")
    for name, precision in ARGS.aot_models if not ARGS.smoke else ((CLS, "fp32"),):
        for start in ("first start", "second start"):
            code = ("import sys,json; sys.argv=['x','--out',%r,'--images',%r,'--device',%r]; sys.path.insert(0,%r); "
                    "import gpu_bench as g; g.main_args(); print('RESULT', json.dumps(g.aot_once(%r, %r)))") % (
                str(ARGS.out), str(ARGS.images), str(DEVICE), str(Path(__file__).parent), name, precision)
            env = dict(os.environ, HPINFER_CACHE_DIR=str(cache))
            label = f"{name} {precision} {start}"
            try:  # faulthandler: a crash in native code still says where; the whole stderr is kept beside the JSON
                done = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True,
                                      timeout=ARGS.aot_limit, env=env)
                (ARGS.out / f"aot_{name}_{precision}_{start.split()[0]}.stderr.txt").write_text(done.stderr)
                line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
                out[label] = json.loads(line[0][7:]) if line else {"error": f"exit code {done.returncode}: {done.stderr[-2500:]}"}
            except subprocess.TimeoutExpired:
                out[label] = {"error": f"did not finish within {ARGS.aot_limit}s"}
            log(label, out[label])
            if "error" in out[label]:
                break
    return out


def aot_once(name: str, precision: str) -> Dict[str, Any]:
    """Open ``name`` with ``torch.aot`` through the model cache (as a pipeline would), time the start, check it."""
    import torch

    pics = images(ARGS.images)
    start = time.perf_counter()
    hpi = _hpi("torch", precision, aot=True)
    model = hpinfer.create_model(name, device=str(DEVICE), use_hpip=True, hpi_config=hpi)
    session = model.session
    load_s = time.perf_counter() - start
    shapes = {DET: [(1, 3, 960, 960), (1, 3, 640, 736)], CLS: [(64, 3, 48, 192), (6, 3, 48, 192)]}.get(
        name, [(128, 3, 48, 320), (6, 3, 48, 480)])
    if ARGS.smoke:
        shapes = [(8, 3, 48, 192)]
    row: Dict[str, Any] = {"session_start_s": round(load_s, 2), "aot": session.aot, "settings": session.settings}
    eager = load(name, precision)
    for shape in shapes:
        x_np = real_input(name, shape, pics)
        x = torch.from_numpy(x_np).to(session.torch_device)
        with torch.inference_mode():
            got, want = session.fn(x)[0], eager.fn(x)[0]
        key = "x".join(map(str, shape))
        row[key] = {"aot_call_ms": round(gpu_ms(lambda: session.fn(x)), 3), "max_abs_vs_eager": float((got - want).abs().max()),
                    "run_ms (graph replay via session)": round(wall_ms(lambda: session.run_one(x_np), min_runs=10), 3)}
    model.close()
    return row


def profile2(inputs: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """The command line's ``hpinfer bench --profile`` on the OCR pipeline (GPU, fp16), then rec 128 per kernel."""
    from hpinfer.cli import main as cli_main

    pages = PAGES_DIR
    hpi = json.dumps(_hpi("torch", "fp16" if DEVICE.is_gpu else "fp32"))
    argv = ["bench", "--pipeline", "OCR", "--input", str(pages), "--device", str(DEVICE), "--use_hpip", "--hpi_config", hpi,
            "--warmup", "1", "--iters", "1", "--profile", "30", "--json", str(ARGS.out / "profile_pipeline.json")]
    code = cli_main(argv)
    session = load(REC, "fp16" if DEVICE.is_gpu else "fp32")
    shape = (128, 3, 48, 320) if not ARGS.smoke else (8, 3, 48, 320)
    text = session.profile({session.inputs[0].name: real_input(REC, shape, images(ARGS.images))}, rows=40)
    (ARGS.out / "profile_rec128_fp16.txt").write_text(text)
    log(text[:6000])
    return {"cli_exit": code, "files": ["profile_pipeline.json", "profile_rec128_fp16.txt"]}


# ----------------------------------------------------------------------------------------------- session 3 sections


def best(inputs: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """Recognition's arg-max on the device (``run_best``) against the scores copied to the host and reduced there
    (``EngineSession._run_best``, what every engine did before): rec fp16 ``run`` wall time per shape, then the
    fp16 OCR pipeline's images/s on the pipeline inputs, alternating the two in three rounds, texts compared."""
    from hpinfer.runtime.engines.base import EngineSession
    from hpinfer.runtime.engines.torch_engine import TorchSession

    out: Dict[str, Any] = {"rec_run_ms": {}, "pipeline": {}}
    session = load(REC, "fp16" if DEVICE.is_gpu else "fp32")
    on_host = lambda x: EngineSession._run_best(session, {session.inputs[0].name: x})  # noqa: E731
    shapes = [(32, 3, 48, 320), (32, 3, 48, 640), (8, 3, 48, 1280)] if not ARGS.smoke else [(4, 3, 48, 320)]
    for shape in shapes:
        x = real_input(REC, shape, images(ARGS.images))
        row = {"device": wall_ms(lambda: session.run_best(x), min_runs=20), "host": wall_ms(lambda: on_host(x), min_runs=20)}
        row["host/device"] = round(row["host"] / row["device"], 2)
        out["rec_run_ms"]["x".join(map(str, shape))] = row
        log(shape, row)
    device_best = TorchSession._run_best
    # cuDNN autotuning off, as for serving: every new shape would otherwise stall the warm-up for seconds
    hpi = _hpi("torch", "fp16" if DEVICE.is_gpu else "fp32", cudnn_benchmark=False)
    texts: Dict[str, List[List[str]]] = {}
    with hpinfer.create_pipeline("OCR", device=str(DEVICE), use_hpip=True, hpi_config=hpi) as pipe:
        pages = list(inputs.values())

        def images_per_s(variant: str, passes: int) -> float:
            TorchSession._run_best = device_best if variant == "device" else EngineSession._run_best
            try:
                for _ in range(passes):  # the last one is timed
                    start = time.perf_counter()
                    texts[variant] = [r["rec_texts"] for r in pipe.predict(pages, use_queues=False)]
                    seconds = time.perf_counter() - start
            finally:
                TorchSession._run_best = device_best
            return round(len(pages) / seconds, 2)

        for variant in ("device", "host"):  # every shape seen twice, then captured: graphs from the third pass on
            log(variant, "warm-up", images_per_s(variant, 3), "images/s")
        for variant in ("device", "host") * 3:
            out["pipeline"].setdefault(variant, []).append(images_per_s(variant, 1))
            log(variant, out["pipeline"][variant][-1], "images/s")
    out["pipeline"]["device/host (best rounds)"] = round(max(out["pipeline"]["device"]) / max(out["pipeline"]["host"]), 3)
    out["texts_identical"] = texts["device"] == texts["host"]
    log(json.dumps(out, indent=1))
    return out


def queues(inputs: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """The OCR pipeline's stage threads on the GPU (fp16): ``predict_iter`` over the pipeline inputs with
    ``use_queues`` on and off, alternating, after every shape has its graph; texts compared."""
    hpi = _hpi("torch", "fp16" if DEVICE.is_gpu else "fp32", cudnn_benchmark=False)
    out: Dict[str, Any] = {}
    texts: Dict[bool, List[List[str]]] = {}
    with hpinfer.create_pipeline("OCR", device=str(DEVICE), use_hpip=True, hpi_config=hpi) as pipe:
        pages = list(inputs.values())

        def images_per_s(on: bool) -> float:
            start = time.perf_counter()
            texts[on] = [r["rec_texts"] for r in pipe.predict_iter(pages, use_queues=on)]
            return round(len(pages) / (time.perf_counter() - start), 2)

        for on in (False, True, False, True):  # warm-up: graphs captured on the second sighting of a shape
            images_per_s(on)
        for on in (True, False) * 3:
            out.setdefault("queues on" if on else "queues off", []).append(images_per_s(on))
            log(on, out["queues on" if on else "queues off"][-1], "images/s")
    out["on/off (best rounds)"] = round(max(out["queues on"]) / max(out["queues off"]), 3)
    out["texts_identical"] = texts[True] == texts[False]
    log(json.dumps(out, indent=1))
    return out


def markdown() -> str:
    lines = []
    info = results.get("env", {})
    lines.append(f"Device: {info.get('gpu')} (driver/memory: {info.get('nvidia_smi')}), {info.get('cpu_cores')} CPU cores ({info.get('cpu')}); "
                 f"torch {info.get('torch')} CUDA {info.get('cuda')} cuDNN {info.get('cudnn')}; onnxruntime {info.get('onnxruntime')} (CPU).")
    for title, key in (("Model latency", "table"), ("Compiled", "compile")):
        rows = results.get(key)
        if isinstance(rows, dict) and "error" not in rows:
            order = ["ort_cpu_ms"] + [f"{p}_{v}" for p in PRECISIONS for v in ("eager_ms", "graph_ms", "compile_s", "compiled_graph_ms", "run_ms")]
            cols = [c for c in order if any(c in r for r in rows.values())]
            lines += ["", f"### {title} (ms; GPU columns: CUDA events, input on device; run: numpy → numpy)", "",
                      "| model input | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
            lines += [f"| {k} | " + " | ".join(f"{r.get(c, float('nan')):.3g}" for c in cols) + " |" for k, r in rows.items()]
    for key in ("correct", "concurrency", "pipeline", "pipeline_threads", "aoti", "fidelity", "throughput", "rec128", "aot", "profile2", "best", "queues"):
        if key in results:
            lines += ["", f"### {key}", "", "```", json.dumps(results[key], indent=1, ensure_ascii=False)[:6000], "```"]
    return "\n".join(lines) + "\n"


def main_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line into the module's globals (also used by the sub-processes some sections start)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--sections", default="env,fidelity,throughput,rec128,profile2")
    parser.add_argument("--device", default="gpu:0")
    parser.add_argument("--smoke", action="store_true", help="small shapes: checks the script, measures nothing")
    parser.add_argument("--rec-variants", dest="rec_variants", default="", help="rec128: labels, comma-separated (default all)")
    parser.add_argument("--variant-limit", dest="variant_limit", type=float, default=240, help="rec128: seconds per variant")
    parser.add_argument("--aot-limit", dest="aot_limit", type=float, default=200, help="seconds per AOT start")
    parser.add_argument("--cpu-seconds", dest="cpu_seconds", type=float, default=20, help="throughput: timed seconds, CPU")
    parser.add_argument("--gpu-seconds", dest="gpu_seconds", type=float, default=10, help="throughput: timed seconds, GPU")
    parser.add_argument("--aot-models", dest="aot_models", default=f"{REC}:fp32,{DET}:fp32", help="aot: name:precision,...")
    parser.add_argument("--skip-cpu", dest="skip_cpu", action="store_true", help="throughput: GPU configurations only")
    parser.add_argument("--gpu-configs", dest="gpu_configs", default="", help="throughput: precision:procs:threads:contexts,...")
    parser.add_argument("--capture-after", dest="capture_after", type=int, default=2, help="throughput: torch.capture_after")
    parser.add_argument("--gpu-warmup", dest="gpu_warmup", type=int, default=2, help="throughput: warm-up passes per thread")
    parser.add_argument("--ready-limit", dest="ready_limit", type=float, default=120, help="throughput: seconds to start+warm up")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    global ARGS, DEVICE, CASES
    ARGS = parser.parse_args(argv)
    ARGS.aot_models = [tuple(item.split(":")) for item in ARGS.aot_models.split(",") if item]
    DEVICE = Device.parse(ARGS.device)
    if ARGS.smoke:
        CASES = SMOKE_CASES
    ARGS.out.mkdir(parents=True, exist_ok=True)
    return ARGS


def main() -> None:
    args = main_args()
    if args.worker:
        worker_main(json.loads(args.worker))
        return
    wanted = args.sections.split(",")
    pics = images(args.images)
    inputs: Dict[str, np.ndarray] = {}
    if {"fidelity", "throughput", "profile2", "best", "queues"} & set(wanted):
        inputs = pipeline_inputs(args.images, PAGES_DIR)
    steps = {
        "env": env, "correct": lambda: correct(pics), "table": lambda: table(pics, compiled=False),
        "compile": lambda: table(pics, compiled=True), "concurrency": lambda: concurrency(pics),
        "pipeline_threads": lambda: pipeline_threads(pics),
        "profile": lambda: profile(pics, args.out), "pipeline": lambda: pipeline(args.images, pics),
        "aoti": lambda: aoti(pics, args.out),
        "fidelity": lambda: fidelity(inputs), "throughput": lambda: throughput(inputs), "rec128": lambda: rec128(pics),
        "aot": lambda: aot_section(pics), "profile2": lambda: profile2(inputs), "best": lambda: best(inputs),
        "queues": lambda: queues(inputs),
    }
    for name in wanted:
        section(name, steps[name])
        (args.out / "gpu_bench.json").write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))
        (args.out / "gpu_bench.md").write_text(markdown())
    log(markdown())


if __name__ == "__main__":
    main()
