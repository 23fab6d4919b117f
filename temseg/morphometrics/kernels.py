"""Compiled (numba) kernels of the morphometrics: band labelling, seam union-find, exact
Euclidean distance transform, the split test, and per-instance measurements on crops.

Conventions: connectivity is 8 (a pixel touches its 8 neighbours) for components and for the
distance-transform peaks; crops are component bounding boxes padded by one background pixel on
every side, so the outside of a crop (and of the slide) counts as background.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Columns of the per-instance property rows (float64) that :func:`measure_crop` fills.
P_AREA, P_CY, P_CX, P_MU_CC, P_MU_RC, P_MU_RR = 0, 1, 2, 3, 4, 5
P_PERIM, P_CONVEX, P_YMIN, P_XMIN, P_YMAX, P_XMAX, P_FIRST, P_PROB = 6, 7, 8, 9, 10, 11, 12, 13
N_PROPS = 14
# Columns of the component statistics (int64) of :func:`label_band` and the seam merge.
S_CLASS, S_YMIN, S_YMAX, S_XMIN, S_XMAX, S_FIRST = 0, 1, 2, 3, 4, 5
N_STATS = 6


@njit(cache=True, nogil=True)
def find(parent: np.ndarray, a: int) -> int:
    """Root of ``a`` in the union-find forest ``parent`` (path halving)."""
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(cache=True, nogil=True)
def _union_local(parent: np.ndarray, a: int, b: int) -> int:
    ra, rb = find(parent, a), find(parent, b)
    if ra < rb:
        parent[rb] = ra
        return ra
    parent[ra] = rb
    return rb


@njit(cache=True, nogil=True)
def label_band(cls: np.ndarray, is_instance: np.ndarray, y0: int, width: int, offset: int
               ) -> tuple[np.ndarray, int, np.ndarray]:
    """8-connected components of the pixels whose class ``is_instance`` (same class only).

    Args:
        cls: (h, W) uint8 class indices of the band.
        is_instance: (256,) bool, which classes form instances.
        y0: slide row of the band's first row (for the raster index of first pixels).
        width: slide width W.
        offset: added to the ids (global numbering across bands).

    Returns:
        labels: (h, W) int32, 0 outside instances, offset + 1..n in raster order of first
            pixels.
        n: number of components.
        stats: (n + 1, N_STATS) int64 rows ``class, ymin, ymax, xmin, xmax, first`` (slide
            coordinates, inclusive maxima, ``first`` = raster index y * W + x of the first
            pixel); row 0 unused.
    """
    h, w = cls.shape
    labels = np.zeros((h, w), np.int32)
    parent = np.zeros(h * w // 2 + 2, np.int64)
    nxt = 1
    for y in range(h):
        for x in range(w):
            c = cls[y, x]
            if not is_instance[c]:
                continue
            lab = 0
            for dy, dx in ((0, -1), (-1, -1), (-1, 0), (-1, 1)):
                yy, xx = y + dy, x + dx
                if yy < 0 or xx < 0 or xx >= w or cls[yy, xx] != c:
                    continue
                other = labels[yy, xx]
                lab = other if lab == 0 else _union_local(parent, lab, other)
            if lab == 0:
                if nxt >= parent.shape[0]:
                    grown = np.zeros(parent.shape[0] * 2, np.int64)
                    grown[: parent.shape[0]] = parent
                    parent = grown
                parent[nxt] = nxt
                lab = nxt
                nxt += 1
            labels[y, x] = lab
    # compact ids in raster order of first pixels, and the statistics
    compact = np.zeros(nxt, np.int64)
    stats = np.zeros((nxt, N_STATS), np.int64)
    n = 0
    for y in range(h):
        for x in range(w):
            lab = labels[y, x]
            if lab == 0:
                continue
            r = find(parent, lab)
            if compact[r] == 0:
                n += 1
                compact[r] = n
                stats[n, S_CLASS] = cls[y, x]
                stats[n, S_YMIN] = stats[n, S_YMAX] = y0 + y
                stats[n, S_XMIN] = stats[n, S_XMAX] = x
                stats[n, S_FIRST] = (y0 + y) * width + x
            k = compact[r]
            labels[y, x] = k + offset
            stats[k, S_YMAX] = y0 + y
            stats[k, S_XMIN] = min(stats[k, S_XMIN], x)
            stats[k, S_XMAX] = max(stats[k, S_XMAX], x)
    return labels, n, stats[: n + 1].copy()


@njit(cache=True, nogil=True)
def _merge_stats(stats: np.ndarray, into: int, other: int) -> None:
    stats[into, S_YMIN] = min(stats[into, S_YMIN], stats[other, S_YMIN])
    stats[into, S_YMAX] = max(stats[into, S_YMAX], stats[other, S_YMAX])
    stats[into, S_XMIN] = min(stats[into, S_XMIN], stats[other, S_XMIN])
    stats[into, S_XMAX] = max(stats[into, S_XMAX], stats[other, S_XMAX])
    stats[into, S_FIRST] = min(stats[into, S_FIRST], stats[other, S_FIRST])


@njit(cache=True, nogil=True)
def merge_seam(above: np.ndarray, above_cls: np.ndarray, below: np.ndarray,
               below_cls: np.ndarray, parent: np.ndarray, stats: np.ndarray) -> None:
    """Union the components that touch across a band seam (8-connectivity, same class).

    Args:
        above, below: (W,) int32 global ids of the last row above and the first row below
            the seam (0 = no instance).
        above_cls, below_cls: (W,) uint8 their classes.
        parent: (N,) int64 union-find forest over global ids; the smaller id becomes root.
        stats: (N, N_STATS) int64 component statistics, merged into the roots.
    """
    w = above.shape[0]
    for x in range(w):
        b = below[x]
        if b == 0:
            continue
        for xx in range(max(0, x - 1), min(w, x + 2)):
            a = above[xx]
            if a == 0 or above_cls[xx] != below_cls[x]:
                continue
            ra, rb = find(parent, a), find(parent, b)
            if ra == rb:
                continue
            root, other = (ra, rb) if ra < rb else (rb, ra)
            parent[other] = root
            _merge_stats(stats, root, other)


@njit(cache=True, nogil=True)
def roots_of(ids: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """(n,) int64 roots of the (n,) ids."""
    out = np.empty(ids.shape[0], np.int64)
    for i in range(ids.shape[0]):
        out[i] = find(parent, ids[i])
    return out


@njit(cache=True, nogil=True)
def resolve(labels: np.ndarray, parent: np.ndarray) -> None:
    """Replace every id in ``labels`` (any shape, int32) by its root, in place."""
    flat = labels.reshape(-1)
    for i in range(flat.shape[0]):
        v = flat[i]
        if v != 0 and parent[v] != v:
            flat[i] = find(parent, v)


@njit(cache=True, nogil=True)
def _edt_1d(f: np.ndarray, d: np.ndarray, v: np.ndarray, z: np.ndarray) -> None:
    """Squared distance transform of a 1-D sampled function ``f`` into ``d`` (Felzenszwalb &
    Huttenlocher lower envelope of parabolas); ``v`` and ``z`` are scratch arrays."""
    n = f.shape[0]
    k = 0
    v[0] = 0
    z[0] = -np.inf
    z[1] = np.inf
    for q in range(1, n):
        p = v[k]
        s = ((f[q] + q * q) - (f[p] + p * p)) / (2.0 * (q - p))
        while s <= z[k]:
            k -= 1
            p = v[k]
            s = ((f[q] + q * q) - (f[p] + p * p)) / (2.0 * (q - p))
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = np.inf
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        p = v[k]
        d[q] = (q - p) * (q - p) + f[p]


@njit(cache=True, nogil=True)
def edt_squared(mask: np.ndarray) -> np.ndarray:
    """Exact squared Euclidean distance to the nearest background pixel.

    Args:
        mask: (h, w) bool, with background on its outer ring (a padded crop).

    Returns:
        (h, w) float64 squared distances (integers), 0 on background.
    """
    h, w = mask.shape
    big = float(h * h + w * w)
    g = np.empty((h, w), np.float64)
    for x in range(w):  # columns: distance to the nearest background in the column
        run = big
        for y in range(h):
            run = 0.0 if not mask[y, x] else min(run + 1.0, big)
            g[y, x] = run
        run = big
        for y in range(h - 1, -1, -1):
            run = 0.0 if not mask[y, x] else min(run + 1.0, big)
            g[y, x] = min(g[y, x], run)
    for y in range(h):
        for x in range(w):
            g[y, x] = g[y, x] * g[y, x] if g[y, x] < big else big * big
    out = np.empty((h, w), np.float64)
    n = max(h, w)
    v = np.empty(n, np.int64)
    z = np.empty(n + 1, np.float64)
    row = np.empty(w, np.float64)
    for y in range(h):
        _edt_1d(g[y], row, v, z)
        out[y] = row
    return out


@njit(cache=True, nogil=True)
def has_second_peak(mask: np.ndarray, d2: np.ndarray, h: float) -> bool:
    """Whether the distance map has a peak other than the highest whose dynamic in
    ln(distance) exceeds ``h`` (minus 1e-9): the component may split.

    Union-find over the pixels in decreasing order of distance (a counting sort of the
    integer squared distances); when two regions meet at level ``v``, the one with the lower
    peak ``m`` has dynamic ln(sqrt(m)) - ln(sqrt(v)).

    Args:
        mask: (h, w) bool padded crop of one component.
        d2: (h, w) float64 its squared distances (:func:`edt_squared`).
        h: threshold in ln units (``-ln(neck_ratio)``).
    """
    hh, ww = mask.shape
    top = 0
    n = 0
    for y in range(hh):
        for x in range(ww):
            if mask[y, x]:
                n += 1
                top = max(top, int(d2[y, x]))
    counts = np.zeros(top + 2, np.int64)
    for y in range(hh):
        for x in range(ww):
            if mask[y, x]:
                counts[top - int(d2[y, x]) + 1] += 1
    for i in range(1, top + 2):
        counts[i] += counts[i - 1]
    order = np.empty(n, np.int64)
    for y in range(hh):
        for x in range(ww):
            if mask[y, x]:
                k = top - int(d2[y, x])
                order[counts[k]] = y * ww + x
                counts[k] += 1
    flat = d2.ravel()
    parent = np.full(hh * ww, -1, np.int64)
    peak = np.zeros(hh * ww, np.float64)
    limit = 2.0 * (h - 1e-9)  # compare ln(m) - ln(v) of squared values with 2 h
    for i in range(n):
        p = order[i]
        parent[p] = p
        peak[p] = flat[p]
        level = math.log(flat[p])
        py, px = p // ww, p % ww
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                q = (py + dy) * ww + px + dx
                if (dy == 0 and dx == 0) or parent[q] < 0:
                    continue
                rp, rq = find(parent, p), find(parent, q)
                if rp == rq:
                    continue
                low = min(peak[rp], peak[rq])
                if math.log(low) - level > limit:
                    return True
                if peak[rp] >= peak[rq]:
                    parent[rq] = rp
                else:
                    parent[rp] = rq
    return False


@njit(cache=True, nogil=True)
def _perimeter(mask: np.ndarray) -> float:
    """skimage's ``perimeter(image, neighborhood=4)`` of a padded crop: border pixels (a
    4-neighbour outside) weighted by the pattern of their border neighbours."""
    hh, ww = mask.shape
    border = np.zeros((hh, ww), np.uint8)
    for y in range(1, hh - 1):
        for x in range(1, ww - 1):
            if mask[y, x] and not (mask[y - 1, x] and mask[y + 1, x] and mask[y, x - 1]
                                   and mask[y, x + 1]):
                border[y, x] = 1
    r2 = math.sqrt(2.0)
    total = 0.0
    for y in range(1, hh - 1):
        for x in range(1, ww - 1):
            if not border[y, x]:
                continue
            code = 1 + 2 * (border[y - 1, x] + border[y + 1, x] + border[y, x - 1]
                            + border[y, x + 1])
            code += 10 * (border[y - 1, x - 1] + border[y - 1, x + 1] + border[y + 1, x - 1]
                          + border[y + 1, x + 1])
            if code in (5, 7, 15, 17, 25, 27):
                total += 1.0
            elif code == 21 or code == 33:
                total += r2
            elif code == 13 or code == 23:
                total += (1.0 + r2) / 2.0
    return total


@njit(cache=True, nogil=True)
def _cross(ox: int, oy: int, ax: int, ay: int, bx: int, by: int) -> int:
    return (ax - ox) * (by - oy) - (ay - oy) * (bx - ox)


@njit(cache=True, nogil=True)
def _hull(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convex hull (counter-clockwise in (x, y), no collinear points) of integer points
    sorted by (x, y), by Andrew's monotone chain."""
    n = px.shape[0]
    hx = np.empty(2 * n, np.int64)
    hy = np.empty(2 * n, np.int64)
    k = 0
    for i in range(n):
        while k >= 2 and _cross(hx[k - 2], hy[k - 2], hx[k - 1], hy[k - 1], px[i], py[i]) <= 0:
            k -= 1
        hx[k], hy[k] = px[i], py[i]
        k += 1
    lower = k + 1
    for i in range(n - 2, -1, -1):
        while k >= lower and _cross(hx[k - 2], hy[k - 2], hx[k - 1], hy[k - 1],
                                    px[i], py[i]) <= 0:
            k -= 1
        hx[k], hy[k] = px[i], py[i]
        k += 1
    return hx[: k - 1], hy[: k - 1]


