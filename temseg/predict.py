"""Prediction and evaluation, written as the input convention (0/50/100/150/200 masks) plus
colour overlays.

:func:`segment` / :func:`predict_probabilities` work on in-memory images (the reference
path); :func:`predict_files`, :func:`evaluate_files` and :func:`evaluate` go through the
streaming whole-slide path :func:`temseg.inference.slide.segment_slide` (lazy TIFF reading,
bounded memory, identical labels)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile
import torch
from PIL import Image
from tqdm import tqdm

from .atomic import atomic_path
from .checkpoint import SegmentationModel
from .data import DataError, Sample, find_pairs
from .inference import sliding_window_inference
from .inference.backends import make_backend
from .inference.slide import SlideResult, segment_slide
from .labels import ClassTable
from .metrics import summarize

if TYPE_CHECKING:
    from .export.metadata import ModelInfo
    from .inference.backends import Backend

log = logging.getLogger("temseg.predict")


@dataclass(frozen=True)
class WindowSettings:
    """Sliding-window settings (MONAI names). ``roi_size`` None: the model's ``roi_size``
    (twice its training patch)."""

    roi_size: int | None = None
    sw_batch_size: int = 4
    overlap: float = 0.25
    mode: str = "gaussian"
    sigma_scale: float = 0.125


@torch.no_grad()
def predict_probabilities(model: SegmentationModel | ModelInfo, image: np.ndarray,
                          window: WindowSettings = WindowSettings(),
                          backend: Backend | None = None) -> np.ndarray:
    """Class probabilities of a raw image: (H, W) any dtype -> (C, H, W) float32.

    ``backend`` (see :mod:`temseg.inference.backends`) runs the tiles instead of ``model``
    itself; ``model`` then only supplies the normalisation and the patch size (an exported
    model's :class:`~temseg.export.ModelInfo` is enough).
    """
    if backend is None:
        assert isinstance(model, SegmentationModel), "a ModelInfo needs a backend"
        model.eval()
        device = next(model.parameters()).device
    else:
        device = torch.device("cpu")  # backends take CPU tiles
    x = torch.from_numpy(model.normalization(image))[None, None].to(device)
    roi = window.roi_size or model.roi_size

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        if backend is not None:
            return backend(batch)
        return torch.softmax(model(batch).float(), dim=1)

    probs = sliding_window_inference(x, (roi, roi), window.sw_batch_size, predictor,
                                     overlap=window.overlap, mode=window.mode,
                                     sigma_scale=window.sigma_scale, padding_mode="reflect")
    return probs[0].cpu().numpy()


def segment(model: SegmentationModel | ModelInfo, image: np.ndarray,
            window: WindowSettings = WindowSettings(),
            backend: Backend | None = None) -> np.ndarray:
    """Class indices of a raw image: (H, W) -> (H, W) uint8 (``backend``: see
    :func:`predict_probabilities`)."""
    return predict_probabilities(model, image, window, backend).argmax(0).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, classes: ClassTable,
            alpha: float = 0.45, max_side: int = 4096) -> np.ndarray:
    """RGB (h, w, 3) uint8: the image in grey with the classes (except background) tinted in
    their colours; downsampled so the longest side is at most ``max_side``."""
    step = max(1, int(np.ceil(max(image.shape) / max_side)))
    img, lab = image[::step, ::step], labels[::step, ::step]
    lo, hi = np.percentile(img, [0.5, 99.5])
    grey = np.clip((img.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1) * 255
    rgb = np.repeat(grey[..., None], 3, axis=2)
    color = classes.colorize(lab).astype(np.float32)
    tint = (lab > 0)[..., None]
    rgb = np.where(tint, (1 - alpha) * rgb + alpha * color, rgb)
    return rgb.astype(np.uint8)


def write_outputs(out_dir: str | Path, stem: str, image: np.ndarray, labels: np.ndarray,
                  classes: ClassTable) -> dict[str, Path]:
    """Write ``<stem>_mask.tif`` (grey values of the class table) and ``<stem>_overlay.png``
    into ``out_dir``, each atomically."""
    out_dir = Path(out_dir)
    mask_path, overlay_path = out_dir / f"{stem}_mask.tif", out_dir / f"{stem}_overlay.png"
    with atomic_path(mask_path) as tmp:
        tifffile.imwrite(tmp, classes.decode(labels), compression="zlib",
                         bigtiff=labels.size > 2**31)
    with atomic_path(overlay_path) as tmp:
        Image.fromarray(overlay(image, labels, classes)).save(tmp, format="PNG")
    return {"mask": mask_path, "overlay": overlay_path}


def _backend(model: SegmentationModel | ModelInfo, backend: str | Backend,
             amp: str = "off") -> Backend:
    """A backend instance (created once per batch of files; ``amp``: see
    :func:`temseg.inference.backends.inference_amp`)."""
    if not isinstance(backend, str):
        return backend
    if not isinstance(model, SegmentationModel):
        raise ValueError(f"backend {backend!r} needs a checkpoint; exported models come with "
                         "their backend (temseg.inference.backends.open_for_predict)")
    return make_backend(backend, model, next(model.parameters()).device, amp=amp)


def _slide_kwargs(model: SegmentationModel | ModelInfo, window: WindowSettings) -> dict:
    return {"roi_size": window.roi_size or model.roi_size,
            "sw_batch_size": window.sw_batch_size, "overlap": window.overlap,
            "mode": window.mode, "sigma_scale": window.sigma_scale}


def predict_files(model: SegmentationModel | ModelInfo, inputs: Sequence[str | Path],
                  out_dir: str | Path, window: WindowSettings = WindowSettings(),
                  progress: bool = True, *,
                  backend: str | Backend = "torch", tta: bool = False,
                  probabilities: bool = False, uncertainty: bool = False,
                  pixel_size_um: float | None = None, resample: str = "auto",
                  amp: str = "off") -> tuple[list[Path], list[tuple[Path, str]]]:
    """Segment each input file with :func:`~temseg.inference.slide.segment_slide` into
    ``out_dir/<stem>_mask.tif`` (tiled BigTIFF, grey values) and ``<stem>_overlay.png``,
    plus ``<stem>_probabilities.tif`` / ``<stem>_uncertainty.tif`` when asked. ``model`` is
    a checkpoint's model or an export's ``ModelInfo`` (then ``backend`` is an instance). A
    file that fails is reported and skipped, the rest go on; outputs are written atomically.
    ``pixel_size_um`` (default: each file's tags) and ``resample``: see
    :func:`~temseg.inference.slide.segment_slide`; ``amp``: precision of a torch backend made
    from a name.

    Returns (written mask paths, [(failed input, reason), ...]).
    """
    out_dir = Path(out_dir)
    run = _backend(model, backend, amp)
    done, failed = [], []
    for path in [Path(p) for p in inputs]:
        stem = path.stem
        try:
            result = segment_slide(
                model, path, out_dir / f"{stem}_mask.tif", backend=run, tta=tta,
                overlay_path=out_dir / f"{stem}_overlay.png",
                probabilities_path=out_dir / f"{stem}_probabilities.tif" if probabilities
                else None,
                uncertainty_path=out_dir / f"{stem}_uncertainty.tif" if uncertainty else None,
                progress=progress, pixel_size_um=pixel_size_um, resample=resample,
                **_slide_kwargs(model, window))
            log.info("%s: %dx%d px in %.1f s (%.2f MPix/s) -> %s", path, result.shape[1],
                     result.shape[0], result.seconds, result.mpix_per_s,
                     result.outputs["mask"])
            done.append(result.outputs["mask"])
        except Exception as exc:  # one bad file must not stop the batch
            reason = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            log.error("skipped: %s", reason)
            failed.append((path, reason))
    return done, failed


def _report(total: np.ndarray, per_image: dict[str, np.ndarray], classes: ClassTable) -> dict:
    report = summarize(total, classes.names)
    report["images"] = {k: summarize(cm, classes.names)["dice"] for k, cm in per_image.items()}
    return report


def evaluate_files(model: SegmentationModel | ModelInfo, data_dir: str | Path,
                   window: WindowSettings = WindowSettings(), progress: bool = True, *,
                   backend: str | Backend = "torch", tta: bool = False,
                   pixel_size_um: float | None = None, resample: str = "auto",
                   amp: str = "off") -> dict:
    """Per-class Dice/IoU of ``model`` on ``DATA/images`` + ``DATA/masks`` (pooled confusion
    matrix, per-image Dice under ``"images"``), streaming: images and masks are read lazily
    band by band (any slide size). ``amp``: precision of a torch backend made from a name."""
    run = _backend(model, backend, amp)
    n = model.classes.num_classes
    total = np.zeros((n, n), dtype=np.int64)
    per_image: dict[str, np.ndarray] = {}
    for image_path, mask_path in find_pairs(data_dir):
        result = segment_slide(model, image_path, None, backend=run, tta=tta, mask=mask_path,
                               progress=progress, pixel_size_um=pixel_size_um,
                               resample=resample, **_slide_kwargs(model, window))
        assert result.confusion is not None
        total += result.confusion
        per_image[image_path.stem] = result.confusion
    return _report(total, per_image, model.classes)


def evaluate(model: SegmentationModel | ModelInfo, samples: Sequence[Sample],
             window: WindowSettings = WindowSettings(), progress: bool = True, *,
             backend: str | Backend = "torch", tta: bool = False) -> dict:
    """Per-class Dice/IoU of ``model`` on in-memory samples (pooled confusion matrix), with a
    per-image breakdown under ``"images"``; same streaming path as :func:`evaluate_files`."""
    run = _backend(model, backend)
    n = model.classes.num_classes
    total = np.zeros((n, n), dtype=np.int64)
    per_image: dict[str, np.ndarray] = {}
    for s in tqdm(samples, desc="evaluate", disable=not progress, unit="image"):
        if s.image.shape != s.labels.shape:
            raise DataError(f"{s.name}: labels {s.labels.shape} and image {s.image.shape} "
                            "differ in size")
        result: SlideResult = segment_slide(model, s.image, None, backend=run, tta=tta,
                                            mask=s.labels, progress=False,
                                            pixel_size_um=s.pixel_size_um,
                                            **_slide_kwargs(model, window))
        assert result.confusion is not None
        total += result.confusion
        per_image[s.name] = result.confusion
    return _report(total, per_image, model.classes)
