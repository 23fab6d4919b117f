"""How much of a model's loss is the thin background lines between touching axons: each
labelled image segmented, then scored as it is and with the truth's thin background lines
(:func:`temseg.losses.thin_background` at the mask's resolution) painted into the prediction.
The gap between the two is what drawing those lines right would gain.

    python scripts/border_oracle.py cv/gamma25/fold-0 cv/fold0/test/images/*.tif --size 5

One row per image, then the pooled mean Dice over the classes present (``temseg evaluate``'s
score) both ways (docs/accuracy.md, "The lines between touching axons").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from temseg.data.io import read_image, read_mask
from temseg.inference.predictor import Predictor
from temseg.labels import TEM_CLASSES
from temseg.losses import thin_background
from temseg.metrics import confusion_matrix, summarize


def mean_dice(cm: np.ndarray) -> float:
    """``temseg evaluate``'s mean Dice of a confusion matrix."""
    return summarize(cm, TEM_CLASSES.names)["mean_dice"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="run folder, checkpoint or shipped model name")
    ap.add_argument("images", nargs="+", help="images with a mask in ../masks/ of the same name")
    ap.add_argument("--size", type=int, default=3,
                    help="opening size: lines narrower than this many pixels (odd)")
    args = ap.parse_args()
    predictor = Predictor.open(args.model, backend="torch")
    n = TEM_CLASSES.num_classes
    pooled = {"as is": np.zeros((n, n), np.int64), "lines right": np.zeros((n, n), np.int64)}
    print("image | thin lines / background | mean Dice as is | with the lines right")
    for path in map(Path, args.images):
        image, pixel_size = read_image(path)
        truth = read_mask(path.parent.parent / "masks" / path.name)
        pred = predictor.segment(image, pixel_size)
        thin = thin_background(torch.from_numpy(truth.astype(np.int64))[None], args.size)[0].numpy()
        fixed = np.where(thin, 0, pred).astype(pred.dtype)
        cms = {"as is": confusion_matrix(pred, truth, n),
               "lines right": confusion_matrix(fixed, truth, n)}
        for k, cm in cms.items():
            pooled[k] += cm
        share = thin.sum() / max(1, int((truth == 0).sum()))
        print(f"{path.stem} | {share:.2f} | {mean_dice(cms['as is']):.3f} | "
              f"{mean_dice(cms['lines right']):.3f}")
    print(f"pooled | | {mean_dice(pooled['as is']):.4f} | {mean_dice(pooled['lines right']):.4f}")


if __name__ == "__main__":
    main()
