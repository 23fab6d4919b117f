"""Overlays: the image in grey with the classes tinted, as a thumbnail built while streaming.

One grey map everywhere: the normalised intensity ``(x - offset) * scale`` in [-1, 1]
(the 0.5th..99.5th percentiles with the default normalisation) mapped to 0..255.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from ..labels import ClassTable

__all__ = ["Thumbnail", "grey_u8", "overlay_rgb"]


def grey_u8(block: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """Raw pixels (h, w) -> uint8 display grey: normalised [-1, 1] mapped to [0, 255]."""
    g = (block.astype(np.float32) - np.float32(offset)) * np.float32(scale * 127.5)
    return np.clip(g + np.float32(127.5), 0, 255).astype(np.uint8)


def overlay_rgb(grey: np.ndarray, labels: np.ndarray, classes: ClassTable,
                alpha: float = 0.45) -> np.ndarray:
    """(h, w, 3) uint8: ``grey`` (h, w) uint8 with non-background ``labels`` (h, w) tinted
    in the class colours, composed in row chunks."""
    colors = np.asarray(classes.colors, dtype=np.float32)
    rgb = np.empty((*grey.shape, 3), np.uint8)
    for r in range(0, grey.shape[0], 256):
        g = grey[r : r + 256].astype(np.float32)[..., None]
        lab = labels[r : r + 256]
        tinted = (1 - alpha) * g + alpha * colors[lab]
        rgb[r : r + 256] = np.where((lab > 0)[..., None], tinted, g).astype(np.uint8)
    return rgb


class Thumbnail:
    """A (ceil(H / step), ceil(W / step)) overlay of a (H, W) slide (longest side at most
    ``max_side``), filled from the row blocks the pipeline reads and the label bands it
    writes, column panel by column panel: pixel (i, j) is slide pixel (i step, j step)."""

    def __init__(self, shape: tuple[int, int], max_side: int = 4096) -> None:
        self.step = max(1, math.ceil(max(shape) / max_side))
        size = (-(-shape[0] // self.step), -(-shape[1] // self.step))
        self.grey = np.zeros(size, np.uint8)
        self.labels = np.zeros(size, np.uint8)
        self._next_row: dict[int, int] = {}  # per panel x0: first slide row not yet sampled

    def _cols(self, x0: int, x1: int) -> tuple[int, int]:
        return -(-x0 // self.step), -(-x1 // self.step)

    def add_grey(self, block: np.ndarray, y0: int, bx0: int, x0: int, x1: int,
                 offset: float, scale: float) -> None:
        """``block``: slide rows from ``y0`` and columns from ``bx0`` (covering the panel
        [x0, x1)); rows already sampled for this panel are skipped."""
        s = self.step
        y1 = y0 + block.shape[0]
        start = self._next_row.get(x0, 0)
        if y1 <= start:
            return
        r = -(-max(y0, start) // s) * s
        c0, c1 = self._cols(x0, x1)
        sel = block[r - y0 :: s, c0 * s - bx0 : (c1 - 1) * s - bx0 + 1 : s]
        self.grey[r // s : r // s + len(sel), c0:c1] = grey_u8(sel, offset, scale)
        self._next_row[x0] = y1

    def add_labels(self, labels: np.ndarray, row0: int, x0: int, x1: int) -> None:
        """``labels``: (h, x1 - x0) uint8 class indices of slide rows from ``row0``."""
        s = self.step
        r = -(-row0 // s) * s
        c0, c1 = self._cols(x0, x1)
        sel = labels[r - row0 :: s, c0 * s - x0 :: s]
        self.labels[r // s : r // s + len(sel), c0:c1] = sel[:, : c1 - c0]

    def save(self, path: str | Path, classes: ClassTable) -> None:
        """Write the RGB PNG to ``path`` (a temporary path: the caller commits it)."""
        Image.fromarray(overlay_rgb(self.grey, self.labels, classes)).save(path, format="PNG")
