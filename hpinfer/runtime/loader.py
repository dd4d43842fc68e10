"""Open an engine session for one model: choose the engine, log why, load it, fall back if safe mode may."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from ..config import HPIConfig
from ..device import Device
from ..errors import EngineUnavailableError, HpinferError
from .auto_config import EngineChoice, choose_engine, fallbacks
from .engines import ENGINES, EngineSession

log = logging.getLogger("hpinfer.runtime")


def open_session(model_name: str, model_path: Path, device: Device, use_hpip: bool, hpi: HPIConfig) -> EngineSession:
    choice = choose_engine(model_name, device, use_hpip, hpi)
    candidates = [choice]
    if choice.may_fall_back:
        candidates += fallbacks(choice, device)
    failures = []
    for candidate in candidates:
        try:
            session = _load(model_name, model_path, device, candidate)
        except HpinferError:
            raise
        except Exception as err:  # an engine failing on a model is a fact to log, then try the next one
            failures.append(f"{candidate.backend}: {_one_line(err)}")
            log.warning("%s: engine %s failed to load (%s)", model_name, candidate.backend, failures[-1])
            continue
        if failures:
            log.info("%s: fell back to %s after: %s", model_name, candidate.backend, "; ".join(failures))
        return session
    raise EngineUnavailableError(f"{model_name}: no engine could load {model_path.name}: {'; '.join(failures)}")


_SOURCE_LOCATION = re.compile(r"(Exception from|failed at) \S+\.(cpp|cc|h|hpp):\d+")


def _one_line(err: Exception) -> str:
    """An engine's error as one readable line: OpenVINO wraps its reason in C++ source locations."""
    text = str(err)
    if "Summary:" in text:  # OpenVINO's conversion report ends with the short version
        text = text.split("Summary:", 1)[1]
    lines = [line.strip(" -") for line in text.splitlines() if line.strip() and not _SOURCE_LOCATION.search(line)]
    return f"{type(err).__name__}: {'; '.join(lines)[:400]}"


def _load(model_name: str, model_path: Path, device: Device, choice: EngineChoice) -> EngineSession:
    start = time.perf_counter()
    session = ENGINES[choice.backend].load(model_path, choice.config, device)
    log.info(
        "%s: engine %s on %s (%s) [%s], loaded in %.2fs",
        model_name, choice.backend, device, choice.reason, session.settings, time.perf_counter() - start,
    )
    return session
