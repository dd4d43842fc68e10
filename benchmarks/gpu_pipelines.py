"""Issue 16's question in one run: how fast do the OCR and layout_parsing pipelines go on a GPU, against the best
the same machine's CPU does, how long until they are warm, and do they read the same texts?

    python benchmarks/gpu_pipelines.py --out DIR --images ../shared/data/images [--device gpu:0] [--budget 540]
    python benchmarks/gpu_pipelines.py --out /tmp/g --images ../shared/data/images --device cpu --smoke   # dry run

Inputs: the shared images plus A4 pages rendered from them at three sizes (``pages.compose_page``), OCR over all,
layout_parsing over the pages; "unseen" copies are the same inputs resized to sizes the run never fed before.
Every configuration runs in fresh processes: a cold start (empty model cache), then a warm start (the cache it
left). Each process reports create time, the first pass (what a cold start costs until steady state), images|pages
per second over timed passes, p50/p99 latency on seen and on unseen sizes, and the texts read. The CPU reference is
ONNX Runtime fp32; the CPU's best configuration is searched over worker layouts (processes x threads), run
concurrently. Writes DIR/gpu_pipelines.json after every step (a time limit keeps what is done) and
DIR/gpu_pipelines.md; prints one line per step with ``uptime``'s load.
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
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from pages import PAGE_SIZE, compose_page

# Page sizes rendered (h, w): A4 at 150 dpi, Letter at 120 dpi, A4 landscape at 100 dpi.
PAGE_SIZES = (PAGE_SIZE, (1320, 1020), (827, 1169))
PIPELINES = {"OCR": "rec_texts", "layout_parsing": "blocks"}


def gpu_configs(device: str) -> Dict[str, Dict[str, Any]]:
    """What the GPU runs: the default torch path, then the issue's levers one at a time."""
    def torch(precision: str = "fp32", **options: Any) -> Dict[str, Any]:
        return {"device": device, "hpi": {"auto_config": False, "backend": "torch",
                                          "backend_config": {"precision": precision, "torch": options}}}

    return {
        "fp32": torch(),
        "fp32-buckets": torch(shape_buckets=True, cudnn_benchmark=False),  # cuDNN autotuning off: few shapes anyway
        "fp16-buckets": torch("fp16", shape_buckets=True, cudnn_benchmark=False),
    }


def cpu_config(threads: Optional[int] = None) -> Dict[str, Any]:
    config = {"precision": "fp32", **({"cpu_num_threads": threads} if threads else {})}
    return {"device": "cpu", "hpi": {"auto_config": False, "backend": "onnxruntime", "backend_config": config}}


def load() -> str:
    return os.getloadavg().__repr__() if hasattr(os, "getloadavg") else "?"


# ------------------------------------------------------------------------------------------------ inputs


def read_images(directory: Path) -> Dict[str, np.ndarray]:
    pics = {p.name: cv2.imread(str(p)) for p in sorted(directory.iterdir()) if p.is_file()}
    return {k: v for k, v in pics.items() if v is not None}


def make_inputs(images_dir: Path, smoke: bool) -> Dict[str, Dict[str, np.ndarray]]:
    """{"images": shared images + pages, "pages": pages only, and their unseen-size copies}."""
    pics = read_images(images_dir)
    pages = {}
    for k, (h, w) in enumerate(PAGE_SIZES[:1] if smoke else PAGE_SIZES):
        for index in range(1 if smoke else 4):
            page = compose_page(list(pics.values()), index + 4 * k)
            pages[f"page{h}x{w}_{index}.png"] = cv2.resize(page, (w, h), interpolation=cv2.INTER_AREA)
    if smoke:
        pics = {k: pics[k] for k in ("paragraph_en.jpg", "single_line.jpg") if k in pics}
    images = {**pics, **pages}
    return {"images": images, "pages": pages,
            "images_unseen": unseen(images), "pages_unseen": unseen(pages)}


