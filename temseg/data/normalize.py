"""Robust intensity normalisation that works the same for 8-bit, 16-bit and float images."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Normalization:
    """Per-image percentile normalisation: the ``lower``/``upper`` percentiles of the image map to
    -1 and +1 (an affine map, no clipping), so the bit depth and the exposure of a micrograph do
    not matter. Percentiles of large slides are estimated on a strided subsample."""

    lower: float = 0.5
    upper: float = 99.5
    max_samples: int = 4_000_000

    def to_dict(self) -> dict:
        return {"method": "percentile", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(float(d["lower"]), float(d["upper"]), int(d.get("max_samples", 4_000_000)))

    def affine(self, image: np.ndarray) -> tuple[float, float]:
        """(offset, scale) such that ``(image - offset) * scale`` is the normalised image."""
        step = max(1, int(np.ceil(np.sqrt(image.size / self.max_samples))))
        sample = np.asarray(image[::step, ::step], dtype=np.float32)
        lo, hi = np.percentile(sample, [self.lower, self.upper])
        if not np.isfinite(lo) or not np.isfinite(hi):
            raise ValueError("image contains non-finite values")
        if hi - lo < 1e-6:
            hi = lo + 1.0
        mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        return float(mid), float(1.0 / half)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W) any real dtype -> (H, W) float32."""
        offset, scale = self.affine(image)
        return (image.astype(np.float32) - np.float32(offset)) * np.float32(scale)
