"""Writing morphometrics: ``<stem>_instances.csv`` (and ``.parquet`` when pyarrow is
installed), ``<stem>_morphometrics.json``, ``<stem>_diameter_<class>.png``. Every file is
written atomically."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_json
from .measure import MorphometricsResult

__all__ = ["default_stem", "header", "write_morphometrics"]


def default_stem(name: str) -> str:
    """Output stem of a mask file: its name without extensions (``.ome.zarr``, ``.tif``)
    and without a trailing ``_mask`` (``temseg predict``'s suffix); ``mask`` for arrays."""
    if name.startswith("<"):
        return "mask"
    stem = Path(name).name
    for ext in (".zarr", ".ome", ".tiff", ".tif", ".png", ".btf"):
        stem = stem.removesuffix(ext).removesuffix(ext.upper())
    return stem.removesuffix("_mask") or stem


def header(result: MorphometricsResult) -> list[str]:
    """Column headers with units, AxonDeepSeg style: ``area (um^2)``, ``x0 (px)``, ``id``."""
    return [f"{k} ({u})" if u else k for k, u in result.units.items()]


def _cells(col: np.ndarray) -> list[str]:
    if col.dtype == bool:
        return ["True" if v else "False" for v in col.tolist()]
    if col.dtype.kind == "f":
        return ["NaN" if math.isnan(v) else repr(v) for v in col.tolist()]
    return [str(v) for v in col.tolist()]


def write_csv(result: MorphometricsResult, path: Path, chunk: int = 8192) -> None:
    """The instance table as CSV (exact float repr, NaN as ``NaN``), formatted ``chunk``
    rows at a time (the text of all rows at once would outweigh the table)."""
    columns = [np.asarray(c) for c in result.table.values()]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header(result))
        for i in range(0, result.n_instances, chunk):
            w.writerows(zip(*(_cells(c[i : i + chunk]) for c in columns), strict=True))


def write_parquet(result: MorphometricsResult, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({h: np.asarray(c) if c.dtype != object else c.tolist()
                      for h, c in zip(header(result), result.table.values(), strict=True)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_histogram(result: MorphometricsResult, class_index: int, path: Path,
                    bins: int = 40) -> None:
    """Histogram PNG of the equivalent diameters of one class."""
    from matplotlib.figure import Figure

    name = result.classes.names[class_index]
    diam = result.table["equivalent_diameter"][result.table["class"] == class_index]
    unit = result.units["equivalent_diameter"]
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    color = np.asarray(result.classes.colors[class_index]) / 255.0
    ax.hist(diam, bins=bins, color=color, edgecolor="black", linewidth=0.4)
    ax.set_xlabel(f"equivalent diameter ({unit})")
    ax.set_ylabel("instances")
    median = f", median {np.median(diam):.3g} {unit}" if diam.size else ""
    ax.set_title(f"{default_stem(result.name)}: {name} (n = {diam.size}{median})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)


def write_morphometrics(result: MorphometricsResult, out_dir: str | Path,
                        stem: str | None = None, histograms: bool = True,
                        parquet: bool | None = None) -> dict[str, Path]:
    """Write the table, the aggregates and the histograms of ``result`` into ``out_dir``.

    Args:
        stem: file name stem (default :func:`default_stem` of the mask name).
        histograms: write ``<stem>_diameter_<class>.png`` per instance class.
        parquet: also write ``<stem>_instances.parquet``; default: when pyarrow imports.

    Returns:
        kind -> path: ``csv``, ``json``, ``parquet`` (if written), ``hist_<class>``.
    """
    out = Path(out_dir)
    stem = stem or default_stem(result.name)
    paths: dict[str, Path] = {"csv": out / f"{stem}_instances.csv"}
    write_csv(result, paths["csv"])
    if parquet is None:
        try:
            import pyarrow.parquet  # noqa: F401

            parquet = True
        except ImportError:
            parquet = False
    if parquet:
        paths["parquet"] = out / f"{stem}_instances.parquet"
        write_parquet(result, paths["parquet"])
    if histograms:
        for c in result.instance_classes:
            name = result.classes.names[c]
            paths[f"hist_{name}"] = out / f"{stem}_diameter_{name}.png"
            write_histogram(result, c, paths[f"hist_{name}"])
    paths["json"] = out / f"{stem}_morphometrics.json"
    write_json(paths["json"], {**result.aggregates,
                               "columns": dict(zip(header(result), result.units.values(),
                                                   strict=True)),
                               "files": {k: p.name for k, p in paths.items() if k != "json"}})
    return paths