def unseen(inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Each input scaled by 0.83-1.2 to a size no input has (the detector and recogniser see new shapes)."""
    sizes = {a.shape[:2] for a in inputs.values()}
    rng = np.random.default_rng(16)
    out = {}
    for name, image in inputs.items():
        while True:
            f = rng.uniform(0.83, 1.2)
            h, w = max(8, int(image.shape[0] * f)), max(8, int(image.shape[1] * f))
            if (h, w) not in sizes:
                break
        sizes.add((h, w))
        out[f"unseen_{name}"] = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


# ------------------------------------------------------------------------------------------------ one process


def texts_of(pipeline: str, result) -> List[str]:
    if pipeline == "OCR":
        return list(result["rec_texts"])
    return [block["text"] for block in result["blocks"]]


def child(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One configuration in this process: create, first pass, timed passes, unseen sizes, optional threads."""
    import threading

    import hpinfer

    inputs = make_inputs(Path(spec["images"]), spec["smoke"])
    kind = "pages" if spec["pipeline"] == "layout_parsing" else "images"
    seen, fresh = inputs[kind], inputs[f"{kind}_unseen"]
    options = {"use_doc_orientation_classify": False} if spec["pipeline"] == "layout_parsing" else {}
    out: Dict[str, Any] = {"inputs": len(seen)}
    start = time.perf_counter()
    pipe = hpinfer.create_pipeline(spec["pipeline"], device=spec["device"], use_hpip=True, hpi_config=spec["hpi"], **options)
    out["create_s"] = round(time.perf_counter() - start, 2)
    with pipe:
        def one_pass(items: Dict[str, np.ndarray]) -> Dict[str, float]:
            latencies = {}
            for name, image in items.items():
                t = time.perf_counter()
                result = pipe.predict(image)[0]
                latencies[name] = time.perf_counter() - t
                texts[name] = texts_of(spec["pipeline"], result)
            return latencies

        texts: Dict[str, List[str]] = {}
        t = time.perf_counter()
        one_pass(seen)
        out["first_pass_s"] = round(time.perf_counter() - t, 2)
        out["start_to_steady_s"] = round(out["create_s"] + out["first_pass_s"], 2)
        if spec["warm_only"]:
            return out
        one_pass(seen)  # a second warm-up pass: graphs captured at the second sighting
        latencies: List[float] = []
        t = time.perf_counter()
        for _ in range(spec["passes"]):
            latencies += one_pass(seen).values()
        out["per_s"] = round(len(latencies) / (time.perf_counter() - t), 2)
        out["p50_ms"], out["p99_ms"] = percentiles(latencies)
        fresh_latencies = list(one_pass(fresh).values())
        out["unseen_p50_ms"], out["unseen_p99_ms"] = percentiles(fresh_latencies)
        out["unseen_p99_over_p50"] = round(out["unseen_p99_ms"] / out["p50_ms"], 2) if out["p50_ms"] else None
        if spec["threads"] > 1:  # concurrent callers of one pipeline: correct and faster?
            reference = {k: texts[k] for k in seen}
            done, wrong = [0], [0]

            def worker(offset: int) -> None:
                names = list(seen)
                for k in range(len(names)):
                    name = names[(k + offset) % len(names)]
                    if texts_of(spec["pipeline"], pipe.predict(seen[name])[0]) != reference[name]:
                        wrong[0] += 1
                    done[0] += 1

            t = time.perf_counter()
            pool = [threading.Thread(target=worker, args=(i * 3,)) for i in range(spec["threads"])]
            for th in pool:
                th.start()
            for th in pool:
                th.join()
            out[f"threads{spec['threads']}_per_s"] = round(done[0] / (time.perf_counter() - t), 2)
            out[f"threads{spec['threads']}_wrong"] = wrong[0]
        out["texts"] = {k: texts[k] for k in seen}
    return out


def percentiles(values: List[float]) -> List[float]:
    if not values:
        return [None, None]
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return [round(statistics.median(ordered) * 1000, 1), round(p99 * 1000, 1)]


def run_child(spec: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    """``child`` in a fresh process with its own model cache directory; its error, if any, as a result."""
    env = {**os.environ, "HPINFER_CACHE_DIR": spec["cache"]}
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        try:
            done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec), "--result", result.name],
                                  env=env, capture_output=True, text=True, timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f}s"}
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or ["no message"])[-1], "rc": done.returncode}
        return json.loads(Path(result.name).read_text())