@njit(cache=True, nogil=True)
def _inside(hx: np.ndarray, hy: np.ndarray, x: int, y: int) -> bool:
    m = hx.shape[0]
    for i in range(m):
        j = (i + 1) % m
        if _cross(hx[i], hy[i], hx[j], hy[j], x, y) < 0:
            return False
    return True


@njit(cache=True, nogil=True)
def _convex_area(mask: np.ndarray) -> int:
    """Pixels of skimage's ``convex_hull_image``: pixel centres in the closed convex hull of
    the pixel edge midpoints. Exact, in doubled integer coordinates."""
    hh, ww = mask.shape
    left = np.full(hh, -1, np.int64)
    right = np.full(hh, -1, np.int64)
    for y in range(hh):
        for x in range(ww):
            if mask[y, x]:
                if left[y] < 0:
                    left[y] = x
                right[y] = x
    rows = 0
    for y in range(hh):
        rows += left[y] >= 0
    key = np.empty(8 * rows, np.int64)
    stride = 2 * hh + 4
    i = 0
    for y in range(hh):
        if left[y] < 0:
            continue
        for x in (left[y], right[y]):
            for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                key[i] = (2 * x + dx) * stride + 2 * y + dy
                i += 1
    key.sort()
    px = np.empty(key.shape[0], np.int64)
    py = np.empty(key.shape[0], np.int64)
    m = 0
    for i in range(key.shape[0]):  # sorted by (x, y), duplicates dropped
        if i > 0 and key[i] == key[i - 1]:
            continue
        px[m], py[m] = key[i] // stride, key[i] % stride
        m += 1
    hx, hy = _hull(px[:m], py[:m])
    total = 0
    for y in range(hh):
        if left[y] < 0:  # a row without pixels (not in a connected instance): test it all
            for x in range(ww):
                total += _inside(hx, hy, 2 * x, 2 * y)
            continue
        lo = left[y]
        while lo > 0 and _inside(hx, hy, 2 * (lo - 1), 2 * y):
            lo -= 1
        hi = right[y]
        while hi < ww - 1 and _inside(hx, hy, 2 * (hi + 1), 2 * y):
            hi += 1
        total += hi - lo + 1
    return total


