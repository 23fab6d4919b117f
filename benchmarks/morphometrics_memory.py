"""Peak resident memory of ``temseg morphometrics`` on large synthetic masks.

For each size N it writes an N x N synthetic label mask (grey values, tiled 512-px BigTIFF,
rendered band by band; kept in ``--workdir`` for reuse), then runs in a fresh process::

    /usr/bin/time -v python -m temseg morphometrics mask_N.tif --out out_N --no-progress \\
        --pixel-size 0.005

and parses "Maximum resident set size" and the wall time. Results go to a JSON file and a
table on stdout.

    python benchmarks/morphometrics_memory.py --sizes 4096 16384 \\
        --out benchmarks/results/morphometrics_memory.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from temseg.atomic import atomic_path
from temseg.labels import TEM_CLASSES
from temseg.synth import render_labels_region

TILE = 512


def _tiles(n: int, seed: int) -> Iterator[np.ndarray]:
    lut = np.asarray(TEM_CLASSES.values, np.uint8)
    for y in range(0, n, TILE):
        band = lut[render_labels_region(y, 0, min(TILE, n - y), n, seed)]
        for x in range(0, n, TILE):
            yield band[:, x : x + TILE]


def write_mask(path: Path, n: int, seed: int = 0) -> None:
    """An n x n synthetic grey-value mask as a tiled BigTIFF, memory O(n x TILE)."""
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        tw.write(_tiles(n, seed), shape=(n, n), dtype=np.uint8, tile=(TILE, TILE),
                 compression="zlib")


def run_morphometrics(mask: Path, out_dir: Path) -> dict:
    """``/usr/bin/time -v python -m temseg morphometrics ...``: peak RSS, wall, counts."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "temseg", "morphometrics", str(mask),
           "--out", str(out_dir), "--no-progress", "--pixel-size", "0.005"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode != 0 or rss is None:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads((out_dir / f"{mask.stem}_morphometrics.json").read_text())
    return {"command": " ".join(cmd[2:]), "max_rss_kb": int(rss.group(1)), "wall_s": wall,
            "instances": report["n_instances"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--workdir", default="/tmp/temseg-morphometrics-memory")
    ap.add_argument("--out", default="benchmarks/results/morphometrics_memory.json")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        mask = work / f"mask_{n}.tif"
        if not mask.is_file():
            t0 = time.perf_counter()
            write_mask(mask, n)
            print(f"wrote {mask} in {time.perf_counter() - t0:.0f} s", flush=True)
        res = run_morphometrics(mask, work / f"out_{n}")
        res.update(size=n, mpix=n * n / 1e6, mpix_per_s=n * n / 1e6 / res["wall_s"],
                   max_rss_mb=res["max_rss_kb"] / 1024)
        rows.append(res)
        print(json.dumps(res), flush=True)
    report: dict = {"runs": rows}
    if len(rows) >= 2:
        peaks = [r["max_rss_kb"] for r in rows]
        report["peak_ratio_max_over_min"] = max(peaks) / min(peaks)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| mask | MPix | instances | peak RSS (MB) | wall (s) | MPix/s (wall, incl. start) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']}x{r['size']} | {r['mpix']:.0f} | {r['instances']} | "
              f"{r['max_rss_mb']:.0f} | {r['wall_s']:.1f} | {r['mpix_per_s']:.1f} |")
    if "peak_ratio_max_over_min" in report:
        print(f"peak RSS ratio (largest / smallest): {report['peak_ratio_max_over_min']:.3f}")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
