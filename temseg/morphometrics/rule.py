"""The split rule of touching instances and the default band height (no heavy imports: the
command line parser reads them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["BAND_PIXELS", "SplitRule", "band_rows_for"]

BAND_PIXELS = 1 << 21
"""Pixels per band by default (2 MPix: 512 rows of a 4096-px wide mask)."""


def band_rows_for(width: int, band_rows: int | None = None) -> int:
    """Rows per band: ``band_rows``, or by default ``BAND_PIXELS / width`` (at least 16), so
    that the band's memory does not grow with the width either."""
    if band_rows is not None:
        if band_rows < 1:
            raise ValueError(f"band_rows must be >= 1, got {band_rows}")
        return band_rows
    return max(16, BAND_PIXELS // max(1, width))


@dataclass(frozen=True)
class SplitRule:
    """Parameters of the split of touching instances.

    Attributes:
        neck_ratio: cut a component at a neck whose half-width (distance-transform value) is
            below ``neck_ratio`` times the radius (distance peak) of each of the two parts it
            joins; 0 never splits. Scale-free: no pixel size needed.
        min_pixels: instances (after the split) of fewer pixels are fragments, not
            instances: left out of the table, the counts and the instance metrics (applied
            alike to truth and prediction). Default 64 px: 0.0016 um^2 (0.045 um across) at
            the 0.005 um pixels of tem-mouse-cc, a quarter of the smallest unmyelinated
            axon's area there (its truth masks: 1st percentile 150 px); predictions of a
            20-minute model held hundreds of such specks (README). 0 keeps everything.
    """

    neck_ratio: float = 0.7
    min_pixels: int = 64

    def __post_init__(self) -> None:
        if not 0.0 <= self.neck_ratio < 1.0:
            raise ValueError(f"neck_ratio must be in [0, 1), got {self.neck_ratio}")
        if self.min_pixels < 0:
            raise ValueError(f"min_pixels must be >= 0, got {self.min_pixels}")

    @property
    def h(self) -> float:
        """Minimum dynamic of a marker peak in ln(distance): ``-ln(neck_ratio)``."""
        return math.inf if self.neck_ratio == 0 else -math.log(self.neck_ratio)

    def to_dict(self) -> dict:
        return {"connectivity": 8, "neck_ratio": self.neck_ratio, "min_pixels": self.min_pixels,
                "h_ln_distance": None if math.isinf(self.h) else self.h}
