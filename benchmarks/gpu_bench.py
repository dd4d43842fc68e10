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
from hpinfer.models import text_detection  # noqa: E402
from hpinfer.models.registry import resolve_model  # noqa: E402
from hpinfer.models.text_recognition import resize_norm  # noqa: E402
from hpinfer.pipelines.ocr import crop_quad  # noqa: E402
from hpinfer.runtime.engines.torch_engine import TorchEngine, TorchOptions  # noqa: E402
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
    return TorchEngine.load(resolve_model(name).model_file, BackendConfig(precision=precision), DEVICE, TorchOptions(**options))


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
    for key in ("correct", "concurrency", "pipeline", "pipeline_threads", "aoti"):
        if key in results:
            lines += ["", f"### {key}", "", "```", json.dumps(results[key], indent=1, ensure_ascii=False)[:6000], "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--sections", default="env,correct,table,concurrency,profile,pipeline")
    parser.add_argument("--device", default="gpu:0")
    parser.add_argument("--smoke", action="store_true", help="small shapes: checks the script, measures nothing")
    args = parser.parse_args()
    global DEVICE, CASES
    DEVICE = Device.parse(args.device)
    if args.smoke:
        CASES = SMOKE_CASES
    args.out.mkdir(parents=True, exist_ok=True)
    wanted = args.sections.split(",")
    pics = images(args.images)
    steps = {
        "env": env, "correct": lambda: correct(pics), "table": lambda: table(pics, compiled=False),
        "compile": lambda: table(pics, compiled=True), "concurrency": lambda: concurrency(pics),
        "pipeline_threads": lambda: pipeline_threads(pics),
        "profile": lambda: profile(pics, args.out), "pipeline": lambda: pipeline(args.images, pics),
        "aoti": lambda: aoti(pics, args.out),
    }
    for name in wanted:
        section(name, steps[name])
        (args.out / "gpu_bench.json").write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))
        (args.out / "gpu_bench.md").write_text(markdown())
    log(markdown())


if __name__ == "__main__":
    main()
