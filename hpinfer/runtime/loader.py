"""Open an engine session for one model: choose the engine, log why, build or reuse its cached artifact,
check a reduced precision's accuracy, and fall back where safe mode may.

A PaddlePaddle model (inference.json / .pdmodel) runs on the ``paddle`` engine when that engine is chosen;
for any other engine it is converted to ONNX first (``paddle2onnx``: repaired, checked against Paddle, cached),
and where that cannot be done the ``paddle`` engine runs it, with the reason logged.

Fallbacks, in safe mode only: a reduced precision whose drift from fp32 exceeds the model's tolerance is
refused and the same engine is tried at the next higher precision; an engine that fails to load the model
is replaced by the rule's next engine, and on a GPU a model no GPU engine could load runs on the CPU (the CPU
rule's engine, logged as a warning; ``session.device`` says where a session runs). Standard inference
(``use_hpip`` off) loads the model file directly.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from ..config import BackendConfig, HPIConfig
from ..device import Device
from ..errors import EngineUnavailableError, HpinferError
from .accuracy import Drift
from .auto_config import CPU, EngineChoice, choose_engine, cpu_fallback, fallbacks, precision_ladder, why_not
from .builder import Artifact, build_engine
from .engines import ENGINES, EngineSession
from .engines.paddle import is_paddle_model
from .paddle2onnx import ConversionError, to_onnx
from .shapes import model_defaults
from .task import ModelTask

log = logging.getLogger("hpinfer.runtime")


def open_session(
    model_name: str,
    model_path: Path,
    device: Device,
    use_hpip: bool,
    hpi: HPIConfig,
    task: Optional[ModelTask] = None,
    default_shapes: Optional[List[List[int]]] = None,
    paddle_model: Optional[Path] = None,
) -> EngineSession:
    """``task`` (the model's task and processing parameters) makes int8 calibration and the accuracy guard
    possible; ``Predictor`` passes it for every model, built-in or ``model_dir``. ``default_shapes`` ([min, opt,
    max] of the first input) are used only by engines that need bounds when ``dynamic_shapes`` gives none.
    ``paddle_model``: the same weights as a PaddlePaddle model, for the ``paddle`` engine (``model_path`` may be
    one itself)."""
    with model_defaults(default_shapes):
        return _open(model_name, model_path, device, use_hpip, hpi, task, paddle_model)


def _open(
    model_name: str, model_path: Path, device: Device, use_hpip: bool, hpi: HPIConfig, task: Optional[ModelTask],
    paddle_model: Optional[Path],
) -> EngineSession:
    choice = choose_engine(model_name, device, use_hpip, hpi)
    model_path, choice = _source_for(model_name, model_path, paddle_model, choice, device, task)
    if not use_hpip:
        start = time.perf_counter()
        with _naming(model_name):
            session = ENGINES[choice.backend].load(model_path, choice.config, device)
        session.device = device
        _log_loaded(model_name, device, choice, session, time.perf_counter() - start, "")
        return session
    candidates = [choice] + (fallbacks(choice, device) if choice.may_fall_back else [])
    on_cpu = cpu_fallback(choice, device)
    failures: List[str] = []
    session = _first_loaded(model_name, model_path, candidates, device, task, failures, alone=len(candidates) == 1 and not on_cpu)
    if session is None and on_cpu:
        cpu_failures: List[str] = []
        session = _first_loaded(model_name, model_path, on_cpu, CPU, task, cpu_failures, alone=False)
        if session is not None:
            log.warning("%s: no GPU engine could load it (%s); it runs on the CPU with %s instead (safe mode)",
                        model_name, "; ".join(failures), session.backend)
        failures += cpu_failures
    if session is None:
        raise EngineUnavailableError(
            f"{model_name}: no engine could load {model_path.name}: {'; '.join(failures)}{_no_fallback_hint(choice, device)}"
        )
    return session


def _first_loaded(
    model_name: str, model_path: Path, candidates: List[EngineChoice], device: Device, task: Optional[ModelTask],
    failures: List[str], alone: bool,
) -> Optional[EngineSession]:
    """The first candidate (each down its precision ladder) that loads on ``device``; None, with each failure
    added to ``failures``, if none does. ``alone``: the only engine there is, whose refusal is raised as it is."""
    for candidate in candidates:
        for config in precision_ladder(candidate, device):
            start = time.perf_counter()
            try:
                with _naming(model_name):
                    artifact = build_engine(model_name, model_path, candidate.backend, config, device, task)
                    refusal = _refusal(candidate, config, artifact.drift, task)
                    session = None if refusal else _open_artifact(model_name, model_path, artifact, device, task)
            except EngineUnavailableError as err:  # the engine refuses this machine or model: the rule's next may not
                if alone:
                    raise EngineUnavailableError(f"{err}{_no_fallback_hint(candidate, device)}") from None
                failures.append(f"{candidate.backend}: {err}")
                log.warning("%s: engine %s is unavailable (%s)", model_name, candidate.backend, err)
                break
            except HpinferError:
                raise
            except Exception as err:  # an engine failing on a model is a fact to log, then try the next one
                failures.append(f"{candidate.backend}: {_one_line(err)}")
                log.warning("%s: engine %s failed to load (%s)", model_name, candidate.backend, failures[-1])
                break
            if session is None:
                log.warning("%s: %s on %s refused by the accuracy guard: %s", model_name, config.precision, candidate.backend, refusal)
                continue
            if failures:
                log.info("%s: fell back to %s after: %s", model_name, candidate.backend, "; ".join(failures))
            session.device = device
            _log_loaded(model_name, device, candidate, session, time.perf_counter() - start, _cache_note(artifact))
            return session
    return None


def _no_fallback_hint(choice: EngineChoice, device: Device) -> str:
    """What to change when the engine the user named cannot load the model (nothing is replaced for them)."""
    if choice.may_fall_back:
        return ""
    who = "manual mode (auto_config: false) runs only the backend" if not choice.guarded else "safe mode never replaces a backend"
    where = " (on a GPU it runs a model that no GPU engine can load on the CPU)" if device.is_gpu else ""
    return (
        f"; {who} you name. To let hpinfer choose{where}, give this model hpi_config "
        f'{{"auto_config": true, "backend": null}} (in a pipeline YAML, for this model alone: '
        f"SubModules.<its module>.hpi_config: {{auto_config: true, backend: null}}; README: Engines and hpi_config)"
    )


def _open_artifact(model_name: str, model_path: Path, artifact: Artifact, device: Device, task: Optional[ModelTask]) -> EngineSession:
    """A session from the artifact; a cached one that fails to open (a TensorRT engine from another TensorRT
    build or GPU, a package its loader rejects) is rebuilt once, rather than the engine being given up."""
    try:
        return artifact.open(model_path, device)
    except (HpinferError, NotImplementedError):  # NotImplementedError: an op the engine lacks, which no rebuild adds
        raise
    except Exception as err:
        if artifact.entry.built:
            raise
        log.warning("%s: cached %s engine %s failed to open (%s); rebuilding it", model_name, artifact.backend,
                    artifact.entry.path, _one_line(err))
        rebuilt = build_engine(model_name, model_path, artifact.backend, artifact.config, device, task, stale=_one_line(err))
        return rebuilt.open(model_path, device)


def _source_for(
    model_name: str, model_path: Path, paddle_model: Optional[Path], choice: EngineChoice, device: Device,
    task: Optional[ModelTask],
) -> Tuple[Path, EngineChoice]:
    """The file the chosen engine reads: the Paddle model for ``paddle``; for the others an ONNX file, converted
    from a Paddle-only model (auto_paddle2onnx), or the ``paddle`` engine instead where conversion fails."""
    paddle_model = model_path if is_paddle_model(model_path) else paddle_model
    if choice.backend == "paddle":
        if paddle_model is None:
            raise EngineUnavailableError(
                f"{model_name}: the paddle engine runs PaddlePaddle models (inference.json or inference.pdmodel), "
                f"and this model has none; give a PaddleX model_dir, or choose another backend"
            )
        return paddle_model, choice
    if not is_paddle_model(model_path):
        return model_path, choice
    try:
        converted = to_onnx(model_name, model_path, task)
        log.info("%s: %s runs the ONNX conversion of %s (auto_paddle2onnx: %s)", model_name, choice.backend, model_path.name, converted)
        return converted, choice
    except ConversionError as err:
        reason = why_not("paddle", device, choice.config.precision)
        if reason is not None:
            raise EngineUnavailableError(
                f"{model_name}: {model_path.name} is a PaddlePaddle model; {choice.backend} needs it converted to "
                f"ONNX, which failed ({err}), and the paddle engine cannot run it either: {reason}"
            ) from None
        log.warning("%s: cannot run on %s: ONNX conversion failed (%s); using the paddle engine", model_name, choice.backend, err)
        return model_path, EngineChoice("paddle", choice.config, f"{choice.backend} needs ONNX and conversion failed: {err}")


@contextlib.contextmanager
def _naming(model_name: str) -> Iterator[None]:
    """An engine's refusal (it knows only a file, maybe the model cache's copy) names the model it was for."""
    try:
        yield
    except EngineUnavailableError as err:
        raise EngineUnavailableError(f"{model_name}: {err}") from None


def tolerance(config: BackendConfig, task: Optional[ModelTask]) -> Optional[float]:
    if config.accuracy_tolerance is not None:
        return config.accuracy_tolerance
    return task.tolerance if task is not None else None


def _refusal(choice: EngineChoice, config: BackendConfig, drift: Optional[Drift], task: Optional[ModelTask]) -> Optional[str]:
    """Why safe mode refuses this precision, or None. Manual mode only reports a drift over the tolerance."""
    limit = tolerance(config, task)
    if drift is None or limit is None:  # exact configs (fp32, unpadded) have no drift
        return None
    if drift.vacuous:
        reason = (f"the accuracy guard had nothing to judge: on its {drift.inputs} input(s) the fp32 model "
                  f"finds nothing for '{drift.metric}' to compare; give calibration.data inputs like yours")
    elif drift.value <= limit:
        return None
    else:
        reason = f"{drift} exceeds the tolerance {limit}"
    if not choice.guarded:
        log.warning("%s at %s: %s (manual mode: used anyway)", choice.backend, config.precision, reason)
        return None
    return reason


def _cache_note(artifact: Artifact) -> str:
    entry = artifact.entry
    how = f"built in {entry.seconds:.2f}s" if entry.built else "from cache"
    drift = f", drift {artifact.drift}" if artifact.drift else ""
    return f" ({how}: {entry.path}{drift})"


def _log_loaded(model_name: str, device: Device, choice: EngineChoice, session: EngineSession, seconds: float, note: str) -> None:
    log.info(
        "%s: engine %s on %s (%s) [%s], loaded in %.2fs%s",
        model_name, choice.backend, device, choice.reason, session.settings, seconds, note,
    )


_SOURCE_LOCATION = re.compile(r"(Exception from|failed at) \S+\.(cpp|cc|h|hpp):\d+")


def _one_line(err: Exception) -> str:
    """An engine's error as one readable line: OpenVINO wraps its reason in C++ source locations."""
    text = str(err)
    if "Summary:" in text:  # OpenVINO's conversion report ends with the short version
        text = text.split("Summary:", 1)[1]
    lines = [line.strip(" -") for line in text.splitlines() if line.strip() and not _SOURCE_LOCATION.search(line)]
    return f"{type(err).__name__}: {'; '.join(lines)[:400]}"
