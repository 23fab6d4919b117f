"""Make a shipped model from a training run: fp16 weights, no optimiser state, and its
registry entry with the file's SHA-256 (how ``tem-mouse-cc`` was made; docs/models.md).

    python scripts/pack_pretrained.py RUN NAME --summary "..." --classes-seen a b c \
        --info '{"recipe": "...", "cv_mean_dice": 0.88}'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path, write_text
from ..checkpoint import read_checkpoint
from . import HERE, REGISTRY, sha256


def pack(run: str | Path, name: str, summary: str = "", classes_seen: tuple[str, ...] = (),
         info: dict[str, Any] | None = None, folder: Path = HERE) -> dict[str, Any]:
    """Write ``folder/NAME.pt`` (``run``'s best checkpoint with fp16 floating-point
    tensors and no training state) and its entry in ``folder/registry.json``; the entry."""
    ckpt = read_checkpoint(run)
    payload = {k: v for k, v in ckpt.items() if k not in ("path", "train_state")}
    payload["state_dict"] = {k: v.half() if v.is_floating_point() else v
                             for k, v in ckpt["state_dict"].items()}
    dest = folder / f"{name}.pt"
    with atomic_path(dest) as tmp:
        torch.save(payload, tmp)
    registry_file = folder / REGISTRY.name
    registry = json.loads(registry_file.read_text()) if registry_file.is_file() else {}
    entry = {"file": dest.name, "sha256": sha256(dest), "summary": summary,
             "classes_seen": list(classes_seen), "pixel_size_um": ckpt.get("pixel_size_um"),
             **(info or {})}
    registry[name] = entry
    write_text(registry_file, json.dumps(registry, indent=2) + "\n")
    return entry
