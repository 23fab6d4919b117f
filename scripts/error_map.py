"""Where a model goes wrong on a labelled image: one PNG of four panels side by side (the
image, the true labels, the predicted labels, the image with the wrong pixels in magenta),
and the confusion matrix as fractions of the image's pixels on stdout.

    python scripts/error_map.py cv/default/fold-1 \\
        ../shared/data/tem-mouse-cc/images/sub-370_sample-0003_acq-roi_TEM.tif \\
        ../shared/data/tem-mouse-cc/masks/sub-370_sample-0003_acq-roi_TEM.tif \\
        --out docs/img/fold1-sub-370-0003.png --width 1200
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from temseg.data.io import read_image, read_mask
from temseg.inference.predictor import Predictor
from temseg.labels import TEM_CLASSES
from temseg.metrics import confusion_matrix

PALETTE = np.array(TEM_CLASSES.colors, np.uint8)  # the overlays' class colours


def error_panels(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(H, W) image, true and predicted class indices -> (H, 4W, 3) uint8 panels."""
    g = (image.astype(np.float32) - image.min()) / (float(np.ptp(image)) + 1e-6) * 255
    grey = np.repeat(g[..., None], 3, 2).astype(np.uint8)
    wrong = np.where((truth != pred)[..., None], np.array([255, 0, 255], np.uint8), grey)
    return np.concatenate([grey, PALETTE[truth], PALETTE[pred], wrong], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="run folder, checkpoint or shipped model name")
    ap.add_argument("image")
    ap.add_argument("mask")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--width", type=int, default=None, help="resize the PNG to this width")
    args = ap.parse_args()
    image, pixel_size = read_image(args.image)
    truth = read_mask(args.mask)
    pred = Predictor.open(args.model, backend="torch").segment(image, pixel_size)
    cm = confusion_matrix(pred, truth, TEM_CLASSES.num_classes)
    print("rows: true class, columns: predicted, fractions of the pixels\n",
          np.round(cm / truth.size, 3))
    out = Image.fromarray(error_panels(image, truth, pred))
    if args.width:
        out = out.resize((args.width, round(out.height * args.width / out.width)),
                         Image.BILINEAR)
    out.save(args.out, optimize=True)


if __name__ == "__main__":
    main()
