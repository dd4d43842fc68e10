"""``hpinfer cache``: see or clear what the model cache holds."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: "argparse._SubParsersAction", common_parent: argparse.ArgumentParser) -> None:
    cache = subparsers.add_parser("cache", parents=[common_parent], help="list or clear the model cache")
    cache.add_argument("action", choices=["list", "clear"])
    cache.add_argument("--model", default=None, help="only this model's entries (the name shown by 'cache list')")
    cache.add_argument("--model_dir", default=None, help="the cache inside this model directory instead of the user cache")


def run(args: argparse.Namespace) -> int:
    from ..runtime.cache import ModelCache, user_cache_dir

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
