"""The dependency directions of docs/architecture.md, enforced on the source (AST imports).

Each rule names a part of the package and the parts (or third-party packages) it must not
import; relative imports are resolved to absolute module names first. Lazy imports inside
functions count too: a direction is a design rule, not an import-time detail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "temseg"

# part -> modules it must not import (prefix match on dotted names)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "temseg.kernels": ("temseg.",),  # kernels import only torch / triton (and themselves)
    "temseg.data": ("temseg.inference", "temseg.train", "temseg.export", "temseg.cli",
                    "socket", "urllib", "requests", "http"),
    "temseg.io": ("temseg.inference", "temseg.train", "temseg.export", "temseg.cli",
                  "temseg.distributed", "ray",
                  "socket", "urllib", "requests", "http"),
    "temseg.models": ("temseg.train", "temseg.inference", "temseg.export", "temseg.cli"),
    "temseg.inference": ("temseg.train", "temseg.cli", "temseg.export", "temseg.distributed",
                         "ray"),
    "temseg.export": ("temseg.inference.slide", "temseg.inference.predictor",
                      "temseg.inference.tiles", "temseg.train", "temseg.cli"),
    "temseg.train": ("temseg.inference", "temseg.export", "temseg.cli"),
    # the Ray driver and workers: on top of inference and io, below the CLI
    "temseg.distributed": ("temseg.train", "temseg.export", "temseg.cli"),
    "temseg.spec": ("temseg.inference", "temseg.train", "temseg.export", "temseg.cli"),
    "temseg.policy": ("temseg.",),
    # shipped models: a registry and files, below everything that loads a checkpoint
    "temseg.pretrained": ("temseg.inference", "temseg.train", "temseg.export", "temseg.cli",
                          "socket", "urllib", "requests", "http"),
    "temseg.examples": ("temseg.",),
    "temseg.morphometrics": ("temseg.inference", "temseg.train", "temseg.export",
                             "temseg.cli"),
}
# inference may use the ONNX exporter and quantiser to build its cached (int8) export of a
# checkpoint
ALLOWED = {("temseg.inference.backends.onnxruntime", "temseg.export.onnx"),
           ("temseg.inference.backends.onnxruntime", "temseg.export.quantize")}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module imported anywhere in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def _parts() -> list[tuple[str, Path]]:
    return [(_module_name(p), p) for p in sorted(PKG.rglob("*.py"))]


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_dependency_directions(part: str) -> None:
    bad = []
    for name, path in _parts():
        if name != part and not name.startswith(part + "."):
            continue
        for mod in _imports(path):
            if mod == part or mod.startswith(part + "."):
                continue
            if (name, mod) in ALLOWED or any((name, m) in ALLOWED for m in _prefixes(mod)):
                continue
            if any(mod == f.rstrip(".") or mod.startswith(f if f.endswith(".") else f + ".")
                   or mod == f for f in FORBIDDEN[part]):
                bad.append(f"{name} imports {mod}")
    assert not bad, "\n".join(bad)


def _prefixes(mod: str) -> list[str]:
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def test_only_the_cli_parses_arguments() -> None:
    users = [name for name, path in _parts() if "argparse" in _imports(path)]
    allowed = {"temseg.cli", "temseg.kernels.aot_report"}  # aot_report: a __main__ tool
    assert set(users) <= allowed, users


def test_the_rules_see_real_imports() -> None:
    """The checker resolves relative imports (a rule that sees nothing cannot fail)."""
    found = _imports(PKG / "inference" / "slide.py")
    assert "temseg.io.outputs" in found and "temseg.inference.tiles" in found
