"""Segmentation metrics: confusion matrix, per-class Dice and IoU, and their means.

Rule for absent classes: a class that is absent from both the prediction and the ground truth
has no defined Dice/IoU; it is reported as NaN and left out of the means (the mean is over the
classes that occur in the truth or the prediction). A class absent from the truth but predicted
scores 0. Metrics of a data set come from its summed confusion matrix (pixels pooled over all
images), so large images weigh more than small ones.
"""

from __future__ import annotations

import numpy as np
import torch


def confusion_matrix(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor,
                     num_classes: int) -> np.ndarray:
    """Counts ``cm[t, p]`` of pixels with truth ``t`` predicted as ``p``: (C, C) int64.

    ``pred`` and ``target`` hold class indices of the same shape (any shape).
    """
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    if isinstance(target, torch.Tensor):
        target = target.detach().cpu().numpy()
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    idx = target.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def dice_iou(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class Dice and IoU from a (C, C) confusion matrix: two (C,) float64 arrays, NaN for
    classes absent from both truth and prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
    return dice, iou


def summarize(cm: np.ndarray, names: tuple[str, ...] | list[str]) -> dict:
    """A JSON-ready report: per-class Dice/IoU (None for undefined), their means over the
    defined classes, pixel accuracy, and the confusion matrix."""
    dice, iou = dice_iou(cm)

    def clean(a: np.ndarray) -> list[float | None]:
        return [None if np.isnan(x) else float(x) for x in a]

    defined = ~np.isnan(dice)
    return {
        "classes": list(names),
        "dice": dict(zip(names, clean(dice), strict=True)),
        "iou": dict(zip(names, clean(iou), strict=True)),
        "mean_dice": float(np.nanmean(dice)) if defined.any() else None,
        "mean_iou": float(np.nanmean(iou)) if defined.any() else None,
        "classes_in_mean": [n for n, d in zip(names, defined, strict=True) if d],
        "pixel_accuracy": float(np.trace(cm) / max(1, cm.sum())),
        "confusion_matrix": np.asarray(cm).tolist(),
    }


def format_table(report: dict) -> str:
    """A plain-text per-class table of a :func:`summarize` report."""
    lines = [f"{'class':<20}{'Dice':>8}{'IoU':>8}"]
    for name in report["classes"]:
        d, i = report["dice"][name], report["iou"][name]
        lines.append(f"{name:<20}{'-' if d is None else f'{d:.4f}':>8}"
                     f"{'-' if i is None else f'{i:.4f}':>8}")
    md, mi = report["mean_dice"], report["mean_iou"]
    lines.append(f"{'mean':<20}{'-' if md is None else f'{md:.4f}':>8}"
                 f"{'-' if mi is None else f'{mi:.4f}':>8}")
    return "\n".join(lines)
