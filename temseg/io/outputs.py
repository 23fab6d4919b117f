"""The outputs of segmenting one slide, written as row bands arrive and committed together.

* :class:`SlideOutputs`: tiled BigTIFFs (``mask`` in the class table's grey values,
  ``uncertainty``, ``probabilities``) spooled tile by tile, an ``overlay`` thumbnail, and a
  :class:`Tally` (class counts, confusion matrix against a truth mask);
* :class:`ArrayOutputs`: the same bands collected into in-memory arrays;
* :class:`ResampledOutputs`: outputs on the model's pixel grid brought back to the input's
  grid (the probabilities resampled, the labels their argmax) when the slide was segmented
  resampled;
* :class:`~temseg.io.omezarr.OmeZarrOutputs`: SlideOutputs whose mask is an NGFF label
  image (a folder ``<stem>_mask.ome.zarr``, staged as ``<name>.part``).

Commit rule: every file of one input is written to a temporary ``.<name>.*.part<suffix>``
beside it; :meth:`Staged.commit` then removes the old mask, renames the others and renames
the mask last. A mask therefore only exists beside outputs of the same run, an interrupted
or failed input leaves none of its new files, and temporaries from killed runs are removed
by the next run (:func:`clean_stale_parts`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import current_umask
from ..labels import ClassTable
from .overlay import Thumbnail
from .slides import SlideSource
from .tiff import TiledTiffSpool, TileRowAssembler

__all__ = ["MASK_FORMATS", "ArrayOutputs", "ResampledOutputs", "SlideOutputs", "Staged", "Tally",
           "clean_stale_parts", "encode_band", "output_paths"]

TIFF_KINDS = ("mask", "uncertainty", "probabilities")
STALE_S = 600.0


MASK_FORMATS = {"tiff": ".tif", "ome-zarr": ".ome.zarr"}


def output_paths(out_dir: str | Path, stem: str, *, overlay: bool = True,
                 probabilities: bool = False, uncertainty: bool = False,
                 mask_format: str = "tiff") -> dict[str, Path]:
    """``out_dir/<stem>_mask.tif`` (``mask_format`` "ome-zarr": ``_mask.ome.zarr``, an NGFF
    label image) and the other outputs asked for, by kind."""
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask format must be one of {sorted(MASK_FORMATS)}, got "
                         f"{mask_format!r}")
    out = Path(out_dir)
    paths = {"mask": out / f"{stem}_mask{MASK_FORMATS[mask_format]}"}
    if overlay:
        paths["overlay"] = out / f"{stem}_overlay.png"
    if probabilities:
        paths["probabilities"] = out / f"{stem}_probabilities.tif"
    if uncertainty:
        paths["uncertainty"] = out / f"{stem}_uncertainty.tif"
    return paths


def clean_stale_parts(paths: dict[str, Path], older_than_s: float = STALE_S) -> list[Path]:
    """Remove temporaries ``.<name>.*.part*`` of ``paths`` left by killed runs (untouched for
    ``older_than_s``: a live run's temporaries only exist while it commits)."""
    removed = []
    now = time.time()
    for final in paths.values():
        for tmp in final.parent.glob(f".{final.name}.*.part*"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > older_than_s:
                    tmp.unlink()
                    removed.append(tmp)
    return removed


class Staged:
    """Temporary files beside their final paths, renamed together by :meth:`commit`."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[Path, Path]] = {}

    def path(self, kind: str, final: str | Path) -> Path:
        """A new temporary path for ``final`` (same folder and suffix)."""
        final = Path(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".part{final.suffix}",
                                   dir=final.parent)
        os.close(fd)
        self._files[kind] = (Path(tmp), final)
        return Path(tmp)

    def add(self, kind: str, tmp: str | Path, final: str | Path) -> None:
        """Commit ``tmp``, an existing temporary file or folder (a Zarr store), as
        ``final``."""
        self._files[kind] = (Path(tmp), Path(final))

    def commit(self) -> dict[str, Path]:
        """Rename every temporary onto its final path (file modes by the umask), the mask
        last and the old mask (a file or a Zarr folder) removed first; returns the final
        paths by kind."""
        mode = 0o666 & ~current_umask()
        kinds = sorted(self._files, key=lambda k: k == "mask")
        if "mask" in self._files:
            _remove(self._files["mask"][1])
        for kind in kinds:
            tmp, final = self._files[kind]
            if tmp.is_file():
                os.chmod(tmp, mode)
            os.replace(tmp, final)
        done = {k: final for k, (_, final) in self._files.items()}
        self._files.clear()
        return done

    def discard(self) -> None:
        for tmp, _ in self._files.values():
            _remove(tmp)
        self._files.clear()


def _remove(path: Path) -> None:
    """Remove a file or a folder (a Zarr store), if it exists."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class Tally:
    """Predicted pixels per class and, given a truth, the confusion matrix ``cm[truth, pred]``
    (C, C) int64. ``truth``: a source of class indices (``encoded=True``) or grey values."""

    def __init__(self, classes: ClassTable, truth: SlideSource | None = None,
                 encoded: bool = False) -> None:
        self.classes, self.truth, self.encoded = classes, truth, encoded
        n = classes.num_classes
        self.class_pixels = np.zeros(n, np.int64)
        self.confusion = np.zeros((n, n), np.int64) if truth is not None else None

    def add(self, labels: np.ndarray, row0: int, x0: int) -> None:
        """``labels``: (h, w) uint8 of the rows from ``row0``, columns from ``x0``."""
        n = self.classes.num_classes
        self.class_pixels += np.bincount(labels.ravel(), minlength=n)[:n]
        if self.truth is None or self.confusion is None:
            return
        block = self.truth.read(row0, row0 + labels.shape[0], x0, x0 + labels.shape[1])
        if not self.encoded:
            block = self.classes.encode(block, source=self.truth.name)
        idx = block.astype(np.int64).ravel() * n + labels.ravel()
        self.confusion += np.bincount(idx, minlength=n * n).reshape(n, n)


def _entropy_u8(probs: np.ndarray) -> np.ndarray:
    """(C, h, w) float32 probabilities -> (h, w) uint8 normalised entropy
    ``-sum p log p / log C`` scaled to 0-255 (0: certain, 255: uniform)."""
    h = np.zeros(probs.shape[1:], np.float32)
    for p in probs:
        with np.errstate(divide="ignore", invalid="ignore"):
            h -= np.where(p > 0, p * np.log(p), 0.0).astype(np.float32)
    scale = np.float32(255.0 / np.log(probs.shape[0]))
    return np.clip(np.rint(h * scale), 0, 255).astype(np.uint8)


def encode_band(labels: np.ndarray, probs: np.ndarray | None, classes: ClassTable,
                kinds: set[str]) -> dict[str, np.ndarray]:
    """The uint8 bands written for ``kinds``: mask grey values, entropy, round(255 p)."""
    out: dict[str, np.ndarray] = {}
    if "mask" in kinds:
        out["mask"] = np.asarray(classes.values, dtype=np.uint8)[labels]
    if probs is not None and "uncertainty" in kinds:
        out["uncertainty"] = _entropy_u8(probs)
    if probs is not None and "probabilities" in kinds:
        out["probabilities"] = np.clip(np.rint(probs * np.float32(255.0)), 0,
                                       255).astype(np.uint8)
    return out


class SlideOutputs:
    """File outputs of one (H, W) slide (``paths`` by kind: see :func:`output_paths`),
    fed row bands panel by panel (:meth:`add`) and committed together (:meth:`commit`).

    ``tags``: TiffWriter keyword arguments (resolution, description) of every TIFF.
    """

    def __init__(self, paths: dict[str, Path], shape: tuple[int, int], classes: ClassTable,
                 tally: Tally, *, out_tile: int = 512, compression: str | None = "zlib",
                 tags: dict[str, Any] | None = None, overlay_max_side: int = 4096) -> None:
        self.paths, self.shape, self.classes, self.tally = paths, shape, classes, tally
        self.tags = tags or {}
        self.kinds = {k for k in paths if k in TIFF_KINDS}
        self.spools: dict[str, TiledTiffSpool] = {}
        for kind in self.kinds:
            planes = (classes.num_classes,) if kind == "probabilities" else ()
            self.spools[kind] = TiledTiffSpool(paths[kind], (*planes, *shape), out_tile,
                                               compression)
        self.thumbnail = Thumbnail(shape, overlay_max_side) if "overlay" in paths else None
        self._panel: tuple[int, int] | None = None
        self._asm: dict[str, TileRowAssembler] = {}

    @property
    def needs_probs(self) -> bool:
        return bool({"uncertainty", "probabilities"} & self.kinds)

    def add(self, labels: np.ndarray, probs: np.ndarray | None, row0: int, x0: int) -> None:
        """Rows from ``row0`` of the panel starting at ``x0``: labels (h, w) uint8, probs
        (C, h, w) float32 (needed for uncertainty / probabilities)."""
        self.add_encoded(encode_band(labels, probs, self.classes, self.kinds), labels, row0,
                         x0)

    def add_encoded(self, bands: dict[str, np.ndarray], labels: np.ndarray, row0: int,
                    x0: int) -> None:
        """As :meth:`add` with the uint8 bands already encoded (:func:`encode_band`)."""
        x1 = x0 + labels.shape[1]
        if self._panel != (x0, x1):
            self._asm = {k: TileRowAssembler(s, x0, x1) for k, s in self.spools.items()}
            self._panel = (x0, x1)
        for kind, asm in self._asm.items():
            asm.add(bands[kind])
        if self.thumbnail is not None:
            self.thumbnail.add_labels(labels, row0, x0, x1)
        self.tally.add(labels, row0, x0)

    def stage(self, staged: Staged) -> None:
        """Write every file to its temporary in ``staged`` (the spools are then closed)."""
        for kind in sorted(self.spools, key=lambda k: k == "mask"):
            self.spools.pop(kind).finish_to(staged.path(kind, self.paths[kind]), **self.tags)
        if self.thumbnail is not None:
            self.thumbnail.save(staged.path("overlay", self.paths["overlay"]), self.classes)

    def commit(self) -> dict[str, Path]:
        """Write and commit every output together (see the module docstring)."""
        staged = Staged()
        try:
            self.stage(staged)
            return staged.commit()
        finally:
            staged.discard()

    def discard(self) -> None:
        for spool in self.spools.values():
            spool.discard()
        self.spools.clear()


class ArrayOutputs:
    """In-memory outputs of one (H, W) image: ``labels`` (H, W) uint8 and, when
    ``probabilities``, ``probs`` (C, H, W) float32."""

    def __init__(self, shape: tuple[int, int], classes: ClassTable, tally: Tally,
                 probabilities: bool = False) -> None:
        self.classes, self.tally = classes, tally
        self.labels = np.zeros(shape, np.uint8)
        self.probs = np.zeros((classes.num_classes, *shape), np.float32) \
            if probabilities else None
        self.needs_probs = probabilities
        self.kinds = {"probabilities"} if probabilities else set()

    def add(self, labels: np.ndarray, probs: np.ndarray | None, row0: int, x0: int) -> None:
        h, w = labels.shape
        self.labels[row0 : row0 + h, x0 : x0 + w] = labels
        if self.probs is not None and probs is not None:
            self.probs[:, row0 : row0 + h, x0 : x0 + w] = probs
        self.tally.add(labels, row0, x0)

    def add_encoded(self, bands: dict[str, np.ndarray], labels: np.ndarray, row0: int,
                    x0: int) -> None:
        """As :meth:`add`, probabilities given as round(255 p) (from a resampled pass)."""
        p = bands.get("probabilities")
        self.add(labels, None if p is None else p.astype(np.float32) / 255.0, row0, x0)

    def commit(self) -> dict[str, Path]:
        return {}

    def discard(self) -> None:
        """Nothing to remove."""


class ResampledOutputs:
    """Outputs of a slide segmented on the model's grid (``inner``, written into a temporary
    folder) brought back to the input's grid into ``final`` at :meth:`commit`, band by band.

    The class probabilities come back through the images' filter (bilinear when enlarging,
    antialiased when shrinking) and the labels are their argmax, as nnU-Net resamples
    softmax outputs to the original spacing: boundaries then fall between the model's
    pixels instead of on its 2 x 2 blocks. The uncertainty comes back
    nearest; the overlay thumbnail stays at the model's grid."""

    def __init__(self, final: SlideOutputs | ArrayOutputs, model_shape: tuple[int, int],
                 tmp_dir: Path, **spool_kwargs: Any) -> None:
        self.final, self.tmp_dir = final, tmp_dir
        kinds = {"probabilities"} | (final.kinds & {"uncertainty"})
        paths = {k: tmp_dir / f"{k}.tif" for k in kinds}
        if isinstance(final, SlideOutputs) and "overlay" in final.paths:
            paths["overlay"] = tmp_dir / "overlay.png"  # the thumbnail of the model's grid
            final.thumbnail = None
        self.inner = SlideOutputs(paths, model_shape, final.classes, Tally(final.classes),
                                  **spool_kwargs)
        self.needs_probs = True
        self.tally = final.tally

    def add(self, labels: np.ndarray, probs: np.ndarray | None, row0: int, x0: int) -> None:
        self.inner.add(labels, probs, row0, x0)

    def commit(self) -> dict[str, Path]:
        written = self.inner.commit()
        height, width = self._shape()
        backs = {k: _Back(p, (height, width), order=int(k == "probabilities"))
                 for k, p in written.items() if k != "overlay"}
        grey = np.asarray(self.final.classes.values, dtype=np.uint8)
        rows = int(np.clip(2**22 // max(1, width * len(grey)), 16, 512))  # ~16 MB a band
        try:
            for y0 in range(0, height, rows):
                y1 = min(y0 + rows, height)
                bands = {k: b.read(y0, y1) for k, b in backs.items()}
                p = bands.pop("probabilities")  # (C, h, W) float32, 0-255
                labels = p.argmax(0).astype(np.uint8)
                bands["mask"] = grey[labels]
                bands["probabilities"] = np.clip(np.rint(p), 0, 255).astype(np.uint8)
                self.final.add_encoded(bands, labels, y0, 0)
        finally:
            for b in backs.values():
                b.close()
        if isinstance(self.final, SlideOutputs) and "overlay" in written:
            return self._commit_with_overlay(written["overlay"])
        return self.final.commit()

    def _shape(self) -> tuple[int, int]:
        if isinstance(self.final, ArrayOutputs):
            return self.final.labels.shape  # type: ignore[return-value]
        return self.final.shape

    def _commit_with_overlay(self, overlay: Path) -> dict[str, Path]:
        assert isinstance(self.final, SlideOutputs)
        final = self.final
        staged = Staged()
        try:
            final.stage(staged)
            os.replace(overlay, staged.path("overlay", final.paths["overlay"]))
            return staged.commit()
        finally:
            staged.discard()

    def discard(self) -> None:
        self.inner.discard()
        self.final.discard()


class _Back:
    """A (H, W) or (C, H, W) uint8 TIFF written on the model's grid, read back resampled
    to ``shape`` on the input's grid (``order`` 0: nearest, uint8; 1: the images' filter,
    float32): ``read(y0, y1)`` -> (h, W) or (C, h, W)."""

    def __init__(self, path: Path, shape: tuple[int, int], order: int = 0) -> None:
        import tifffile
        import zarr

        from .resample import ResampledSource
        from .slides import ZarrPlane

        self._tif = tifffile.TiffFile(path)
        z = zarr.open(self._tif.aszarr(), mode="r")
        planes = [None] if z.ndim == 2 else list(range(z.shape[0]))
        self._planes = [ResampledSource(ZarrPlane(z, c, str(path)), shape, order=order)
                        for c in planes]
        self._stack = z.ndim == 3

    def read(self, y0: int, y1: int) -> np.ndarray:
        blocks = [p.read(y0, y1) for p in self._planes]
        return np.stack(blocks) if self._stack else blocks[0]

    def close(self) -> None:
        self._tif.close()
