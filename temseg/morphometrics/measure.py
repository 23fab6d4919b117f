"""Per-instance measurements of a label mask: :func:`measure_mask` and its result.

Every quantity equals ``skimage.measure.regionprops`` of the instance label image (same area,
centroid, perimeter (4-neighbourhood), inertia-tensor axes, eccentricity, orientation and
convex area), scaled by the pixel size; they are computed by compiled kernels on each
instance's own crop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.slides import SlideSource
from ..labels import TEM_CLASSES, ClassTable
from . import kernels as K
from .instances import stream_instances
from .rule import DEFAULT_BAND_ROWS, SplitRule
from .sources import ClassReader, ProbabilityReader, open_mask

__all__ = ["DEFAULT_BAND_ROWS", "MorphometricsResult", "instance_classes_of", "measure_mask",
           "table_columns"]

log = logging.getLogger("temseg.morphometrics")


@dataclass
class MorphometricsResult:
    """Instances of one mask and their measurements.

    Attributes:
        name: the mask (file name or ``"<array>"``).
        shape: (H, W) of the mask.
        pixel_size_um: micrometres per pixel, or None (then lengths are in px).
        classes: the class table.
        instance_classes: class indices that form instances.
        rule: the split rule used.
        table: column name -> (N,) array, one row per instance, ids 1..N in raster order of
            each instance's first pixel (see :func:`table_columns` for names and units).
        units: column name -> unit ("um", "um^2", "px", "px^2", "rad" or "").
        class_pixels: (C,) int64 pixel count of each class in the mask.
        n_split_components: components split into two or more instances.
        labels: (H, W) int32 instance ids (0 = none) when asked for, else None.
        aggregates: counts, densities, fractions, diameter quantiles (see
            :func:`temseg.morphometrics.aggregate.aggregate`).
    """

    name: str
    shape: tuple[int, int]
    pixel_size_um: float | None
    classes: ClassTable
    instance_classes: tuple[int, ...]
    rule: SplitRule
    table: dict[str, np.ndarray]
    units: dict[str, str]
    class_pixels: np.ndarray
    n_split_components: int
    labels: np.ndarray | None = None
    aggregates: dict = field(default_factory=dict)

    @property
    def n_instances(self) -> int:
        return int(self.table["id"].shape[0])


def instance_classes_of(classes: ClassTable, names: tuple[str | int, ...] | None
                        ) -> tuple[int, ...]:
    """Class indices of ``names`` (names or indices); default: the myelinated and
    unmyelinated axon classes of the TEM table (indices 2 and 3)."""
    if names is None:
        names = ("myelinated_axon", "unmyelinated_axon")
    out = []
    for n in names:
        if isinstance(n, (int, np.integer)):
            if not 0 < int(n) < classes.num_classes:
                raise ValueError(f"instance class {n} is not a foreground class of "
                                 f"{list(classes.names)}")
            out.append(int(n))
        elif n in classes.names:
            out.append(classes.names.index(n))
        else:
            raise ValueError(f"unknown instance class {n!r}; classes are {list(classes.names)}")
    return tuple(sorted(set(out)))


def table_columns(props: np.ndarray, classes_of: np.ndarray, class_names: tuple[str, ...],
                  shape: tuple[int, int], pixel_size_um: float | None
                  ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The per-instance table from property rows sorted by first pixel.

    Args:
        props: (N, kernels.N_PROPS) float64 rows.
        classes_of: (N,) class index of each row.
        class_names: names of the class table.
        shape: (H, W) of the mask (for ``image_border_touching``).
        pixel_size_um: scale of lengths; None: px.

    Returns:
        (columns, units): column name -> (N,) array, column name -> unit.
    """
    s = 1.0 if pixel_size_um is None else float(pixel_size_um)
    u = "px" if pixel_size_um is None else "um"
    area = props[:, K.P_AREA]
    a, b, c = props[:, K.P_MU_CC], -props[:, K.P_MU_RC], props[:, K.P_MU_RR]
    half, disc = (a + c) / 2, np.sqrt(((a - c) / 2) ** 2 + b**2)
    l1, l2 = np.maximum(half + disc, 0), np.maximum(half - disc, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ecc = np.where(l1 > 0, np.sqrt(np.maximum(1 - l2 / l1, 0)), 0.0)
    orient = np.where(a - c == 0, np.where(b < 0, np.pi / 4, -np.pi / 4),
                      0.5 * np.arctan2(-2 * b, c - a))
    bbox = props[:, K.P_YMIN : K.P_XMAX + 1].astype(np.int64)
    border = ((bbox[:, 0] == 0) | (bbox[:, 1] == 0) | (bbox[:, 2] == shape[0])
              | (bbox[:, 3] == shape[1]))
    cols = {
        "id": np.arange(1, len(area) + 1, dtype=np.int64),
        "class": classes_of.astype(np.int64),
        "class_name": np.asarray(class_names, dtype=object)[classes_of],
        "x0": props[:, K.P_CX], "y0": props[:, K.P_CY],
        "area": area * s * s,
        "equivalent_diameter": np.sqrt(4 * area / np.pi) * s,
        "perimeter": props[:, K.P_PERIM] * s,
        "minor_axis_length": 4 * np.sqrt(l2) * s, "major_axis_length": 4 * np.sqrt(l1) * s,
        "eccentricity": ecc, "orientation": orient,
        "solidity": area / props[:, K.P_CONVEX],
        "bbox_min_y": bbox[:, 0], "bbox_min_x": bbox[:, 1],
        "bbox_max_y": bbox[:, 2], "bbox_max_x": bbox[:, 3],
        "image_border_touching": border,
        "mean_probability": props[:, K.P_PROB],
    }
    units = dict.fromkeys(cols, "")
    units.update({"x0": "px", "y0": "px", "area": f"{u}^2", "equivalent_diameter": u,
                  "perimeter": u, "minor_axis_length": u, "major_axis_length": u,
                  "orientation": "rad", "bbox_min_y": "px", "bbox_min_x": "px",
                  "bbox_max_y": "px", "bbox_max_x": "px"})
    return cols, units


def _sorted(props: list[np.ndarray], classes: list[np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenated rows sorted by first-pixel raster index, and the (N,) permutation."""
    p = np.concatenate(props) if props else np.zeros((0, K.N_PROPS))
    c = np.concatenate(classes) if classes else np.zeros(0, np.uint8)
    order = np.argsort(p[:, K.P_FIRST], kind="stable")
    return p[order], c[order], order


def measure_mask(mask: str | Path | np.ndarray | SlideSource, *,
                 pixel_size_um: float | None = None, classes: ClassTable = TEM_CLASSES,
                 instance_classes: tuple[str | int, ...] | None = None,
                 rule: SplitRule | None = None, band_rows: int = DEFAULT_BAND_ROWS,
                 probabilities: str | Path | np.ndarray | None = None,
                 indices: bool | None = None, return_labels: bool = False,
                 progress: bool = False) -> MorphometricsResult:
    """Instances of a label mask of any size and their morphometrics, band by band.

    Args:
        mask: (H, W) mask: a file (TIFF / BigTIFF / PNG / OME-Zarr, grey values of
            ``classes``), an array (grey values or class indices) or a ``SlideSource``.
        pixel_size_um: micrometres per pixel; default: from the file; None there too:
            lengths and areas are reported in px (and a warning is logged).
        classes: the class table of the mask.
        instance_classes: classes (names or indices) whose components are instances;
            default myelinated (2) and unmyelinated (3) axons.
        rule: split rule of touching instances (default ``SplitRule()``).
        band_rows: rows read at a time; the result does not depend on it.
        probabilities: (C, H, W) class probabilities (float in [0, 1] or uint8 255 p) or a
            ``<stem>_probabilities.tif``: adds each instance's mean probability of its class.
        indices: the mask holds class indices (True) or grey values (False); default:
            grey values for files, detected for arrays.
        return_labels: also return the (H, W) int32 instance label image (memory ~ 4 H W).
        progress: tqdm bar over the bands.

    Raises:
        DataError naming the file for unreadable masks or values outside the class table.
    """
    from .aggregate import aggregate

    source = open_mask(mask)
    try:
        ps = pixel_size_um if pixel_size_um is not None else source.pixel_size_um
        if ps is None:
            log.warning("%s: no pixel size (pass --pixel-size / pixel_size_um): lengths and "
                        "areas are in px, densities are not computed", source.name)
        inst = instance_classes_of(classes, instance_classes)
        reader = ClassReader(source, classes, indices)
        probs = (ProbabilityReader(probabilities, source.shape, classes.num_classes)
                 if probabilities is not None else None)
        labels = np.zeros(source.shape, np.int32) if return_labels else None
        rows, row_classes, paint = [], [], []
        class_pixels = np.zeros(classes.num_classes, np.int64)
        n_split = 0
        for out in stream_instances(reader, inst, rule or SplitRule(), band_rows, probs,
                                    paint=return_labels, progress=progress):
            rows.append(out.props)
            row_classes.append(out.classes)
            paint.extend(out.paint)
            class_pixels += out.class_pixels[: classes.num_classes]
            n_split += out.n_split
        if probs is not None:
            probs.close()
        props, cls, order = _sorted(rows, row_classes)
        if labels is not None:
            _paint(labels, paint, order)
        table, units = table_columns(props, cls, classes.names, source.shape, ps)
        if probs is None:
            del table["mean_probability"], units["mean_probability"]
        result = MorphometricsResult(source.name, source.shape, ps, classes, inst,
                                     rule or SplitRule(), table, units, class_pixels,
                                     n_split, labels)
        result.aggregates = aggregate(result)
        return result
    finally:
        if source is not mask:
            source.close()


def _paint(labels: np.ndarray, paint: list[tuple[int, int, np.ndarray]],
           order: np.ndarray) -> None:
    """Write instance ids into ``labels`` (H, W): crop ``paint[k]`` gets id rank(k) + 1."""
    ids = np.empty(len(order), np.int32)
    ids[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    for k, (y0, x0, m) in enumerate(paint):
        ys, xs = np.nonzero(m)
        labels[ys + y0, xs + x0] = ids[k]
