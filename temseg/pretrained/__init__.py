"""Models shipped inside the package, by name (``temseg predict tem-mouse-cc ...``).

``registry.json`` beside this file lists each model: its checkpoint file (fp16 weights, in
this folder), the file's SHA-256, and what its model card (docs/models.md) says in short: the
data, the classes it has seen, pixel size, recipe and cross-validated Dice. Loading a named
model checks the hash first, so a damaged or replaced file is refused with a clear message.

:func:`resolve` is the one place a name becomes a file; :func:`temseg.checkpoint.read_checkpoint`
calls it, so every command that takes a checkpoint takes a name too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("temseg.pretrained")

HERE = Path(__file__).resolve().parent
REGISTRY = HERE / "registry.json"


class PretrainedError(ValueError):
    """A shipped model is missing or damaged (its file does not match the registry's hash)."""


@dataclass(frozen=True)
class PretrainedModel:
    """One entry of ``registry.json``."""

    name: str
    file: str
    sha256: str
    summary: str = ""
    classes_seen: tuple[str, ...] = ()
    pixel_size_um: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return HERE / self.file


def available() -> dict[str, PretrainedModel]:
    """The shipped models by name (empty when the registry is absent)."""
    if not REGISTRY.is_file():
        return {}
    entries = json.loads(REGISTRY.read_text())
    return {name: PretrainedModel(name=name, file=e["file"], sha256=e["sha256"],
                                  summary=e.get("summary", ""),
                                  classes_seen=tuple(e.get("classes_seen", ())),
                                  pixel_size_um=e.get("pixel_size_um"),
                                  info={k: v for k, v in e.items() if k not in _FIELDS})
            for name, e in entries.items()}


_FIELDS = ("file", "sha256", "summary", "classes_seen", "pixel_size_um")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified_path(model: PretrainedModel) -> Path:
    """The model's file after checking it against the registry's SHA-256.

    Raises PretrainedError naming the file when it is missing or its hash differs."""
    if not model.path.is_file():
        raise PretrainedError(f"shipped model {model.name!r}: its file {model.path} is "
                              "missing: reinstall temseg")
    digest = sha256(model.path)
    if digest != model.sha256:
        raise PretrainedError(f"shipped model {model.name!r}: {model.path} is damaged or was "
                              f"replaced (SHA-256 {digest[:16]}..., the registry expects "
                              f"{model.sha256[:16]}...): reinstall temseg")
    return model.path


def resolve(source: str | Path) -> Path:
    """``source`` as a checkpoint path: a shipped model's name becomes its verified file
    (unless a checkpoint or run folder of that name exists here); anything else is
    returned as a path."""
    path = Path(source)
    model = available().get(str(source))
    if model is None or path.is_file() or (path / "best.pt").is_file() \
            or (path / "last.pt").is_file():
        return path
    if model.classes_seen:
        log.info("shipped model %s: trained on %s only (%s)", model.name,
                 ", ".join(model.classes_seen), model.summary)
    return verified_path(model)
