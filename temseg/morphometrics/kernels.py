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
def _grow(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` with room for at least ``n`` elements (doubling)."""
    if n <= a.shape[0]:
        return a
    out = np.empty(max(n, 2 * a.shape[0]), a.dtype)
    out[: a.shape[0]] = a
    return out


@njit(cache=True, nogil=True)
def _runs(cls: np.ndarray, is_instance: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Runs of instance pixels and their provisional union-find labels (first pass).

    Returns:
        runs: (nr, 4) int64 rows ``y, x_start, x_end (inclusive), label``.
        parent: union-find forest over the labels (roots are minimal).
        rc: (nr,) uint8 class of each run.
        counts: (256,) int64 pixels of each class value.
        nxt: number of labels + 1.
    """
    h, w = cls.shape
    counts = np.zeros(256, np.int64)
    runs = np.empty((1024, 4), np.int64)
    rc = np.empty(1024, np.uint8)
    parent = np.empty(1024, np.int64)
    nr, nxt, prev_a, prev_b = 0, 1, 0, 0
    for y in range(h):
        row = cls[y]
        cur_a, j, x = nr, prev_a, 0
        while x < w:
            c, x0 = row[x], x
            while x < w and row[x] == c:
                x += 1
            counts[c] += x - x0
            if not is_instance[c]:
                continue
            while j < prev_b and runs[j, 2] < x0 - 1:  # runs above that end too far left
                j += 1
            lab, k = 0, j
            while k < prev_b and runs[k, 1] <= x:  # 8-connected: overlap of [x0-1, x]
                if rc[k] == c:
                    lab = runs[k, 3] if lab == 0 else _union_local(parent, lab, runs[k, 3])
                k += 1
            if lab == 0:
                parent = _grow(parent, nxt + 1)
                parent[nxt] = nxt
                lab = nxt
                nxt += 1
            if nr == runs.shape[0]:
                grown = np.empty((2 * nr, 4), np.int64)
                grown[:nr] = runs
                runs = grown
                rc = _grow(rc, 2 * nr)
            runs[nr, 0], runs[nr, 1], runs[nr, 2], runs[nr, 3] = y, x0, x - 1, lab
            rc[nr] = c
            nr += 1
        prev_a, prev_b = cur_a, nr
    return runs[:nr], parent, rc, counts, nxt


@njit(cache=True, nogil=True)
def label_band(cls: np.ndarray, is_instance: np.ndarray, y0: int, width: int, offset: int
               ) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """8-connected components of the pixels whose class ``is_instance`` (same class only),
    by runs: each run of a row joins the same-class runs of the row above that overlap it or
    touch it diagonally.

    Args:
        cls: (h, W) uint8 class indices of the band.
        is_instance: (256,) bool, which classes form instances.
        y0: slide row of the band's first row (for the raster index of first pixels).
        width: slide width W.
        offset: added to the ids (global numbering across bands).

    Returns:
        labels: (h, W) int32, 0 outside instances, offset + 1..n in raster order of first
            pixels (as ``skimage.measure.label(..., connectivity=2)``).
        n: number of components.
        stats: (n + 1, N_STATS) int64 rows ``class, ymin, ymax, xmin, xmax, first`` (slide
            coordinates, inclusive maxima, ``first`` = raster index y * W + x of the first
            pixel); row 0 unused.
        counts: (256,) int64 pixels of each class value in the band.
    """
    h, w = cls.shape
    runs, parent, rc, counts, nxt = _runs(cls, is_instance)
    # roots are the smallest label of their set = the label of its raster-first run, so
    # numbering roots in increasing order numbers components in raster order
    compact = np.zeros(nxt, np.int64)
    n = 0
    for i in range(1, nxt):
        if parent[i] == i:
            n += 1
            compact[i] = n
        else:
            compact[i] = compact[find(parent, i)]
    labels = np.zeros((h, w), np.int32)
    stats = np.zeros((n + 1, N_STATS), np.int64)
    seen = np.zeros(n + 1, np.bool_)
    for r in range(runs.shape[0]):
        y, xa, xb = runs[r, 0], runs[r, 1], runs[r, 2]
        k = compact[runs[r, 3]]
        labels[y, xa : xb + 1] = k + offset
        if not seen[k]:
            seen[k] = True
            stats[k, S_CLASS] = rc[r]
            stats[k, S_YMIN] = y0 + y
            stats[k, S_XMIN], stats[k, S_XMAX] = xa, xb
            stats[k, S_FIRST] = (y0 + y) * width + xa
        stats[k, S_YMAX] = y0 + y
        stats[k, S_XMIN] = min(stats[k, S_XMIN], xa)
        stats[k, S_XMAX] = max(stats[k, S_XMAX], xb)
    return labels, n, stats, counts


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
def edt_squared(mask: np.ndarray) -> np.ndarray:
    """Exact squared Euclidean distance to the nearest background pixel.

    Column pass (distance to the nearest background in the column), then per row the lower
    envelope of the parabolas ``(x - p)^2 + g(p)^2`` (Felzenszwalb & Huttenlocher).

    Args:
        mask: (h, w) bool, with background on its outer ring (a padded crop).

    Returns:
        (h, w) float64 squared distances (integers), 0 on background.
    """
    h, w = mask.shape
    g = np.empty((h, w), np.int64)
    for x in range(w):
        g[0, x] = 0 if not mask[0, x] else h + w
    for y in range(1, h):
        for x in range(w):
            g[y, x] = 0 if not mask[y, x] else g[y - 1, x] + 1
    for y in range(h - 2, -1, -1):
        for x in range(w):
            if g[y + 1, x] + 1 < g[y, x]:
                g[y, x] = g[y + 1, x] + 1
    out = np.empty((h, w), np.float64)
    v = np.empty(w, np.int64)
    z = np.empty(w + 1, np.float64)
    fq = np.empty(w, np.int64)  # g^2 + x^2 of the row
    for y in range(h):
        for x in range(w):
            fq[x] = g[y, x] * g[y, x] + x * x
        k = 0
        v[0] = 0
        z[0] = -np.inf
        z[1] = np.inf
        for q in range(1, w):
            p = v[k]
            s = (fq[q] - fq[p]) / (2.0 * (q - p))  # where parabolas p and q cross
            while s <= z[k]:
                k -= 1
                p = v[k]
                s = (fq[q] - fq[p]) / (2.0 * (q - p))
            k += 1
            v[k] = q
            z[k] = s
            z[k + 1] = np.inf
        k = 0
        for q in range(w):
            while z[k + 1] < q:
                k += 1
            p = v[k]
            out[y, q] = fq[p] - 2 * q * p + q * q
    return out


@njit(cache=True, nogil=True)
def _local_max_blobs(mask: np.ndarray, d2: np.ndarray) -> tuple[int, np.ndarray]:
    """(blobs, parent): 8-connected blobs of the pixels not lower than any 8-neighbour, and
    a (h * w,) int64 array >= 0 exactly at those pixels. There are at least as many blobs as
    regional maxima (distinct regional maxima never share a blob)."""
    hh, ww = mask.shape
    parent = np.full(hh * ww, -1, np.int64)
    blobs = 0
    for y in range(1, hh - 1):
        for x in range(1, ww - 1):
            v = d2[y, x]
            if v == 0.0:
                continue
            if not (v >= d2[y - 1, x - 1] and v >= d2[y - 1, x] and v >= d2[y - 1, x + 1]
                    and v >= d2[y, x - 1] and v >= d2[y, x + 1] and v >= d2[y + 1, x - 1]
                    and v >= d2[y + 1, x] and v >= d2[y + 1, x + 1]):
                continue
            p = y * ww + x
            parent[p] = p
            blobs += 1
            for q in (p - 1, p - ww - 1, p - ww, p - ww + 1):
                if parent[q] >= 0:
                    rp, rq = find(parent, p), find(parent, q)
                    if rp != rq:
                        parent[max(rp, rq)] = min(rp, rq)
                        blobs -= 1
    return blobs, parent


@njit(cache=True, nogil=True)
def has_second_peak(mask: np.ndarray, d2: np.ndarray, h: float) -> bool:
    """Whether the distance map has a peak other than the highest whose dynamic in
    ln(distance) exceeds ``h`` (minus 1e-9): the component may split.

    Union-find over the pixels in decreasing order of distance (a counting sort of the
    integer squared distances); when two regions meet at level ``v``, the one with the lower
    peak ``m`` has dynamic ln(sqrt(m)) - ln(sqrt(v)). Regions are born only at local-maximum
    pixels, so the flooding stops once those are all in and a single region is left.

    Args:
        mask: (h, w) bool padded crop of one component.
        d2: (h, w) float64 its squared distances (:func:`edt_squared`).
        h: threshold in ln units (``-ln(neck_ratio)``).
    """
    blobs, is_max = _local_max_blobs(mask, d2)
    n_max = 0
    for i in range(is_max.shape[0]):
        n_max += is_max[i] >= 0
    if blobs < 2:  # one regional maximum: one peak
        return False
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
    alive = 0
    for i in range(n):
        if n_max == 0 and alive == 1:
            return False
        p = order[i]
        parent[p] = p
        alive += 1
        n_max -= is_max[p] >= 0
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
                alive -= 1
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
    """Convex hull (no collinear points) of integer points sorted by (px, py), by Andrew's
    monotone chain."""
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
    # hull candidates: on each horizontal level Y (doubled: 2y - 1, 2y, 2y + 1) only the
    # leftmost and rightmost edge midpoints matter; they come out sorted by (Y, X)
    levels = 2 * hh + 2  # level index = Y + 1
    lo = np.full(levels, 1 << 40, np.int64)
    hi = np.full(levels, -(1 << 40), np.int64)
    for y in range(hh):
        if left[y] < 0:
            continue
        a, b = 2 * left[y], 2 * right[y]
        lo[2 * y + 1] = min(lo[2 * y + 1], a - 1)
        hi[2 * y + 1] = max(hi[2 * y + 1], b + 1)
        for yy in (2 * y, 2 * y + 2):
            lo[yy] = min(lo[yy], a)
            hi[yy] = max(hi[yy], b)
    ys = np.empty(2 * levels, np.int64)
    xs = np.empty(2 * levels, np.int64)
    m = 0
    for yy in range(levels):
        if hi[yy] < lo[yy]:
            continue
        ys[m], xs[m] = yy - 1, lo[yy]
        m += 1
        if hi[yy] != lo[yy]:
            ys[m], xs[m] = yy - 1, hi[yy]
            m += 1
    hy, hx = _hull(ys[:m], xs[:m])  # monotone chain in (Y, X) order
    return _lattice_count(hx, hy, hh)


@njit(cache=True, nogil=True)
def _lattice_count(hx: np.ndarray, hy: np.ndarray, hh: int) -> int:
    """Pixel centres (2x, 2y) inside the closed convex polygon (hx, hy) (doubled
    coordinates): per row, the extreme crossings of the edges, rounded inwards exactly."""
    lo = np.full(hh, 1 << 40, np.int64)
    hi = np.full(hh, -(1 << 40), np.int64)
    m = hx.shape[0]
    for i in range(m):
        xa, ya, xb, yb = hx[i], hy[i], hx[(i + 1) % m], hy[(i + 1) % m]
        if ya == yb:
            continue
        if ya > yb:
            xa, ya, xb, yb = xb, yb, xa, ya
        dy = yb - ya
        for y in range((ya + 1) // 2, yb // 2 + 1):  # rows whose centre 2y is in [ya, yb]
            num = xa * dy + (xb - xa) * (2 * y - ya)  # crossing at x = num / dy (doubled)
            lo[y] = min(lo[y], -((-num) // (2 * dy)))  # ceil(num / (2 dy))
            hi[y] = max(hi[y], num // (2 * dy))
    total = 0
    for y in range(hh):
        if hi[y] >= lo[y]:
            total += hi[y] - lo[y] + 1
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
