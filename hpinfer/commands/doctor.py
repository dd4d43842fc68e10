"""``hpinfer doctor``: what this machine can run and why not — engines, versions, CPU features, GPUs, known-bad
combinations, the model cache — with the install line for what is missing. ``--json`` prints it for scripts."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional

# CPU features that change which engine or precision wins
_CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
_PADDLE2ONNX = "pip install --no-deps paddle2onnx==2.1.0"


def add_parser(subparsers, common: Optional[argparse.ArgumentParser] = None) -> None:
    parser = subparsers.add_parser("doctor", parents=[common] if common else [], help="check engines, hardware and the model cache")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpus() -> List[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def _engines(gpus: List[str]) -> List[Dict[str, Any]]:
    from ..device import Device
    from ..runtime.engines import ENGINES

    rows = []
    devices = [Device("cpu")] + ([Device("gpu")] if gpus else [])
    for name, engine in ENGINES.items():
        row: Dict[str, Any] = {"engine": name, "package": engine.pip_name, "version": engine.version()}
        if not engine.is_installed():
            row["usable"] = {str(d): f"not installed: pip install {engine.pip_name}" for d in devices}
        else:
            row["usable"] = {}
            for device in devices:
                try:
                    reason = engine.unsupported_reason(device, "fp32")
                except Exception as err:  # an engine's own import failing is what doctor is for
                    reason = f"{type(err).__name__}: {err}"
                row["usable"][str(device)] = reason or "yes"
        rows.append(row)
    return rows


def _known_bad(paddle_version: Optional[str], converter: Optional[str]) -> List[Dict[str, str]]:
    """Combinations measured to fail here, and whether this machine has them; hpinfer works around each."""
    found = []
    if paddle_version:
        found.append({
            "combination": f"paddlepaddle {paddle_version}: oneDNN + new IR on PIR programs with double interpolation scales (PP-OCRv4 det)",
            "effect": "NotImplementedError: ConvertPirAttribute2RuntimeAttribute (PaddleX's CPU default fails)",
            "hpinfer": "the paddle engine turns oneDNN off for such models and says so; the ONNX engines run a converted copy",
        })
        found.append({
            "combination": f"paddlepaddle {paddle_version}: new IR on legacy inference.pdmodel programs",
            "effect": "fails with oneDNN (fuse_activation attribute) and returns no outputs without it",
            "hpinfer": "legacy programs run on the legacy IR",
        })
    if converter:
        found.append({
            "combination": f"paddle2onnx {converter} on PP-OCR models",
            "effect": "det: refuses double scales; rec/cls: Concat of 0-d and 1-d values that ONNX Runtime refuses",
            "hpinfer": "auto_paddle2onnx repairs both and checks every conversion against the paddle engine",
        })
    return found


def _cache() -> Dict[str, Any]:
    from ..runtime.cache import user_cache_dir

    root = user_cache_dir()
    files = [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []
    return {"folder": str(root), "exists": root.is_dir(), "files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def report() -> Dict[str, Any]:
    from ..runtime.hardware import cpu_count, cpu_flags, cpu_name
    from ..runtime.paddle2onnx import converter_version

    gpus = _gpus()
    flags = cpu_flags()
    paddle_version = _version("paddlepaddle") or _version("paddlepaddle-gpu")
    converter = converter_version()
    return {
        "hpinfer": _version("hpinfer"), "python": sys.version.split()[0], "platform": platform.platform(),
        "cpu": {"name": cpu_name(), "usable_cores": cpu_count(), "features": {f: f in flags for f in _CPU_FEATURES}},
        "gpus": gpus,
        "engines": _engines(gpus),
        "paddle2onnx": converter or f"not installed (auto_paddle2onnx off): {_PADDLE2ONNX}",
        "known_bad": _known_bad(paddle_version, converter),
        "cache": _cache(),
    }


def _print(data: Dict[str, Any]) -> None:
    cpu = data["cpu"]
    print(f"hpinfer {data['hpinfer']}  python {data['python']}  {data['platform']}")
    have = [f for f, on in cpu["features"].items() if on]
    print(f"CPU: {cpu['name']}, {cpu['usable_cores']} usable cores; features: {', '.join(have) or 'none of ' + ', '.join(cpu['features'])}")
    print("GPUs: " + ("; ".join(data["gpus"]) if data["gpus"] else "none found (nvidia-smi)"))
    print("engines:")
    for row in data["engines"]:
        usable = "; ".join(f"{device}: {state}" for device, state in row["usable"].items())
        print(f"  {row['engine']:12s} {row['package']} {row['version'] or '-':14s} {usable}")
    print(f"paddle2onnx: {data['paddle2onnx']}")
    for bad in data["known_bad"]:
        print(f"known bad: {bad['combination']}\n    {bad['effect']}\n    hpinfer: {bad['hpinfer']}")
    cache = data["cache"]
    print(f"model cache: {cache['folder']} ({cache['files']} files, {cache['bytes'] / 2**20:.1f} MiB)"
          + ("" if cache["exists"] else " (not created yet)"))


def run(args: argparse.Namespace) -> int:
    data = report()
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        _print(data)
    return 0

