"""Instances of a label mask, streamed band by band.

Rule (the same in memory and streamed, so both give identical tables):

1. **Components**: 8-connected components of the pixels of one instance class (two pixels
   of different classes never join). A band is labelled on its own; components that touch
   across a band seam (8-connectivity) are merged by union-find. A component is *complete*
   once a band ends without it in its last row.
2. **Split** of each complete component, on its own bounding-box crop padded by one
   background pixel (outside the component = outside the slide = background):
   ``d`` = exact Euclidean distance transform; markers = the h-maxima of ``ln d`` with
   ``h = -ln(neck_ratio)``, i.e. the distance peaks whose dynamic exceeds ``h``: a component
   is cut at a neck whose half-width is below ``neck_ratio`` times the peak half-width
   (radius) of each part it joins; then a watershed of ``-d`` from the markers within the
   component (8-connectivity). One marker: the component is one instance.
3. **Ids** follow the raster order (row, then column) of each instance's first pixel.

Memory: the band, plus the rows from the top of the tallest component still open (width x
rows x 5 bytes), plus the table (about 120 bytes per instance).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from . import kernels as K
from .rule import SplitRule
from .sources import ClassReader, ProbabilityReader

__all__ = ["SplitRule", "StreamOutput", "split_component", "stream_instances"]


def split_component(mask: np.ndarray, h: float) -> np.ndarray | None:
    """Watershed split of one component crop, or None when it is one instance.

    Args:
        mask: (h, w) bool padded crop (background ring) of one 8-connected component.
        h: marker threshold, ``SplitRule.h``.

    Returns:
        (h, w) int32 instance labels 1..k (k >= 2, 0 outside), or None.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import local_maxima, reconstruction
    from skimage.segmentation import watershed

    d2 = K.edt_squared(mask)
    if math.isinf(h) or not K.has_second_peak(mask, d2, h):
        return None
    f = np.where(mask, np.log(np.where(mask, d2, 1.0)), -1.0)  # ln(d^2) = 2 ln d
    seed = np.where(mask, f - 2.0 * h, -1.0)
    rec = reconstruction(seed, f, method="dilation", footprint=np.ones((3, 3), bool))
    peaks = local_maxima(rec, connectivity=2, allow_borders=True) & mask
    markers, n = ndi.label(peaks, structure=np.ones((3, 3), bool))
    if n < 2:
        return None
    return watershed(-d2, markers, mask=mask, connectivity=2).astype(np.int32)


@dataclass
class StreamOutput:
    """What :func:`stream_instances` yields per band: the instances completed in it.

    Attributes:
        props: (n, kernels.N_PROPS) float64 property rows (see :func:`kernels.measure_crop`).
        classes: (n,) uint8 class index of each instance.
        class_pixels: (C,) int64 pixels of each class in the band.
        paint: (crop y0, crop x0, bool crop mask) per instance, when asked for.
        n_split: components split into several instances in this band.
    """

    props: np.ndarray
    classes: np.ndarray
    class_pixels: np.ndarray
    paint: list[tuple[int, int, np.ndarray]]
    n_split: int


class _Forest:
    """Union-find over the global component ids and their statistics, grown per band."""

    def __init__(self) -> None:
        self.parent = np.zeros(1, np.int64)
        self.stats = np.zeros((1, K.N_STATS), np.int64)
        self.n = 0

    def add(self, n: int, stats: np.ndarray) -> None:
        """Append ``n`` new ids with their (n + 1, N_STATS) statistics (row 0 unused)."""
        if self.n + n >= 2**31 - 1:
            raise ValueError("more than 2^31 components: use larger bands")
        need = self.n + n + 1
        if need > self.parent.shape[0]:
            cap = max(need, 2 * self.parent.shape[0])
            self.parent = np.concatenate([self.parent, np.zeros(cap - self.parent.shape[0],
                                                                np.int64)])
            self.stats = np.concatenate([self.stats, np.zeros(
                (cap - self.stats.shape[0], K.N_STATS), np.int64)])
        self.parent[self.n + 1 : need] = np.arange(self.n + 1, need)
        self.stats[self.n + 1 : need] = stats[1:]
        self.n += n


