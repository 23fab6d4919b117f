"""Lazy region reading of large grayscale slides (tiled or strip (Big)TIFF, OME-Zarr, or in
memory).

:func:`open_slide` returns a :class:`SlideSource` that reads rectangular regions without
loading the whole slide:

* uncompressed, contiguously stored TIFF pages (e.g. a plain ``tifffile.imwrite`` strip
  TIFF): the rows of a region are read with ``os.pread`` from the file offset;
* every other TIFF (tiled, compressed strips, pyramids): through tifffile's Zarr store
  (``TiffFile.aszarr()`` + ``zarr``), which decodes only the tiles/strips a region touches;
* OME-Zarr images (NGFF 0.4 / 0.5, any pyramid level) and bare Zarr arrays:
  :class:`~temseg.io.omezarr.OmeZarrSource`, chunk by chunk;
* PNG and other formats: loaded into memory (they are small by nature).

Regions come back as (h, w) uint8, uint16 or float32 arrays (other integer types become
float32, RGB becomes grey exactly like :func:`temseg.data.read_image`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..data.io import DataError, _tiff_pixel_size_um, _to_gray, read_image

__all__ = ["ArraySource", "RowWindow", "SlideSource", "TiffSource", "ZarrPlane",
           "check_finite", "open_slide", "slide_stem"]

_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".svs")
_BIG_CHUNK_BYTES = 512 * 2**20

log = logging.getLogger("temseg.slide")


def _output_dtype(dtype: np.dtype) -> np.dtype:
    """dtype of the regions handed out for stored ``dtype`` (as ``read_image``)."""
    if dtype in (np.uint8, np.uint16):
        return np.dtype(dtype.type)  # the canonical instance (the C++ core checks identity)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind in "iuf":
        return np.dtype(np.float32)
    raise ValueError(f"unsupported pixel type {dtype}")


def _convert(block: np.ndarray, out_dtype: np.dtype, name: str) -> np.ndarray:
    """Stored block (h, w) or (h, w, S) -> (h, w) ``out_dtype``, native byte order."""
    if block.ndim == 3:
        block = _to_gray(block, Path(name)) if block.shape[-1] in (3, 4) else block[..., 0]
    if block.dtype != out_dtype or not block.dtype.isnative:
        return block.astype(out_dtype)
    return block.view(out_dtype)


class SlideSource:
    """A (H, W) grayscale slide read by regions.

    Attributes:
        name: file name (or ``"<array>"``), used in error messages.
        shape: (H, W).
        dtype: dtype of the regions returned by :meth:`read` (uint8, uint16 or float32).
        chunk_rows: height of the stored chunks (strip / tile rows); reads aligned to it
            decode every chunk once.
        pixel_size_um: from the TIFF tags when recorded, else None.
    """

    name: str = "<array>"
    shape: tuple[int, int]
    dtype: np.dtype
    chunk_rows: int = 1
    pixel_size_um: float | None = None

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """Pixels [y0, y1) x [x0, x1) as an (y1 - y0, x1 - x0) array of ``dtype``."""
        height, width = self.shape
        x1 = width if x1 is None else x1
        if not (0 <= y0 <= y1 <= height and 0 <= x0 <= x1 <= width):
            raise ValueError(f"{self.name}: region [{y0}:{y1}, {x0}:{x1}] outside the image "
                             f"{height}x{width}")
        try:
            block = self._read(y0, y1, x0, x1)
        except (DataError, ValueError) as exc:
            if self.name in str(exc):
                raise
            raise DataError(f"{self.name}: cannot read rows {y0}-{y1}: {exc}") from exc
        except Exception as exc:  # truncated / corrupt data raise many different errors
            raise DataError(f"{self.name}: cannot read rows {y0}-{y1} "
                            f"({type(exc).__name__}: {exc})") from exc
        if block.dtype.kind == "f":
            check_finite(block, self.name, y0, x0)
        return block

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        """Strided subsample ``image[ys, xs]`` read block by block (what
        :meth:`temseg.data.normalize.Normalization.affine` asks for), memory ~ the result."""
        if not (isinstance(key, tuple) and len(key) == 2
                and all(isinstance(k, slice) for k in key)):
            raise TypeError(f"{self.name}: only image[rows_slice, cols_slice] is supported")
        height, width = self.shape
        ys = range(height)[key[0]]
        xs = key[1]
        if ys.step <= 0 or (xs.step or 1) <= 0:
            raise ValueError("negative steps are not supported")
        n_cols = len(range(width)[xs])
        out = np.empty((len(ys), n_cols), dtype=self.dtype)
        if len(ys) == 0:
            return out
        block = max(self.chunk_rows, 256)
        block = -(-block // self.chunk_rows) * self.chunk_rows
        i = 0
        start = (ys.start // self.chunk_rows) * self.chunk_rows
        for b0 in range(start, ys[-1] + 1, block):
            b1 = min(b0 + block, height)
            # first selected row >= b0
            first = ys.start if b0 <= ys.start else b0 + (-(b0 - ys.start) % ys.step)
            if first >= b1:
                continue
            rows = self.read(first, min(b1, ys[-1] + 1))[::ys.step, xs]
            out[i : i + len(rows)] = rows
            i += len(rows)
        assert i == len(ys)
        return out

    def close(self) -> None:
        """Release the file handle (idempotent)."""

    def __enter__(self) -> SlideSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_finite(block: np.ndarray, name: str, y0: int = 0, x0: int = 0) -> None:
    """Raise :class:`DataError` naming ``name`` and the first position (row, column in the
    slide) of a NaN or infinite pixel of ``block`` (rows from ``y0``, columns from ``x0``).

    The rule of every reader: non-finite pixels are an error, never filled (a single
    ``inf`` made the normalisation map a whole slide to background)."""
    finite = np.isfinite(block)
    if finite.all():
        return
    r, c = np.unravel_index(int(np.argmin(finite)), block.shape)
    raise DataError(f"{name}: non-finite pixel ({block[r, c]}) at row {y0 + r}, column "
                    f"{x0 + c}: fix or mask the image (temseg segments finite values only)")


class ArraySource(SlideSource):
    """An in-memory (H, W) image (any real dtype; converted like ``read_image``)."""

    def __init__(self, image: np.ndarray, name: str = "<array>",
                 pixel_size_um: float | None = None) -> None:
        image = np.asarray(image)
        if image.ndim != 2 or image.size == 0:
            raise DataError(f"{name}: expected a non-empty 2-D grayscale image, got shape "
                            f"{image.shape}")
        self.dtype = _output_dtype(image.dtype)
        self.image = image if image.dtype == self.dtype else image.astype(self.dtype)
        self.name = name
        self.shape = (int(image.shape[0]), int(image.shape[1]))
        self.pixel_size_um = pixel_size_um
        self.chunk_rows = 1

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.image[y0:y1, x0:x1]


class TiffSource(SlideSource):
    """The first series (full-resolution level) of a TIFF / BigTIFF, read lazily."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(path)
        self._fh: int | None = None
        self._zarr: Any = None
        try:
            self.tif = tifffile.TiffFile(self.path)
        except Exception as exc:
            raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
        try:
            self._open()
        except BaseException:
            self.tif.close()
            raise

    def _open(self) -> None:
        if not self.tif.series:
            raise DataError(f"{self.path}: no image in file")
        series = self.tif.series[0]
        shape = tuple(int(s) for s in series.shape)
        big = [i for i, s in enumerate(shape) if s > 1]
        axes = series.axes
        # (H, W) or (H, W, S) after dropping singleton axes; Y and X must be the big axes.
        if "Y" not in axes or "X" not in axes:
            raise DataError(f"{self.path}: expected a 2-D grayscale image, got axes {axes} "
                            f"shape {shape}")
        iy, ix = axes.index("Y"), axes.index("X")
        extra = [i for i in big if i not in (iy, ix)]
        samples = 1
        if extra:
            if len(extra) == 1 and axes[extra[0]] == "S" and extra[0] > ix \
                    and shape[extra[0]] in (3, 4):
                samples = shape[extra[0]]
            else:
                raise DataError(f"{self.path}: expected a 2-D grayscale image, got shape "
                                f"{shape} (axes {axes})")
        self.shape = (shape[iy], shape[ix])
        if 0 in self.shape:
            raise DataError(f"{self.path}: image is empty")
        try:
            self.dtype = _output_dtype(np.dtype(series.dtype))
        except ValueError as exc:
            raise DataError(f"{self.path}: {exc}") from exc
        self.pixel_size_um = _tiff_pixel_size_um(self.tif)
        self._stored_dtype = np.dtype(series.dtype).newbyteorder(self.tif.byteorder)
        self._samples = samples

        page = series.pages[0]
        keyframe = series.keyframe
        contiguous = (len(series.pages) == 1 and isinstance(page, tifffile.TiffPage)
                      and page.is_contiguous and keyframe.predictor == 1
                      and keyframe.fillorder == 1
                      and (samples == 1 or keyframe.planarconfig == 1))
        if contiguous:
            # Rows are stored in order: read them straight from the file.
            self._offset = int(page.dataoffsets[0])
            self._row_bytes = self.shape[1] * samples * self._stored_dtype.itemsize
            self._fh = os.open(self.path, os.O_RDONLY)
            self.chunk_rows = 1
            return
        import zarr

        store = self.tif.aszarr(series=0, level=0)
        z = zarr.open(store, mode="r")
        if not hasattr(z, "shape"):  # a group: take its first array
            z = z[next(iter(z.array_keys()))]
        if tuple(z.shape) != shape:
            raise DataError(f"{self.path}: unexpected zarr shape {z.shape} for series {shape}")
        self._zarr = z
        self._key = [0] * len(shape)
        self._iy, self._ix = iy, ix
        if samples > 1:
            self._key[extra[0]] = slice(None)
        self.chunk_rows = int(z.chunks[iy])
        chunk_bytes = int(np.prod(z.chunks)) * self._stored_dtype.itemsize
        if chunk_bytes > _BIG_CHUNK_BYTES:
            log.warning("%s: stored in chunks of %d MB (%d rows): each is decoded whole, so "
                        "memory grows with it; re-save as a tiled TIFF for bounded memory",
                        self.path, chunk_bytes >> 20, self.chunk_rows)

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self._fh is not None:
            n = (y1 - y0) * self._row_bytes
            buf = bytearray(n)
            got = os.preadv(self._fh, [buf], self._offset + y0 * self._row_bytes) if n else 0
            if got != n:
                raise DataError(f"{self.name}: file is truncated (rows {y0}-{y1} missing)")
            rows = np.frombuffer(buf, dtype=self._stored_dtype).reshape(
                y1 - y0, self.shape[1], *((self._samples,) if self._samples > 1 else ()))
            block = rows[:, x0:x1]
        else:
            key = list(self._key)
            key[self._iy], key[self._ix] = slice(y0, y1), slice(x0, x1)
            block = np.asarray(self._zarr[tuple(key)])
            if self._iy > self._ix:  # (X, Y) storage order: transpose to (Y, X)
                block = np.swapaxes(block, 0, 1)
        out = _convert(block, self.dtype, self.name)
        return np.ascontiguousarray(out) if x1 - x0 < self.shape[1] else out

    def close(self) -> None:
        if self._fh is not None:
            os.close(self._fh)
            self._fh = None
        self.tif.close()


