"""Does resampling to the model's pixel size pay off? Held-out images seen at other scales.

Makes copies of the images of ``--groups`` (e.g. the validation mice of a real run) as if
taken at ``--factors`` times the pixel count per micrometre (anti-aliased bilinear images,
nearest masks, the new pixel size in the TIFF tags), then evaluates the trained model on
each copy with ``resample="always"`` and ``"never"`` and prints mean Dice side by side.

    python benchmarks/resample_effect.py RUN ../shared/data/tem-mouse-cc \\
        --groups sub-370 sub-372 --factors 0.6 0.8 1.25 1.5
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import tifffile

from temseg import load_model
from temseg.data import find_pairs, group_of, read_image
from temseg.inference import Predictor
from temseg.io.resample import ResampledSource
from temseg.io.slides import ArraySource


def rescaled_copy(data: Path, groups: list[str], factor: float, out: Path) -> int:
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    n = 0
    for image_path, mask_path in find_pairs(data):
        if group_of(image_path.stem) not in groups:
            continue
        image, px = read_image(image_path)
        if px is None:
            raise SystemExit(f"{image_path}: no pixel size in the file")
        mask = tifffile.imread(mask_path)
        shape = (round(image.shape[0] * factor), round(image.shape[1] * factor))
        scaled = ResampledSource(ArraySource(image), shape).read(0, shape[0])
        if image.dtype != np.float32:
            info = np.iinfo(image.dtype)
            scaled = np.clip(np.rint(scaled), info.min, info.max).astype(image.dtype)
        res = 1e4 / (px / factor)
        tifffile.imwrite(out / "images" / f"{image_path.stem}.tif", scaled,
                         resolution=(res, res), resolutionunit="CENTIMETER")
        tifffile.imwrite(out / "masks" / f"{image_path.stem}.tif",
                         ResampledSource(ArraySource(mask), shape, order=0).read(0, shape[0]))
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="trained checkpoint or run folder")
    ap.add_argument("data", help="DATA folder (images/ + masks/)")
    ap.add_argument("--groups", nargs="+", required=True, help="held-out groups (mice)")
    ap.add_argument("--factors", type=float, nargs="+", default=[0.6, 0.8, 1.25, 1.5])
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--out", default=None, help="JSON report")
    args = ap.parse_args()
    logging.getLogger("temseg.slide").setLevel(logging.ERROR)  # the expected size warnings
    model = load_model(args.run)
    predictors = {mode: Predictor.open(model, args.backend, "cpu", amp="off", resample=mode,
                                       progress=False) for mode in ("always", "never")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for f in args.factors:
            folder = Path(tmp) / f"x{f}"
            n = rescaled_copy(Path(args.data), args.groups, f, folder)
            row = {"factor": f, "images": n}
            for mode in ("always", "never"):
                report = predictors[mode].evaluate_folder(folder, instances=False)
                row[mode] = report["mean_dice"]
            rows.append(row)
            print(f"x{f}: mean Dice resampled {row['always']:.3f}, as is {row['never']:.3f} "
                  f"({n} images)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
