"""Tiled BigTIFF output whose tiles may arrive in any order, with bounded memory.

A TIFF writer (tifffile) needs the tiles in file order: plane by plane, tile row by tile
row. The slide pipeline finishes tiles column panel by column panel, so
:class:`TiledTiffSpool` encodes each tile as it arrives (zlib or raw) into a spool file
next to the output (an anonymous temporary file) and records where it went;
:meth:`TiledTiffSpool.finish` then streams the encoded tiles in file order into tifffile
(which writes pre-encoded ``bytes`` as they are) to a temporary file that is renamed onto
the output. Memory is one tile; an interrupted run leaves neither the output nor temporary
files behind (:meth:`TiledTiffSpool.discard`; the spool has no name, and the renamed
temporary file only exists while :meth:`~TiledTiffSpool.finish` runs).

:class:`TileRowAssembler` turns row bands of a column panel into whole tiles: it keeps at
most one tile height of rows.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..atomic import atomic_path

__all__ = ["TileRowAssembler", "TiledTiffSpool", "tiff_tags"]

COMPRESSIONS = (None, "zlib")


def tiff_tags(pixel_size_um: float | None, description: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """``TiffWriter.write`` keywords of temseg's outputs: the resolution tags of the pixel
    size (pixels per centimetre) and a JSON description (``PixelSizeMicrometers`` plus
    ``description``, e.g. the model, backend and precision that made the output)."""
    import json

    tags: dict[str, Any] = {}
    desc = dict(description or {})
    if pixel_size_um:
        res = 1e4 / pixel_size_um
        tags.update(resolution=(res, res), resolutionunit="CENTIMETER")
        desc["PixelSizeMicrometers"] = float(pixel_size_um)
    if desc:
        tags["description"] = json.dumps(desc, sort_keys=True)
    return tags


class TiledTiffSpool:
    """Collects the uint8 tiles of a (H, W) or (C, H, W) image, then writes a tiled BigTIFF.

    Args:
        path: final output file (written atomically by :meth:`finish`).
        shape: (H, W) or (C, H, W); C planes are written as C pages (``tifffile.imread``
            returns (C, H, W)).
        tile: tile side (multiple of 16).
        compression: "zlib" (deflate, level ``level``) or None.
    """

    def __init__(self, path: str | Path, shape: tuple[int, ...], tile: int = 512,
                 compression: str | None = "zlib", level: int = 6) -> None:
        if tile <= 0 or tile % 16:
            raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        if len(shape) not in (2, 3):
            raise ValueError(f"shape must be (H, W) or (C, H, W), got {shape}")
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.planes = self.shape[0] if len(shape) == 3 else 1
        self.height, self.width = self.shape[-2:]
        self.tile = tile
        self.compression = compression
        self.level = level
        self.tiles_y = -(-self.height // tile)
        self.tiles_x = -(-self.width // tile)
        n = self.planes * self.tiles_y * self.tiles_x
        self._offsets = np.full(n, -1, dtype=np.int64)
        self._sizes = np.zeros(n, dtype=np.int64)
        self._end = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Anonymous (already unlinked) file next to the output: nothing is left behind even
        # when the process is killed.
        self._file: Any = tempfile.TemporaryFile(prefix=f".{self.path.name}.",
                                                 suffix=".spool", dir=self.path.parent)
        self._fd: int | None = self._file.fileno()

    def put(self, plane: int, ty: int, tx: int, data: np.ndarray) -> None:
        """Store tile (ty, tx) of ``plane``: uint8 (h, w) with h, w <= tile (edge tiles may be
        short; they are zero-padded)."""
        if self._fd is None:
            raise RuntimeError(f"{self.path}: spool already finished or discarded")
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[0] > self.tile \
                or data.shape[1] > self.tile:
            raise ValueError(f"tile must be uint8 (<= {self.tile}, <= {self.tile}), got "
                             f"{data.dtype} {data.shape}")
        if data.shape != (self.tile, self.tile):
            full = np.zeros((self.tile, self.tile), np.uint8)
            full[: data.shape[0], : data.shape[1]] = data
            data = full
        raw = np.ascontiguousarray(data).tobytes()
        blob = zlib.compress(raw, self.level) if self.compression == "zlib" else raw
        index = (plane * self.tiles_y + ty) * self.tiles_x + tx
        os.pwrite(self._fd, blob, self._end)
        self._offsets[index], self._sizes[index] = self._end, len(blob)
        self._end += len(blob)

    def _tiles(self) -> Iterator[bytes]:
        assert self._fd is not None
        for off, size in zip(self._offsets, self._sizes, strict=True):
            yield os.pread(self._fd, int(size), int(off))

    def finish(self, **tiff_kwargs: Any) -> Path:
        """Write the BigTIFF (atomically) and remove the spool; ``tiff_kwargs`` go to
        ``TiffWriter.write`` (e.g. ``resolution``, ``description``)."""
        with atomic_path(self.path) as tmp:
            self.finish_to(tmp, **tiff_kwargs)
        return self.path

    def finish_to(self, path: str | Path, **tiff_kwargs: Any) -> Path:
        """Write the BigTIFF to ``path`` as it is (a temporary the caller commits) and
        remove the spool."""
        missing = int((self._offsets < 0).sum())
        if missing:
            raise RuntimeError(f"{self.path}: {missing} tiles were never written")
        try:
            with tifffile.TiffWriter(path, bigtiff=True) as tw:
                tw.write(self._tiles(), shape=self.shape, dtype=np.uint8,
                         tile=(self.tile, self.tile), compression=self.compression,
                         photometric="minisblack", metadata=None, **tiff_kwargs)
        finally:
            self.discard()
        return Path(path)

    def discard(self) -> None:
        """Close (and so delete) the spool file (idempotent); the output is not written."""
        if self._fd is not None:
            self._file.close()
            self._fd = None


class TileRowAssembler:
    """Cuts finished row bands of one column panel into tiles of a :class:`TiledTiffSpool`.

    The panel covers image columns [x0, x1) with ``x0`` a multiple of the tile size and
    ``x1`` a multiple of it or the image width. Bands must arrive in row order starting at
    row 0; at most one tile height of rows is buffered.
    """

    def __init__(self, spool: TiledTiffSpool, x0: int, x1: int) -> None:
        if x0 % spool.tile or (x1 % spool.tile and x1 != spool.width):
            raise ValueError(f"panel [{x0}, {x1}) is not aligned to tiles of {spool.tile}")
        self.spool, self.x0, self.x1 = spool, x0, x1
        self._rows: list[np.ndarray] = []  # pending (P, h, x1 - x0) parts
        self._row0 = 0  # first pending row
        self._count = 0  # pending rows

    def add(self, band: np.ndarray) -> None:
        """band: uint8 (h, x1 - x0) or (P, h, x1 - x0) rows following the previous band."""
        if band.ndim == 2:
            band = band[None]
        if band.shape[0] != self.spool.planes or band.shape[2] != self.x1 - self.x0:
            raise ValueError(f"band shape {band.shape} does not fit planes={self.spool.planes} "
                             f"width={self.x1 - self.x0}")
        self._rows.append(band)
        self._count += band.shape[1]
        t = self.spool.tile
        while self._count and (self._count >= t or self._row0 + self._count
                               == self.spool.height):
            h = min(t, self._count)
            pending = np.concatenate(self._rows, axis=1) if len(self._rows) > 1 \
                else self._rows[0]
            block, rest = pending[:, :h], pending[:, h:]
            ty = self._row0 // t
            for plane in range(self.spool.planes):
                for tx in range(self.x0 // t, -(-self.x1 // t)):
                    a = tx * t - self.x0
                    self.spool.put(plane, ty, tx, block[plane, :, a : a + t])
            self._rows = [rest] if rest.shape[1] else []
            self._row0 += h
            self._count -= h