@njit(cache=True, nogil=True)
def measure_crop(mask: np.ndarray, y0: int, x0: int, width: int, prob: np.ndarray,
                 out: np.ndarray) -> None:
    """Properties of one instance into ``out`` (N_PROPS,) float64.

    Args:
        mask: (h, w) bool padded crop (background ring) of the instance.
        y0, x0: slide position of ``mask[0, 0]`` (the pad pixel).
        width: slide width W (raster index of the first pixel).
        prob: (h, w) float32 probability of the instance's class on the crop, or a (0, 0)
            array when there are no probabilities.
        out: filled with area, centroid (y, x), central second moments / area (col-col,
            row-col, row-row), perimeter (px), convex area (px), bbox (min y, min x,
            exclusive max y, max x), first pixel raster index, mean probability (NaN if none).
    """
    hh, ww = mask.shape
    n = 0
    sy = 0.0
    sx = 0.0
    first = -1
    ymin, xmin, ymax, xmax = hh, ww, -1, -1
    psum = 0.0
    has_prob = prob.shape[0] == hh and prob.shape[1] == ww
    for y in range(hh):
        for x in range(ww):
            if mask[y, x]:
                n += 1
                sy += y
                sx += x
                if first < 0:
                    first = (y0 + y) * width + x0 + x
                ymin, ymax = min(ymin, y), max(ymax, y)
                xmin, xmax = min(xmin, x), max(xmax, x)
                if has_prob:
                    psum += prob[y, x]
    cy, cx = sy / n, sx / n
    mrr = mrc = mcc = 0.0
    for y in range(hh):
        for x in range(ww):
            if mask[y, x]:
                mrr += (y - cy) * (y - cy)
                mrc += (y - cy) * (x - cx)
                mcc += (x - cx) * (x - cx)
    out[P_AREA] = n
    out[P_CY] = y0 + cy
    out[P_CX] = x0 + cx
    out[P_MU_CC], out[P_MU_RC], out[P_MU_RR] = mcc / n, mrc / n, mrr / n
    out[P_PERIM] = _perimeter(mask)
    out[P_CONVEX] = _convex_area(mask)
    out[P_YMIN], out[P_XMIN] = y0 + ymin, x0 + xmin
    out[P_YMAX], out[P_XMAX] = y0 + ymax + 1, x0 + xmax + 1
    out[P_FIRST] = first
    out[P_PROB] = psum / n if has_prob else np.nan


