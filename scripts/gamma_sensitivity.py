"""How much a model's Dice moves when its input's exposure does: each labelled image put
through gamma curves (``255 * (x / 255) ** g``, a monotone change of the mid-tones that the
percentile normalisation does not undo) and segmented; one row per image and gamma.

    python scripts/gamma_sensitivity.py cv/default/fold-1 \\
        ../shared/data/tem-mouse-cc/images/sub-370_sample-0003_acq-roi_TEM.tif \\
        --gammas 0.6 1 1.5 2.5

A model that has learnt the tissue rather than the exposure of its training images keeps its
Dice across the row (docs/accuracy.md, "Exposure").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from temseg.data.io import read_image, read_mask
from temseg.inference.predictor import Predictor
from temseg.labels import TEM_CLASSES
from temseg.metrics import confusion_matrix, dice_iou


def gamma_curve(image: np.ndarray, gamma: float) -> np.ndarray:
    """(H, W) uint8 image -> (H, W) float32 ``255 * (image / 255) ** gamma``."""
    return (255.0 * (image.astype(np.float32) / 255.0) ** gamma).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="run folder, checkpoint or shipped model name")
    ap.add_argument("images", nargs="+", help="images with a mask in ../masks/ of the same name")
    ap.add_argument("--gammas", nargs="+", type=float, default=[0.6, 0.8, 1.0, 1.5, 2.0, 2.5])
    args = ap.parse_args()
    predictor = Predictor.open(args.model, backend="torch")
    n = TEM_CLASSES.num_classes
    print("image | gamma | mean intensity | mean Dice over the classes present")
    for path in map(Path, args.images):
        image, pixel_size = read_image(path)
        truth = read_mask(path.parent.parent / "masks" / path.name)
        for g in args.gammas:
            curved = gamma_curve(image, g)
            pred = predictor.segment(curved, pixel_size)
            dice, _ = dice_iou(confusion_matrix(pred, truth, n))
            present = np.bincount(truth.ravel(), minlength=n) > 0
            print(f"{path.stem} | {g:g} | {curved.mean():.0f} | "
                  f"{np.nanmean(np.asarray(dice, float)[present]):.3f}")


if __name__ == "__main__":
    main()
