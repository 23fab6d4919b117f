"""Plain ``temseg predict`` against ``temseg predict --cluster ray`` at equal cores.

Writes a batch of synthetic files and one large synthetic slide (tiled BigTIFFs,
:func:`temseg.synth.write_slide`, kept in ``--workdir`` for reuse) and a checkpoint of the
architecture of the benchmark suites (width 16, training patch 256; untrained: speed does
not depend on the weights), then times, each as its own process (``python -m temseg
predict``, defaults otherwise: backend auto, 512 px tiles), alternating ``--repeats`` times
(the fastest run of each counts)::

    plain: temseg predict MODEL INPUTS --out D [--format ome-zarr]           (2 torch threads)
    ray:   temseg predict MODEL INPUTS --out D [--format ome-zarr] --cluster ray \\
               --address ADDRESS --num-workers 2 --cpus-per-worker 1         (2 x 1 thread)

The Ray commands connect to a cluster of this machine's CPUs started once by this script
(as on a real cluster, which runs before and after the jobs): their wall time includes
connecting, starting the workers and each opening the model (``startup_s``, from the
summary, which also gives the per-worker MPix/s); the cluster's own start is reported
apart. The slide is written as OME-Zarr in both runs (so that Ray splits it into regions
of ``--panel-width``, default 4096); the outputs of the two runs are compared pixel by pixel.

    python -m benchmarks.ray_scaling --workdir build/ray-scaling \\
        --out benchmarks/results/ray_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from temseg.checkpoint import SegmentationModel, save_checkpoint
from temseg.io.slides import open_slide
from temseg.models import UNetConfig, build_model
from temseg.policy import cpu_model
from temseg.synth import write_slide

REPO = Path(__file__).resolve().parents[1]
MODEL = UNetConfig(width=16)  # the width of the benchmark suites (benchmarks/contenders.py)
PATCH = 256  # temseg train's default: inference tile 512


def make_inputs(work: Path, slide: int, files: int, file_size: int) -> tuple[Path, list[Path],
                                                                            Path]:
    """(checkpoint, batch files, slide), made once per size."""
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "model.pt"
    if not ckpt.exists():
        torch.manual_seed(0)
        model = SegmentationModel(build_model(MODEL), patch_size=PATCH).eval()
        with torch.no_grad():
            model.net.head.bias.zero_()
        save_checkpoint(ckpt, model)
    batch = [work / f"file_{file_size}_{i}.tif" for i in range(files)]
    for i, p in enumerate(batch):
        if not p.exists():
            write_slide(p, file_size, file_size, seed=100 + i, compression="zlib")
    big = work / f"slide_{slide}.tif"
    if not big.exists():
        write_slide(big, slide, slide, seed=7, compression="zlib")
    return ckpt, batch, big


def run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """``python -m temseg ARGS`` from the repository: (wall seconds, stdout)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "temseg", *args], cwd=REPO, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"temseg {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def parse_summary(text: str) -> dict:
    """Per-worker MPix/s, start-up seconds and regions from the Ray summary."""
    rows = [line.split() for line in text.splitlines()]
    workers = [float(r[-1]) for r in rows if len(r) == 7 and r[0].isdigit()]
    total = re.search(r"start-up ([\d.]+) s\); (\d+) regions", text)
    return {"worker_mpix_per_s": workers,
            "startup_s": float(total[1]) if total else None,
            "regions": int(total[2]) if total else None}


def same_masks(a: list[Path], b: list[Path]) -> bool:
    """Pixel-identical masks (TIFF or OME-Zarr level 0)."""
    for pa, pb in zip(a, b, strict=True):
        with open_slide(pa) as sa, open_slide(pb) as sb:
            if not np.array_equal(sa.read(0, sa.shape[0]), sb.read(0, sb.shape[0])):
                return False
    return True


def _pixels(path: Path) -> int:
    with tifffile.TiffFile(path) as tif:
        return int(np.prod(tif.series[0].shape))


def compare(name: str, inputs: list[Path], ckpt: Path, work: Path, fmt: str,
            env: dict[str, str], address: str, repeats: int) -> dict:
    """Plain and Ray runs of one workload, alternating ``repeats`` times (the fastest of
    each counts: the least disturbed on a shared machine): seconds, MPix/s, overhead,
    identical outputs."""
    mpix = sum(_pixels(p) for p in inputs) / 1e6
    slug = re.sub(r"\W+", "_", name)
    common = [str(ckpt), *map(str, inputs), "--no-progress", "--format", fmt]
    suffix = "_mask.ome.zarr" if fmt == "ome-zarr" else "_mask.tif"
    row: dict = {"workload": name, "mpix": round(float(mpix), 1)}
    outs = {}
    ray_args = ["--cluster", "ray", "--address", address, "--num-workers", "2",
                "--cpus-per-worker", "1"]
    for _ in range(repeats):
        for kind, extra in (("plain", []), ("ray", ray_args)):
            out = work / f"out_{slug}_{kind}"
            seconds, text = run(["predict", *common, "--out", str(out), *extra], env)
            print(f"{name} {kind}: {seconds:.1f} s, {mpix / seconds:.3f} MPix/s", flush=True)
            row.setdefault(f"{kind}_all_s", []).append(round(seconds, 1))
            if seconds > row.get(f"{kind}_s", float("inf")):
                continue
            row[f"{kind}_s"] = round(seconds, 1)
            row[f"{kind}_mpix_per_s"] = round(mpix / seconds, 3)
            if kind == "ray":
                row.update(parse_summary(text))
            outs[kind] = [out / f"{p.stem}{suffix}" for p in inputs]
    row["ray_overhead_pct"] = round(100 * (row["ray_s"] / row["plain_s"] - 1), 1)
    row["identical"] = same_masks(outs["plain"], outs["ray"])
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="build/ray-scaling")
    p.add_argument("--slide", type=int, default=8192, help="side of the slide")
    p.add_argument("--files", type=int, default=8, help="files in the batch")
    p.add_argument("--file-size", type=int, default=2048, help="side of each file")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
    p.add_argument("--out", default=None, help="JSON results")
    a = p.parse_args()
    work = Path(a.workdir).resolve()
    ckpt, batch, slide = make_inputs(work, a.slide, a.files, a.file_size)
    import ray

    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    cluster_start = time.perf_counter() - t
    # after ray.init: its token-authentication mode (RAY_AUTH_MODE) reaches the commands
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    address = ray.get_runtime_context().gcs_address
    try:
        rows = [compare(f"batch {a.files}x{a.file_size}^2", batch, ckpt, work, "tiff", env,
                        address, a.repeats),
                compare(f"slide {a.slide}^2", [slide], ckpt, work, "ome-zarr", env, address,
                        a.repeats)]
    finally:
        ray.shutdown()
    result = {"cpu": f"{cpu_model()}, {os.cpu_count()} CPUs",
              "torch_threads_plain": torch.get_num_threads(),
              "ray_cluster_start_s": round(cluster_start, 1), "rows": rows}
    print(json.dumps(result, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
