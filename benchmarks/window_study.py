"""Window settings against held-out Dice and executed FLOPs per slide pixel.

For each fold of a ``temseg cv`` study, the fold's unseen images are laid out side by side
into one mosaic (:func:`mosaic`: image and mask, so tiles straddle real tissue at every
border; the images are 600 px, about one 512 px tile at the model's pixel size) and its model
segments the mosaic with each (roi size, overlap), gaussian blending, through the default
backend. FLOP/px is what a whole slide costs at those settings: the model's forward FLOPs per
tile pixel at that roi (counted, attention included) times the tile pixels per slide pixel of
the overlapping grid on a 16384^2 slide.

    python -m benchmarks.window_study CV ../shared/data/tem-mouse-cc --out build/window.json

Prints a Markdown table (docs/benchmarks.md, "Less wasted overlap").
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from temseg.atomic import write_json
from temseg.data import load_dataset
from temseg.inference import Predictor, SlidingWindowInferer
from temseg.inference.backends import open_backend
from temseg.metrics import summarize

ROIS = (512, 768, 1024)
OVERLAPS = (0.25, 0.1875, 0.125, 0.0625)
SLIDE = 16384


VARIANTS = (lambda a: a, lambda a: a[:, ::-1], lambda a: a[::-1], lambda a: a[::-1, ::-1])


def mosaic(samples: list) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(image, labels, pixel size): each of ``samples`` four times (as it is, mirrored left-
    right, upside down, both), tiled row-major on a square-ish grid, so that the mosaic
    spans several tiles of every window setting and each image weighs the same (empty cells
    at the end repeat the first images, transposed). Cells have the largest image's size."""
    h = max(s.image.shape[0] for s in samples)
    w = max(s.image.shape[1] for s in samples)
    cells = [(s, v) for v in VARIANTS for s in samples]
    cols = math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / cols)
    image = np.zeros((rows * h, cols * w), samples[0].image.dtype)
    labels = np.zeros((rows * h, cols * w), np.uint8)
    for i, (r, c) in enumerate(itertools.product(range(rows), range(cols))):
        s, v = cells[i] if i < len(cells) else (cells[i - len(cells)][0], np.transpose)
        im, lb = v(s.image), v(s.labels)
        image[r * h:r * h + im.shape[0], c * w:c * w + im.shape[1]] = im
        labels[r * h:r * h + im.shape[0], c * w:c * w + im.shape[1]] = lb
    return image, labels, samples[0].pixel_size_um


def flops_per_slide_pixel(net: Any, roi: int, overlap: float) -> float:
    """Executed forward FLOPs per slide pixel at ``roi`` / ``overlap`` on a large slide."""
    from temseg import _C

    from .roofline import flops_per_pixel

    tiles = len(_C.TileGrid(SLIDE, SLIDE, (roi, roi), (overlap, overlap)))
    return flops_per_pixel(net, roi) * tiles * roi * roi / SLIDE**2


def fold_rows(run: Path, samples: list) -> list[dict[str, Any]]:
    from temseg.checkpoint import load_model

    report = json.loads((run / "cv_report.json").read_text())
    test = [s for s in samples if s.group in report["test_groups"]]
    image, labels, px = mosaic(test)
    backend = open_backend(run)
    net = load_model(run).net
    rows = []
    for roi, overlap in itertools.product(ROIS, OVERLAPS):
        predictor = Predictor(backend, SlidingWindowInferer(roi, 4, overlap, "gaussian"),
                              progress=False)
        cm = predictor.predict(image, pixel_size_um=px, mask=labels).confusion
        dice = summarize(cm, backend.spec.classes.names)["mean_dice"]
        rows.append({"fold": run.name, "roi": roi, "overlap": overlap, "mean_dice": dice,
                     "flops_per_px": flops_per_slide_pixel(net, roi, overlap),
                     "backend": backend.name, "mosaic": list(image.shape)})
        logging.info("%s roi %d overlap %.4g: Dice %.4f", run.name, roi, overlap, dice)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    folds = sorted({r["fold"] for r in rows})
    ref = {f: next(r["mean_dice"] for r in rows if r["fold"] == f and r["roi"] == 512
                   and r["overlap"] == 0.25) for f in folds}
    lines = ["| roi | overlap | kFLOP / slide px | " + " | ".join(folds)
             + " | mean | vs 512 / 0.25 |", "|---:|---:|---:|" + "---:|" * (len(folds) + 2)]
    for roi, overlap in itertools.product(ROIS, OVERLAPS):
        rs = {r["fold"]: r for r in rows if r["roi"] == roi and r["overlap"] == overlap}
        mean = sum(rs[f]["mean_dice"] for f in folds) / len(folds)
        delta = mean - sum(ref.values()) / len(folds)
        lines.append(f"| {roi} | {overlap} | {rs[folds[0]]['flops_per_px'] / 1e3:,.0f} | "
                     + " | ".join(f"{rs[f]['mean_dice']:.4f}" for f in folds)
                     + f" | {mean:.4f} | {delta:+.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv", type=Path, help="a temseg cv output folder")
    parser.add_argument("data", type=Path, help="the data folder it was run on")
    parser.add_argument("--out", type=Path, default=Path("build/window_study.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    samples = load_dataset(args.data)
    rows = [r for run in sorted(args.cv.glob("fold-*")) if (run / "cv_report.json").is_file()
            for r in fold_rows(run, samples)]
    write_json(args.out, {"rows": rows})
    print(table(rows))


if __name__ == "__main__":
    main()
