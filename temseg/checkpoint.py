"""Checkpoints: one file holding the weights, the model config, the normalisation, the class
table and the training geometry; plus the optimiser state for ``--resume``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_path
from .data.normalize import Normalization
from .labels import TEM_CLASSES, ClassTable
from .models import ResUNet, UNetConfig, build_model
from .spec import ModelSpec, default_roi_size

FORMAT = "temseg-checkpoint"
VERSION = 1


class SegmentationModel(nn.Module):
    """A trained network together with what is needed to apply it to raw images.

    Forward: normalised images (B, 1, H, W) float32 -> logits (B, C, H, W).
    """

    def __init__(self, net: ResUNet, normalization: Normalization | None = None,
                 classes: ClassTable = TEM_CLASSES, patch_size: int = 256,
                 pixel_size_um: float | None = None) -> None:
        super().__init__()
        self.net = net
        self.normalization = normalization or Normalization()
        self.classes = classes
        self.patch_size = patch_size
        self.pixel_size_um = pixel_size_um

    @property
    def config(self) -> UNetConfig:
        return self.net.config

    @property
    def roi_size(self) -> int:
        """Default inference tile side (:func:`default_roi_size`)."""
        return default_roi_size(self.patch_size)

    @property
    def spec(self) -> ModelSpec:
        """The model's description for inference (:class:`temseg.spec.ModelSpec`)."""
        return ModelSpec.from_model(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def metadata(self) -> dict[str, Any]:
        """Everything but the weights, JSON-ready."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_config": self.net.config.to_dict(),
            "normalization": self.normalization.to_dict(),
            "classes": self.classes.to_dict(),
            "patch_size": self.patch_size,
            "pixel_size_um": self.pixel_size_um,
        }


def save_checkpoint(path: str | Path, model: SegmentationModel,
                    train_state: dict[str, Any] | None = None) -> None:
    """Write ``model`` (and optionally the training state) to ``path`` atomically."""
    net = getattr(model.net, "_orig_mod", model.net)
    payload = {**model.metadata(), "state_dict": net.state_dict()}
    if train_state is not None:
        payload["train_state"] = train_state
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict. ``path`` may be a checkpoint file or a training run folder
    (its ``best.pt``, else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{path}: no best.pt or last.pt in this folder")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        msg = f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})"
        raise ValueError(msg) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a temseg checkpoint")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> SegmentationModel:
    net = build_model(ckpt["model_config"])
    net.load_state_dict(ckpt["state_dict"])
    model = SegmentationModel(net, Normalization.from_dict(ckpt["normalization"]),
                              ClassTable.from_dict(ckpt["classes"]), int(ckpt["patch_size"]),
                              ckpt.get("pixel_size_um"))
    return model.eval()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> SegmentationModel:
    """Load a trained temseg model (file or run folder) in eval mode on ``device``."""
    return model_from_checkpoint(read_checkpoint(path)).to(device)
