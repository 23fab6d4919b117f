"""``temseg cv``: leave-groups-out cross-validation of a training recipe.

The image groups (animals: the BIDS ``sub-XXX`` of each file stem) are sorted and dealt
round-robin into K folds. For each fold the recipe (a :class:`~temseg.train.TrainConfig`)
trains on the other folds' images (its own validation split taken from those, as
``temseg train`` does) and the fold's best checkpoint is evaluated on the fold's whole
images, which it has never seen, with the default inference settings (and again with test-
time augmentation). A study that is interrupted resumes where it stopped: finished folds are
kept, an unfinished training resumes from its ``last.pt``.

Files in ``OUT``: ``fold-K/`` (each a training run folder plus ``cv_report.json``),
``cv.json`` (every fold and the summary) and ``cv.md`` (the table, and the machine that
trained each fold: a time budget buys steps).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_json, write_text
from .data import Sample, load_dataset
from .inference import Predictor
from .train import TrainConfig, train

log = logging.getLogger("temseg.cv")


def assign_folds(groups: list[str], folds: int) -> list[list[str]]:
    """The sorted ``groups`` dealt round-robin into ``folds`` lists (each non-empty).
    ValueError when there are fewer than 2 folds or fewer groups than folds."""
    groups = sorted(set(groups))
    if folds < 2 or folds > len(groups):
        raise ValueError(f"--folds {folds}: needs 2 <= folds <= the {len(groups)} image groups "
                         f"(animals) of the data ({', '.join(groups)})")
    return [groups[k::folds] for k in range(folds)]


def _fold_report(config: TrainConfig, k: int, test_groups: list[str], samples: list[Sample],
                 tta: bool) -> dict[str, Any]:
    """Train fold ``k`` (unless its run finished) and evaluate it on its held-out images."""
    out = Path(config.out) / f"fold-{k}"
    train_s = [s for s in samples if s.group not in test_groups]
    test_s = [s for s in samples if s.group in test_groups]
    summary_file = out / "summary.json"
    if summary_file.is_file():
        log.info("fold %d: training finished before, evaluating %s", k, out)
        summary = json.loads(summary_file.read_text())
    else:
        log.info("fold %d: training on %d images, testing on %s (%d images)", k,
                 len(train_s), ", ".join(test_groups), len(test_s))
        summary = train(replace(config, out=str(out), resume=True), samples=train_s)
    report: dict[str, Any] = {"fold": k, "test_groups": test_groups,
                              "test_images": [s.name for s in test_s],
                              "steps": summary["steps"], "elapsed_s": summary["elapsed_s"],
                              "best_epoch": summary["best_epoch"],
                              "machine": summary.get("machine")}
    predictor = Predictor.open(out, progress=False)  # opened once; TTA is a setting
    for key, use_tta in (("plain", False), ("tta", True))[: 2 if tta else 1]:
        ev = replace(predictor, tta=use_tta).evaluate_samples(test_s)
        report[key] = {"mean_dice": ev["mean_dice"], "dice": ev["dice"],
                       "mean_iou": ev["mean_iou"], "images": ev["images"],
                       "backend": ev["backend"], "precision": ev["precision"]}
    write_json(out / "cv_report.json", report)
    return report


def summarize_folds(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation and minimum over folds of each fold's whole-image mean Dice
    (over the classes present), without and with TTA."""
    summary: dict[str, Any] = {"folds": len(reports)}
    for key in ("plain", "tta"):
        values = [r[key]["mean_dice"] for r in reports if key in r]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)),
                            "min": float(np.min(values)), "max": float(np.max(values))}
    return summary


def format_cv_table(reports: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The study as a Markdown table: one row per fold, then the mean, spread and minimum."""
    classes = [c for c, v in reports[0]["plain"]["dice"].items() if v is not None]
    tta = "tta" in summary
    head = ["fold", "test mice", "steps"] + classes + ["mean Dice"] + (["mean Dice, TTA"]
                                                                       if tta else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        cells = [str(r["fold"]), " ".join(r["test_groups"]), str(r["steps"])]
        cells += [f"{r['plain']['dice'][c]:.3f}" for c in classes]
        cells += [f"{r['plain']['mean_dice']:.3f}"]
        cells += [f"{r['tta']['mean_dice']:.3f}"] if tta else []
        lines.append("| " + " | ".join(cells) + " |")
    stats = [f"**{summary[k]['mean']:.3f} +- {summary[k]['std']:.3f} (min "
             f"{summary[k]['min']:.3f})**" for k in ("plain", "tta") if k in summary]
    per_class = [f"{np.mean([r['plain']['dice'][c] for r in reports]):.3f}" for c in classes]
    lines.append("| " + " | ".join(["**mean +- sd (min)**", "", ""] + per_class + stats) + " |")
    return "\n".join(lines + [""] + _machine_lines(reports))


def _machine_lines(reports: list[dict[str, Any]]) -> list[str]:
    """Which machine trained which folds: a time budget buys steps, so results from
    different CPUs or thread counts do not compare (docs/accuracy.md)."""
    seen: dict[str, list[str]] = {}
    for r in reports:
        seen.setdefault(_machine_text(r.get("machine")), []).append(str(r["fold"]))
    return [f"Trained on: {text} (fold{'s' * (len(f) > 1)} {', '.join(f)})"
            for text, f in seen.items()]


def _machine_text(m: dict[str, Any] | None) -> str:
    """One line for :func:`temseg.policy.machine`'s record."""
    if m is None:
        return "unrecorded (trained before temseg recorded it)"
    flags = f" [{m['cpu_flags']}]" if m["cpu_flags"] else ""
    cuda = f", {m['cuda']}" if m.get("cuda") else ""
    return (f"{m['cpu_model']}{flags}, {m['torch_threads']} torch threads of "
            f"{m['logical_cpus']} CPUs, torch {m['torch']}{cuda}")


def cross_validate(config: TrainConfig, folds: int = 3, tta: bool = True) -> dict[str, Any]:
    """Run the study of ``config`` (its ``data``; ``out`` is the study folder) over
    ``folds`` leave-groups-out folds; returns what ``OUT/cv.json`` holds."""
    samples = load_dataset(config.data)
    fold_groups = assign_folds([s.group for s in samples], folds)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "recipe.json", config.to_dict())
    reports = [_fold_report(config, k, g, samples, tta) for k, g in enumerate(fold_groups)]
    summary = summarize_folds(reports)
    result = {"recipe": config.to_dict(), "folds": reports, "summary": summary}
    write_json(out / "cv.json", result)
    write_text(out / "cv.md", format_cv_table(reports, summary) + "\n")
    return result
