"""Pipeline YAML → resolved settings, with one documented precedence rule for use_hpip/hpi_config.

For each sub-module, lowest to highest:
  1. the file's top level (``use_hpip``, ``hpi_config``),
  2. the values given to the API/CLI (they override the file's top level),
  3. the sub-module's own ``use_hpip``/``hpi_config`` in the file (the deepest level wins).
``hpi_config`` levels merge key by key (``backend_config`` too), so a sub-module that only sets
``backend`` keeps the thread count given above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import yaml

from ..config import HPIConfig, deep_merge, hpi_as_dict, parse_hpi_config
from ..errors import ConfigError

BUNDLED_DIR = Path(__file__).parent / "configs"
MODULE_KEYS = ("module_name", "model_name", "model_dir", "use_hpip", "hpi_config")
TOP_KEYS = ("pipeline_name", "use_hpip", "hpi_config", "SubModules")


@dataclass(frozen=True)
class ModuleSettings:
    model_name: Optional[str]
    model_dir: Optional[str]
    use_hpip: bool
    hpi_config: HPIConfig
    params: Dict[str, Any]  # the predictor's processing parameters


@dataclass(frozen=True)
class PipelineSettings:
    pipeline_name: str
    source: str  # bundled name or file path, for messages
    options: Dict[str, Any]  # pipeline-level options (everything but TOP_KEYS)
    modules: Dict[str, ModuleSettings]


def sub_settings(settings: PipelineSettings, name: str, keys: Sequence[str], options: Dict[str, Any]) -> PipelineSettings:
    """Part of a pipeline's settings (some of its SubModules) as the settings of a pipeline it embeds."""
    return PipelineSettings(name, settings.source, options, {k: settings.modules[k] for k in keys if k in settings.modules})


def bundled_pipelines() -> Tuple[str, ...]:
    return tuple(sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml")))


def load_pipeline_file(pipeline: "str | Path") -> Tuple[Dict[str, Any], str]:
    """A bundled pipeline name or a path to a YAML file → its mapping and where it came from."""
    text = str(pipeline)
    path = Path(text)
    source = text
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"pipeline file {path} does not exist")
    else:
        source = f"pipeline {text}"
        path = BUNDLED_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown pipeline {text!r}; bundled pipelines: {', '.join(bundled_pipelines())} (or give a YAML path)"
            )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML: {err}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping with pipeline_name and SubModules")
    return data, source


def resolve_pipeline(
    pipeline: "str | Path",
    use_hpip: Optional[bool] = None,
    hpi_config: "HPIConfig | Mapping[str, Any] | str | None" = None,
) -> PipelineSettings:
    data, source = load_pipeline_file(pipeline)
    name = data.get("pipeline_name")
    if not isinstance(name, str):
        raise ConfigError(f"{source}: pipeline_name is missing")
    top_hpip = data.get("use_hpip")
    _check_bool(top_hpip, f"{source}: use_hpip")
    base_hpi = deep_merge(
        hpi_as_dict(data.get("hpi_config"), f"{source}: hpi_config"),
        hpi_as_dict(hpi_config, "hpi_config (API/CLI)"),
    )
    base_hpip = use_hpip if use_hpip is not None else bool(top_hpip)
    sub_modules = data.get("SubModules") or {}
    if not isinstance(sub_modules, dict):
        raise ConfigError(f"{source}: SubModules must be a mapping")
    modules = {
        key: _resolve_module(value, f"{source}: SubModules.{key}", base_hpip, base_hpi)
        for key, value in sub_modules.items()
    }
    options = {k: v for k, v in data.items() if k not in TOP_KEYS}
    return PipelineSettings(name, source, options, modules)


def _resolve_module(raw: Any, where: str, base_hpip: bool, base_hpi: Dict[str, Any]) -> ModuleSettings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping")
    own_hpip = raw.get("use_hpip")
    _check_bool(own_hpip, f"{where}.use_hpip")
    merged = deep_merge(base_hpi, hpi_as_dict(raw.get("hpi_config"), f"{where}.hpi_config"))
    return ModuleSettings(
        model_name=raw.get("model_name"),
        model_dir=raw.get("model_dir"),
        use_hpip=base_hpip if own_hpip is None else own_hpip,
        hpi_config=parse_hpi_config(merged, f"{where} (merged hpi_config)"),
        params={k: v for k, v in raw.items() if k not in MODULE_KEYS},
    )


def _check_bool(value: Any, where: str) -> None:
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
