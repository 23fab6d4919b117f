"""Aggregate morphometrics of one mask: counts, densities, area fractions, diameter
statistics per instance class.

Density is per mm^2 of *image* (every pixel of the mask, background included), as
AxonDeepSeg's ``axon_density_mm2``: the background class of a TEM nerve mask is the
endoneurial matrix between the fibres, part of the tissue. ``area_fraction`` of each class
lets one renormalise to another reference (e.g. divide the density by 1 - background
fraction for a density per mm^2 of labelled tissue, also reported).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .measure import MorphometricsResult

__all__ = ["QUANTILES", "aggregate", "diameter_stats"]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def diameter_stats(diam: np.ndarray) -> dict:
    """count, mean, std, min, quantiles q05..q95 and max of (n,) diameters (None if n = 0)."""
    if diam.size == 0:
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None,
                **{f"q{round(q * 100):02d}": None for q in QUANTILES}}
    qs = np.quantile(diam, QUANTILES)
    return {"count": int(diam.size), "mean": float(diam.mean()), "std": float(diam.std()),
            "min": float(diam.min()), "max": float(diam.max()),
            **{f"q{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, qs, strict=True)}}


def aggregate(result: MorphometricsResult) -> dict:
    """The JSON-ready aggregate of a :class:`MorphometricsResult`."""
    h, w = result.shape
    ps = result.pixel_size_um
    total = float(h * w)
    image_mm2 = total * ps * ps * 1e-6 if ps is not None else None
    labelled = total - float(result.class_pixels[0])
    labelled_mm2 = labelled * ps * ps * 1e-6 if ps is not None else None
    t = result.table
    per_class = {}
    for c in result.instance_classes:
        sel = t["class"] == c
        n = int(sel.sum())
        per_class[result.classes.names[c]] = {
            "count": n,
            "count_not_border_touching": int((sel & ~t["image_border_touching"]).sum()),
            "density_per_mm2": n / image_mm2 if image_mm2 else None,
            "density_per_mm2_labelled": n / labelled_mm2 if labelled_mm2 else None,
            "area_fraction": float(result.class_pixels[c]) / total,
            "equivalent_diameter": diameter_stats(t["equivalent_diameter"][sel]),
        }
    return {
        "mask": result.name, "shape": [h, w], "pixel_size_um": ps,
        "units": "px" if ps is None else "um",
        "image_area_mm2": image_mm2, "labelled_area_mm2": labelled_mm2,
        "n_instances": result.n_instances,
        "n_split_components": result.n_split_components,
        "rule": result.rule.to_dict(),
        "area_fractions": {name: float(result.class_pixels[i]) / total
                           for i, name in enumerate(result.classes.names)},
        "classes": per_class,
    }
