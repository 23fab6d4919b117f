"""Checkpoints: one file holding the weights, the model config, the normalisation, the class
table and the training geometry; plus the optimiser state for ``--resume``."""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_path, disk_full
from .data.normalize import Normalization
from .labels import TEM_CLASSES, ClassTable
from .models import ResUNet, UNetConfig, build_model
from .pretrained import resolve as resolve_pretrained
from .spec import ModelSpec, default_roi_size

log = logging.getLogger("temseg.checkpoint")

FORMAT = "temseg-checkpoint"
VERSION = 1


class SegmentationModel(nn.Module):
    """A trained network together with what is needed to apply it to raw images.

    Forward: normalised images (B, 1, H, W) float32 -> logits (B, C, H, W).

    ``calibration``: a few normalised training patches (N, 1, P, P) (float16 on disk, key
    ``calibration_tiles``), kept so that the model's int8 version can be calibrated where it
    runs (:mod:`temseg.export.quantize`); None for models trained before temseg kept them.
    """

    def __init__(self, net: ResUNet, normalization: Normalization | None = None,
                 classes: ClassTable = TEM_CLASSES, patch_size: int = 256,
                 pixel_size_um: float | None = None,
                 calibration: torch.Tensor | None = None) -> None:
        super().__init__()
        self.net = net
        self.normalization = normalization or Normalization()
        self.classes = classes
        self.patch_size = patch_size
        self.pixel_size_um = pixel_size_um
        self.calibration = calibration

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
    """Write ``model`` (and optionally the training state) to ``path`` atomically.

    Everything stored is tensors and plain Python data, so that :func:`read_checkpoint` can
    load it without unpickling code. A full disk is a :class:`~temseg.atomic.DiskFullError`
    naming ``path``; the previous file at ``path`` is then kept.
    """
    net = getattr(model.net, "_orig_mod", model.net)
    payload = {**model.metadata(), "state_dict": net.state_dict()}
    calibration = getattr(model, "calibration", None)
    if calibration is not None:
        payload["calibration_tiles"] = calibration.detach().cpu().to(torch.float16)
    if train_state is not None:
        payload["train_state"] = train_state
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch's zip writer on a full disk: "unexpected pos"
            if any(s in str(exc) for s in _TORCH_WRITE_FAILED):
                raise disk_full(path, str(exc).strip().splitlines()[-1]) from exc
            raise


_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "failed writing")
TRUST_ENV = "TEMSEG_TRUST_CHECKPOINT"
_REQUIRED = ("model_config", "normalization", "classes", "patch_size", "state_dict")


def trusted_by_default() -> bool:
    """Whether ``TEMSEG_TRUST_CHECKPOINT`` (set by ``temseg --trust-checkpoint``) allows
    unpickling checkpoints: 1, true, yes or on."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: no best.pt or last.pt in this folder")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    return path


def _unpickling_error(path: Path, exc: pickle.UnpicklingError) -> ValueError:
    """A refusal when the file names Python globals (code could run), else unreadable."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(.*?)(?: was not an allowed|\s*Please|\n|$)",
                      text)
    what = found.group(1).strip() if found else text
    if "Unsupported global" not in text:
        return ValueError(f"{path}: not a readable checkpoint (UnpicklingError: {what})")
    return ValueError(
        f"{path}: refused to load: it holds Python code or objects beyond tensors and plain "
        f"data ({what}), which could run arbitrary code. If it is an older temseg checkpoint "
        f"from a source you trust, load it with --trust-checkpoint (or {TRUST_ENV}=1, or "
        f"load_model(path, trust=True)) and save it again with save_checkpoint")


def read_checkpoint(path: str | Path, trust: bool | None = None) -> dict[str, Any]:
    """The raw checkpoint dict. ``path`` may be a checkpoint file, a training run folder
    (its ``best.pt``, else ``last.pt``) or the name of a shipped model (``temseg models``;
    its file's hash is checked first, :mod:`temseg.pretrained`).

    Loaded with ``torch.load(weights_only=True)``: tensors and plain data only, so a crafted
    file cannot run code. ``trust=True`` (default: :func:`trusted_by_default`) unpickles
    anything, for older checkpoints from a trusted source, and logs a warning.

    Raises FileNotFoundError, or ValueError naming the file and the problem.
    """
    path = _checkpoint_file(resolve_pretrained(path))
    trust = trusted_by_default() if trust is None else trust
    if trust:
        log.warning("%s: loading with full unpickling (trusted checkpoint): a crafted file "
                    "could run code", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        raise _unpickling_error(path, exc) from exc
    except Exception as exc:
        msg = f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})"
        raise ValueError(msg) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a temseg checkpoint")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: incomplete temseg checkpoint: no {', '.join(missing)}")
    ckpt["path"] = str(path)
    return ckpt


def _shape(t: Any) -> tuple[int, ...] | None:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def load_weights(net: nn.Module, state_dict: dict[str, Any], source: str) -> None:
    """``net.load_state_dict(state_dict)``, or ValueError naming ``source`` and the missing,
    unexpected and misshapen tensors."""
    own = net.state_dict()
    if not isinstance(state_dict, dict):
        raise ValueError(f"{source}: state_dict is a {type(state_dict).__name__}, not a dict")
    problems = []
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {_shape(state_dict[k])} vs {tuple(own[k].shape)}" for k in own
              if k in state_dict and _shape(state_dict[k]) != tuple(own[k].shape)]
    for label, keys in (("missing", missing), ("unexpected", unexpected),
                        ("wrong shape (file vs model)", shapes)):
        if keys:
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:3])}"
                            + (" ..." if len(keys) > 3 else ""))
    if problems:
        raise ValueError(f"{source}: weights do not match the model config "
                         f"{getattr(net, 'config', '')}: {'; '.join(problems)}")
    net.load_state_dict(state_dict)


def _calibration(tiles: Any) -> torch.Tensor | None:
    """A checkpoint's calibration patches as (N, 1, P, P) float32 (None when absent)."""
    if tiles is None:
        return None
    if not isinstance(tiles, torch.Tensor) or tiles.ndim != 4 or tiles.shape[1] != 1:
        raise ValueError(f"calibration_tiles must be an (N, 1, P, P) tensor, got "
                         f"{getattr(tiles, 'shape', type(tiles).__name__)}")
    return tiles.float()


def model_from_checkpoint(ckpt: dict[str, Any]) -> SegmentationModel:
    """The :class:`SegmentationModel` of a :func:`read_checkpoint` dict, in eval mode."""
    source = ckpt.get("path", "checkpoint")
    try:
        net = build_model(ckpt["model_config"])
        model = SegmentationModel(net, Normalization.from_dict(ckpt["normalization"]),
                                  ClassTable.from_dict(ckpt["classes"]),
                                  int(ckpt["patch_size"]), ckpt.get("pixel_size_um"),
                                  _calibration(ckpt.get("calibration_tiles")))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{source}: bad checkpoint metadata ({type(exc).__name__}: "
                         f"{exc})") from exc
    load_weights(net, ckpt["state_dict"], source)
    return model.eval()


def load_model(path: str | Path, device: str | torch.device = "cpu",
               trust: bool | None = None) -> SegmentationModel:
    """Load a trained temseg model (file or run folder) in eval mode on ``device``.
    ``trust``: see :func:`read_checkpoint`."""
    return model_from_checkpoint(read_checkpoint(path, trust)).to(device)
