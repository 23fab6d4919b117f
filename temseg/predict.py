"""Whole-image prediction and evaluation on in-memory images, written as the input convention
(0/50/100/150/200 masks) plus colour overlays. Slides larger than memory go through
:mod:`temseg.inference` instead."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image
from tqdm import tqdm

from .atomic import atomic_path
from .checkpoint import SegmentationModel
from .data import Sample, read_image
from .inference import sliding_window_inference
from .labels import ClassTable
from .metrics import confusion_matrix, summarize

log = logging.getLogger("temseg.predict")


@dataclass(frozen=True)
class WindowSettings:
    """Sliding-window settings (MONAI names). ``roi_size`` None: the model's patch size."""

    roi_size: int | None = None
    sw_batch_size: int = 4
    overlap: float = 0.25
    mode: str = "gaussian"
    sigma_scale: float = 0.125


@torch.no_grad()
def predict_probabilities(model: SegmentationModel, image: np.ndarray,
                          window: WindowSettings = WindowSettings()) -> np.ndarray:
    """Class probabilities of a raw image: (H, W) any dtype -> (C, H, W) float32."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(model.normalization(image))[None, None].to(device)
    roi = window.roi_size or model.patch_size

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(batch).float(), dim=1)

    probs = sliding_window_inference(x, (roi, roi), window.sw_batch_size, predictor,
                                     overlap=window.overlap, mode=window.mode,
                                     sigma_scale=window.sigma_scale, padding_mode="reflect")
    return probs[0].cpu().numpy()


def segment(model: SegmentationModel, image: np.ndarray,
            window: WindowSettings = WindowSettings()) -> np.ndarray:
    """Class indices of a raw image: (H, W) -> (H, W) uint8."""
    return predict_probabilities(model, image, window).argmax(0).astype(np.uint8)


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


def predict_files(model: SegmentationModel, inputs: Sequence[str | Path], out_dir: str | Path,
                  window: WindowSettings = WindowSettings(), progress: bool = True
                  ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Segment each input file; a file that fails is reported and skipped, the rest go on.

    Returns (written mask paths, [(failed input, reason), ...]).
    """
    done, failed = [], []
    for path in tqdm([Path(p) for p in inputs], desc="predict", disable=not progress,
                     unit="image"):
        try:
            image, pixel_size = read_image(path)
            if pixel_size and model.pixel_size_um and not (
                    0.9 < pixel_size / model.pixel_size_um < 1.1):
                log.warning("%s: pixel size %.4g um differs from the model's %.4g um; "
                            "results may suffer (resample the image)", path, pixel_size,
                            model.pixel_size_um)
            labels = segment(model, image, window)
            done.append(write_outputs(out_dir, path.stem, image, labels, model.classes)["mask"])
        except Exception as exc:  # one bad file must not stop the batch
            log.error("%s: skipped: %s", path, exc)
            failed.append((path, str(exc)))
    return done, failed


def evaluate(model: SegmentationModel, samples: Sequence[Sample],
             window: WindowSettings = WindowSettings(), progress: bool = True) -> dict:
    """Per-class Dice/IoU of ``model`` on whole images (pooled confusion matrix), with a
    per-image breakdown under ``"images"``."""
    n = model.classes.num_classes
    total = np.zeros((n, n), dtype=np.int64)
    per_image = {}
    for s in tqdm(samples, desc="evaluate", disable=not progress, unit="image"):
        cm = confusion_matrix(segment(model, s.image, window), s.labels, n)
        total += cm
        per_image[s.name] = summarize(cm, model.classes.names)["dice"]
    report = summarize(total, model.classes.names)
    report["images"] = per_image
    return report
