"""AOTInductor packages of the torch engine (``TorchConfig.aot``): torch.export with dynamic shapes + AOTInductor,
compiled once and kept in the model cache next to the engine entry, keyed by GPU architecture, CUDA, driver and
torch versions: the second start loads the package instead of compiling. A new package is first loaded and run in
a child process and refused if that fails (``_check_package_in_child``). A runner loaded in single-threaded mode
(needed for graph capture) is serialised by a lock for its eager runs."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

from ....config import BackendConfig
from ....device import Device
from ....errors import EngineUnavailableError
from .module import Shape, calibration_shapes

if TYPE_CHECKING:
    from ...onnx_to_torch import Graph

log = logging.getLogger(__name__)

AOT_PACKAGE = "model.pt2"
AOT_KIND = "torch_aoti"


def _translator_digest() -> str:
    """The translator's source: a changed op translation must not load an old package."""
    from ... import onnx_to_torch

    digest = hashlib.sha256()
    for path in sorted(Path(onnx_to_torch.__file__).resolve().parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def aot_fields(model_path: Path, config: BackendConfig, device: Device) -> Dict[str, object]:
    """Everything that changes an AOTInductor package: the model, translator, precision and shapes, and the
    machine it was compiled for (GPU architecture, CUDA, driver and torch versions)."""
    import torch

    from ...cache import CACHE_FORMAT, file_sha256
    from ...hardware import cpu_name, driver_version

    if device.is_gpu:
        props = torch.cuda.get_device_properties(device.index)
        target = {"gpu": props.name, "arch": f"sm_{props.major}{props.minor}", "cuda": torch.version.cuda, "driver": driver_version()}
    else:
        target = {"cpu": cpu_name()}
    return {
        "format": CACHE_FORMAT, "model_sha256": file_sha256(model_path), "translator": _translator_digest(),
        "torch": torch.__version__, "precision": config.precision, "dynamic_shapes": config.dynamic_shapes,
        "channels_last": config.torch.channels_last, **target,
    }


def _example_shapes(shape: Sequence[Optional[int]], bounds: Optional[Sequence[Sequence[int]]]) -> List[Shape]:
    """Example inputs to export with: batch 2 (batch 1 would be specialised), at the opt shape or page/line sizes."""
    return [(max(2, s[0]) if shape[0] is None else s[0], *s[1:]) for s in calibration_shapes(shape, bounds)]


def _export(entry, graph: "Graph", device: Device, bounds) -> Tuple[object, Dict[str, object]]:
    """``torch.export`` with the model's dynamic axes left dynamic (``Dim.AUTO``: torch keeps static what the
    graph needs static). Tried in turn: all dynamic axes, batch and width, batch alone, none."""
    import torch
    from torch.export import Dim

    (name, shape, _), = graph.inputs
    dynamic = [i for i, d in enumerate(shape) if d is None]
    last = len(shape) - 1
    axis_sets = [dynamic, [a for a in dynamic if a in (0, last)], [a for a in dynamic if a == 0], []]
    errors = []
    target = f"cuda:{device.index}" if device.is_gpu else "cpu"
    for example in _example_shapes(shape, bounds):
        x = torch.rand(example, device=target) * 2 - 1
        for axes in dict.fromkeys(map(tuple, axis_sets)):
            try:
                program = torch.export.export(entry.One(entry), (x,), dynamic_shapes=({a: Dim.AUTO for a in axes},), strict=False)
            except Exception as err:  # unsolvable shape constraints on this axis set: try fewer dynamic axes
                errors.append(f"{example} axes {axes}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                continue
            placeholder = [n for n in program.graph.nodes if n.op == "placeholder"][-1]
            exported_shape = [d if isinstance(d, int) else str(d) for d in placeholder.meta["val"].shape]
            return program, {"example": list(example), "exported_shape": exported_shape}
    raise RuntimeError(f"torch.export failed for {name}: " + "; ".join(errors))


# Loads a fresh package and runs it once on zeros of the export's example shape: argv = package, device, shape,
# aoti_load_package's keyword arguments (JSON: the engine's own, so the package is loaded as the engine will).
_PACKAGE_CHECK = """
import json, sys, torch
torch.zeros(1, device=sys.argv[2])  # a CUDA context first, as the engine has one when it loads
runner = torch._inductor.aoti_load_package(sys.argv[1], **json.loads(sys.argv[4]))
with torch.inference_mode():
    runner(torch.zeros(*map(int, sys.argv[3].split(",")), device=sys.argv[2]))
torch.cuda.synchronize() if sys.argv[2].startswith("cuda") else None
"""


def _check_package_in_child(package: Path, example: Sequence[int], device: Device, load_kwargs: Mapping[str, object]) -> None:
    """Load and run a new package in a child process before the cache keeps it. On an H100 with torch 2.11
    (2026-11-26) every package built there (line classifier, rec, det; fp32 and fp16) killed a fresh process
    that loaded it with a segmentation fault inside ``aoti_load_package``: such a package must cost a refusal
    with a reason, never the caller's process."""
    import torch

    target = f"cuda:{device.index}" if device.is_gpu else "cpu"
    try:
        done = subprocess.run([sys.executable, "-c", _PACKAGE_CHECK, str(package), target, ",".join(map(str, example)),
                               json.dumps(dict(load_kwargs))], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise EngineUnavailableError("the AOTInductor package did not load and run within 600 s in a check process")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        how = "a segmentation fault" if done.returncode == -11 else f"exit code {done.returncode}: {last}"
        raise EngineUnavailableError(
            f"torch {torch.__version__} built an AOTInductor package that fails to load and run on {device} "
            f"({how}, in a check process); use compile instead of aot")


def aot_callable(entry, graph: "Graph", model_path: Path, config: BackendConfig, device: Device, home: Optional[Path]):
    """The model as an AOTInductor package from the model cache (built there once): a callable and facts about it."""
    import torch

    from ...cache import ModelCache, cache_root, key_of

    fields = aot_fields(model_path, config, device)
    cache = ModelCache(cache_root(model_path))
    if home is None:
        entry_dir = cache.entry_dir(model_path, AOT_KIND, fields)
    else:
        entry_dir = home / f"{AOT_KIND}-{key_of(fields)[:24]}"
    bounds = (config.dynamic_shapes or {}).get(graph.inputs[0][0])

    kwargs: Dict[str, object] = {}
    parameters = inspect.signature(torch._inductor.aoti_load_package).parameters
    single = "run_single_threaded" in parameters and device.is_gpu and config.torch.own_cuda_graphs
    if single:
        kwargs["run_single_threaded"] = True  # no internal locking: what CUDA-graph capture needs
    if "device_index" in parameters and device.is_gpu:
        kwargs["device_index"] = device.index

    def build(folder: Path) -> Dict[str, object]:
        start = time.perf_counter()
        program, info = _export(entry, graph, device, bounds)
        info["export_seconds"] = round(time.perf_counter() - start, 2)
        with torch.inference_mode():
            torch._inductor.aoti_compile_and_package(program, package_path=str(folder / AOT_PACKAGE))
        _check_package_in_child(folder / AOT_PACKAGE, info["example"], device, kwargs)
        return info

    found = cache.get_or_build(entry_dir, fields, build, model_path.stem)
    start = time.perf_counter()
    runner = torch._inductor.aoti_load_package(str(found.path / AOT_PACKAGE), **kwargs)
    lock = threading.Lock() if single else contextlib.nullcontext()

    def fn(*inputs: "torch.Tensor") -> Tuple["torch.Tensor", ...]:
        with lock:
            out = runner(*inputs)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)

    info = {
        "path": str(found.path), "built": found.built, "build_seconds": found.info.get("build_seconds") if found.built else None,
        "load_seconds": round(time.perf_counter() - start + (0.0 if found.built else found.seconds), 3),
        **{k: v for k, v in found.info.items() if k in ("example", "exported_shape", "export_seconds")},
    }
    log.info("%s: AOTInductor package %s (%s)", model_path.stem, "built" if found.built else "loaded from cache", info)
    return fn, info
