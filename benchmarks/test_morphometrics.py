"""Morphometrics throughput in MPix/s of mask: temseg's streaming instances + measurements
(:func:`temseg.morphometrics.measure_mask`) vs skimage ``label`` + ``regionprops_table`` of
the same quantities (whole mask in memory, no split of touching instances: less work).

Masks: synthetic TEM label images (:func:`temseg.synth.render_labels_region`), in memory
(class indices) and as a tiled 512-px TIFF of grey values read band by band. The numba
kernels are compiled (or loaded from their cache) by a warm-up call before timing.
``extra_info``: ``mpix_per_s`` (fastest round: the least disturbed on a shared machine),
``instances``, and ``x_vs_segmentation``: the ratio to whole-slide segmentation at
``SEGMENTATION_MPIX_S`` (temseg's fastest CPU row of docs/benchmarks.md, 4096 x 4096).

    pytest benchmarks/test_morphometrics.py --benchmark-json=morphometrics.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from temseg.labels import TEM_CLASSES
from temseg.morphometrics import measure_mask
from temseg.synth import render_labels_region

from .contenders import annotate

SIZES = (2048, 4096)
SEGMENTATION_MPIX_S = 1.03
PIXEL_SIZE_UM = 0.005
PROPS = ("label", "area", "centroid", "perimeter", "eccentricity", "solidity",
         "axis_major_length", "axis_minor_length", "orientation", "bbox")


@pytest.fixture(scope="module")
def masks() -> dict[int, np.ndarray]:
    return {n: render_labels_region(0, 0, n, n, seed=0) for n in SIZES}


def skimage_regionprops(labels: np.ndarray) -> int:
    """Components of classes 2 and 3 and their regionprops (no split)."""
    from skimage.measure import label, regionprops_table

    inst = np.where(np.isin(labels, (2, 3)), labels, 0)
    table = regionprops_table(label(inst, connectivity=2, background=0), properties=PROPS)
    return len(table["label"])


def temseg_measure(labels: np.ndarray | Path) -> int:
    return measure_mask(labels, pixel_size_um=PIXEL_SIZE_UM).n_instances


def _record(benchmark: Any, mpix: float, instances: int) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    best = mpix / stats.stats.min
    benchmark.extra_info.update({"mpix_per_s": best, "instances": instances,
                                 "mpix_per_s_median": mpix / stats.stats.median,
                                 "x_vs_segmentation": best / SEGMENTATION_MPIX_S})


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("impl", ["skimage", "temseg"])
def test_morphometrics_in_memory(benchmark: Any, masks: dict, impl: str, size: int) -> None:
    labels = masks[size]
    if impl == "skimage" and size > 2048:
        pytest.skip("skimage regionprops: 2048 x 2048 only (minutes beyond)")
    fn = temseg_measure if impl == "temseg" else skimage_regionprops
    fn(labels[:256, :256])  # warm-up: numba kernels compiled / loaded
    annotate(benchmark, f"morphometrics {size}x{size} mask in memory", impl, unit="MPix/s",
             work=size * size / 1e6, baseline=impl == "skimage")
    n = benchmark.pedantic(fn, args=(labels,), rounds=3, iterations=1, warmup_rounds=0)
    _record(benchmark, size * size / 1e6, n)


def test_morphometrics_tiled_tiff(benchmark: Any, masks: dict, tmp_path: Path) -> None:
    size = SIZES[-1]
    path = tmp_path / "mask.tif"
    lut = np.asarray(TEM_CLASSES.values, np.uint8)
    tifffile.imwrite(path, lut[masks[size]], tile=(512, 512), compression="zlib")
    temseg_measure(masks[size][:256, :256])
    annotate(benchmark, f"morphometrics {size}x{size} tiled zlib TIFF, band by band",
             "temseg", unit="MPix/s", work=size * size / 1e6)
    n = benchmark.pedantic(temseg_measure, args=(path,), rounds=3, iterations=1)
    _record(benchmark, size * size / 1e6, n)
