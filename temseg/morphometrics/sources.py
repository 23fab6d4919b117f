"""Inputs of the morphometrics, read band by band: label masks (TIFF / BigTIFF / PNG through
:func:`temseg.io.slides.open_slide`, OME-Zarr / Zarr arrays, in-memory arrays)
and class probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.io import DataError
from ..io.slides import ArraySource, SlideSource, open_slide
from ..labels import ClassTable

__all__ = ["ClassReader", "ProbabilityReader", "open_mask"]


def open_mask(mask: str | Path | np.ndarray | SlideSource) -> SlideSource:
    """A lazy :class:`SlideSource` for a mask file (TIFF, PNG, OME-Zarr / Zarr folder: see
    :func:`temseg.io.slides.open_slide`), an array or a source. Raises :class:`DataError`
    naming the file."""
    return open_slide(mask)


class ClassReader:
    """Bands of class indices (h, W) uint8 from a mask source.

    Files hold the grey values of ``classes`` (0/50/100/150/200 for TEM); in-memory arrays
    may hold grey values or class indices (detected: an array whose maximum is below
    ``classes.num_classes`` holds indices; the two readings agree on an all-zero array).
    """

    def __init__(self, source: SlideSource, classes: ClassTable,
                 indices: bool | None = None) -> None:
        self.source, self.classes = source, classes
        if indices is None:
            image = source.image if isinstance(source, ArraySource) else None
            indices = image is not None and int(image.max()) < classes.num_classes
        self.indices = indices

    def read(self, y0: int, y1: int) -> np.ndarray:
        band = self.source.read(y0, y1)
        if self.indices:
            if band.dtype != np.uint8:
                band = band.astype(np.uint8)
            return band
        try:
            return self.classes.encode(band, source=self.source.name)
        except ValueError as exc:
            raise DataError(f"{exc} (rows {y0}-{y1})") from exc


class ProbabilityReader:
    """Rows of class probabilities (C, h, W) float32 in [0, 1] from a (C, H, W) array (float,
    or uint8 as ``round(255 p)``) or a ``<stem>_probabilities.tif`` written by
    ``temseg predict --probabilities``."""

    def __init__(self, probabilities: str | Path | np.ndarray, shape: tuple[int, int],
                 num_classes: int) -> None:
        self.name = "<array>" if isinstance(probabilities, np.ndarray) else str(probabilities)
        self._tif: Any = None
        if isinstance(probabilities, np.ndarray):
            data: Any = probabilities
        else:
            import tifffile
            import zarr

            path = Path(probabilities)
            if not path.is_file():
                raise DataError(f"{path}: file not found")
            self._tif = tifffile.TiffFile(path)
            data = zarr.open(self._tif.aszarr(), mode="r")
            if not hasattr(data, "shape"):
                data = data[next(iter(data.array_keys()))]
        if tuple(data.shape) != (num_classes, *shape):
            raise DataError(f"{self.name}: probabilities of shape {tuple(data.shape)}, expected "
                            f"({num_classes}, {shape[0]}, {shape[1]}) to match the mask")
        self._data = data
        self._scale = 1.0 / 255.0 if np.dtype(data.dtype) == np.uint8 else 1.0

    def read(self, planes: list[int], y0: int, y1: int) -> np.ndarray:
        """(len(planes), y1 - y0, W) float32 probabilities of the classes ``planes``."""
        rows = np.asarray(self._data[:, y0:y1])[planes]
        return (rows.astype(np.float32) * np.float32(self._scale) if self._scale != 1.0
                else rows.astype(np.float32, copy=False))

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None
