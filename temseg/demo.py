"""``temseg demo``: synthesise a small dataset, train a few minutes on the CPU, segment a larger
synthetic slide and report per-class Dice/IoU against its known labels."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import tifffile

from .atomic import atomic_path, write_json
from .inference import Predictor
from .labels import TEM_CLASSES
from .metrics import format_table, summarize
from .models import UNetConfig
from .synth import render, write_dataset
from .train import TrainConfig, train

log = logging.getLogger("temseg.demo")

# A narrow model and small patches: enough for the phantom's five classes in a few CPU minutes.
DEMO_MODEL = UNetConfig(width=16, heads=4)
DEMO_PATCH = 192


def run_demo(out: str | Path = "temseg-demo", epochs: int = 10, minutes: float = 4.0,
             seed: int = 0, n_images: int = 6, image_size: int = 512,
             slide_size: int = 1536) -> dict:
    """Run the demo into ``out``; returns the slide's Dice/IoU report (also ``report.json``).

    Training runs a fixed ``epochs`` (18 steps each; about 3 minutes on 2 CPU cores) so the
    result does not depend on the machine's speed; ``minutes`` caps it on slow machines.
    """
    out = Path(out)
    t0 = time.perf_counter()
    data = out / "data"
    if not (data / "images").is_dir():
        write_dataset(data, n_images=n_images, height=image_size, width=image_size, seed=seed)
    run = out / "run"
    config = TrainConfig(data=str(data), out=str(run), model=DEMO_MODEL, epochs=epochs,
                         time_limit=minutes, batch_size=8, patch_size=DEMO_PATCH,
                         patches_per_image=24, val_crop=image_size, val_fraction=0.2,
                         lr=3e-3, warmup=0.03, seed=seed,
                         # phantoms share one pixel size and 150 steps are few: zooming them
                         # slowed learning (one demo run missed the vessels with it)
                         scale_augment=1.0)
    if (run / "last.pt").exists():  # a previous demo in this folder: start afresh
        for f in run.iterdir():
            f.unlink()
    train(config)

    image, truth = render(slide_size, slide_size, seed=10_000 + seed)
    with atomic_path(out / "slide.tif") as tmp:
        tifffile.imwrite(tmp, image)
    with atomic_path(out / "slide_truth.tif") as tmp:
        tifffile.imwrite(tmp, TEM_CLASSES.decode(truth))
    # exact fp32 torch: the demo's Dice is the same on every CPU
    predictor = Predictor.open(run, backend="torch", device="cpu", amp="off", progress=False)
    result = predictor.predict_file(out / "slide.tif", out, mask=out / "slide_truth.tif")
    assert result.confusion is not None
    report = summarize(result.confusion, TEM_CLASSES.names)
    report["wall_time_s"] = time.perf_counter() - t0
    write_json(out / "report.json", report)
    print(f"\nSynthetic slide {slide_size}x{slide_size} (never seen in training):")
    print(format_table(report))
    print(f"\nWritten to {out}/: run/best.pt (checkpoint), run/curves.png, slide_mask.tif, "
          f"slide_overlay.png, report.json  ({report['wall_time_s']:.0f} s)")
    print(f"Next: temseg predict {run}/best.pt {out}/slide.tif --out {out}/predict")
    return report
