"""``hpinfer build``: prebuild every engine of a pipeline (or one model) so servers start warm."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, List, Optional, Tuple


def add_parser(
    subparsers: "argparse._SubParsersAction", common_parent: argparse.ArgumentParser, target_parent: argparse.ArgumentParser
) -> None:
    """``target_parent`` brings the --pipeline | --model | --model_dir choice that predict and bench share."""
    build = subparsers.add_parser(
        "build", parents=[common_parent, target_parent], help="build (or check) the cached engines of a pipeline or model",
        epilog="Builds every model a pipeline file lists (switched on or not) with use_hpip and the given hpi_config, "
        "exactly as predict would, so a later start loads them from the cache.",
    )
    build.add_argument("--device", default=None, help="cpu (default) or gpu:N")
    build.add_argument("--hpi_config", default=None, help='JSON, e.g. \'{"backend_config": {"precision": "int8"}}\'')


def _modules(args: argparse.Namespace, hpi: Any) -> List[Tuple[str, Optional[str], Optional[str], Any, dict]]:
    """(key, model_name, model_dir, hpi_config, params) of each model to build."""
    from ..pipelines import resolve_pipeline

    if not args.pipeline:
        return [(args.model or args.model_dir, args.model, args.model_dir, hpi, {})]
    settings = resolve_pipeline(args.pipeline, use_hpip=True, hpi_config=hpi)
    return [(key, m.model_name, m.model_dir, m.hpi_config, m.params) for key, m in settings.modules.items()]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..config import parse_json_object
    from ..models import create_model, resolve_model
    from ..runtime.cache import ModelCache, cache_root

    hpi = parse_json_object(args.hpi_config, "--hpi_config") if args.hpi_config else None
    modules = _modules(args, hpi)
    rows = []
    for key, name, model_dir, module_hpi, params in tqdm(modules, desc="building", unit="model", file=sys.stderr):
        cache = ModelCache(cache_root(resolve_model(name, model_dir).model_file))
        before = {entry.path for entry in cache.entries()}
        start = time.perf_counter()
        with create_model(name, model_dir, device=args.device, use_hpip=True, hpi_config=module_hpi, **params) as model:
            artifact = model.session.artifact
            state = "built" if artifact not in before else "cached"
            rows.append((key, model.name, model.session.settings, state, time.perf_counter() - start, artifact))
    for key, name, settings, state, seconds, artifact in rows:
        print(f"{key}: {name} [{settings}] {state} in {seconds:.2f}s -> {artifact}")
    return 0
