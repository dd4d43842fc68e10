"""What the machine offers: usable CPU cores and instruction-set features that decide precisions, and the NVIDIA
GPU and driver that GPU engine artifacts (TensorRT engines, AOTInductor packages) are only valid for."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from typing import Optional


@functools.lru_cache(maxsize=None)
def cpu_count() -> int:
    """Cores this process may use (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_fast_bf16() -> bool:
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_has_fast_fp16() -> bool:
    return "avx512_fp16" in cpu_flags() or platform.machine() in ("arm64", "aarch64")


def _nvidia_smi(field: str, index: Optional[object]) -> str:
    """One ``nvidia-smi --query-gpu`` field of GPU ``index`` (an index or UUID; the first GPU if None), or "unknown"."""
    command = ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"] + ([f"--id={index}"] if index is not None else [])
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return lines[0].strip() if lines else "unknown"


@functools.lru_cache(maxsize=None)
def driver_version() -> str:
    """The NVIDIA driver version (e.g. 580.159.04), or "unknown"."""
    return _nvidia_smi("driver_version", None)


@functools.lru_cache(maxsize=None)
def gpu_name(index: int) -> str:
    """The model of CUDA device ``index`` (e.g. "NVIDIA H200"), or "unknown" where none is visible. Asked of
    nvidia-smi, not torch: probing CUDA here would start a CUDA context in processes that never use the GPU."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return _nvidia_smi("name", visible[index] if index < len(visible) else index)
