"""OME-Zarr (NGFF) in and out: images read lazily, label images written chunk by chunk.

* :class:`OmeZarrSource`: a level (default 0) of the first multiscale image of an OME-Zarr
  0.4 (Zarr v2) or 0.5 (Zarr v3), or a bare Zarr array, as a :class:`~.slides.SlideSource`;
  the pixel size comes from the level's ``coordinateTransformations``.
* :class:`LabelStore`: an NGFF label image ``<stem>_mask.ome.zarr`` (OME-Zarr 0.5) holding
  the grey values of the class table: level 0 written in whole chunks by any number of
  writers (each owning its columns), a pyramid of 2x mode downsamplings
  (:func:`downsample_mode`) built in column stripes, then the NGFF metadata (``multiscales``
  with the pixel size in ``coordinateTransformations``, ``image-label`` with the class names
  and colours) written by ome-zarr's writer.
* :class:`OmeZarrOutputs` (a whole slide in one process) and :class:`RegionOutputs` (some
  column panels of it, in a worker of :mod:`temseg.distributed`): the outputs protocol of
  the slide pipeline (``add`` / ``commit`` / ``discard``) over a label store.

Completeness rule: a store is written at ``<name>.part`` with ``temseg.complete = false``
and renamed onto ``<name>`` only after the pyramid and the metadata, so an interrupted run
never leaves a store that looks complete; :class:`OmeZarrSource` refuses an incomplete one.
Progress markers (one JSON per finished region or level, written atomically) live in
``.<name>.progress/`` beside it: a rerun resumes from them (:meth:`LabelStore.resume`).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, write_json
from ..data.io import DataError
from ..labels import ClassTable
from .outputs import SlideOutputs, Staged, Tally, encode_band
from .overlay import Thumbnail
from .slides import SlideSource, _convert, _output_dtype

__all__ = ["ChunkRowWriter", "LabelStore", "OmeZarrOutputs", "OmeZarrSource", "RegionOutputs",
           "assemble_thumbnail", "downsample_mode", "is_zarr", "pyramid_shapes"]

NGFF_VERSION = "0.5"
_UNITS_UM = {"micrometer": 1.0, "nanometer": 1e-3, "angstrom": 1e-4, "millimeter": 1e3,
             "centimeter": 1e4, "meter": 1e6}


def is_zarr(path: str | Path) -> bool:
    """A ``.zarr`` path or a folder holding Zarr v2 / v3 metadata."""
    p = Path(path)
    return p.suffix.lower() == ".zarr" or (p.is_dir() and any(
        (p / name).exists() for name in ("zarr.json", ".zgroup", ".zarray")))


def _ome(attrs: Any) -> dict:
    """The OME metadata of a group: under ``"ome"`` (0.5) or at the top level (0.4)."""
    attrs = dict(attrs)
    return dict(attrs.get("ome", attrs))


def _level_scale(multiscale: dict, level: int) -> list[float] | None:
    """The combined ``scale`` of dataset ``level`` (and the multiscale's own transforms)."""
    scale = None
    for ct in (multiscale["datasets"][level].get("coordinateTransformations") or []) + (
            multiscale.get("coordinateTransformations") or []):
        if ct.get("type") == "scale" and "scale" in ct:
            s = [float(v) for v in ct["scale"]]
            scale = s if scale is None else [a * b for a, b in zip(scale, s, strict=True)]
    return scale


def _pixel_size_um(multiscale: dict, level: int, iy: int, ix: int) -> float | None:
    """Pixel size in micrometres of ``level`` from its scale and the axis units (None when
    a unit is missing or unknown, or y and x differ by more than 1 %)."""
    axes = multiscale.get("axes") or []
    scale = _level_scale(multiscale, level)
    if scale is None or len(axes) != len(scale) or not all(isinstance(a, dict) for a in axes):
        return None
    units = [_UNITS_UM.get(axes[i].get("unit", "")) for i in (iy, ix)]
    if None in units:
        return None
    sy, sx = (scale[i] * u for i, u in zip((iy, ix), units, strict=True))
    return sy if sy > 0 and abs(sy / sx - 1.0) <= 0.01 else None


class OmeZarrSource(SlideSource):
    """Level ``level`` of the first multiscale image of an OME-Zarr (0.4 / 0.5), or a bare
    Zarr array, as an (H, W) source; every axis but y and x must have size 1.

    A temseg label store that is not complete (an interrupted run) is refused."""

    def __init__(self, path: str | Path, level: int = 0) -> None:
        import zarr

        self.name = str(path)
        try:
            node = zarr.open(str(path), mode="r")
        except Exception as exc:
            raise DataError(f"{path}: cannot open Zarr ({type(exc).__name__}: {exc})") from exc
        axes: list[str] | None = None
        if not hasattr(node, "shape"):  # a group: OME-Zarr multiscales, else its first array
            node, axes = self._open_level(node, level)
        elif level != 0:
            raise DataError(f"{path}: a bare Zarr array has no level {level}")
        self._setup(node, axes)

    def _open_level(self, group: Any, level: int) -> tuple[Any, list[str] | None]:
        """(array of ``level``, its axis names or None when unnamed: ..., y, x)."""
        meta = _ome(group.attrs)
        if dict(group.attrs).get("temseg", {}).get("complete") is False:
            raise DataError(f"{self.name}: an incomplete temseg output (interrupted run); "
                            "run the same command again to finish it")
        scales = meta.get("multiscales")
        arrays = sorted(group.array_keys())
        if not scales and arrays and level == 0:
            return group[arrays[0]], None
        if not scales:
            raise DataError(f"{self.name}: no OME-Zarr multiscales image in this group")
        ms = scales[0]
        if not 0 <= level < len(ms["datasets"]):
            raise DataError(f"{self.name}: level {level} asked, the image has levels "
                            f"0-{len(ms['datasets']) - 1}")
        names = [a["name"] if isinstance(a, dict) else str(a) for a in ms.get("axes", [])]
        node = group[ms["datasets"][level]["path"]]
        if not names:  # NGFF 0.1 / 0.2: no axes, the last two are y and x
            return node, None
        if "y" not in names or "x" not in names or len(names) != node.ndim:
            raise DataError(f"{self.name}: expected y and x axes, got {names}")
        self.pixel_size_um = _pixel_size_um(ms, level, names.index("y"), names.index("x"))
        return node, names

    def _setup(self, node: Any, axes: list[str] | None) -> None:
        shape = tuple(int(s) for s in node.shape)
        if len(shape) < 2:
            raise DataError(f"{self.name}: expected a 2-D grayscale image, got shape {shape}")
        axes = axes or [*(f"d{i}" for i in range(len(shape) - 2)), "y", "x"]
        iy, ix = axes.index("y"), axes.index("x")
        extra = [s for i, s in enumerate(shape) if i not in (iy, ix) and s != 1]
        if extra or 0 in shape:
            raise DataError(f"{self.name}: expected a 2-D grayscale image, got shape {shape} "
                            f"(axes {''.join(axes)}); other axes must have size 1")
        try:
            self.dtype = _output_dtype(np.dtype(node.dtype))
        except ValueError as exc:
            raise DataError(f"{self.name}: {exc}") from exc
        self._z, self._iy, self._ix = node, iy, ix
        self.shape = (shape[iy], shape[ix])
        self.chunk_rows = int(node.chunks[iy])

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        key: list[Any] = [0] * self._z.ndim
        key[self._iy], key[self._ix] = slice(y0, y1), slice(x0, x1)
        block = np.asarray(self._z[tuple(key)])
        if self._iy > self._ix:
            block = block.T
        return _convert(block, self.dtype, self.name)


def downsample_mode(block: np.ndarray) -> np.ndarray:
    """2x downsampling of a label image (h, w) -> (ceil(h / 2), ceil(w / 2)): each pixel is
    the most frequent value of its 2x2 block (odd edges repeat their last row / column);
    ties go to the top-left pixel's value, so a block without a majority keeps its nearest
    sample."""
    h, w = block.shape
    if h % 2 or w % 2:
        block = np.pad(block, ((0, h % 2), (0, w % 2)), mode="edge")
    q = [block[0::2, 0::2], block[0::2, 1::2], block[1::2, 0::2], block[1::2, 1::2]]
    counts = np.stack([sum((a == b).astype(np.uint8) for b in q) for a in q])
    return np.take_along_axis(np.stack(q), counts.argmax(0)[None], 0)[0]


def pyramid_shapes(shape: tuple[int, int], chunk: int) -> list[tuple[int, int]]:
    """Level shapes: ``shape``, then halved (rounded up) until the longest side <= chunk."""
    shapes = [shape]
    while max(shapes[-1]) > chunk:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


class ChunkRowWriter:
    """Row bands of one column panel at a time -> whole chunk rows of a 2-D zarr array, so
    no chunk is written twice (nor read back) and writers of other panels never share one.
    """

    def __init__(self, array: Any) -> None:
        self.array, self.rows = array, int(array.chunks[0])
        self._x0: int | None = None
        self._y0 = 0
        self._parts: list[np.ndarray] = []

    def add(self, block: np.ndarray, row0: int, x0: int) -> None:
        """``block``: (h, w) rows from ``row0`` of the panel starting at column ``x0``."""
        if x0 != self._x0:
            self.flush()
            self._x0, self._y0 = x0, row0
        self._parts.append(block)
        end = self._y0 + sum(len(p) for p in self._parts)
        cut = end // self.rows * self.rows
        if cut > self._y0:
            rows = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
            self._write(rows[: cut - self._y0])
            self._parts = [rows[cut - self._y0 :]] if end > cut else []
            self._y0 = cut

    def _write(self, rows: np.ndarray) -> None:
        assert self._x0 is not None
        if len(rows):
            self.array[self._y0 : self._y0 + len(rows), self._x0 : self._x0 + rows.shape[1]] = rows

    def flush(self) -> None:
        """Write the rows held (the panel's last, partial chunk row)."""
        if self._parts:
            self._write(np.concatenate(self._parts))
            self._y0 += sum(len(p) for p in self._parts)
            self._parts = []


class LabelStore:
    """An NGFF label image being written at ``<path>.part`` (see the module docstring).

    Attributes:
        path: the final store, e.g. ``out/<stem>_mask.ome.zarr``.
        shapes: (H, W) of each pyramid level (level 0 first); chunks (chunk, chunk).
        info: the ``temseg`` attributes: classes, pixel size, chunk, the job fingerprint.
    """

    def __init__(self, path: str | Path, group: Any) -> None:
        self.path, self.group = Path(path), group
        self.info = dict(group.attrs["temseg"])
        self.chunk = int(self.info["chunk"])
        self.shapes = [tuple(s) for s in self.info["shapes"]]
        self.classes = ClassTable.from_dict(self.info["classes"])

    @staticmethod
    def part_path(path: str | Path) -> Path:
        return Path(f"{path}.part")

    @staticmethod
    def progress_path(path: str | Path) -> Path:
        p = Path(path)
        return p.parent / f".{p.name}.progress"

    @classmethod
    def create(cls, path: str | Path, shape: tuple[int, int], classes: ClassTable,
               chunk: int, pixel_size_um: float | None, job: dict | None = None,
               progress: bool = True) -> LabelStore:
        """A new empty store (an older ``.part`` and its progress are removed first);
        ``progress``: with a folder for region markers (a resumable job)."""
        import zarr

        require_ome_zarr()

        part = cls.part_path(path)
        for old in (part, cls.progress_path(path)):
            shutil.rmtree(old, ignore_errors=True)
        part.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(str(part), mode="w", zarr_format=3)
        shapes = pyramid_shapes(shape, chunk)
        for k, s in enumerate(shapes):
            group.create_array(str(k), shape=s, chunks=(chunk, chunk), dtype="uint8",
                               fill_value=0, dimension_names=("y", "x"))
        group.attrs["temseg"] = {"complete": False, "chunk": chunk, "shapes": shapes,
                                 "classes": classes.to_dict(), "pixel_size_um": pixel_size_um,
                                 "job": job or {}}
        if progress:
            cls.progress_path(path).mkdir()
        return cls(path, group)

    @classmethod
    def open(cls, path: str | Path) -> LabelStore:
        """The store being written at ``<path>.part`` (for a writer of some regions)."""
        import zarr

        return cls(path, zarr.open_group(str(cls.part_path(path)), mode="r+"))

    @classmethod
    def resume(cls, path: str | Path, job: dict) -> LabelStore | None:
        """The unfinished store of the same ``job`` (JSON-equal fingerprint), else None."""
        part = cls.part_path(path)
        if not (part / "zarr.json").is_file() or not cls.progress_path(path).is_dir():
            return None
        try:
            store = cls.open(path)
        except Exception:  # a store broken by a kill: start again
            return None
        same = json.loads(json.dumps(job)) == store.info.get("job")
        return store if same and store.info.get("complete") is False else None

    def level(self, k: int) -> Any:
        return self.group[str(k)]

    def writer(self) -> ChunkRowWriter:
        """A writer of level-0 row bands (grey values)."""
        return ChunkRowWriter(self.level(0))

    def mark(self, name: str, info: dict[str, Any]) -> None:
        """Record that ``name`` (a region, a level) is finished: an atomic JSON marker."""
        write_json(self.progress_path(self.path) / f"{name}.json", info)

    def marks(self) -> dict[str, dict[str, Any]]:
        """The finished parts: marker name -> its info."""
        folder = self.progress_path(self.path)
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}

    def save_piece(self, name: str, **arrays: np.ndarray) -> None:
        """Small per-region arrays (a thumbnail's columns) kept beside the markers."""
        with atomic_path(self.progress_path(self.path) / f"{name}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

    def load_piece(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.progress_path(self.path) / f"{name}.npz") as z:
            return {k: z[k] for k in z.files}

    def stripes(self, k: int, width: int) -> list[tuple[int, int]]:
        """Column stripes [u0, u1) of level ``k`` of at most ``width`` (chunk multiples)."""
        step = max(self.chunk, width // self.chunk * self.chunk)
        w = self.shapes[k][1]
        return [(u, min(u + step, w)) for u in range(0, w, step)]

    def downsample(self, k: int, u0: int, u1: int) -> None:
        """Level ``k`` columns [u0, u1) (chunk-aligned) from level k - 1, one chunk row of
        level k (two of level k - 1) in memory at a time."""
        src, dst = self.level(k - 1), self.level(k)
        h, c = self.shapes[k][0], self.chunk
        x1 = min(2 * u1, self.shapes[k - 1][1])
        for v in range(0, h, c):
            rows = np.asarray(src[2 * v : min(2 * (v + c), self.shapes[k - 1][0]), 2 * u0 : x1])
            dst[v : min(v + c, h), u0:u1] = downsample_mode(rows)

    def build_pyramid(self) -> None:
        """Every level below 0 in one process."""
        for k in range(1, len(self.shapes)):
            self.downsample(k, 0, self.shapes[k][1])

    def seal(self, name: str = "mask") -> Path:
        """Write the NGFF metadata and mark the store complete (still at ``.part``, the
        temporary a :class:`~.outputs.Staged` commit renames); returns that path."""
        self._write_metadata(name)
        self.info["complete"] = True
        self.group.attrs["temseg"] = self.info
        return self.part_path(self.path)

    def finish(self, name: str = "mask") -> Path:
        """:meth:`seal`, then rename the store onto ``path`` (an older store there is
        removed first) and remove the progress markers."""
        staged = Staged()
        staged.add("mask", self.seal(name), self.path)
        staged.commit()
        shutil.rmtree(self.progress_path(self.path), ignore_errors=True)
        return self.path

    def _write_metadata(self, name: str) -> None:
        with warnings.catch_warnings():  # ome_zarr.writer's own deprecated Scaler default
            warnings.simplefilter("ignore", DeprecationWarning)
            from ome_zarr.format import FormatV05
            from ome_zarr.writer import add_metadata, write_multiscales_metadata

        fmt = FormatV05()
        px = self.info.get("pixel_size_um")
        transforms = fmt.generate_coordinate_transformations(self.shapes) or []
        for ct in transforms:
            for t in ct:
                key = t["type"]
                t[key] = [v * (px or 1.0) for v in t[key]]
        unit = {"unit": "micrometer"} if px else {}
        axes = [{"name": a, "type": "space", **unit} for a in ("y", "x")]
        datasets = [{"path": str(k), "coordinateTransformations": ct}
                    for k, ct in enumerate(transforms)]
        write_multiscales_metadata(self.group, datasets, fmt=fmt, axes=axes, name=name)
        add_metadata(self.group, {"image-label": _image_label(self.classes)}, fmt=fmt)


def require_ome_zarr() -> None:
    """Fail before any work when ome-zarr (which writes the NGFF metadata) is missing."""
    import importlib.util

    if importlib.util.find_spec("ome_zarr") is None:
        raise ValueError("OME-Zarr output needs the ome-zarr package: pip install "
                         "'temseg[zarr]'")


def _image_label(classes: ClassTable) -> dict[str, Any]:
    """NGFF ``image-label`` metadata: a colour and a name for each grey value."""
    return {"version": NGFF_VERSION,
            "colors": [{"label-value": int(v), "rgba": [*map(int, c), 255 if i else 0]}
                       for i, (v, c) in enumerate(zip(classes.values, classes.colors,
                                                      strict=True))],
            "properties": [{"label-value": int(v), "class": name, "class-index": i}
                           for i, (v, name) in enumerate(zip(classes.values, classes.names,
                                                             strict=True))]}


class OmeZarrOutputs(SlideOutputs):
    """:class:`~.outputs.SlideOutputs` whose mask is an NGFF label image (``paths["mask"]``
    ends in ``.ome.zarr``); the other files (overlay, probabilities, uncertainty) are as
    there. :meth:`stage` builds the pyramid and seals the store, which the commit renames
    last (as the mask TIFF)."""

    def __init__(self, paths: dict[str, Path], shape: tuple[int, int], classes: ClassTable,
                 tally: Tally, *, out_tile: int = 512, pixel_size_um: float | None = None,
                 **kwargs: Any) -> None:
        others = {k: p for k, p in paths.items() if k != "mask"}
        super().__init__(others, shape, classes, tally, out_tile=out_tile, **kwargs)
        self.paths = paths
        self.store: LabelStore | None = LabelStore.create(
            paths["mask"], shape, classes, out_tile, pixel_size_um, progress=False)
        self._writer = self.store.writer()

    def add(self, labels: np.ndarray, probs: np.ndarray | None, row0: int, x0: int) -> None:
        bands = encode_band(labels, probs, self.classes, self.kinds | {"mask"})
        self.add_encoded(bands, labels, row0, x0)

    def add_encoded(self, bands: dict[str, np.ndarray], labels: np.ndarray, row0: int,
                    x0: int) -> None:
        self._writer.add(bands["mask"], row0, x0)
        super().add_encoded(bands, labels, row0, x0)

    def stage(self, staged: Staged) -> None:
        assert self.store is not None
        self._writer.flush()
        self.store.build_pyramid()
        super().stage(staged)
        staged.add("mask", self.store.seal(), self.paths["mask"])
        self.store = None

    def discard(self) -> None:
        super().discard()
        shutil.rmtree(LabelStore.part_path(self.paths["mask"]), ignore_errors=True)
        self.store = None


class RegionOutputs:
    """The outputs of some column panels of a slide (a region ``name``), written into the
    level 0 of an open :class:`LabelStore`; :meth:`commit` writes the region's thumbnail
    columns and class counts, then its done-marker (the last thing a region writes)."""

    needs_probs = False

    def __init__(self, store: LabelStore, name: str, columns: tuple[int, int],
                 overlay_max_side: int | None = 4096) -> None:
        self.store, self.name, self.columns = store, name, columns
        self.classes = store.classes
        self.tally = Tally(self.classes)
        self.kinds = {"mask"}
        self.thumbnail = Thumbnail(store.shapes[0], overlay_max_side) \
            if overlay_max_side else None
        self._writer = store.writer()
        self._lut = np.asarray(self.classes.values, dtype=np.uint8)

    def add(self, labels: np.ndarray, probs: np.ndarray | None, row0: int, x0: int) -> None:
        self._writer.add(self._lut[labels], row0, x0)
        if self.thumbnail is not None:
            self.thumbnail.add_labels(labels, row0, x0, x0 + labels.shape[1])
        self.tally.add(labels, row0, x0)

    def commit(self) -> dict[str, Path]:
        self._writer.flush()
        if self.thumbnail is not None:
            c0, c1 = (-(-x // self.thumbnail.step) for x in self.columns)
            self.store.save_piece(self.name, grey=self.thumbnail.grey[:, c0:c1],
                                  labels=self.thumbnail.labels[:, c0:c1],
                                  cols=np.array([c0, c1]))
        self.store.mark(self.name, {"columns": list(self.columns),
                                    "class_pixels": self.tally.class_pixels.tolist()})
        return {}

    def discard(self) -> None:
        """Nothing to remove: the region is redone by the next attempt (no marker)."""


def assemble_thumbnail(store: LabelStore, regions: list[str], max_side: int) -> Thumbnail:
    """The overlay thumbnail of a slide from its regions' pieces (:class:`RegionOutputs`)."""
    thumb = Thumbnail(store.shapes[0], max_side)
    for name in regions:
        piece = store.load_piece(name)
        c0, c1 = (int(c) for c in piece["cols"])
        thumb.grey[:, c0:c1], thumb.labels[:, c0:c1] = piece["grey"], piece["labels"]
    return thumb

