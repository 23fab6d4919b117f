"""Instance-level evaluation: instances of the truth and the prediction built by the same
rule (:mod:`temseg.morphometrics.instances`), matched one-to-one per class at IoU >= 0.5.

Matching: candidate pairs are a truth and a predicted instance of the same class with IoU >=
``iou``; they are taken greedily by decreasing IoU (ties: lower truth id, then lower
predicted id), each instance at most once. Above 0.5 the match is unique anyway (two
instances cannot both overlap one by more than half of their union); at exactly 0.5 the
greedy order decides. So a merged pair in the prediction matches at most one truth fibre.

Scores per class: TP, FP = predicted - TP, FN = true - TP, precision, recall, F1, panoptic
quality PQ = SQ x RQ with SQ = mean IoU of the matches and RQ = F1, and the count error
(predicted - true count, and relative to the true count). Undefined ratios are None.
"""

from __future__ import annotations

import numpy as np

from ..labels import TEM_CLASSES, ClassTable
from .instances import SplitRule
from .measure import instance_classes_of, measure_mask

__all__ = ["combine_instance_scores", "instance_labels", "instance_scores", "match_instances"]

_COUNTS = ("n_true", "n_pred", "tp", "fp", "fn", "iou_sum")


def instance_labels(labels: np.ndarray, classes: ClassTable = TEM_CLASSES,
                    instance_classes: tuple[str | int, ...] | None = None,
                    rule: SplitRule | None = None, indices: bool | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Instance label image of a (H, W) mask (class indices or grey values).

    Returns:
        ids: (H, W) int32 instance ids 1..N (0: no instance), raster order of first pixels.
        id_class: (N + 1,) int64 class index of each id (``id_class[0] = 0``).
    """
    res = measure_mask(labels, classes=classes, instance_classes=instance_classes, rule=rule,
                       indices=indices, return_labels=True)
    assert res.labels is not None
    return res.labels, np.concatenate([[0], res.table["class"]]).astype(np.int64)


def match_instances(truth: np.ndarray, pred: np.ndarray, truth_class: np.ndarray,
                    pred_class: np.ndarray, iou: float = 0.5
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches of same-class instances with IoU >= ``iou``.

    Args:
        truth, pred: (H, W) int instance ids (0 = none).
        truth_class, pred_class: (Nt + 1,), (Np + 1,) class of each id.

    Returns:
        pairs: (k, 2) int64 matched (truth id, predicted id).
        ious: (k,) float64 their IoU.
    """
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
    t, p = truth.ravel().astype(np.int64), pred.ravel().astype(np.int64)
    both = (t > 0) & (p > 0)
    both &= truth_class[t] == pred_class[p]
    n_p = len(pred_class)
    keys, inter = np.unique(t[both] * n_p + p[both], return_counts=True)
    ti, pi = keys // n_p, keys % n_p
    area_t = np.bincount(t, minlength=len(truth_class))
    area_p = np.bincount(p, minlength=n_p)
    ious = inter / (area_t[ti] + area_p[pi] - inter)
    ok = ious >= iou
    ti, pi, ious = ti[ok], pi[ok], ious[ok]
    order = np.lexsort((pi, ti, -ious))
    used_t, used_p, pairs, kept = set(), set(), [], []
    for k in order:
        if ti[k] in used_t or pi[k] in used_p:
            continue
        used_t.add(ti[k])
        used_p.add(pi[k])
        pairs.append((ti[k], pi[k]))
        kept.append(ious[k])
    return np.asarray(pairs, np.int64).reshape(-1, 2), np.asarray(kept, np.float64)


def _ratios(s: dict) -> dict:
    """Add precision, recall, F1, SQ, RQ, PQ and count errors to summed counts."""
    tp, fp, fn = s["tp"], s["fp"], s["fn"]
    half = tp + 0.5 * fp + 0.5 * fn
    f1 = tp / half if half else None
    s.update({
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": f1, "rq": f1,
        "sq": s["iou_sum"] / tp if tp else None,
        "pq": s["iou_sum"] / half if half else None,
        "count_error": s["n_pred"] - s["n_true"],
        "count_error_relative": ((s["n_pred"] - s["n_true"]) / s["n_true"]
                                 if s["n_true"] else None),
    })
    return s


def instance_scores(truth: np.ndarray, pred: np.ndarray, classes: ClassTable = TEM_CLASSES,
                    iou: float = 0.5, instance_classes: tuple[str | int, ...] | None = None,
                    rule: SplitRule | None = None) -> dict[str, dict]:
    """Instance metrics per class of a predicted (H, W) mask against the truth.

    Args:
        truth, pred: (H, W) masks (class indices or grey values, detected).
        classes: the class table.
        iou: matching threshold.
        instance_classes: classes with instances (default myelinated, unmyelinated axons).
        rule: split rule, the same for both.

    Returns:
        class name -> {n_true, n_pred, tp, fp, fn, iou_sum, precision, recall, f1, sq, rq,
        pq, count_error, count_error_relative}.
    """
    t_ids, t_cls = instance_labels(truth, classes, instance_classes, rule)
    p_ids, p_cls = instance_labels(pred, classes, instance_classes, rule)
    pairs, ious = match_instances(t_ids, p_ids, t_cls, p_cls, iou)
    matched_cls = t_cls[pairs[:, 0]]
    out = {}
    for c in instance_classes_of(classes, instance_classes):
        tp = int((matched_cls == c).sum())
        n_t, n_p = int((t_cls[1:] == c).sum()), int((p_cls[1:] == c).sum())
        out[classes.names[c]] = _ratios({
            "n_true": n_t, "n_pred": n_p, "tp": tp, "fp": n_p - tp, "fn": n_t - tp,
            "iou_sum": float(ious[matched_cls == c].sum())})
    return out


def combine_instance_scores(per_image: list[dict[str, dict]]) -> dict[str, dict]:
    """Pool :func:`instance_scores` of several images: counts and IoU sums are added, the
    ratios recomputed (PQ of the pooled matches, as COCO panoptic)."""
    pooled: dict[str, dict] = {}
    for scores in per_image:
        for name, s in scores.items():
            acc = pooled.setdefault(name, dict.fromkeys(_COUNTS, 0))
            for k in _COUNTS:
                acc[k] += s[k]
    return {name: _ratios(acc) for name, acc in pooled.items()}
