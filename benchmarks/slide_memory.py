"""Peak resident memory of ``temseg predict`` on large synthetic slides.

For each size N it writes an N x N synthetic tiled BigTIFF (:func:`temseg.synth.write_slide`,
kept in ``--workdir`` for reuse), runs::

    /usr/bin/time -v .venv/bin/temseg predict MODEL slide_N.tif --out out_N --backend torch \
        --amp off --no-progress

with a narrow untrained checkpoint (memory does not depend on the weights), parses "Maximum
resident set size" and the wall time, then checks the streamed labels against the in-memory
path (:func:`temseg.inference.sliding_window_inference` with the same backend and the slide's
normalisation) on a crop aligned to the tile grid (its interior sees exactly the same tiles).
Results go to a JSON file and a table on stdout.

    python benchmarks/slide_memory.py --sizes 30000 15000 --out benchmarks/results/slide_memory.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from temseg.checkpoint import SegmentationModel, default_roi_size, save_checkpoint
from temseg.inference import sliding_window_inference
from temseg.inference.backends import TorchBackend
from temseg.io.slides import open_slide
from temseg.models import UNetConfig, build_model
from temseg.synth import write_slide

NARROW = UNetConfig(width=2, depth=2, blocks_per_stage=1, bottleneck_blocks=1, heads=1,
                    attention=False)
PATCH = 256
ROI = default_roi_size(PATCH)  # the tile `temseg predict` uses by default (512)
OVERLAP = 0.25
BATCH = 8


def make_checkpoint(path: Path) -> SegmentationModel:
    """A narrow untrained model (seeded; zero head bias so that several classes show up)
    saved to ``path``."""
    torch.manual_seed(0)
    model = SegmentationModel(build_model(NARROW), patch_size=PATCH).eval()
    with torch.no_grad():
        model.net.head.bias.zero_()
    save_checkpoint(path, model)
    return model


def run_predict(model_path: Path, slide: Path, out_dir: Path) -> dict:
    """``/usr/bin/time -v temseg predict ...``: peak RSS (kB), wall time (s), exit code."""
    temseg = Path(sys.executable).with_name("temseg")
    cmd = ["/usr/bin/time", "-v", str(temseg), "predict", str(model_path), str(slide),
           "--out", str(out_dir), "--backend", "torch", "--amp", "off",
           "--sw-batch-size", str(BATCH),
           "--overlap", str(OVERLAP), "--roi-size", str(ROI), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode != 0 or rss is None:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"command": " ".join(cmd[2:]), "max_rss_kb": int(rss.group(1)), "wall_s": wall,
            "exit_code": proc.returncode}


def crop_check(model: SegmentationModel, slide: Path, mask: Path, size: int) -> dict:
    """Compare the streamed labels with the in-memory path on a grid-aligned crop.

    The crop starts at a multiple of the grid stride and is ``ROI + m * stride`` wide, so
    its own grid is the global grid shifted; pixels at least one tile away from the crop
    border are covered by the same tiles, added in the same order.
    """
    stride = int(ROI * (1 - OVERLAP))
    m = max(2, min(10, (size - ROI) // stride // 3))  # >= 2: an interior beyond one tile
    side = ROI + m * stride
    if side > size:
        raise ValueError(f"slide {size} px too small for a crop check with {ROI} px tiles "
                         f"(needs {side} px)")
    k = min(max(1, (size // 2 - side // 2) // stride), (size - side) // stride)
    y0 = x0 = k * stride
    with open_slide(slide) as src:
        offset, scale = model.normalization.affine(src)
        crop = src.read(y0, y0 + side, x0, x0 + side)
    backend = TorchBackend(model)
    x = (torch.from_numpy(crop.astype(np.float32)) - np.float32(offset)) * np.float32(scale)
    probs = sliding_window_inference(x[None, None], ROI, BATCH, backend, overlap=OVERLAP,
                                     padding_mode="reflect")[0].numpy()
    ref = model.classes.decode(probs.argmax(0).astype(np.uint8))
    with tifffile.TiffFile(mask) as tif:
        import zarr

        z = zarr.open(tif.aszarr(), mode="r")
        got = np.asarray(z[y0 : y0 + side, x0 : x0 + side])
    inner = (slice(ROI, side - ROI),) * 2
    diff = int((got[inner] != ref[inner]).sum())
    return {"crop": [y0, x0, side, side], "compared_px": int(got[inner].size),
            "differing_px": diff, "identical": diff == 0,
            "classes_in_crop": sorted(int(v) for v in np.unique(ref[inner]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[30000, 15000])
    ap.add_argument("--workdir", default="/tmp/temseg-slide-memory")
    ap.add_argument("--out", default="benchmarks/results/slide_memory.json")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model_path = work / "narrow.pt"
    model = make_checkpoint(model_path)
    rows = []
    for n in args.sizes:
        slide = work / f"slide_{n}.tif"
        if not slide.is_file():
            t0 = time.perf_counter()
            write_slide(slide, n, n, seed=0, tile=512)
            print(f"wrote {slide} in {time.perf_counter() - t0:.0f} s", flush=True)
        out_dir = work / f"out_{n}"
        res = run_predict(model_path, slide, out_dir)
        res.update(size=n, mpix=n * n / 1e6, mpix_per_s=n * n / 1e6 / res["wall_s"],
                   max_rss_mb=res["max_rss_kb"] / 1024)
        res["crop_check"] = crop_check(model, slide, out_dir / f"slide_{n}_mask.tif", n)
        rows.append(res)
        print(json.dumps(res), flush=True)
    report = {"model": NARROW.to_dict(), "patch": PATCH, "roi_size": ROI, "overlap": OVERLAP,
              "sw_batch_size": BATCH, "torch_threads": torch.get_num_threads(), "runs": rows}
    if len(rows) >= 2:
        peaks = [r["max_rss_kb"] for r in rows]
        report["peak_ratio_max_over_min"] = max(peaks) / min(peaks)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| slide | MPix | peak RSS (MB) | wall (s) | MPix/s | crop labels identical |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        c = r["crop_check"]
        print(f"| {r['size']}x{r['size']} | {r['mpix']:.0f} | {r['max_rss_mb']:.0f} | "
              f"{r['wall_s']:.0f} | {r['mpix_per_s']:.2f} | {c['identical']} "
              f"({c['differing_px']} of {c['compared_px']} px differ) |")
    if "peak_ratio_max_over_min" in report:
        print(f"peak RSS ratio (largest / smallest): {report['peak_ratio_max_over_min']:.3f}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
