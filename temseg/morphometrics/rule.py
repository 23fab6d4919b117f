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
    """

    neck_ratio: float = 0.7

    def __post_init__(self) -> None:
        if not 0.0 <= self.neck_ratio < 1.0:
            raise ValueError(f"neck_ratio must be in [0, 1), got {self.neck_ratio}")

    @property
    def h(self) -> float:
        """Minimum dynamic of a marker peak in ln(distance): ``-ln(neck_ratio)``."""
        return math.inf if self.neck_ratio == 0 else -math.log(self.neck_ratio)

    def to_dict(self) -> dict:
        return {"connectivity": 8, "neck_ratio": self.neck_ratio,
                "h_ln_distance": None if math.isinf(self.h) else self.h}
