"""Open an engine session for one model: choose the engine, log why, build or reuse its cached artifact,
check a reduced precision's accuracy, and fall back where safe mode may.

Fallbacks, in safe mode only: a reduced precision whose drift from fp32 exceeds the model's tolerance is
refused and the same engine is tried at the next higher precision; an engine that fails to load the model
is replaced by the rule's next engine. Standard inference (``use_hpip`` off) loads the model file directly.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Iterator, List, Optional

from ..config import BackendConfig, HPIConfig
from ..device import Device
from ..errors import EngineUnavailableError, HpinferError
from .accuracy import Drift
from .auto_config import EngineChoice, choose_engine, fallbacks, precision_ladder
from .builder import Artifact, build_engine
from .engines import ENGINES, EngineSession
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
) -> EngineSession:
    """``task`` (the model's task and processing parameters) makes int8 calibration and the accuracy guard
    possible; ``Predictor`` passes it for every model, built-in or ``model_dir``. ``default_shapes`` ([min, opt,
    max] of the first input) are used only by engines that need bounds when ``dynamic_shapes`` gives none."""
    with model_defaults(default_shapes):
        return _open(model_name, model_path, device, use_hpip, hpi, task)


def _open(model_name: str, model_path: Path, device: Device, use_hpip: bool, hpi: HPIConfig, task: Optional[ModelTask]) -> EngineSession:
    choice = choose_engine(model_name, device, use_hpip, hpi)
    if not use_hpip:
        start = time.perf_counter()
        with _naming(model_name):
            session = ENGINES[choice.backend].load(model_path, choice.config, device)
        _log_loaded(model_name, device, choice, session, time.perf_counter() - start, "")
        return session
    candidates = [choice] + (fallbacks(choice, device) if choice.may_fall_back else [])
    failures: List[str] = []
    for candidate in candidates:
        for config in precision_ladder(candidate, device):
            start = time.perf_counter()
            try:
                with _naming(model_name):
                    artifact = build_engine(model_name, model_path, candidate.backend, config, device, task)
                    refusal = _refusal(candidate, config, artifact.drift, task)
                    session = None if refusal else _open_artifact(model_name, model_path, artifact, device, task)
            except EngineUnavailableError as err:  # the engine refuses this machine or model: the rule's next may not
                if len(candidates) == 1:
                    raise
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
            _log_loaded(model_name, device, candidate, session, time.perf_counter() - start, _cache_note(artifact))
            return session
    raise EngineUnavailableError(f"{model_name}: no engine could load {model_path.name}: {'; '.join(failures)}")


def _open_artifact(model_name: str, model_path: Path, artifact: Artifact, device: Device, task: Optional[ModelTask]) -> EngineSession:
    """A session from the artifact; a cached one that fails to open (a TensorRT engine from another TensorRT
    build or GPU, a package its loader rejects) is rebuilt once, rather than the engine being given up."""
    try:
        return artifact.open(model_path, device)
    except HpinferError:
        raise
    except Exception as err:
        if artifact.entry.built:
            raise
        log.warning("%s: cached %s engine %s failed to open (%s); rebuilding it", model_name, artifact.backend,
                    artifact.entry.path, _one_line(err))
        rebuilt = build_engine(model_name, model_path, artifact.backend, artifact.config, device, task, stale=_one_line(err))
        return rebuilt.open(model_path, device)


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
