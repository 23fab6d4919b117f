"""Thin Python helpers over :mod:`temseg._C` for streaming whole-slide segmentation.

:func:`stream_segment` reads a slide one band of rows at a time (any 2-D array-like that
supports row slicing: numpy arrays, ``np.memmap``, tifffile/zarr views), extracts and
normalises tiles in C++ on a prefetch thread, runs the predictor and yields finished row
bands from the C++ :class:`~temseg._C.BandAccumulator`. Peak memory is one band of
``tile_h`` rows of the input plus ``tile_h x W x (C + 1)`` float32 accumulator rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from temseg import _C

__all__ = ["Band", "iter_tile_rows", "stream_segment"]


@dataclass(frozen=True)
class Band:
    """Finished rows [row0, row1) of a slide.

    labels: (row1 - row0, W) uint8 argmax classes, or None.
    probs: (C, row1 - row0, W) float32 blended scores, or None.
    """

    row0: int
    row1: int
    labels: np.ndarray | None
    probs: np.ndarray | None


def iter_tile_rows(grid: _C.TileGrid) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (k, origins of tile row k as int64 (n_cols, 2)) in grid order."""
    origins = grid.origins()
    n_cols = grid.n_cols
    for k in range(grid.n_rows):
        yield k, origins[k * n_cols : (k + 1) * n_cols]


def _read_tiles(image: Any, origins: np.ndarray, tile_size: tuple[int, int], offset: float,
                scale: float, pad_mode: str, num_threads: int) -> np.ndarray:
    """Tiles of one tile row: (n, 1, th, tw) float32, reading only the rows they cover."""
    height = image.shape[0]
    y = int(origins[0, 0])
    y0, y1 = max(y, 0), min(y + tile_size[0], height)
    band = np.asarray(image[y0:y1])
    if band.dtype not in (np.uint8, np.uint16, np.float32):
        band = band.astype(np.float32)
    # Tiles of a MONAI grid stay inside [0, H) unless H < tile_h, where the band is the whole
    # image: padding the band is therefore the same as padding the slide.
    local = origins - np.array([y0, 0], dtype=np.int64)
    return _C.extract_tiles(band, local, tile_size, offset=offset, scale=scale,
                            pad_mode=pad_mode, num_threads=num_threads)


def stream_segment(
    image: Any,
    tile_size: int | tuple[int, int],
    predictor: Callable[[torch.Tensor], torch.Tensor],
    n_classes: int,
    *,
    overlap: float = 0.25,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    batch_size: int = 8,
    offset: float = 0.0,
    scale: float = 1.0,
    pad_mode: str = "reflect",
    labels: bool = True,
    probs: bool = False,
    num_threads: int = 0,
    prefetch: bool = True,
) -> Iterator[Band]:
    """Segment a (H, W) slide band by band.

    Args:
        image: (H, W) uint8 / uint16 / float32 array-like supporting ``image[y0:y1]``.
        tile_size: predictor window (th, tw) or int.
        predictor: (B, 1, th, tw) float32 CPU tensor of ``(x - offset) * scale`` ->
            (B, n_classes, th, tw) tensor (scores or probabilities, any device).
        n_classes: channels returned by the predictor.
        overlap, mode, sigma_scale: grid and blending (see ``_C.TileGrid`` / ``_C.make_window``).
        batch_size: tiles per predictor call.
        pad_mode: padding of tiles reaching outside the slide (only when it is smaller
            than the tile): "reflect", "symmetric", "edge" or "constant".
        labels, probs: what each :class:`Band` carries.
        num_threads: C++ threads for extraction and accumulation (0: all cores).
        prefetch: read + extract the next tile row on a background thread.

    Yields:
        :class:`Band` objects covering rows 0..H in order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(image.shape) != 2:
        raise ValueError(f"image must have shape (H, W), got {tuple(image.shape)}")
    height, width = int(image.shape[0]), int(image.shape[1])
    grid = _C.TileGrid(height, width, tile_size, overlap)
    th, tw = grid.tile_size
    acc = _C.BandAccumulator(height, width, (th, tw), n_classes, mode, sigma_scale, num_threads)
    rows = list(iter_tile_rows(grid))

    def load(k: int) -> np.ndarray:
        return _read_tiles(image, rows[k][1], (th, tw), offset, scale, pad_mode, num_threads)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: Future[np.ndarray] | None = pool.submit(load, 0) if prefetch else None
        for k, origins in rows:
            tiles = pending.result() if pending is not None else load(k)
            if prefetch and k + 1 < len(rows):
                pending = pool.submit(load, k + 1)
            for i in range(0, len(origins), batch_size):
                with torch.inference_mode():
                    out = predictor(torch.from_numpy(tiles[i : i + batch_size]))
                scores = np.ascontiguousarray(out.detach().to("cpu", torch.float32).numpy())
                acc.add(scores, origins[i : i + batch_size])
            row0 = acc.released_row
            p, lab = acc.finalize_until(grid.final_row_after(k + 1), probs, labels)
            if acc.released_row > row0:
                yield Band(row0, acc.released_row, lab, p)
