"""Give an existing run's ``best.pt`` the class logit offsets that training now chooses
(``TrainConfig.logit_offsets``, :mod:`temseg.train.offsets`): the same validation crops of
the same images (the run's ``val_images``: its training images with ``--val-fraction 0``),
the same search, written as a new checkpoint. Runs trained before the offsets existed can so
be scored as if trained now (docs/accuracy.md, "Class logit offsets").

    python scripts/logit_offsets.py cv/border5/fold-0 ../shared/data/tem-mouse-cc \
        --out cv/border5-offsets/fold-0/best.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from temseg.checkpoint import load_model, save_checkpoint
from temseg.data import CenterCropDataset, load_dataset
from temseg.data.rescale import resample_samples
from temseg.labels import TEM_CLASSES
from temseg.losses import DiceCELoss
from temseg.train.loop import validate
from temseg.train.offsets import add_to_head, logit_offsets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="training run folder (best.pt, summary.json, "
                    "config.json)")
    ap.add_argument("data", help="the run's data folder (images/, masks/)")
    ap.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    args = ap.parse_args()
    summary = json.loads((args.run / "summary.json").read_text())
    config = json.loads((args.run / "config.json").read_text())
    model = load_model(args.run / "best.pt").eval()
    names = set(summary["val_images"])
    samples = [s for s in load_dataset(args.data) if s.name in names]
    samples = resample_samples(samples, config.get("pixel_size"))
    crops = CenterCropDataset([model.normalization(s.image) for s in samples],
                              [s.labels for s in samples], config.get("val_crop", 512))
    loader = DataLoader(crops, batch_size=max(1, config.get("batch_size", 8) // 4))
    with torch.no_grad():
        cm, _, kept = validate(model.net, loader, DiceCELoss(), torch.device("cpu"),
                               TEM_CLASSES.num_classes)
    offsets = logit_offsets(*kept)
    add_to_head(model.net, offsets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, model)
    print(json.dumps({"run": str(args.run), "offsets": dict(zip(
        TEM_CLASSES.names, [round(o, 2) for o in offsets.tolist()], strict=True))}))


if __name__ == "__main__":
    main()