def cpu_layouts(cores: int, smoke: bool) -> List[List[int]]:
    """Worker layouts (processes, threads each) tried for the CPU's best throughput."""
    if smoke:
        return [[1, 1]]
    return sorted({(1, cores), (max(1, cores // 4), 4), (max(1, cores // 2), 2)})


def cpu_best(pipeline: str, args, cache: str, deadline: float) -> Dict[str, Any]:
    """The CPU's best images|pages/s over worker layouts: processes started together, their rates summed."""
    rows = {}
    for procs, threads in cpu_layouts(os.cpu_count() or 1, args.smoke):
        left = deadline - time.time()
        if left < 30:
            rows[f"{procs}x{threads}"] = {"error": "skipped: out of time"}
            continue
        spec = {"pipeline": pipeline, "images": str(args.images), "smoke": args.smoke, "warm_only": False,
                "passes": 1, "threads": 1, "cache": cache, **cpu_config(threads)}
        with tempfile.TemporaryDirectory() as scratch:
            procs_out = []
            env = {**os.environ, "HPINFER_CACHE_DIR": cache}
            running = [subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec), "--result",
                                         f"{scratch}/{i}.json"], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True) for i in range(procs)]
            try:
                for p in running:
                    p.wait(timeout=max(1, deadline - time.time()))
                procs_out = [json.loads(Path(f"{scratch}/{i}.json").read_text()) for i in range(procs)]
            except (subprocess.TimeoutExpired, OSError, ValueError) as err:
                rows[f"{procs}x{threads}"] = {"error": f"{type(err).__name__}: {err}"}
                continue
            finally:
                for p in running:
                    if p.poll() is None:
                        p.kill()
        rows[f"{procs}x{threads}"] = {"per_s": round(sum(o["per_s"] for o in procs_out), 2),
                                      "p50_ms": statistics.median(o["p50_ms"] for o in procs_out)}
        print(f"cpu {pipeline} {procs}x{threads}: {rows[f'{procs}x{threads}']} load {load()}", flush=True)
    best = max((r for r in rows.values() if "per_s" in r), key=lambda r: r["per_s"], default=None)
    return {"layouts": rows, "best_per_s": best and best["per_s"]}


def compare_texts(reference: Dict[str, List[str]], got: Dict[str, List[str]]) -> Dict[str, Any]:
    lines = sum(len(v) for v in reference.values())
    same = sum(a == b for k in reference for a, b in zip(reference[k], got.get(k, [])))
    return {"inputs_identical": f"{sum(got.get(k) == v for k, v in reference.items())}/{len(reference)}",
            "lines_identical": f"{same}/{lines}",
            "differences": {k: [v, got.get(k)] for k, v in reference.items() if got.get(k) != v}}


def markdown(report: Dict[str, Any]) -> str:
    rows = ["| pipeline | configuration | start | create s | first pass s | per s | p50 ms | p99 ms | unseen p99 / p50 | texts vs CPU |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for pipeline, runs in report["pipelines"].items():
        for label, run in runs.get("configs", {}).items():
            for start in ("cold", "warm"):
                r = run.get(start, {})
                rows.append(f"| {pipeline} | {label} | {start} | {r.get('create_s', r.get('error', ''))} | "
                            f"{r.get('first_pass_s', '')} | {r.get('per_s', '')} | {r.get('p50_ms', '')} | "
                            f"{r.get('p99_ms', '')} | {r.get('unseen_p99_over_p50', '')} | "
                            f"{run.get('texts_vs_cpu', {}).get('lines_identical', '')} |")
        best = runs.get("cpu_best", {}).get("best_per_s")
        rows.append(f"| {pipeline} | CPU best layout | | | | {best} | | | | reference |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--images", type=Path)
    parser.add_argument("--device", default="gpu:0", help="gpu:0 (the measurement) or cpu (a dry run of the script)")
    parser.add_argument("--smoke", action="store_true", help="two images, one page, one pass: checks the script runs")
    parser.add_argument("--budget", type=float, default=540, help="seconds for the whole run; later steps are skipped")
    parser.add_argument("--pipelines", default="OCR,layout_parsing")
    parser.add_argument("--configs", default="fp32,fp32-buckets,fp16-buckets", help="GPU configurations to run, in order")
    parser.add_argument("--threads", type=int, default=4, help="callers sharing one pipeline (the first GPU config)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        Path(args.result).write_text(json.dumps(child(json.loads(args.child)), ensure_ascii=False))
        return
    if args.out is None or args.images is None:
        parser.error("--out and --images are required")
    deadline = time.time() + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    report: Dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": args.device,
                              "cpu_cores": os.cpu_count(), "load_at_start": load(), "pipelines": {}}

    def save() -> None:
        report["load_at_end"] = load()
        (args.out / "gpu_pipelines.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
        (args.out / "gpu_pipelines.md").write_text(markdown(report))

    known = gpu_configs(args.device)
    if args.device == "cpu":
        configs = {"cpu dry run": cpu_config()}
    else:
        unknown = set(args.configs.split(",")) - set(known)
        if unknown:
            parser.error(f"unknown --configs {sorted(unknown)}; known: {', '.join(known)}")
        configs = {k: known[k] for k in args.configs.split(",")}
    for pipeline in args.pipelines.split(","):
        runs: Dict[str, Any] = {"configs": {}}
        report["pipelines"][pipeline] = runs
        common = {"pipeline": pipeline, "images": str(args.images), "smoke": args.smoke, "passes": 1 if args.smoke else 2}
        cpu_cache = tempfile.mkdtemp(prefix="hp-cpu-")
        reference = run_child({**common, **cpu_config(), "warm_only": False, "threads": 1, "cache": cpu_cache},
                              deadline - time.time())
        runs["cpu_reference"] = {k: v for k, v in reference.items() if k != "texts"}
        print(f"{pipeline} cpu reference: {runs['cpu_reference']} load {load()}", flush=True)
        save()
        for n, (label, config) in enumerate(configs.items()):
            cache = tempfile.mkdtemp(prefix="hp-gpu-")
            run: Dict[str, Any] = {}
            for start in ("cold", "warm"):
                left = deadline - time.time()
                if left < 20:
                    run[start] = {"error": "skipped: out of time"}
                    continue
                spec = {**common, **config, "cache": cache, "warm_only": start == "warm",
                        "threads": args.threads if n == 0 and start == "cold" else 1}
                run[start] = run_child(spec, min(left, 0.4 * args.budget))  # one slow start must not eat the run
                print(f"{pipeline} {label} {start}: { {k: v for k, v in run[start].items() if k != 'texts'} } "
                      f"load {load()}", flush=True)
            if "texts" in run.get("cold", {}) and "texts" in reference:
                run["texts_vs_cpu"] = compare_texts(reference["texts"], run["cold"].pop("texts"))
            runs["configs"][label] = run
            save()
        runs["cpu_best"] = cpu_best(pipeline, args, cpu_cache, deadline)
        best = runs["cpu_best"]["best_per_s"]
        for run in runs["configs"].values():
            rate = run.get("cold", {}).get("per_s")
            run["ratio_vs_cpu_best"] = round(rate / best, 2) if rate and best else None
        save()
    print((args.out / "gpu_pipelines.md").read_text())


if __name__ == "__main__":
    main()
