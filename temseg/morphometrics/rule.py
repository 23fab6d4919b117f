"""The split rule of touching instances and the default band height (no heavy imports: the
command line parser reads them)."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_BAND_ROWS", "SplitRule"]

DEFAULT_BAND_ROWS = 512


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
