"""``temseg demo``: synthesise a small dataset, train a few minutes on the CPU, segment a larger
synthetic slide and report per-class Dice/IoU against its known labels; then segment the
shipped real TEM image with the shipped model and report its Dice against its mask."""

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
                         # phantoms share one pixel size and exposure, and 150 steps are few:
                         # zooming them slowed learning (one demo run missed the vessels with
                         # it), and so do the gamma curve, border weight and weight average
                         # of the real-TEM defaults (tests/test_learning.py)
                         scale_augment=1.0, gamma_augment=1.0, border_weight=0.0,
                         ema_decay=0.0,
                         pixel_size=None)
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
    print(f"\nSynthetic slide {slide_size}x{slide_size} (never seen in training):")
    print(format_table(report))
    report["real_example"] = segment_real_example(out / "real")
    report["wall_time_s"] = time.perf_counter() - t0
    write_json(out / "report.json", report)
    print(f"\nWritten to {out}/: run/best.pt (checkpoint), run/curves.png, slide_mask.tif, "
          f"slide_overlay.png, real/ (the real TEM example), report.json  "
          f"({report['wall_time_s']:.0f} s)")
    print(f"Next: temseg predict {run}/best.pt {out}/slide.tif --out {out}/predict")
    print(f"      temseg predict {SHIPPED} YOUR_IMAGE.tif --out {out}/mine   (the shipped model)")
    return report


SHIPPED = "tem-mouse-cc"


def segment_real_example(out: Path) -> dict | None:
    """Segment the shipped real TEM image with the shipped model into ``out`` and print its
    per-class Dice against the shipped mask; the report (None when either is not
    installed)."""
    from .examples import example_image
    from .pretrained import available

    if SHIPPED not in available():
        print(f"\n(no shipped model {SHIPPED!r} in this installation: real example skipped)")
        return None
    image, mask = example_image(SHIPPED)
    predictor = Predictor.open(SHIPPED, backend="torch", device="cpu", amp="off",
                               progress=False)
    result = predictor.predict_file(image, out, mask=mask)
    assert result.confusion is not None
    report = summarize(result.confusion, predictor.spec.classes.names)
    print(f"\nReal TEM, mouse corpus callosum ({image.name}, MIT, AxonDeepSeg; an image the "
          f"shipped model {SHIPPED!r} never saw), segmented by that model:")
    print(format_table(report))
    print("(blood vessels and Schwann cells are not labelled in this data: undefined)")
    return report
