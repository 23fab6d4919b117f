"""Deterministic synthetic TEM phantoms of peripheral nerve cross-sections.

The phantom is a conceptually infinite slide defined by ``seed``. Every pixel is a pure function
of its global coordinates, so :func:`render_region` of a window is bit-identical to the same crop
of any larger window. This is what lets :func:`write_slide` produce a 30000 x 30000 slide band by
band with memory bounded by the band size.

How consistency is achieved:

* objects (blood vessels, myelinated fibres, unmyelinated bundles) are owned by fixed
  ``cell_size`` cells and generated from ``np.random.default_rng([tag, seed, cell_y, cell_x])``.
  Cells are packed in four phases by the parity of their indices: a cell packs its objects
  (centres inside the cell, radius < cell/2, so they may cross its border) around the final
  objects of its lower-phase neighbours. Same-phase cells are never adjacent, so objects never
  overlap, there are no seams, and a cell's content depends only on (seed, cell indices);
* textures are counter-based hashes / value noise of global coordinates, shot noise comes from
  fixed 128 x 128 blocks with per-block seeds, shading is value noise of global coordinates;
* the PSF blur is a separable convolution evaluated with a halo and cropped; it only uses
  IEEE-exact element-wise operations (no transcendental functions on pixel arrays), in a fixed
  order per pixel, so results never depend on the window size or alignment.

Classes (index: name, grey value on disk): 0 background (0), 1 blood vessel (50), 2 myelinated
axon incl. its myelin sheath (100), 3 unmyelinated axon (150), 4 Schwann cell (200).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from temseg.atomic import atomic_path

__all__ = [
    "CLASS_NAMES",
    "CLASS_VALUES",
    "PhantomConfig",
    "render",
    "render_labels_region",
    "render_region",
    "write_dataset",
    "write_slide",
]

CLASS_NAMES = ("background", "blood_vessel", "myelinated_axon", "unmyelinated_axon",
               "schwann_cell")
CLASS_VALUES = (0, 50, 100, 150, 200)

BACKGROUND, VESSEL, MYELINATED, UNMYELINATED, SCHWANN = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class PhantomConfig:
    """Knobs of the phantom. Lengths are in pixels, grey levels in [0, 1] (1 = bright).

    Attributes
    ----------
    cell_size : int
        Side of the square cells that own the objects (px). Must exceed twice the largest
        object radius.
    fibre_attempts : int
        Size-sorted candidate objects per cell (placed if they fit), also the maximum number
        of hole-filling fibres added afterwards (density knob).
    bundle_fraction : float
        Probability that a candidate is an unmyelinated (Remak) bundle rather than a
        myelinated fibre.
    fibre_radius_range : tuple of float
        Bounding radius of a myelinated fibre unit (myelin + Schwann cytoplasm), px.
    g_ratio_range : tuple of float
        Axon radius / myelin outer radius.
    crescent_prob : float
        Probability that a myelinated fibre has a Schwann cytoplasm crescent (with nucleus).
    bundle_radius_range : tuple of float
        Bounding radius of an unmyelinated bundle (its Schwann cell), px.
    bundle_axon_count : tuple of int
        Inclusive range of the number of unmyelinated axons per bundle.
    unmyelinated_radius_range : tuple of float
        Radius of unmyelinated axons, px.
    vessel_prob : float
        Probability that a cell holds a blood vessel.
    vessel_radius_range : tuple of float
        Outer radius of blood vessels (lumen + wall), px.
    gap : float
        Minimum distance between the bounding circles of two objects, px.
    collagen_dots : int
        Collagen fibril cross-sections (small dark dots) drawn per cell in the matrix.
    blur_sigma : float
        Standard deviation of the gaussian PSF, px.
    dose : float
        Electrons per pixel at full brightness (Poisson-like noise: var = I / dose).
    read_noise : float
        Standard deviation of additive gaussian noise (grey fraction).
    shading_amplitude : float
        Relative amplitude of the slow illumination shading.
    pixel_size_um : float
        Nominal pixel size written into TIFF files, micrometres.
    """

    cell_size: int = 256
    fibre_attempts: int = 120
    bundle_fraction: float = 0.35
    fibre_radius_range: tuple[float, float] = (11.0, 56.0)
    g_ratio_range: tuple[float, float] = (0.6, 0.75)
    crescent_prob: float = 0.5
    bundle_radius_range: tuple[float, float] = (24.0, 46.0)
    bundle_axon_count: tuple[int, int] = (6, 20)
    unmyelinated_radius_range: tuple[float, float] = (4.0, 8.5)
    vessel_prob: float = 1.0
    vessel_radius_range: tuple[float, float] = (32.0, 58.0)
    gap: float = 2.0
    collagen_dots: int = 500
    blur_sigma: float = 1.0
    dose: float = 150.0
    read_noise: float = 0.015
    shading_amplitude: float = 0.08
    pixel_size_um: float = 0.005

    def __post_init__(self) -> None:
        biggest = max(self.fibre_radius_range[1], self.bundle_radius_range[1],
                      self.vessel_radius_range[1])
        if self.cell_size < 2 * biggest + 2 * self.gap + 4:
            raise ValueError(f"cell_size={self.cell_size} too small for objects of radius "
                             f"{biggest}")
        for name in ("fibre_radius_range", "g_ratio_range", "bundle_radius_range",
                     "bundle_axon_count", "unmyelinated_radius_range", "vessel_radius_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must satisfy 0 < lo <= hi, got {(lo, hi)}")
        if self.blur_sigma < 0 or self.dose <= 0 or self.pixel_size_um <= 0:
            raise ValueError("blur_sigma must be >= 0, dose and pixel_size_um > 0")

    @property
    def max_radius(self) -> float:
        """Largest bounding radius any object can have (px)."""
        return max(self.fibre_radius_range[1], self.bundle_radius_range[1],
                   self.vessel_radius_range[1])


# --------------------------------------------------------------------------------------------
# materials: grey level is painted per object; these tables give texture amplitudes per material
(_ECM, _AXO, _MYELIN, _MITO, _UAXO, _UMEMB, _CYTO, _NUC, _LUMEN, _WALL, _RBC, _VNUC,
 _VMEMB) = range(13)
_CLASS_OF = np.array([BACKGROUND, MYELINATED, MYELINATED, MYELINATED, UNMYELINATED, UNMYELINATED,
                      SCHWANN, SCHWANN, VESSEL, VESSEL, VESSEL, VESSEL, VESSEL], dtype=np.uint8)
_GRAIN_AMP = np.array([0.30, 0.22, 0.12, 0.20, 0.22, 0.15, 0.30, 0.42, 0.08, 0.26, 0.10, 0.42,
                       0.15], dtype=np.float32)
_COARSE_AMP = np.array([0.10, 0.05, 0.03, 0.05, 0.05, 0.04, 0.10, 0.22, 0.03, 0.08, 0.03, 0.22,
                        0.04], dtype=np.float32)
_ECM_GREY = 0.62
_COLLAGEN_DEPTH = 0.17

_OFFSET = 1 << 40  # makes negative cell / block indices non-negative for SeedSequence
_MASK64 = (1 << 64) - 1
_NOISE_BLOCK = 128
_CHUNK_ROWS = 256
_CHUNK_COLS = 1024


def _seed(seed: int) -> int:
    return int(seed) & _MASK64


def _rng(tag: int, seed: int, a: int, b: int) -> np.random.Generator:
    return np.random.default_rng([tag, seed, a + _OFFSET, b + _OFFSET])


def _mix64(x: int) -> int:
    """SplitMix64 finaliser on a Python int."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _hash01(salt: int, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Counter-based uniform [0, 1) float32 from integer coordinates (broadcasting).

    Parameters
    ----------
    salt : int
        Stream selector (its low 32 bits are used).
    iy, ix : np.ndarray
        int64 coordinate arrays, broadcastable to the output shape.
    """
    u = np.uint32
    h = (iy.astype(u) * u(0x9E3779B1)) ^ (ix.astype(u) * u(0x85EBCA77) + u(salt & 0xFFFFFFFF))
    h ^= h >> u(16)
    h *= u(0x7FEB352D)
    h ^= h >> u(15)
    h *= u(0x846CA68B)
    h ^= h >> u(16)
    return (h >> u(8)).astype(np.float32) * np.float32(2.0**-24)


def _value_noise(salt: int, y0: int, x0: int, h: int, w: int, period: int) -> np.ndarray:
    """Smooth value noise on a global lattice of spacing ``period``; float32 (h, w) in [0, 1]."""
    def axis(a0: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = np.arange(a0, a0 + n, dtype=np.int64)
        i = g // period
        t = (g - i * period) / period
        return i, i - i[0], (t * t * (3.0 - 2.0 * t)).astype(np.float32)

    iy, jy, sy = axis(y0, h)
    ix, jx, sx = axis(x0, w)
    ly = np.arange(iy[0], iy[-1] + 2, dtype=np.int64)[:, None]
    lx = np.arange(ix[0], ix[-1] + 2, dtype=np.int64)[None, :]
    lat = _hash01(salt, ly, lx)
    rows = lat[:, jx] * (1.0 - sx) + lat[:, jx + 1] * sx
    sy = sy[:, None]
    return rows[jy] * (1.0 - sy) + rows[jy + 1] * sy


# --------------------------------------------------------------------------------------------
# object geometry


@dataclass(frozen=True)
class _Shape:
    """Irregular ellipse: boundary where ``ell(u, v) / (1 + sum a_k cos(k t - p_k)) = radius``."""

    aspect: float
    angle: float
    harmonics: tuple[tuple[float, float], ...]  # (amplitude, phase) for k = 2, 3, ...
    extent: float  # upper bound of boundary distance / radius

    def eval(self, dy: np.ndarray, dx: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(q, c, s, u, v)`` on the grid ``dy`` (h, 1) x ``dx`` (1, w), float32 (h, w):
        q is the shape-normalised radius in px (q < R inside the shape of radius R), c, s the
        direction cosines and u, v the coordinates in the shape's rotated frame."""
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        u = dx * ca + dy * sa
        v = dy * ca - dx * sa
        uu = u * u
        vv = v * v
        inv = 1.0 / (np.sqrt(uu + vv) + 1e-6)
        c = u * inv
        s = v * inv
        uu *= 1.0 / self.aspect
        vv *= self.aspect
        uu += vv
        ell = np.sqrt(uu)
        f = 1.0
        ck, sk = c, s
        for amp, ph in self.harmonics:
            ck, sk = ck * c - sk * s, sk * c + ck * s
            f = f + (ck * (amp * math.cos(ph)) + sk * (amp * math.sin(ph)))
        ell /= f
        return ell, c, s, u, v

    def boundary(self, theta: np.ndarray | float) -> np.ndarray:
        """Distance of the boundary at direction ``theta`` (rotated frame) for radius 1."""
        theta = np.asarray(theta, dtype=np.float64)
        c, s = np.cos(theta), np.sin(theta)
        f = 1.0 + sum(a * np.cos(k * theta - p) for k, (a, p) in enumerate(self.harmonics, 2))
        return f / np.sqrt(c * c / self.aspect + s * s * self.aspect)


