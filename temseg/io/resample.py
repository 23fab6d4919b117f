"""Resampling slides to the model's pixel size, lazily, region by region.

A model sees structures at the scale it was trained on: an axon 300 px wide at 5 nm/px is
150 px wide at 10 nm/px. Like nnU-Net (target spacing) and AxonDeepSeg (``-s``), temseg
resamples an input to the model's pixel size before tiling and maps the result back to the
input's grid (:func:`temseg.inference.segment_slide`, ``resample="auto"|"always"``).

:class:`ResampledSource` is a :class:`~temseg.io.slides.SlideSource` of another
source seen at a new shape, computed on demand for each region it is asked for, so a
30000 x 30000 slide is resampled with the same bounded memory as it is segmented.

The sample positions are PyTorch's ``interpolate(..., align_corners=False)``: output pixel
``i`` is centred on input coordinate ``(i + 0.5) * in / out`` (pixel centres at ``j + 0.5``).

* ``order=1`` (images; class probabilities brought back to an input's grid), float32
  output: bilinear when enlarging (``mode="bilinear"``); when shrinking, the triangle
  filter widened by the scale factor, so every input pixel counts and TEM noise does not
  alias (``mode="bilinear", antialias=True``). Each axis separately.
* ``order=0`` (labels, uncertainty): nearest, as ``mode="nearest-exact"`` (computed in
  integers: where a sample falls exactly on a pixel border, PyTorch's float scale may pick
  the pixel before), the input dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .slides import RowWindow, SlideSource

__all__ = ["RESAMPLE_MODES", "RESAMPLE_TOLERANCE", "ResampledSource", "resampled_shape"]

#: Relative pixel-size difference under which no resampling is done (rounding in the tags).
RESAMPLE_TOLERANCE = 0.02
#: ``segment_slide(resample=...)``: "auto" shrinks finer inputs only (see its docstring).
RESAMPLE_MODES = ("auto", "always", "never")


class _Axis(NamedTuple):
    """Separable weights along one axis: output ``i`` = sum_k ``w[i, k] * x[idx[i, k]]``."""

    idx: np.ndarray  # (n_out, K) int64, non-decreasing along both axes
    w: np.ndarray  # (n_out, K) float32, rows sum to 1 (zero-padded)


def _axis(n_out: int, n_in: int, order: int) -> _Axis:
    out = np.arange(n_out, dtype=np.int64)
    if order == 0:  # floor((i + 0.5) * n_in / n_out), exactly (no rounding at the ties)
        i0 = np.minimum((2 * out + 1) * n_in // (2 * n_out), n_in - 1)
        return _Axis(i0[:, None], np.ones((n_out, 1), np.float32))
    scale = n_in / n_out
    if scale <= 1.0:  # enlarging: plain bilinear, borders clamped
        src = np.maximum((out + 0.5) * scale - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = src - i0
        return _Axis(np.stack([i0, i1], 1), np.stack([1.0 - lam, lam], 1).astype(np.float32))
    # shrinking: triangle of half-width `scale` (input pixels) around each output centre,
    # normalised over the pixels inside the image (PyTorch's antialiased bilinear)
    centre = (out + 0.5) * scale
    lo = np.maximum((centre - scale + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + scale + 0.5).astype(np.int64), n_in)
    k = int((hi - lo).max())
    idx = lo[:, None] + np.arange(k)[None, :]
    w = np.maximum(0.0, 1.0 - np.abs((idx + 0.5 - centre[:, None]) / scale))
    w[idx >= hi[:, None]] = 0.0
    w /= w.sum(1, keepdims=True)
    return _Axis(np.minimum(idx, n_in - 1), w.astype(np.float32))


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

    def _combine(self, block: np.ndarray, y0: int, ridx: np.ndarray, rw: np.ndarray,
                 x0: int, cidx: np.ndarray, cw: np.ndarray) -> np.ndarray:
        """Output pixels from ``block`` (input rows from ``y0``, columns from ``x0``) with
        the row / column weights ``(idx, w)`` of :class:`_Axis`: (len(ridx), len(cidx))."""
        if self.order == 0:
            return np.ascontiguousarray(block[np.ix_(ridx[:, 0] - y0, cidx[:, 0] - x0)])
        b = block.astype(np.float32, copy=False)
        rows = rw[:, 0, None] * b[ridx[:, 0] - y0]
        for k in range(1, ridx.shape[1]):
            rows += rw[:, k, None] * b[ridx[:, k] - y0]
        # fancy indexing on the last axis gives column-major results: rows must be contiguous
        out = np.ascontiguousarray(cw[None, :, 0] * rows[:, cidx[:, 0] - x0])
        for k in range(1, cidx.shape[1]):
            out += cw[None, :, k] * rows[:, cidx[:, k] - x0]
        return out

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if y1 == y0 or x1 == x0:
            return np.empty((y1 - y0, x1 - x0), self.dtype)
        ridx, rw = self._rows.idx[y0:y1], self._rows.w[y0:y1]
        cidx, cw = self._cols.idx[x0:x1], self._cols.w[x0:x1]
        sy0, sx0 = int(ridx[0, 0]), int(cidx[0, 0])
        block = self._source_rows(sy0, int(ridx[-1].max()) + 1, sx0, int(cidx[-1].max()) + 1)
        return self._combine(block, sy0, ridx, rw, sx0, cidx, cw)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        """Strided subsample ``image[ys, xs]`` (the normalisation estimate): only the
        selected output pixels are computed, from the input rows they need, read forward."""
        if not (isinstance(key, tuple) and len(key) == 2
                and all(isinstance(k, slice) for k in key)):
            raise TypeError(f"{self.name}: only image[rows_slice, cols_slice] is supported")
        ys, xs = range(self.shape[0])[key[0]], range(self.shape[1])[key[1]]
        if ys.step <= 0 or xs.step <= 0:
            raise ValueError("negative steps are not supported")
        out = np.empty((len(ys), len(xs)), self.dtype)
        if not len(ys) or not len(xs):
            return out
        cidx, cw = self._cols.idx[xs.start : xs.stop : xs.step], \
            self._cols.w[xs.start : xs.stop : xs.step]
        sx0, sx1 = int(cidx.min()), int(cidx.max()) + 1
        for i, y in enumerate(ys):
            ridx, rw = self._rows.idx[y : y + 1], self._rows.w[y : y + 1]
            sy0 = int(ridx[0, 0])
            block = self._source_rows(sy0, int(ridx.max()) + 1, sx0, sx1)
            out[i] = self._combine(block, sy0, ridx, rw, sx0, cidx, cw)[0]
        return out

    def close(self) -> None:
        """Closes nothing: the wrapped source belongs to the caller."""