@njit(cache=True, nogil=True)
def crop_component(labels: np.ndarray, buf_y0: int, lab: int, ymin: int, ymax: int,
                   xmin: int, xmax: int) -> np.ndarray:
    """(ymax - ymin + 3, xmax - xmin + 3) bool padded crop of the pixels ``== lab`` of the
    row buffer ``labels`` (whose first row is slide row ``buf_y0``)."""
    mask = np.zeros((ymax - ymin + 3, xmax - xmin + 3), np.bool_)
    for y in range(ymin, ymax + 1):
        row = labels[y - buf_y0]
        for x in range(xmin, xmax + 1):
            if row[x] == lab:
                mask[y - ymin + 1, x - xmin + 1] = True
    return mask


@njit(cache=True, nogil=True)
def measure_components(labels: np.ndarray, buf_y0: int, roots: np.ndarray,
                       stats: np.ndarray, width: int, h: float, probs: np.ndarray,
                       prob_plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Measure complete components that do not split; flag the others.

    Args:
        labels: (rows, W) int32 row buffer of resolved global ids.
        buf_y0: slide row of ``labels[0]``.
        roots: (n,) int64 the complete components (their root ids).
        stats: (N, N_STATS) int64 component statistics (bboxes).
        width: slide width.
        h: split threshold in ln units (inf: never split).
        probs: (K, rows, W) float32 probability rows of the buffer, or (0, 0, 0).
        prob_plane: (256,) int64 plane of ``probs`` for each class (-1: none).

    Returns:
        props: (n, N_PROPS) float64 properties (rows of flagged components unset).
        split: (n,) bool, components with a second significant peak (split in Python).
    """
    n = roots.shape[0]
    props = np.empty((n, N_PROPS), np.float64)
    split = np.zeros(n, np.bool_)
    empty = np.zeros((0, 0), np.float32)
    for i in range(n):
        r = roots[i]
        ymin, ymax = stats[r, S_YMIN], stats[r, S_YMAX]
        xmin, xmax = stats[r, S_XMIN], stats[r, S_XMAX]
        mask = crop_component(labels, buf_y0, r, ymin, ymax, xmin, xmax)
        if h < np.inf and has_second_peak(mask, edt_squared(mask), h):
            split[i] = True
            continue
        plane = prob_plane[stats[r, S_CLASS]] if probs.shape[0] > 0 else -1
        prob = empty
        if plane >= 0:
            prob = np.zeros(mask.shape, np.float32)
            for y in range(ymin, ymax + 1):
                for x in range(xmin, xmax + 1):
                    prob[y - ymin + 1, x - xmin + 1] = probs[plane, y - buf_y0, x]
        measure_crop(mask, ymin - 1, xmin - 1, width, prob, props[i])
    return props, split