class _Stream:
    """State of one pass over a mask: the union-find forest, the row buffer of resolved
    global ids (and probabilities) from the top of the oldest open component, and the open
    components."""

    def __init__(self, reader: ClassReader, instance_classes: tuple[int, ...],
                 rule: SplitRule, probs: ProbabilityReader | None, paint: bool) -> None:
        self.reader, self.rule, self.probs, self.paint = reader, rule, probs, paint
        self.height, self.width = reader.source.shape
        self.instance_classes = list(instance_classes)
        self.is_instance = np.zeros(256, np.bool_)
        self.is_instance[self.instance_classes] = True
        self.plane = np.full(256, -1, np.int64)
        self.plane[self.instance_classes] = np.arange(len(self.instance_classes))
        self.forest = _Forest()
        self.buf = np.zeros((0, self.width), np.int32)
        n_planes = len(self.instance_classes) if probs is not None else 0
        self.pbuf = np.zeros((n_planes, 0, self.width if probs is not None else 0), np.float32)
        self.buf_y0 = 0
        self.pending = np.zeros(0, np.int64)
        self.last_cls: np.ndarray | None = None

    def band(self, y0: int, y1: int) -> StreamOutput:
        """Read rows [y0, y1), label them, merge the seam, measure completed components."""
        cls = self.reader.read(y0, y1)
        f = self.forest
        labels, n, stats, counts = K.label_band(cls, self.is_instance, y0, self.width, f.n)
        new_ids = np.arange(f.n + 1, f.n + n + 1, dtype=np.int64)
        f.add(n, stats)
        if self.last_cls is not None and len(self.buf):  # empty: no instance in the last row
            K.merge_seam(self.buf[-1], self.last_cls, labels[0], cls[0], f.parent, f.stats)
        self.last_cls = cls[-1].copy()
        self.buf = np.concatenate([self.buf, labels]) if len(self.buf) else labels
        if self.probs is not None:
            rows = self.probs.read(self.instance_classes, y0, y1)
            self.pbuf = np.concatenate([self.pbuf, rows], axis=1)
        K.resolve(self.buf, f.parent)
        candidates = np.unique(K.roots_of(np.concatenate([self.pending, new_ids]), f.parent))
        still_open = np.unique(self.buf[-1]) if y1 < self.height else np.zeros(0, np.int32)
        still_open = still_open[still_open > 0].astype(np.int64)
        complete = np.setdiff1d(candidates, still_open, assume_unique=True)
        out = self._measure(complete)
        out.class_pixels = counts[: self.reader.classes.num_classes]
        self.pending = still_open
        keep = int(f.stats[still_open, K.S_YMIN].min()) if still_open.size else y1
        self.buf = self.buf[keep - self.buf_y0 :]
        self.pbuf = self.pbuf[:, keep - self.buf_y0 :]
        self.buf_y0 = keep
        return out

    def _crop(self, root: int) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Padded crop of a component: (slide y0, x0 of the crop, bool mask, probability
        crop or an empty array)."""
        st = self.forest.stats[root]
        ymin, ymax, xmin, xmax = (int(st[K.S_YMIN]), int(st[K.S_YMAX]), int(st[K.S_XMIN]),
                                  int(st[K.S_XMAX]))
        mask = K.crop_component(self.buf, self.buf_y0, root, ymin, ymax, xmin, xmax)
        prob = np.zeros((0, 0), np.float32)
        if self.pbuf.shape[0]:
            prob = np.zeros(mask.shape, np.float32)
            prob[1:-1, 1:-1] = self.pbuf[self.plane[st[K.S_CLASS]],
                                         ymin - self.buf_y0 : ymax + 1 - self.buf_y0,
                                         xmin : xmax + 1]
        return ymin - 1, xmin - 1, mask, prob

    def _measure(self, complete: np.ndarray) -> StreamOutput:
        stats = self.forest.stats
        props, split = K.measure_components(self.buf, self.buf_y0, complete, stats,
                                            self.width, self.rule.h, self.pbuf, self.plane)
        classes = stats[complete, K.S_CLASS].astype(np.uint8)
        rows, row_classes = [props[~split]], [classes[~split]]
        paint = [self._crop(int(r))[:3] for r in complete[~split]] if self.paint else []
        n_split = 0
        for root, c in zip(complete[split], classes[split], strict=True):
            cy0, cx0, mask, prob = self._crop(int(root))
            parts = split_component(mask, self.rule.h)
            masks = [mask] if parts is None else [parts == j for j in range(1, parts.max() + 1)]
            n_split += parts is not None
            extra = np.empty((len(masks), K.N_PROPS))
            for j, m in enumerate(masks):
                K.measure_crop(m, cy0, cx0, self.width, prob, extra[j])
                if self.paint:
                    paint.append((cy0, cx0, m))
            rows.append(extra)
            row_classes.append(np.full(len(masks), c, np.uint8))
        return StreamOutput(np.concatenate(rows), np.concatenate(row_classes),
                            np.zeros(0, np.int64), paint, n_split)


def stream_instances(reader: ClassReader, instance_classes: tuple[int, ...], rule: SplitRule,
                     band_rows: int = 512, probs: ProbabilityReader | None = None,
                     paint: bool = False, progress: bool = False) -> Iterator[StreamOutput]:
    """The instances of a mask, per band of ``band_rows`` rows, in completion order.

    Args:
        reader: bands of class indices of the mask (H, W).
        instance_classes: class indices whose components are instances (e.g. (2, 3)).
        rule: the split rule.
        band_rows: rows per band (memory ~ band_rows x W x 5 bytes plus open components).
        probs: class probabilities (C, H, W) for the mean probability of each instance.
        paint: also yield each instance's crop mask (for an instance label image).
        progress: tqdm bar over the bands.
    """
    if band_rows < 1:
        raise ValueError(f"band_rows must be >= 1, got {band_rows}")
    stream = _Stream(reader, tuple(instance_classes), rule, probs, paint)
    starts = range(0, stream.height, band_rows)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"morphometrics {reader.source.name}", unit="band")
    for y0 in starts:
        yield stream.band(y0, min(y0 + band_rows, stream.height))
