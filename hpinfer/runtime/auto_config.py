"""Which engine runs a model: the rule table (safe mode), user overrides, and manual mode.

Safe mode (``auto_config: true``) walks the rule for the device and takes the first engine that
is installed and can run the model at the requested precision; a backend the user names is
accepted only if it passes the same checks, otherwise the error lists what would work.
Manual mode (``auto_config: false``) does what the user says.

On a GPU, safe mode places a model that every GPU engine fails to load (an op no GPU engine translates) on the
CPU, with the CPU rule's engines (``cpu_fallback``): one model on the CPU beats a pipeline that cannot start.
A backend the user names, and manual mode, are never moved.

In safe mode a reduced precision must also pass the accuracy guard (see ``loader``); ``precision_ladder``
lists where it falls back to: the same engine at each higher precision it can run, ending at fp32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..config import HPIConfig, BackendConfig
from ..device import Device
from ..errors import EngineUnavailableError
from .engines import ENGINES

log = logging.getLogger("hpinfer.runtime")


@dataclass(frozen=True)
class Rule:
    name: str
    device_kind: str
    preference: Tuple[str, ...]
    why: str


# Measured, not guessed: see benchmarks/RESULTS.md. First installed, capable engine wins.
RULES: Tuple[Rule, ...] = (
    Rule(
        "cpu-default",
        "cpu",
        ("openvino", "onnxruntime"),
        "OpenVINO runs the PP-OCR models 1.5-2.1x faster than ONNX Runtime on x86 CPUs with identical outputs",
    ),
    Rule(
        "gpu-default",
        "gpu",
        ("tensorrt", "onnxruntime", "torch"),
        "TensorRT builds the fastest NVIDIA engines; ONNX Runtime CUDA and the torch path are fallbacks",
    ),
)


@dataclass(frozen=True)
class EngineChoice:
    backend: str
    config: BackendConfig
    reason: str
    may_fall_back: bool = False  # only a rule's pick may be replaced if it fails to load; never the user's
    guarded: bool = False  # safe mode: a reduced precision that drifts too far from fp32 is refused


def _rule_for(device: Device) -> Rule:
    return next(r for r in RULES if r.device_kind == device.kind)


def why_not(backend: str, device: Device, precision: str) -> Optional[str]:
    """None if ``backend`` can run here at ``precision``, else the reason."""
    engine = ENGINES.get(backend)
    if engine is None:
        return f"the {backend} engine is not part of this hpinfer version"
    if not engine.is_installed():
        return f"{engine.pip_name} is not installed (pip install {engine.pip_name})"
    return engine.unsupported_reason(device, precision)


def _workable(device: Device, precision: str) -> List[str]:
    return [b for b in _rule_for(device).preference if why_not(b, device, precision) is None]


def choose_engine(model_name: str, device: Device, use_hpip: bool, hpi: HPIConfig) -> EngineChoice:
    if not use_hpip and hpi.backend == "paddle":  # PaddleX's own standard inference: Paddle Inference
        reason = why_not("paddle", device, "fp32")
        if reason:
            raise EngineUnavailableError(f"{model_name}: hpi_config asks for the paddle engine, but {reason}")
        return EngineChoice("paddle", hpi.backend_config, "use_hpip is off and hpi_config names paddle: PaddleX's standard inference")
    if not use_hpip:
        reason = why_not("onnxruntime", device, "fp32")
        if reason:
            raise EngineUnavailableError(
                f"{model_name}: standard inference (use_hpip off) runs on onnxruntime, but {reason}; "
                f"use device cpu, or turn on use_hpip (--use_hpip) to let hpinfer pick an engine"
            )
        return EngineChoice("onnxruntime", BackendConfig(), "use_hpip is off: standard inference")

    precision = hpi.backend_config.precision
    if not hpi.auto_config:
        # Manual mode skips the rule table, never the engine's abilities: an engine asked for
        # something it can't do would silently do something else (CPU instead of GPU, fp32 instead of fp16).
        reason = why_not(hpi.backend, device, precision)
        if reason:
            raise EngineUnavailableError(f"{model_name}: manual mode asks for {hpi.backend} at {precision} on {device}, but {reason}")
        return EngineChoice(hpi.backend, hpi.backend_config, "manual mode (auto_config: false): the user's choice")

    if hpi.backend is not None:
        reason = why_not(hpi.backend, device, precision)
        if reason:
            options = _workable(device, precision)
            hint = f"engines that would work: {', '.join(options)}" if options else "no engine can do this here"
            raise EngineUnavailableError(
                f"{model_name}: backend {hpi.backend!r} at {precision} on {device} rejected by safe mode: "
                f"{reason}; {hint}"
            )
        return EngineChoice(
            hpi.backend, hpi.backend_config, f"user override {hpi.backend!r} passed safe-mode checks", guarded=True
        )

    rule = _rule_for(device)
    skipped = []
    for backend in rule.preference:
        reason = why_not(backend, device, precision)
        if reason is None:
            note = f"rule {rule.name}: {rule.why}"
            if skipped:
                note += f" (skipped: {'; '.join(skipped)})"
            return EngineChoice(backend, hpi.backend_config, note, may_fall_back=True, guarded=True)
        skipped.append(f"{backend}: {reason}")
    raise EngineUnavailableError(
        f"{model_name}: no engine can run on {device} at {precision}: {'; '.join(skipped)}"
    )


def fallbacks(choice: EngineChoice, device: Device) -> List[EngineChoice]:
    """The rule's later engines that can also run here, for when the chosen one fails to load."""
    preference = _rule_for(device).preference
    later = preference[preference.index(choice.backend) + 1 :] if choice.backend in preference else ()
    return [
        EngineChoice(b, choice.config, f"fallback after {choice.backend} failed", guarded=choice.guarded)
        for b in later
        if why_not(b, device, choice.config.precision) is None
    ]


CPU = Device("cpu")


def cpu_fallback(choice: EngineChoice, device: Device) -> List[EngineChoice]:
    """Safe mode on a GPU: the CPU rule's engines that can run the model, for when no GPU engine could load it;
    at the asked precision where the engine can run it there, else at fp32 (the reference). Empty elsewhere."""
    if not (choice.may_fall_back and device.is_gpu):
        return []
    rule = _rule_for(CPU)
    picks = []
    for backend in rule.preference:
        config = choice.config
        if why_not(backend, CPU, config.precision) is not None:
            if why_not(backend, CPU, "fp32") is not None:
                continue
            config = config.model_copy(update={"precision": "fp32"})
        picks.append(EngineChoice(backend, config, f"rule {rule.name}: no GPU engine could load the model", guarded=True))
    return picks


# Least to most precise: a precision the guard refuses falls back to the next one; fp32 is the reference.
PRECISION_ORDER = ("int8", "bf16", "fp16", "fp32")


def precision_ladder(choice: EngineChoice, device: Device) -> List[BackendConfig]:
    """The choice's config, then (safe mode only) the same at each higher precision its engine can run here."""
    asked = choice.config.precision
    if not choice.guarded or asked not in PRECISION_ORDER:
        return [choice.config]
    higher = PRECISION_ORDER[PRECISION_ORDER.index(asked) + 1 :]
    return [choice.config] + [
        choice.config.model_copy(update={"precision": p}) for p in higher if why_not(choice.backend, device, p) is None
    ]