def _random_shape(rng: np.random.Generator, max_aspect: float, max_harm: float) -> _Shape:
    amp = rng.uniform(0.0, max_harm, 4) / np.arange(2, 6)
    phase = rng.uniform(0, 2 * math.pi, 4)
    aspect = float(rng.uniform(1.0, max_aspect))
    harm = tuple((float(a), float(p)) for a, p in zip(amp, phase, strict=True))
    return _Shape(aspect, float(rng.uniform(0, math.pi)), harm,
                  math.sqrt(aspect) * (1.0 + float(amp.sum())))


@dataclass(frozen=True)
class _Ellipse:
    """Ellipse in the rotated (u, v) frame of its parent: centre, semi-axes, angle."""

    cu: float
    cv: float
    a: float
    b: float
    angle: float

    def q2(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Squared normalised radius (< 1 inside), same shape as ``u``/``v``."""
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        du = u - self.cu
        dv = v - self.cv
        p = (du * ca + dv * sa) * (1.0 / self.a)
        r = (dv * ca - du * sa) * (1.0 / self.b)
        return p * p + r * r


@dataclass(frozen=True)
class _Fibre:
    """Myelinated fibre: axon + myelin (class 2), thin Schwann ring + optional crescent (4)."""

    y: float  # centre of the bounding circle
    x: float
    oy: float  # offset of the fibre centre from (y, x): the crescent side is thicker
    ox: float
    shape: _Shape
    r_myelin: float
    g: float
    ring: float
    crescent: float
    cres_dir: float
    nucleus: _Ellipse | None
    mitos: tuple[_Ellipse, ...]
    axo_grey: float
    myelin_grey: float

    @property
    def radius(self) -> float:
        return self.shape.extent * (self.r_myelin + self.ring + 0.5 * self.crescent)


@dataclass(frozen=True)
class _Bundle:
    """Remak bundle: Schwann cell (class 4) wrapping unmyelinated axons (class 3)."""

    y: float
    x: float
    shape: _Shape
    r_cell: float
    nucleus: _Ellipse | None
    axons: tuple[tuple[float, float, float], ...]  # (dy, dx, r) in global orientation
    grey: float

    @property
    def radius(self) -> float:
        return self.shape.extent * self.r_cell


@dataclass(frozen=True)
class _Vessel:
    """Blood vessel (class 1): lumen, endothelial wall, optional nucleus and red blood cell."""

    y: float
    x: float
    shape: _Shape
    r_outer: float
    wall: float
    nucleus: _Ellipse | None
    rbc: _Ellipse | None

    @property
    def radius(self) -> float:
        return self.shape.extent * self.r_outer


_Unit = _Fibre | _Bundle | _Vessel


def _make_fibre(rng: np.random.Generator, cfg: PhantomConfig, y: float, x: float,
                bound: float) -> _Fibre:
    shape = _random_shape(rng, 1.2, 0.10)
    e = shape.extent
    r = rng.random(10)
    ring = 1.2 + 1.2 * float(r[0])
    crescent = 0.0
    if r[1] < cfg.crescent_prob:
        crescent = (0.25 + 0.35 * float(r[2])) * bound / e
    r_myelin = bound / e - ring - 0.5 * crescent
    if r_myelin < 8.0:  # small fibre: no crescent
        crescent = 0.0
        r_myelin = max(bound / e - ring, 3.0)
    lo, hi = cfg.g_ratio_range
    g = lo + (hi - lo) * float(r[3])
    cres_dir = 2 * math.pi * float(r[4])
    nucleus = None
    if crescent >= 5.0 and r[5] < 0.8:
        d = r_myelin * float(shape.boundary(cres_dir)) + ring + 0.45 * crescent
        nucleus = _Ellipse(d * math.cos(cres_dir), d * math.sin(cres_dir), 0.38 * crescent,
                           (1.3 + 1.1 * float(r[6])) * crescent, cres_dir)
    # the bounding circle is centred half a crescent away from the fibre centre
    ca, sa = math.cos(shape.angle), math.sin(shape.angle)
    eu, ev = math.cos(cres_dir), math.sin(cres_dir)
    delta = 0.5 * e * crescent
    oy, ox = -delta * (eu * sa + ev * ca), -delta * (eu * ca - ev * sa)
    mitos = []
    r_axon = g * r_myelin
    if r_axon > 10:
        m = rng.random((int(r[7] * 4), 5))
        for rr, t, a, b, ang in m:
            mitos.append(_Ellipse(0.65 * rr * r_axon * math.cos(2 * math.pi * t),
                                  0.65 * rr * r_axon * math.sin(2 * math.pi * t),
                                  (0.07 + 0.03 * a) * r_axon, (0.12 + 0.16 * b) * r_axon,
                                  math.pi * ang))
    return _Fibre(y, x, oy, ox, shape, r_myelin, g, ring, crescent, cres_dir, nucleus,
                  tuple(mitos), 0.80 + 0.05 * (float(r[8]) - 0.5),
                  0.12 + 0.03 * (float(r[9]) - 0.5))


def _make_bundle(rng: np.random.Generator, cfg: PhantomConfig, y: float, x: float,
                 bound: float) -> _Bundle:
    shape = _random_shape(rng, 1.5, 0.16)
    r_cell = bound / shape.extent
    nucleus = None
    if rng.random() < 0.5:
        t = float(rng.uniform(0, 2 * math.pi))
        a = float(rng.uniform(0.16, 0.22)) * r_cell
        d = r_cell * float(shape.boundary(t)) - a - 3.0
        nucleus = _Ellipse(d * math.cos(t), d * math.sin(t), a,
                           a * float(rng.uniform(1.6, 2.4)), t + math.pi / 2)
    # axons: repeatedly put the next axon at the sample point with the most room
    lo, hi = cfg.unmyelinated_radius_range
    # bigger Schwann cells hold more axons
    frac = (bound - cfg.bundle_radius_range[0]) / max(np.ptp(cfg.bundle_radius_range), 1e-9)
    nlo, nhi = cfg.bundle_axon_count
    n_target = int(round(nlo + (nhi - nlo) * min(1.0, 0.5 * frac + 0.5 * float(rng.random()))))
    m = 240
    t = rng.uniform(0, 2 * math.pi, m)
    limit = 0.97 * r_cell * shape.boundary(t)
    d = np.sqrt(rng.random(m)) * limit
    pu, pv = d * np.cos(t), d * np.sin(t)
    room = limit - d - 1.2  # distance to the cell boundary, minus a cytoplasm margin
    if nucleus is not None:
        nq = np.sqrt(nucleus.q2(pu, pv))
        room = np.minimum(room, (nq - 1.0) * min(nucleus.a, nucleus.b) - 1.5)
    want = rng.uniform(lo, hi, n_target)
    au, av, ar = np.empty(n_target), np.empty(n_target), np.empty(n_target)
    n = 0
    while n < n_target:
        k = int(np.argmax(room))
        if room[k] < lo:
            break
        au[n], av[n], ar[n] = pu[k], pv[k], min(want[n], float(room[k]))
        np.minimum(room, np.hypot(pu - au[n], pv - av[n]) - ar[n] - 1.3, out=room)
        n += 1
    ca, sa = math.cos(shape.angle), math.sin(shape.angle)
    axons = tuple((float(au[k] * sa + av[k] * ca), float(au[k] * ca - av[k] * sa), float(ar[k]))
                  for k in range(n))  # rotated (u, v) -> global (dy, dx)
    return _Bundle(y, x, shape, r_cell, nucleus, axons, float(rng.normal(0.46, 0.025)))


def _make_vessel(rng: np.random.Generator, cfg: PhantomConfig, y: float, x: float,
                 bound: float) -> _Vessel:
    shape = _random_shape(rng, 1.35, 0.10)
    r_outer = bound / shape.extent
    wall = float(rng.uniform(0.24, 0.36)) * r_outer
    lumen = r_outer - wall
    nucleus = None
    if rng.random() < 0.6:
        t = float(rng.uniform(0, 2 * math.pi))
        d = lumen * float(shape.boundary(t))
        nucleus = _Ellipse(d * math.cos(t), d * math.sin(t), 0.45 * wall,
                           float(rng.uniform(1.1, 1.6)) * wall, t)
    rbc = None
    if rng.random() < 0.55:
        a = float(rng.uniform(0.4, 0.62)) * lumen
        t = float(rng.uniform(0, 2 * math.pi))
        d = float(rng.uniform(0.0, 0.8)) * (lumen - a)
        rbc = _Ellipse(d * math.cos(t), d * math.sin(t), a, a * float(rng.uniform(0.55, 0.85)),
                       float(rng.uniform(0, math.pi)))
    return _Vessel(y, x, shape, r_outer, wall, nucleus, rbc)


class _Packer:
    """Packs bounding circles centred in one cell, tracking the free room at random points."""

    def __init__(self, rng: np.random.Generator, oy: int, ox: int, size: int, gap: float
                 ) -> None:
        n = max(256, (size * size) // 64)
        self.py = oy + rng.uniform(0, size, n)
        self.px = ox + rng.uniform(0, size, n)
        self.room = np.full(n, np.inf)
        self.max_room = math.inf
        self.gap = gap
        self.units: list[_Unit] = []

    def block(self, units: list[_Unit]) -> None:
        """Make room for objects owned by other cells."""
        if units:
            ys = np.array([u.y for u in units])
            xs = np.array([u.x for u in units])
            rs = np.array([u.radius for u in units]) + self.gap
            d = np.hypot(self.py[:, None] - ys, self.px[:, None] - xs) - rs
            np.minimum(self.room, d.min(axis=1), out=self.room)
            self.max_room = float(self.room.max())

    def add(self, unit: _Unit) -> None:
        d = np.hypot(self.py - unit.y, self.px - unit.x)
        d -= unit.radius + self.gap
        np.minimum(self.room, d, out=self.room)
        self.max_room = float(self.room.max())
        self.units.append(unit)

    def pick(self, radius: float) -> int:
        """Index of a random sample point with room for ``radius``, or -1."""
        if radius > self.max_room:
            return -1
        ok = np.flatnonzero(self.room >= radius)
        return int(ok[0]) if ok.size else -1


def _phase(cy: int, cx: int) -> int:
    return (cy & 1) * 2 + (cx & 1)


@functools.lru_cache(maxsize=2048)
def _cell_units(seed: int, cy: int, cx: int, cfg: PhantomConfig) -> tuple[_Unit, ...]:
    """Objects owned by one cell (their centres lie in the cell).

    Cells are filled in four phases by the parity of their indices; a cell packs its objects
    around the already final objects of its lower-phase neighbours. Two cells of the same phase
    are never adjacent and objects are smaller than half a cell, so nothing ever overlaps, and
    the content of a cell only depends on (seed, cy, cx, cfg).
    """
    size = cfg.cell_size
    oy, ox = cy * size, cx * size
    phase = _phase(cy, cx)
    reach = cfg.max_radius + cfg.gap
    earlier = [u for ny in (cy - 1, cy, cy + 1) for nx in (cx - 1, cx, cx + 1)
               if _phase(ny, nx) < phase for u in _cell_units(seed, ny, nx, cfg)
               if oy - reach - u.radius < u.y < oy + size + reach + u.radius
               and ox - reach - u.radius < u.x < ox + size + reach + u.radius]
    rng = _rng(1, seed, cy, cx)
    pk = _Packer(rng, oy, ox, size, cfg.gap)
    pk.block(earlier)
    lo, hi = cfg.fibre_radius_range
    # one vessel, one bundle and one large fibre first, then a size-sorted mix
    k = cfg.fibre_attempts
    is_bundle = rng.random(k) < cfg.bundle_fraction
    radii = np.where(is_bundle, rng.uniform(*cfg.bundle_radius_range, k),
                     lo * (hi / lo) ** (rng.random(k) ** 0.8))
    order = np.argsort(-radii, kind="stable")
    blo, bhi = cfg.bundle_radius_range
    first = [(_make_bundle, float(rng.uniform(0.5 * (blo + bhi), bhi))),
             (_make_fibre, float(rng.uniform(0.5 * (lo + hi), hi)))]
    if rng.random() < cfg.vessel_prob:
        first.insert(0, (_make_vessel, float(rng.uniform(*cfg.vessel_radius_range))))
    plan = first + [(_make_bundle if is_bundle[i] else _make_fibre, float(radii[i]))
                    for i in order]
    for make, bound in plan:
        j = pk.pick(bound)
        if j >= 0:
            pk.add(make(rng, cfg, float(pk.py[j]), float(pk.px[j]), bound))
    # then fill the remaining holes with fibres as large as fit
    fill = lo * (hi / lo) ** rng.random(k)
    for want in fill:
        if pk.max_room < lo:
            break
        j = int(np.argmax(pk.room))
        bound = min(float(pk.room[j]), float(want))
        pk.add(_make_fibre(rng, cfg, float(pk.py[j]), float(pk.px[j]), bound))
    return tuple(pk.units)


@functools.lru_cache(maxsize=2048)
def _cell_dots(seed: int, cy: int, cx: int, cfg: PhantomConfig) -> tuple[np.ndarray, np.ndarray]:
    """Collagen dot centres of a cell: global int64 arrays (n,), (n,)."""
    size = cfg.cell_size
    d = _rng(3, seed, cy, cx).integers(0, size, size=(2, cfg.collagen_dots))
    return d[0] + cy * size, d[1] + cx * size


# --------------------------------------------------------------------------------------------
# painting


class _Canvas:
    """Paint buffers for the window rows [y0, y0+h) x cols [x0, x0+w)."""

    def __init__(self, y0: int, x0: int, h: int, w: int, with_image: bool) -> None:
        self.y0, self.x0, self.h, self.w = y0, x0, h, w
        self.with_image = with_image
        self.mat = np.zeros((h, w), dtype=np.uint8)  # material; class = _CLASS_OF[mat]
        if with_image:
            self.grey = np.full((h, w), _ECM_GREY, dtype=np.float32)

    def window(self, cy: float, cx: float, r: float
               ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
        ya = max(math.floor(cy - r), self.y0)
        yb = min(math.ceil(cy + r) + 1, self.y0 + self.h)
        xa = max(math.floor(cx - r), self.x0)
        xb = min(math.ceil(cx + r) + 1, self.x0 + self.w)
        if ya >= yb or xa >= xb:
            return None
        dy = (np.arange(ya, yb, dtype=np.int64) - cy).astype(np.float32)[:, None]
        dx = (np.arange(xa, xb, dtype=np.int64) - cx).astype(np.float32)[None, :]
        return (slice(ya - self.y0, yb - self.y0), slice(xa - self.x0, xb - self.x0)), dy, dx

    def put(self, sl: tuple[slice, slice], where: np.ndarray, mat: int,
            grey: float | np.ndarray) -> None:
        np.copyto(self.mat[sl], mat, where=where)
        if self.with_image:
            np.copyto(self.grey[sl], grey, where=where, casting="unsafe")


def _paint_fibre(cv: _Canvas, f: _Fibre) -> None:
    win = cv.window(f.y, f.x, f.radius)
    if win is None:
        return
    sl, dy, dx = win
    q, c, s, u, v = f.shape.eval(dy - f.oy, dx - f.ox)
    bump = np.clip(c * math.cos(f.cres_dir) + s * math.sin(f.cres_dir), 0.0, 1.0)
    unit = q < f.r_myelin + f.ring + f.crescent * (bump * bump)
    myelin = q < f.r_myelin
    axon = q < f.g * f.r_myelin
    cv.put(sl, unit, _CYTO, 0.45)
    if cv.with_image and f.nucleus is not None:
        nq = f.nucleus.q2(u, v)
        cv.put(sl, unit & (nq < 1.0), _NUC, np.where(nq > 0.6, 0.27, 0.36))
    if not cv.with_image:
        np.copyto(cv.mat[sl], _MYELIN, where=myelin)
        return
    # myelin: dark with a faint lamellar period of ~3.2 px
    lam = q * (1.0 / 3.2)
    lam = np.abs(lam - np.floor(lam) - 0.5)
    cv.put(sl, myelin, _MYELIN, f.myelin_grey + 0.08 * lam)
    cv.put(sl, axon, _AXO, f.axo_grey)
    for m in f.mitos:
        cv.put(sl, axon & (m.q2(u, v) < 1.0), _MITO, f.axo_grey - 0.38)


def _paint_bundle(cv: _Canvas, b: _Bundle) -> None:
    win = cv.window(b.y, b.x, b.radius)
    if win is None:
        return
    sl, dy, dx = win
    q, _, _, u, v = b.shape.eval(dy, dx)
    cell = q < b.r_cell
    cv.put(sl, cell, _CYTO, b.grey)
    if cv.with_image and b.nucleus is not None:
        nq = b.nucleus.q2(u, v)
        cv.put(sl, cell & (nq < 1.0), _NUC, np.where(nq > 0.6, 0.27, 0.36))
    for ady, adx, r in b.axons:
        awin = cv.window(b.y + ady, b.x + adx, r)
        if awin is None:
            continue
        asl, ay, ax = awin
        d2 = ay * ay + ax * ax
        inside = d2 < r * r
        cv.put(asl, inside, _UMEMB, 0.30)
        cv.put(asl, d2 < (r - 1.4) ** 2, _UAXO, 0.80)


def _paint_vessel(cv: _Canvas, ves: _Vessel) -> None:
    win = cv.window(ves.y, ves.x, ves.radius)
    if win is None:
        return
    sl, dy, dx = win
    q, _, _, u, v = ves.shape.eval(dy, dx)
    vessel = q < ves.r_outer
    lumen = q < ves.r_outer - ves.wall
    cv.put(sl, vessel, _WALL, 0.42)
    if not cv.with_image:
        return
    cv.put(sl, vessel & ~lumen & (q > ves.r_outer - 1.6), _VMEMB, 0.30)
    cv.put(sl, lumen, _LUMEN, 0.93)
    cv.put(sl, lumen & (q > ves.r_outer - ves.wall - 1.2), _VMEMB, 0.40)
    if ves.nucleus is not None:
        nq = ves.nucleus.q2(u, v)
        cv.put(sl, vessel & (nq < 1.0), _VNUC, np.where(nq > 0.6, 0.26, 0.34))
    if ves.rbc is not None:
        cv.put(sl, lumen & (ves.rbc.q2(u, v) < 1.0), _RBC, 0.11)


def _paint_collagen(cv: _Canvas, dots_y: np.ndarray, dots_x: np.ndarray) -> None:
    """Stamp small dark discs (collagen fibril cross-sections) into the matrix only."""
    keep = ((dots_y >= cv.y0 - 2) & (dots_y < cv.y0 + cv.h + 2)
            & (dots_x >= cv.x0 - 2) & (dots_x < cv.x0 + cv.w + 2))
    py, px = dots_y[keep] - cv.y0, dots_x[keep] - cv.x0
    if py.size == 0:
        return
    hit = np.zeros((cv.h, cv.w), dtype=bool)
    for oy in range(-2, 3):
        for ox in range(-2, 3):
            if oy * oy + ox * ox > 5:
                continue
            yy, xx = py + oy, px + ox
            ok = (yy >= 0) & (yy < cv.h) & (xx >= 0) & (xx < cv.w)
            hit[yy[ok], xx[ok]] = True
    hit &= cv.mat == _ECM
    cv.grey[hit] -= _COLLAGEN_DEPTH


def _paint(cv: _Canvas, seed: int, cfg: PhantomConfig) -> None:
    size = cfg.cell_size
    reach = cfg.max_radius + 3
    cy0 = math.floor((cv.y0 - reach) / size)
    cy1 = math.floor((cv.y0 + cv.h + reach) / size)
    cx0 = math.floor((cv.x0 - reach) / size)
    cx1 = math.floor((cv.x0 + cv.w + reach) / size)
    for cy in range(cy0, cy1 + 1):
        for cx in range(cx0, cx1 + 1):
            for unit in _cell_units(seed, cy, cx, cfg):
                if isinstance(unit, _Fibre):
                    _paint_fibre(cv, unit)
                elif isinstance(unit, _Bundle):
                    _paint_bundle(cv, unit)
                else:
                    _paint_vessel(cv, unit)
    if cv.with_image and cfg.collagen_dots > 0:
        dots = [_cell_dots(seed, cy, cx, cfg) for cy in range(cy0, cy1 + 1)
                for cx in range(cx0, cx1 + 1)]
        _paint_collagen(cv, np.concatenate([d[0] for d in dots]),
                        np.concatenate([d[1] for d in dots]))


# --------------------------------------------------------------------------------------------
# imaging


def _gauss_kernel(sigma: float) -> np.ndarray:
    if sigma <= 0:
        return np.ones(1, dtype=np.float32)
    r = max(1, math.ceil(3.0 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur_valid(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable symmetric convolution, 'valid' part only: (h, w) -> (h-2r, w-2r) float32.

    Only element-wise multiplies and adds in a fixed order, so every output pixel is
    bit-identical regardless of the array it was computed in.
    """
    r = k.size // 2
    if r == 0:
        return a
    h, w = a.shape
    wo, ho = w - 2 * r, h - 2 * r
    tmp = a[:, r:r + wo] * k[r]
    scratch = np.empty_like(tmp)
    for i in range(r):
        np.add(a[:, i:i + wo], a[:, 2 * r - i:2 * r - i + wo], out=scratch)
        scratch *= k[i]
        tmp += scratch
    out = tmp[r:r + ho] * k[r]
    scratch = scratch[:ho]
    for i in range(r):
        np.add(tmp[i:i + ho], tmp[2 * r - i:2 * r - i + ho], out=scratch)
        scratch *= k[i]
        out += scratch
    return out


def _shot_noise(seed: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Standard normal float32 (h, w) from fixed global blocks with per-block seeds."""
    b = _NOISE_BLOCK
    out = np.empty((h, w), dtype=np.float32)
    for by in range(y0 // b, (y0 + h - 1) // b + 1):
        for bx in range(x0 // b, (x0 + w - 1) // b + 1):
            block = _rng(2, seed, by, bx).standard_normal((b, b), dtype=np.float32)
            ya, yb = max(by * b, y0), min((by + 1) * b, y0 + h)
            xa, xb = max(bx * b, x0), min((bx + 1) * b, x0 + w)
            out[ya - y0:yb - y0, xa - x0:xb - x0] = block[ya - by * b:yb - by * b,
                                                          xa - bx * b:xb - bx * b]
    return out


def _render_chunk(y0: int, x0: int, h: int, w: int, seed: int, cfg: PhantomConfig,
                  with_image: bool) -> tuple[np.ndarray | None, np.ndarray]:
    kernel = _gauss_kernel(cfg.blur_sigma)
    r = kernel.size // 2 if with_image else 0
    cv = _Canvas(y0 - r, x0 - r, h + 2 * r, w + 2 * r, with_image)
    _paint(cv, seed, cfg)
    labels = _CLASS_OF[cv.mat[r:r + h, r:r + w]]
    if not with_image:
        return None, labels
    ey, ex = np.arange(cv.y0, cv.y0 + cv.h, dtype=np.int64), np.arange(
        cv.x0, cv.x0 + cv.w, dtype=np.int64)
    salt = _mix64(seed)
    grain = _hash01(salt ^ 0x1, ey[:, None], ex[None, :])
    grain -= 0.5
    grain *= _GRAIN_AMP[cv.mat]
    coarse = _value_noise(salt ^ 0x2, cv.y0, cv.x0, cv.h, cv.w, 14)
    coarse -= 0.5
    coarse *= _COARSE_AMP[cv.mat]
    pre = cv.grey
    pre += grain
    pre += coarse
    img = _blur_valid(pre, kernel)
    shade = _value_noise(salt ^ 0x3, y0, x0, h, w, 384)
    shade -= 0.5
    shade *= 2.0 * cfg.shading_amplitude
    shade += 1.0
    img *= shade
    np.clip(img, 0.0, 1.0, out=img)
    std = img * (1.0 / cfg.dose)
    std += cfg.read_noise ** 2
    np.sqrt(std, out=std)
    std *= _shot_noise(seed, y0, x0, h, w)
    img += std
    img *= 255.0
    np.rint(img, out=img)
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8), labels


def _render(y0: int, x0: int, height: int, width: int, seed: int,
            config: PhantomConfig | None, with_image: bool
            ) -> tuple[np.ndarray | None, np.ndarray]:
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {(height, width)}")
    cfg = config if config is not None else PhantomConfig()
    seed = _seed(seed)
    y0, x0 = int(y0), int(x0)
    image = np.empty((height, width), dtype=np.uint8) if with_image else None
    labels = np.empty((height, width), dtype=np.uint8)
    # chunks on a fixed global grid (cache-friendly, aligned with the noise blocks)
    ys = [y0, *range((y0 // _CHUNK_ROWS + 1) * _CHUNK_ROWS, y0 + height, _CHUNK_ROWS)]
    xs = [x0, *range((x0 // _CHUNK_COLS + 1) * _CHUNK_COLS, x0 + width, _CHUNK_COLS)]
    ys.append(y0 + height)
    xs.append(x0 + width)
    # column-major so that the cells in use stay few (and cached) even for very wide bands
    for xa, xb in zip(xs[:-1], xs[1:], strict=True):
        for ya, yb in zip(ys[:-1], ys[1:], strict=True):
            img, lab = _render_chunk(ya, xa, yb - ya, xb - xa, seed, cfg, with_image)
            labels[ya - y0:yb - y0, xa - x0:xb - x0] = lab
            if image is not None:
                image[ya - y0:yb - y0, xa - x0:xb - x0] = img
    return image, labels


def render_region(y0: int, x0: int, height: int, width: int, seed: int,
                  config: PhantomConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render the window rows ``[y0, y0+height)`` x cols ``[x0, x0+width)`` of the slide ``seed``.

    Any window equals, bit for bit, the same crop of any larger window (offsets may be
    negative). Memory is proportional to the window.

    Parameters
    ----------
    y0, x0 : int
        Global coordinates of the window's top-left pixel.
    height, width : int
        Window size in pixels.
    seed : int
        Slide identity.
    config : PhantomConfig, optional
        Phantom parameters (default ``PhantomConfig()``).

    Returns
    -------
    image : np.ndarray
        uint8 (height, width), TEM-like grey image (dark = electron dense).
    labels : np.ndarray
        uint8 (height, width), class indices 0..4.
    """
    image, labels = _render(y0, x0, height, width, seed, config, True)
    assert image is not None
    return image, labels


def render_labels_region(y0: int, x0: int, height: int, width: int, seed: int,
                         config: PhantomConfig | None = None) -> np.ndarray:
    """Labels only of :func:`render_region` (same values, much faster).

    Returns
    -------
    np.ndarray
        uint8 (height, width), class indices 0..4.
    """
    return _render(y0, x0, height, width, seed, config, False)[1]


def _materials(y0: int, x0: int, height: int, width: int, seed: int,
               config: PhantomConfig | None = None) -> np.ndarray:
    """Material map of a window, uint8 (height, width) of ``_ECM``, ``_MYELIN``, ... codes (for
    tests and diagnostics; ``_CLASS_OF[materials]`` equals the labels)."""
    cv = _Canvas(int(y0), int(x0), height, width, True)
    _paint(cv, _seed(seed), config if config is not None else PhantomConfig())
    return cv.mat


def render(height: int, width: int, seed: int, config: PhantomConfig | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Render a phantom image; same as ``render_region(0, 0, height, width, seed, config)``.

    Returns
    -------
    image : np.ndarray
        uint8 (height, width).
    labels : np.ndarray
        uint8 (height, width), class indices 0..4.
    """
    return render_region(0, 0, height, width, seed, config)


# --------------------------------------------------------------------------------------------
# files


def _tiff_kwargs(cfg: PhantomConfig) -> dict:
    res = 1e4 / cfg.pixel_size_um
    return {"photometric": "minisblack", "resolution": (res, res),
            "resolutionunit": "CENTIMETER",
            "metadata": {"PixelSizeMicrometers": cfg.pixel_size_um}}


def write_dataset(out_dir: str | Path, n_images: int = 4, height: int = 768, width: int = 768,
                  seed: int = 0, config: PhantomConfig | None = None) -> list[Path]:
    """Write ``n_images`` phantoms as ``out_dir/images/synth_XXX.tif`` (uint8) and
    ``out_dir/masks/synth_XXX.tif`` (grey values 0/50/100/150/200); image ``i`` uses seed
    ``seed + i``. Files are written atomically.

    Returns
    -------
    list of Path
        The image paths, in order.
    """
    cfg = config if config is not None else PhantomConfig()
    out_dir = Path(out_dir)
    lut = np.asarray(CLASS_VALUES, dtype=np.uint8)
    paths = []
    for i in range(n_images):
        image, labels = render(height, width, seed + i, cfg)
        name = f"synth_{i:03d}.tif"
        for sub, data in (("masks", lut[labels]), ("images", image)):
            with atomic_path(out_dir / sub / name) as tmp:
                tifffile.imwrite(tmp, data, **_tiff_kwargs(cfg))
        paths.append(out_dir / "images" / name)
    return paths


def _band_tiles(height: int, width: int, seed: int, cfg: PhantomConfig, tile: int,
                band_rows: int, mask: bool) -> Iterator[np.ndarray]:
    lut = np.asarray(CLASS_VALUES, dtype=np.uint8)
    for by in range(0, height, band_rows):
        bh = min(band_rows, height - by)
        if mask:
            band = lut[render_labels_region(by, 0, bh, width, seed, cfg)]
        else:
            band = render_region(by, 0, bh, width, seed, cfg)[0]
        for ty in range(0, bh, tile):
            for tx in range(0, width, tile):
                yield band[ty:ty + tile, tx:tx + tile]
        del band


def write_slide(path: str | Path, height: int, width: int, seed: int = 0,
                config: PhantomConfig | None = None, tile: int = 512, band_rows: int = 1024,
                mask_path: str | Path | None = None, bigtiff: bool = True,
                compression: str | None = None) -> Path:
    """Write a large tiled (Big)TIFF slide, rendered band by band through
    :func:`render_region`; memory is O(width x band_rows). Pixels equal
    ``render(height, width, seed, config)``.

    Parameters
    ----------
    path : str or Path
        Output image (uint8, tiled). Written atomically.
    height, width : int
        Slide size in pixels.
    tile : int
        Tile side (multiple of 16).
    band_rows : int
        Rows rendered at a time (rounded up to a multiple of ``tile``).
    mask_path : str or Path, optional
        If given, also write the labels (grey values 0/50/100/150/200) as a tiled TIFF.
    bigtiff : bool
        Write BigTIFF (needed above 4 GB).
    compression : str, optional
        tifffile compression, e.g. ``"zlib"``; default uncompressed.

    Returns
    -------
    Path
        ``path``.
    """
    if tile <= 0 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    cfg = config if config is not None else PhantomConfig()
    band_rows = max(tile, -(-band_rows // tile) * tile)
    jobs = [(Path(path), False)]
    if mask_path is not None:
        jobs.append((Path(mask_path), True))
    for out, is_mask in jobs:
        with atomic_path(out) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
            tw.write(_band_tiles(height, width, seed, cfg, tile, band_rows, is_mask),
                     shape=(height, width), dtype=np.uint8, tile=(tile, tile),
                     compression=compression, **_tiff_kwargs(cfg))
    return Path(path)