class RowWindow:
    """Forward-moving row window over columns [x0, x1) of a source.

    :meth:`rows` returns rows [y0, y1) for non-decreasing y0; the source is read in blocks
    aligned to its ``chunk_rows`` and rows still needed are kept, so every stored chunk is
    decoded once. Memory: at most (y1 - y0) + chunk_rows rows of (x1 - x0) pixels.
    """

    def __init__(self, source: SlideSource, x0: int, x1: int) -> None:
        self.source, self.x0, self.x1 = source, x0, x1
        self._buf = np.empty((0, x1 - x0), dtype=source.dtype)
        self._y0 = 0  # first row held in _buf

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """(y1 - y0, x1 - x0) rows; a view valid until the next call."""
        if y0 < self._y0:
            raise ValueError(f"RowWindow moves forward only: asked row {y0} < {self._y0}")
        held_end = self._y0 + len(self._buf)
        if y1 > held_end:
            chunk = self.source.chunk_rows
            end = min(self.source.shape[0], -(-y1 // chunk) * chunk)
            start = max(held_end, y0)
            new = self.source.read(start, end, self.x0, self.x1)
            keep = self._buf[y0 - self._y0:] if y0 < held_end else self._buf[:0]
            self._buf = np.concatenate([keep, new]) if len(keep) else new
            self._y0 = y0 if y0 < held_end else start
        return self._buf[y0 - self._y0 : y1 - self._y0]


class ZarrPlane(SlideSource):
    """Plane ``plane`` (None: the array itself) of a (C, H, W) or (H, W) zarr array."""

    def __init__(self, z: Any, plane: int | None, name: str) -> None:
        self.z, self.plane, self.name = z, plane, name
        self.shape = (int(z.shape[-2]), int(z.shape[-1]))
        self.dtype = np.dtype(z.dtype)
        self.chunk_rows = int(z.chunks[-2])

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self.plane is None:
            return np.asarray(self.z[y0:y1, x0:x1])
        return np.asarray(self.z[self.plane, y0:y1, x0:x1])


def slide_stem(path: str | Path) -> str:
    """The name outputs are called after: ``a.tif`` -> ``a``, ``a.ome.zarr`` -> ``a``."""
    name = Path(path).name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def open_slide(path_or_array: str | Path | np.ndarray | SlideSource, level: int = 0
               ) -> SlideSource:
    """A :class:`SlideSource` for a file (TIFF and OME-Zarr read lazily, other formats
    loaded) or an in-memory (H, W) array; ``level``: the OME-Zarr pyramid level (0: full
    resolution). Raises :class:`~temseg.data.DataError` naming the file."""
    if isinstance(path_or_array, SlideSource):
        return path_or_array
    if isinstance(path_or_array, np.ndarray):
        return ArraySource(path_or_array)
    path = Path(path_or_array)
    from .omezarr import OmeZarrSource, is_zarr

    if is_zarr(path):
        if not path.exists():
            raise DataError(f"{path}: file not found")
        return OmeZarrSource(path, level)
    if level != 0:
        raise DataError(f"{path}: level {level} asked; pyramid levels are read from "
                        "OME-Zarr inputs only")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() in _TIFF_SUFFIXES:
        return TiffSource(path)
    image, pixel_size = read_image(path)
    return ArraySource(image, str(path), pixel_size)
