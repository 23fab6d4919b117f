"""What training sees: one labelled image's patches, as ``temseg train`` draws them, in a PNG
grid; each row the same patches (same seed: same origin, angle and zoom) under another
augmentation, with the class boundaries drawn over the image.

    python scripts/show_patches.py ../shared/data/tem-mouse-cc \\
        sub-370_sample-0003_acq-roi_TEM --elastic 0 4 8 --out docs/img/elastic-patches.png
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from temseg.data import Augment, PatchDataset
from temseg.data.io import load_dataset
from temseg.data.normalize import Normalization
from temseg.data.rescale import resample_samples
from temseg.labels import TEM_CLASSES
from temseg.train.config import DEFAULT_PIXEL_SIZE

PALETTE = np.array(TEM_CLASSES.colors, np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(P, P) normalised image and class indices -> (P, P, 3) uint8: grey, with the pixels
    whose right or lower neighbour has another class in that class's colour."""
    grey = np.clip((image + 1) * 127.5, 0, 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, 2)
    edge = np.zeros(labels.shape, bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1] |= labels[:-1] != labels[1:]
    rgb[edge] = PALETTE[labels[edge]]
    return rgb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="folder with images/ and masks/")
    ap.add_argument("name", help="the sample's name (its image file's stem)")
    ap.add_argument("--elastic", type=float, nargs="+", default=[0.0, 4.0, 8.0],
                    help="one row per --elastic-augment value (px)")
    ap.add_argument("--patches", type=int, default=4, help="patches per row")
    ap.add_argument("--patch-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="PNG to write")
    a = ap.parse_args()
    samples = [s for s in load_dataset(a.data) if s.name == a.name]
    if not samples:
        raise SystemExit(f"{a.data}: no sample named {a.name!r}")
    s = resample_samples(samples, DEFAULT_PIXEL_SIZE)[0]
    image = Normalization()(s.image)
    rows = []
    for e in a.elastic:  # intensity jitter off, so that only the geometry differs by row
        aug = Augment(scale=1.25, contrast=0.0, brightness=0.0, noise=0.0, rot90=False,
                      flips=False, elastic=e, elastic_p=1.0)
        ds = PatchDataset([image], [s.labels], a.patch_size, a.patches, aug, seed=a.seed)
        rows.append(np.concatenate([overlay(x[0].numpy(), y.numpy())
                                    for x, y in (ds[i] for i in range(a.patches))], 1))
    Image.fromarray(np.concatenate(rows, 0)).quantize(64).save(a.out, optimize=True)
    print(f"{a.out}: rows --elastic-augment {' '.join(f'{e:g}' for e in a.elastic)}")


if __name__ == "__main__":
    main()
