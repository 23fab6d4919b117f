"""Resampling slides to the model's pixel size, lazily, region by region.

A model sees structures at the scale it was trained on: an axon 300 px wide at 5 nm/px is
150 px wide at 10 nm/px. Like nnU-Net (target spacing) and AxonDeepSeg (``-s``), temseg
resamples each input to the model's pixel size before tiling and maps the result back to the
input's grid (:func:`temseg.inference.segment_slide`, ``resample=True``).

:class:`ResampledSource` is a :class:`~temseg.inference.slide_reader.SlideSource` of another
source seen at a new shape, computed on demand for each region it is asked for, so a
30000 x 30000 slide is resampled with the same bounded memory as it is segmented.

The sample positions are PyTorch's ``interpolate(..., align_corners=False)``: output pixel
``i`` samples the input at ``(i + 0.5) * in / out - 0.5``.

* ``order=1`` (images): bilinear, as ``mode="bilinear"``, float32 output. No anti-aliasing:
  downsampling by more than about 2x aliases high-frequency noise (TEM pixel sizes usually
  differ by far less between microscopes).
* ``order=0`` (labels, probabilities): nearest, as ``mode="nearest-exact"`` (computed in
  integers: where a sample falls exactly on a pixel border, PyTorch's float scale may pick
  the pixel before), the input dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .slide_reader import RowWindow, SlideSource

__all__ = ["RESAMPLE_TOLERANCE", "ResampledSource", "resampled_shape"]

#: Relative pixel-size difference under which no resampling is done (rounding in the tags).
RESAMPLE_TOLERANCE = 0.02


class _Axis(NamedTuple):
    """Per output index along one axis: the two input indices and the weight of ``i1``."""

    i0: np.ndarray  # int64
    i1: np.ndarray  # int64
    w: np.ndarray  # float32


def _axis(n_out: int, n_in: int, order: int) -> _Axis:
    out = np.arange(n_out, dtype=np.int64)
    if order == 0:  # floor((i + 0.5) * n_in / n_out), exactly (no rounding at the ties)
        i0 = np.minimum((2 * out + 1) * n_in // (2 * n_out), n_in - 1)
        return _Axis(i0, i0, np.zeros(n_out, np.float32))
    src = np.maximum((out + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return _Axis(i0, i1, (src - i0).astype(np.float32))


def resampled_shape(shape: tuple[int, int], pixel_size_um: float,
                    target_um: float) -> tuple[int, int]:
    """(H, W) of an image of ``shape`` at ``pixel_size_um`` resampled to ``target_um``."""
    zoom = pixel_size_um / target_um
    return (max(1, round(shape[0] * zoom)), max(1, round(shape[1] * zoom)))


class ResampledSource(SlideSource):
    """``source`` resampled to ``shape`` (see the module docstring for the sample positions).

    Args:
        source: any slide source (read forward in row windows, so chunked TIFFs decode each
            chunk about once per column panel).
        shape: output (H, W).
        order: 1 bilinear (float32 output) or 0 nearest (the source dtype).
        pixel_size_um: the output's pixel size (recorded in written TIFFs).
    """

    def __init__(self, source: SlideSource, shape: tuple[int, int], order: int = 1,
                 pixel_size_um: float | None = None) -> None:
        if order not in (0, 1):
            raise ValueError(f"order must be 0 (nearest) or 1 (bilinear), got {order}")
        if min(shape) < 1:
            raise ValueError(f"{source.name}: cannot resample to shape {shape}")
        self.source = source
        self.name = source.name
        self.shape = (int(shape[0]), int(shape[1]))
        self.order = order
        self.dtype = np.dtype(np.float32) if order == 1 else source.dtype
        self.pixel_size_um = pixel_size_um
        self.chunk_rows = 1
        self._rows = _axis(self.shape[0], source.shape[0], order)
        self._cols = _axis(self.shape[1], source.shape[1], order)
        self._window: RowWindow | None = None

    def _source_rows(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Input rows [y0, y1) x [x0, x1) through a forward-moving window (a new one when
        the columns change or the rows go back, e.g. at the next column panel)."""
        w = self._window
        if w is None or (w.x0, w.x1) != (x0, x1) or y0 < w._y0:
            w = self._window = RowWindow(self.source, x0, x1)
        return w.rows(y0, y1)

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if y1 == y0 or x1 == x0:
            return np.empty((y1 - y0, x1 - x0), self.dtype)
        r0, r1, rw = (a[y0:y1] for a in self._rows)
        c0, c1, cw = (a[x0:x1] for a in self._cols)
        sy0, sx0 = int(r0[0]), int(c0[0])
        block = self._source_rows(sy0, int(r1[-1]) + 1, sx0, int(c1[-1]) + 1)
        if self.order == 0:
            return np.ascontiguousarray(block[np.ix_(r0 - sy0, c0 - sx0)])
        b = block.astype(np.float32, copy=False)
        top, bottom = b[r0 - sy0], b[r1 - sy0]
        rows = top + (bottom - top) * rw[:, None]
        left, right = rows[:, c0 - sx0], rows[:, c1 - sx0]
        # fancy indexing on the last axis gives column-major results: rows must be contiguous
        return np.ascontiguousarray(left + (right - left) * cw[None, :])

    def close(self) -> None:
        """Closes nothing: the wrapped source belongs to the caller."""
