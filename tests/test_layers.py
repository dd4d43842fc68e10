"""The layer table of ARCHITECTURE.md, enforced: a module imports only from its own layer or those below,
counting every import (function-local ones too), read from the source without importing it."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "hpinfer"

# bottom to top; a module's layer is that of its first path component under hpinfer/
LAYERS = [
    {"io", "config", "results", "errors", "device", "visualize"},
    {"runtime"},
    {"tasks"},
    {"models"},
    {"pipelines"},
    {"serving"},
    {"cli", "commands", "bench", "tune", "__init__", "__main__"},
]


def layer_of(module: str) -> int:
    """``module``: dotted name inside hpinfer ("" for the package itself, which re-exports the top)."""
    head = module.split(".")[0]
    if not (PACKAGE / head).is_dir() and not (PACKAGE / f"{head}.py").is_file():
        head = "__init__"  # a name the package itself exports ("from hpinfer import __version__")
    return next(rank for rank, names in enumerate(LAYERS) if head in names)


def imports(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, hpinfer-relative dotted module) of every import of hpinfer code in ``path``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "hpinfer" or alias.name.startswith("hpinfer."):
                    yield node.lineno, alias.name.partition(".")[2]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "hpinfer" or node.module.startswith("hpinfer.")):
                target = node.module.partition(".")[2]
            else:
                continue
            if node.module is None or not target:  # "from . import x" names submodules
                for alias in node.names:
                    yield node.lineno, ".".join(filter(None, [target, alias.name]))
            else:
                yield node.lineno, target


def own_layer(path: Path) -> int:
    return layer_of(".".join(path.relative_to(PACKAGE).with_suffix("").parts))


def violations():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mine = own_layer(path)
        for line, target in imports(path):
            if layer_of(target) > mine:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports hpinfer.{target}")
    return found


def test_no_module_imports_from_a_layer_above_its_own():
    assert violations() == []


def test_the_runtime_reaches_nothing_above_it():
    """The narrow promise of the task architecture, stated on its own: no import from hpinfer/runtime, function-local
    ones included, reaches tasks, models, pipelines, serving or the CLI."""
    above = {"tasks", "models", "pipelines", "serving", "cli", "commands", "bench", "tune"}
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} -> {target}"
        for path in sorted((PACKAGE / "runtime").rglob("*.py"))
        for line, target in imports(path)
        if target.split(".")[0] in above or not target
    ]
    assert bad == []


def test_the_walker_sees_function_local_and_relative_imports(tmp_path):
    """The checker itself can fail: a planted function-local import from the runtime into models is found."""
    planted = PACKAGE / "runtime" / "_planted_layer_check.py"
    planted.write_text("def f():\n    from ..models import create_model\n    from . import cache\n", encoding="utf-8")
    try:
        assert [(line, target) for line, target in imports(planted)] == [(2, "models"), (3, "runtime.cache")]
        assert any("_planted_layer_check.py:2 imports hpinfer.models" in v for v in violations())
    finally:
        planted.unlink()
