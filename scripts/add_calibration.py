"""Give a shipped model the calibration patches temseg now keeps with every model it trains
(models packed before stop 11 lack them), taken from the images it was trained on, and
update its SHA-256 in the registry.

    python scripts/add_calibration.py tem-mouse-cc ../shared/data/tem-mouse-cc \\
        --exclude sub-370_sample-0002_acq-roi_TEM
"""

from __future__ import annotations

import argparse
import json

import torch

from temseg.atomic import atomic_path, write_text
from temseg.data import load_dataset
from temseg.data.calibration import calibration_patches
from temseg.data.rescale import resample_samples
from temseg.pretrained import HERE, REGISTRY, sha256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("data")
    parser.add_argument("--exclude", nargs="*", default=[], help="image stems left out")
    args = parser.parse_args()
    registry = json.loads((HERE / REGISTRY.name).read_text())
    path = HERE / registry[args.name]["file"]
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    samples = [s for s in load_dataset(args.data) if s.name not in args.exclude]
    samples = resample_samples(samples, ckpt.get("pixel_size_um"))
    from temseg.data.normalize import Normalization

    norm = Normalization.from_dict(ckpt["normalization"])
    tiles = calibration_patches(samples, norm, int(ckpt["patch_size"]))
    ckpt["calibration_tiles"] = torch.from_numpy(tiles).to(torch.float16)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    registry[args.name]["sha256"] = sha256(path)
    write_text(HERE / REGISTRY.name, json.dumps(registry, indent=2) + "\n")
    print(f"{path}: {len(tiles)} calibration patches from {len(samples)} images, "
          f"{path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
