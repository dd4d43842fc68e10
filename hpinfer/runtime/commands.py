"""``hpinfer build`` and ``hpinfer cache``: prebuild every engine of a pipeline so servers start warm, and
see or clear what the model cache holds. ``hpinfer.cli`` wires them in with ``add_commands`` and ``run``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

from .cache import ModelCache, cache_root, user_cache_dir

COMMANDS = ("build", "cache")


def add_commands(
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

    cache = subparsers.add_parser("cache", parents=[common_parent], help="list or clear the model cache")
    cache.add_argument("action", choices=["list", "clear"])
    cache.add_argument("--model", default=None, help="only this model's entries (the name shown by 'cache list')")
    cache.add_argument("--model_dir", default=None, help="the cache inside this model directory instead of the user cache")


def run(args: argparse.Namespace) -> int:
    return _build(args) if args.command == "build" else _cache(args)


def _modules(args: argparse.Namespace, hpi: Any) -> List[Tuple[str, Optional[str], Optional[str], Any, dict]]:
    """(key, model_name, model_dir, hpi_config, params) of each model to build."""
    from ..pipelines import resolve_pipeline

    if not args.pipeline:
        return [(args.model or args.model_dir, args.model, args.model_dir, hpi, {})]
    settings = resolve_pipeline(args.pipeline, use_hpip=True, hpi_config=hpi)
    return [(key, m.model_name, m.model_dir, m.hpi_config, m.params) for key, m in settings.modules.items()]


def _build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..config import parse_json_object
    from ..models import create_model, resolve_model

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


def _cache(args: argparse.Namespace) -> int:
    root = Path(args.model_dir) / ".cache" if args.model_dir else user_cache_dir()
    cache = ModelCache(root)
    if args.action == "clear":
        removed = cache.clear(args.model)
        print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} from {root}")
        return 0
    entries = [e for e in cache.entries() if args.model is None or e.label == args.model]
    for e in entries:
        status = "ok" if e.problem is None else f"CORRUPT: {e.problem}"
        print(f"{e.label:28s} {e.kind:12s} {e.size / 2**20:8.1f} MiB  {e.created}  {status}  {e.path}")
    print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in {root}")
    return 0
