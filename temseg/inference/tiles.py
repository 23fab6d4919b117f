"""The tile loop shared by every Python inference path: batching tiles for the predictor and
stitching their scores in the C++ band accumulator.

Both :func:`~temseg.inference.sliding_window_inference` (in memory, MONAI semantics) and
:func:`~temseg.inference.segment_slide` (streaming whole slides) are compositions of:

1. a producer of :class:`TileRow` objects (the tiles of one row of the MONAI grid, for one
   accumulator: an image of the batch or a column panel of a slide), in grid order;
2. :func:`predict_rows`: fills batches of ``sw_batch_size`` tiles across rows (and across
   images, like MONAI's flattened window list; never across the column panels of a slide),
   runs the predictor and yields :class:`Scores` chunks per row, then a row-end marker once
   a row is complete;
3. :class:`Stitcher`: one :class:`temseg._C.BandAccumulator` per key, fed in that order,
   releasing finished row bands (:class:`Band`) at each row end.

Every pixel therefore receives the same tile scores in the same order on both paths, so
their labels are identical.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from .. import _C

__all__ = ["Band", "Scores", "Stitcher", "TileRow", "predict_rows"]


class TileRow(NamedTuple):
    """Tiles of grid row ``k`` for accumulator ``key``.

    tiles: (n, C_in, th, tw) float32 numpy array or tensor; origins: (n, 2) int64 (y, x) of
    each tile in the accumulator's coordinates.
    """

    key: Hashable
    k: int
    tiles: Any
    origins: np.ndarray


class Scores(NamedTuple):
    """Predictor scores (n, C, th, tw) float32 of tiles at ``origins`` of row ``k``, or, when
    ``scores`` is None, the marker that row ``k`` of ``key`` is complete."""

    key: Hashable
    k: int
    scores: np.ndarray | None
    origins: np.ndarray | None


class Band(NamedTuple):
    """Finished rows [row0, row1) of accumulator ``key``: ``labels`` (h, W) uint8 argmax
    and ``probs`` (C, h, W) float32 blended scores (each None unless asked)."""

    key: Hashable
    row0: int
    row1: int
    labels: np.ndarray | None
    probs: np.ndarray | None


def _concat(parts: list[Any]) -> torch.Tensor:
    if len(parts) == 1:
        part = parts[0]
        return torch.from_numpy(part) if isinstance(part, np.ndarray) else part
    if isinstance(parts[0], np.ndarray):
        return torch.from_numpy(np.concatenate(parts))
    return torch.cat(parts)


def _check(out: Any, n: int, n_classes: int | None, tile: tuple[int, int]) -> np.ndarray:
    """The predictor's output as contiguous float32 numpy (n, C, th, tw), or ValueError."""
    ok = isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[0] == n \
        and tuple(out.shape[2:]) == tile and (n_classes is None or out.shape[1] == n_classes)
    if not ok:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        c = "C" if n_classes is None else n_classes
        raise ValueError(f"the predictor must return a ({n}, {c}, {tile[0]}, {tile[1]}) "
                         f"tensor, got {got}")
    return np.ascontiguousarray(out.detach().to("cpu", torch.float32).numpy())


def predict_rows(rows: Iterable[TileRow], predictor: Callable[[torch.Tensor], Any],
                 batch_size: int, tile: tuple[int, int], n_classes: int | None = None,
                 on_batch: Callable[[int], None] | None = None,
                 split_keys: bool = False) -> Iterator[Scores]:
    """Run ``predictor`` over the tiles of ``rows`` in batches of ``batch_size`` filled
    across rows; yield their :class:`Scores` split back per row, and a row-end marker after
    the last chunk of each row. ``on_batch(n)`` is called after each predictor call.

    ``split_keys``: no batch spans two keys (the pending tiles are flushed when the key
    changes), so the batches of one key do not depend on the keys before it: a column panel
    predicted alone (a region of :mod:`temseg.distributed`) sees the very batches it sees
    within the whole slide, hence bit-identical scores on any backend."""
    pending: list[tuple[TileRow, int]] = []  # (row, first tile not yet predicted)

    def run_batch() -> list[Scores]:
        parts, take = [], 0
        while pending and take < batch_size:
            row, i = pending[0]
            n = min(len(row.tiles) - i, batch_size - take)
            parts.append((row, i, n))
            take += n
            if i + n == len(row.tiles):
                pending.pop(0)
            else:
                pending[0] = (row, i + n)
        batch = _concat([row.tiles[i : i + n] for row, i, n in parts])
        with torch.inference_mode():
            scores = _check(predictor(batch), take, n_classes, tile)
        if on_batch is not None:
            on_batch(take)
        out, off = [], 0
        for row, i, n in parts:
            out.append(Scores(row.key, row.k, scores[off : off + n], row.origins[i : i + n]))
            off += n
            if i + n == len(row.tiles):
                out.append(Scores(row.key, row.k, None, None))
        return out

    for row in rows:
        if split_keys and pending and pending[-1][0].key != row.key:
            while pending:
                yield from run_batch()
        pending.append((row, 0))
        while sum(len(r.tiles) - i for r, i in pending) >= batch_size:
            yield from run_batch()
    while pending:
        yield from run_batch()


class Stitcher:
    """Blends :class:`Scores` into one C++ ``BandAccumulator`` per key (created on the key's
    first chunk by ``make_accumulator(key, n_classes)``) and releases finished rows.

    ``final_row(k)``: the last accumulator row that no tile after grid row ``k`` touches
    (``TileGrid.final_row_after(k + 1)``). ``probs`` / ``labels``: what each band carries.
    An accumulator is dropped once its last row is released.
    """

    def __init__(self, make_accumulator: Callable[[Hashable, int], Any],
                 final_row: Callable[[int], int], probs: bool = True,
                 labels: bool = False) -> None:
        self.make_accumulator, self.final_row = make_accumulator, final_row
        self.probs, self.labels = probs, labels
        self._accs: dict[Hashable, Any] = {}

    def __call__(self, chunks: Iterable[Scores]) -> Iterator[Band]:
        for chunk in chunks:
            band = self.add(chunk)
            if band is not None:
                yield band

    def add(self, chunk: Scores) -> Band | None:
        """Feed one chunk; a :class:`Band` when a row end released rows, else None."""
        acc = self._accs.get(chunk.key)
        if chunk.scores is not None:
            if acc is None:
                acc = self._accs[chunk.key] = self.make_accumulator(chunk.key,
                                                                    chunk.scores.shape[1])
            acc.add(chunk.scores, chunk.origins)
            return None
        assert acc is not None, "a row ended before any of its scores arrived"
        r0 = acc.released_row
        probs, labels = acc.finalize_until(self.final_row(chunk.k), self.probs, self.labels)
        r1 = acc.released_row
        if r1 >= acc.height:
            del self._accs[chunk.key]
        return Band(chunk.key, r0, r1, labels, probs) if r1 > r0 else None


def accumulator(height: int, width: int, tile: tuple[int, int], n_classes: int,
                window: Any, num_threads: int = 0) -> Any:
    """A C++ band accumulator for a (height, width) area (see ``_C.BandAccumulator``)."""
    return _C.BandAccumulator(height, width, tile, n_classes, window, num_threads=num_threads)
