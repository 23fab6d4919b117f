"""Whole-slide segmentation with bounded memory: :func:`segment_slide`.

The slide is cut into column panels of at most ``panel_width`` pixels (aligned to the output
tiles) and each panel is streamed top to bottom through four stages running concurrently,
each a small function over the tile loop of :mod:`.tiles`:

1. :func:`read_tile_rows` (thread): rows of the panel (plus the tiles reaching into it) are
   read lazily (:mod:`temseg.io.slides`) and the C++ core extracts and normalises the tiles
   of one tile row; the overlay thumbnail samples the rows as they pass;
2. :func:`~temseg.inference.tiles.predict_rows` (calling thread): the backend (optionally
   wrapped in test-time augmentation) runs on batches of ``sw_batch_size`` tiles;
3. :class:`~temseg.inference.tiles.Stitcher` (thread): the C++ ``BandAccumulator`` of the
   panel blends the tile scores and releases finished row bands;
4. :func:`write_bands` (thread): bands go to the outputs (:mod:`temseg.io.outputs`: spooled
   tiled BigTIFFs, thumbnail, class counts and confusion matrix) and the progress bar.

Stages are connected by bounded queues, so memory depends on the panel width and the tile
size but not on the slide size. The tiles of the global MONAI grid that overlap a panel are
added to its accumulator in grid order, so every pixel receives the same tile scores in the
same order as the in-memory :func:`~temseg.inference.sliding_window_inference`: labels are
identical. All outputs of a slide are committed together at the end, the label mask last.

Resampling to the model's pixel size wraps the source (:class:`~temseg.io.resample.
ResampledSource`) and the outputs (:class:`~temseg.io.outputs.ResampledOutputs`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .. import _C
from ..checkpoint import SegmentationModel
from ..data.io import DataError
from ..data.normalize import Normalization
from ..io.omezarr import OmeZarrOutputs, is_zarr
from ..io.outputs import ArrayOutputs, ResampledOutputs, SlideOutputs, Tally
from ..io.overlay import Thumbnail
from ..io.resample import RESAMPLE_MODES, RESAMPLE_TOLERANCE, ResampledSource, resampled_shape
from ..io.slides import ArraySource, RowWindow, SlideSource, open_slide
from ..io.tiff import tiff_tags
from ..labels import TEM_CLASSES
from ..spec import DEFAULT_OVERLAP, ModelSpec
from .backends import Backend, make_backend
from .pipeline import Pipeline
from .tiles import Band, Stitcher, TileRow, accumulator, predict_rows
from .tta import TTABackend

__all__ = ["SlideLayout", "SlidePlan", "SlideResult", "plan_panels", "segment_slide",
           "slide_layout"]

log = logging.getLogger("temseg.slide")

Outputs = SlideOutputs | ArrayOutputs | ResampledOutputs | Any  # or RegionOutputs, ...


@dataclass
class SlideResult:
    """What :func:`segment_slide` did.

    Attributes:
        input: input file name (or ``"<array>"``).
        shape: slide (H, W).
        outputs: written files by kind: "mask", "overlay", "probabilities", "uncertainty".
        seconds: wall time (normalisation estimate + pipeline + writing the outputs).
        mpix_per_s: H * W / 1e6 / seconds.
        tiles: predictor tiles (panel borders are predicted once per panel; x transforms
            with TTA).
        panels: column panels (those segmented, for a region).
        pixels: pixels segmented (the slide's, or the region's panels').
        offset, scale: the intensity normalisation ``(x - offset) * scale`` used.
        class_pixels: (C,) int64 predicted pixels per class.
        confusion: (C, C) int64 ``cm[truth, pred]`` when a mask was given, else None.
        timings: busy seconds per stage ("normalize", "read", "extract", "infer", "stitch",
            "write", "finish") -- stages overlap, so they add up to more than ``seconds``.
        labels, probs: in-memory outputs (``output_path="array"``): (H, W) uint8 and
            (C, H, W) float32 (probabilities only when asked).
    """

    input: str
    shape: tuple[int, int]
    outputs: dict[str, Path]
    seconds: float
    mpix_per_s: float
    tiles: int
    panels: int
    offset: float
    scale: float
    class_pixels: np.ndarray
    confusion: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    pixels: int = 0
    labels: np.ndarray | None = None
    probs: np.ndarray | None = None


def plan_panels(width: int, panel_width: int, out_tile: int) -> list[tuple[int, int]]:
    """Column panels [x0, x1) covering [0, width): widths a multiple of ``out_tile`` (the
    last one ends at ``width``), at most ``max(panel_width, out_tile)`` rounded down to it."""
    step = max(out_tile, panel_width // out_tile * out_tile)
    return [(x, min(x + step, width)) for x in range(0, width, step)]


@dataclass(frozen=True)
class SlidePlan:
    """The geometry of one slide: the global MONAI tile grid, the blending window and the
    column panels with the grid columns that reach into each."""

    height: int
    width: int
    tile: tuple[int, int]
    grid: Any  # _C.TileGrid
    window: Any  # _C.make_window
    panels: list[tuple[int, int]]
    panel_cols: list[np.ndarray]

    @classmethod
    def build(cls, shape: tuple[int, int], roi: tuple[int, int], overlap: float, mode: str,
              sigma_scale: float, panel_width: int, out_tile: int) -> SlidePlan:
        height, width = shape
        th, tw = (roi[0] if roi[0] > 0 else height), (roi[1] if roi[1] > 0 else width)
        grid = _C.TileGrid(height, width, (th, tw), overlap)
        cols = np.asarray(grid.col_starts, dtype=np.int64)
        panels = plan_panels(width, panel_width, out_tile)
        panel_cols = []
        for x0, x1 in panels:
            sel = np.nonzero((cols < x1) & (cols + tw > x0))[0]
            panel_cols.append(cols[sel[0] : sel[-1] + 1])
        return cls(height, width, (th, tw), grid, _C.make_window((th, tw), mode, sigma_scale),
                   panels, panel_cols)

    def final_row(self, k: int) -> int:
        """Last accumulator row that no tile after grid row ``k`` touches."""
        return self.grid.final_row_after(k + 1)

    def subset(self, panels: Sequence[int]) -> SlidePlan:
        """The same global grid restricted to the panels ``panels`` (indices, in order): a
        region of the slide, whose every pixel gets the tiles and batches it gets in the
        whole slide (see :func:`~.tiles.predict_rows`'s ``split_keys``)."""
        ids = list(panels)
        if not ids or any(not 0 <= i < len(self.panels) for i in ids):
            raise ValueError(f"panels {ids} outside the slide's 0-{len(self.panels) - 1}")
        return replace(self, panels=[self.panels[i] for i in ids],
                       panel_cols=[self.panel_cols[i] for i in ids])

    @property
    def pixels(self) -> int:
        return self.height * sum(x1 - x0 for x0, x1 in self.panels)


def read_tile_rows(source: SlideSource, plan: SlidePlan, offset: float, scale: float,
                   padding_mode: str, thumbnail: Thumbnail | None,
                   timings: dict[str, float]) -> Iterator[TileRow]:
    """Tile rows of every panel in order: key = panel index, origins in panel coordinates."""
    th, tw = plan.tile
    rows_y = np.asarray(plan.grid.row_starts, dtype=np.int64)
    for p, ((x0, x1), cols) in enumerate(zip(plan.panels, plan.panel_cols, strict=True)):
        rx0, rx1 = max(0, int(cols[0])), min(plan.width, int(cols[-1]) + tw)
        window = RowWindow(source, rx0, rx1)
        for k, y in enumerate(rows_y):
            y0, y1 = max(int(y), 0), min(int(y) + th, plan.height)
            t = time.perf_counter()
            band = window.rows(y0, y1)
            t1 = time.perf_counter()
            local = np.empty((len(cols), 2), np.int64)
            local[:, 0], local[:, 1] = y - y0, cols - rx0
            tiles = _C.extract_tiles(band, local, (th, tw), offset=offset, scale=scale,
                                     pad_mode=padding_mode, num_threads=1)
            if thumbnail is not None:
                thumbnail.add_grey(band, y0, rx0, x0, x1, offset, scale)
            timings["read"] += t1 - t
            timings["extract"] += time.perf_counter() - t1
            origins = np.empty_like(local)
            origins[:, 0], origins[:, 1] = y, cols - x0
            yield TileRow(p, k, tiles, origins)


def write_bands(bands: Iterable[Band], outputs: Outputs, plan: SlidePlan,
                on_rows: Callable[[int], None], timings: dict[str, float]) -> None:
    """Hand every band to ``outputs`` (panel ``band.key`` gives its columns)."""
    for band in bands:
        t = time.perf_counter()
        assert band.labels is not None
        outputs.add(band.labels, band.probs, band.row0, plan.panels[band.key][0])
        timings["write"] += time.perf_counter() - t
        on_rows(band.labels.size)


def _timed_stitch(stitcher: Stitcher, chunks: Iterable[Any], timings: dict[str, float]
                  ) -> Iterator[Band]:
    for chunk in chunks:
        t = time.perf_counter()
        band = stitcher.add(chunk)
        timings["stitch"] += time.perf_counter() - t
        if band is not None:
            yield band


def _progress(name: str, total: int, enabled: bool) -> Any:
    from ..progress import progress_bar

    return progress_bar(total=total, unit="MPix", unit_scale=1e-6, desc=Path(name).name,
                        disable=not enabled, mininterval=1.0,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} "
                                   "MPix [{elapsed}<{remaining}, {rate_noinv_fmt}]")


def run_pipeline(source: SlideSource, plan: SlidePlan, predictor: Callable, outputs: Outputs,
                 *, offset: float, scale: float, n_classes: int, sw_batch_size: int,
                 padding_mode: str, thumbnail: Thumbnail | None, queue_size: int,
                 num_threads: int, progress: bool, timings: dict[str, float]) -> int:
    """Stream ``source`` through the four stages into ``outputs``; returns tiles predicted."""
    stitcher = Stitcher(lambda p, c: accumulator(
        plan.height, plan.panels[p][1] - plan.panels[p][0], plan.tile, c, plan.window,
        num_threads), plan.final_row, probs=outputs.needs_probs, labels=True)
    tiles = [0]

    def on_batch(n: int) -> None:
        tiles[0] += n

    def timed(fn: Callable, key: str) -> Callable:
        def run(x: torch.Tensor) -> torch.Tensor:
            t = time.perf_counter()
            out = fn(x)
            timings[key] += time.perf_counter() - t
            return out
        return run

    bar = _progress(source.name, plan.pixels, progress)
    pipe = Pipeline()
    rows = pipe.source("temseg-read", read_tile_rows(source, plan, offset, scale,
                                                     padding_mode, thumbnail, timings),
                       queue_size)
    scores = pipe.channel(4)
    bands = pipe.stage("temseg-stitch", lambda chunks: _timed_stitch(stitcher, chunks, timings),
                       scores, 4)
    pipe.spawn("temseg-write", lambda: write_bands(bands, outputs, plan, bar.update, timings))
    try:
        pipe.run(lambda: pipe.pump(predict_rows(rows, timed(predictor, "infer"),
                                                sw_batch_size, plan.tile, n_classes,
                                                on_batch, split_keys=True), scores))
    finally:
        bar.close()
    return tiles[0]


def _resolve(model_or_backend: Any, backend: str | Backend | None
             ) -> tuple[Callable[[torch.Tensor], torch.Tensor], ModelSpec | None]:
    """(predictor, model spec or None) from :func:`segment_slide`'s first two arguments: a
    SegmentationModel (run with ``backend``, a name, default "torch", or an instance), a
    ModelSpec with a backend instance, or a backend / bare callable (its ``.spec`` if any)."""
    if isinstance(model_or_backend, SegmentationModel):
        if backend is None or isinstance(backend, str):
            device = next(model_or_backend.parameters()).device
            backend = make_backend(backend or "torch", model_or_backend, device, amp="off")
        return backend, model_or_backend.spec
    if isinstance(model_or_backend, ModelSpec):
        if backend is None or isinstance(backend, str):
            raise ValueError("a ModelSpec without weights needs a backend instance (backend=)")
        return backend, model_or_backend
    if backend is not None:
        raise ValueError("backend= is only used together with a model or its spec")
    return model_or_backend, getattr(model_or_backend, "spec", None)


def _resample_decision(source: SlideSource, px: float | None, spec: ModelSpec | None,
                       resample: str) -> tuple[int, int] | None:
    """The model-grid shape to segment ``source`` at, or None to segment it as it is."""
    model_px = spec.pixel_size_um if spec is not None else None
    differ = bool(model_px and px and abs(px / model_px - 1.0) > RESAMPLE_TOLERANCE)
    if differ and (resample == "always" or (resample == "auto" and px < model_px)):
        shape = resampled_shape(source.shape, float(px), float(model_px))
        log.info("%s: resampling %dx%d px at %.4g um to %dx%d px at the model's %.4g um",
                 source.name, source.shape[1], source.shape[0], px, shape[1], shape[0],
                 model_px)
        return shape
    if differ and resample == "never":
        log.warning("%s: pixel size %.4g um differs from the model's %.4g um and "
                    "resampling is off; results may suffer", source.name, px, model_px)
    elif differ:
        log.info("%s: pixel size %.4g um is coarser than the model's %.4g um: segmented "
                 "as it is (resample='always' enlarges it)", source.name, px, model_px)
    elif model_px and not px:
        log.info("%s: pixel size unknown, assumed to be the model's (%.4g um)",
                 source.name, model_px)
    return None


def _open_truth(mask: str | Path | np.ndarray | SlideSource, source: SlideSource
                ) -> tuple[SlideSource, bool]:
    """(truth source, encoded): an (H, W) array of class indices or a mask file in grey
    values (read lazily). Raises DataError when its size differs from ``source``."""
    encoded = isinstance(mask, np.ndarray)
    truth = ArraySource(mask, "<mask>") if encoded else open_slide(mask)
    if truth.shape != source.shape:
        if truth is not mask:
            truth.close()
        raise DataError(f"{truth.name}: mask size {truth.shape[1]}x{truth.shape[0]} does not "
                        f"match image {source.name} size {source.shape[1]}x{source.shape[0]}")
    return truth, encoded


def _pair(roi: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(roi, int):
        return roi, roi
    th, tw = (int(r) for r in roi)
    return th, tw


def _default_roi(spec: ModelSpec | None) -> int:
    if spec is None:
        raise ValueError("roi_size is required when segmenting with a bare backend")
    return spec.roi_size


def _tmp_parent(output_path: str | Path | None) -> Path | None:
    """Where the resampled pass keeps its model-grid files: beside the output."""
    if output_path is None:
        return None
    parent = Path(output_path).parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _validate(roi: tuple[int, int], shape: tuple[int, int], sw_batch_size: int,
              overlap: float, resample: str, name: str, spec: ModelSpec | None) -> None:
    """Clear errors before any work (a 20000 px tile on a 600 px image ran out of memory)."""
    if resample not in RESAMPLE_MODES:
        raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}")
    multiple = spec.tile_multiple if spec is not None else 8
    if min(roi) < multiple or any(r % multiple for r in roi):
        raise ValueError(f"roi_size must be a positive multiple of {multiple} (the model's "
                         f"downsampling), got {roi[0]}x{roi[1]}")
    limit = max(1024, 2 * max(shape), spec.roi_size if spec is not None else 0)
    if max(roi) > limit:
        raise ValueError(f"{name}: roi_size {max(roi)} is far larger than the image "
                         f"({shape[1]}x{shape[0]}); use at most {limit}")


class _Settings(NamedTuple):
    sw_batch_size: int
    overlap: float
    mode: str
    sigma_scale: float
    padding_mode: str
    panel_width: int
    out_tile: int
    queue_size: int
    num_threads: int
    progress: bool
    panels: Sequence[int] | None = None
    compression: str | None = "zlib"
    overlay_max_side: int = 4096


def _affine(source: SlideSource, spec: ModelSpec | None,
            normalization: Normalization | tuple[float, float] | None) -> tuple[float, float]:
    """The intensity normalisation ``(offset, scale)``: fixed, or estimated on a strided
    subsample of ``source`` (read lazily)."""
    if isinstance(normalization, tuple):
        offset, scale = (float(v) for v in normalization)
        return offset, scale
    norm = normalization or (spec.normalization if spec is not None else Normalization())
    return norm.affine(source)


def _segment(source: SlideSource, predictor: Callable, outputs: Outputs,
             spec: ModelSpec | None, n_classes: int, roi: tuple[int, int],
             normalization: Normalization | tuple[float, float] | None,
             s: _Settings) -> SlideResult:
    """Normalisation estimate + the pipeline over ``source``; the partial SlideResult."""
    timings: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    offset, scale = _affine(source, spec, normalization)
    timings["normalize"] = time.perf_counter() - t0
    plan = SlidePlan.build(source.shape, roi, s.overlap, s.mode, s.sigma_scale,
                           s.panel_width, s.out_tile)
    if s.panels is not None:
        plan = plan.subset(s.panels)
    tiles = run_pipeline(source, plan, predictor, outputs, offset=offset, scale=scale,
                         n_classes=n_classes, sw_batch_size=s.sw_batch_size,
                         padding_mode=s.padding_mode, thumbnail=_thumbnail(outputs),
                         queue_size=s.queue_size, num_threads=s.num_threads,
                         progress=s.progress, timings=timings)
    return SlideResult(source.name, source.shape, {}, 0.0, 0.0, tiles, len(plan.panels),
                       offset, scale, np.zeros(n_classes, np.int64), timings=timings,
                       pixels=plan.pixels)


def _paths(**kinds: str | Path | None) -> dict[str, Path]:
    return {kind: Path(p) for kind, p in kinds.items() if p is not None}


def _thumbnail(outputs: Outputs) -> Thumbnail | None:
    inner = outputs.inner if isinstance(outputs, ResampledOutputs) else outputs
    return getattr(inner, "thumbnail", None)


def _open_tally(mask: str | Path | np.ndarray | SlideSource | None, source: SlideSource,
                classes: Any) -> tuple[SlideSource | None, Tally]:
    """The class counter of the slide, with the ground truth ``mask`` (opened lazily; the
    caller closes it) for a confusion matrix when there is one."""
    if mask is None:
        return None, Tally(classes)
    truth, encoded = _open_truth(mask, source)
    return truth, Tally(classes, truth, encoded)


def _final_outputs(paths: dict[str, Path], shape: tuple[int, int], classes: Any,
                   tally: Tally, px: float | None, arrays: tuple[bool, bool], s: _Settings,
                   description: dict[str, Any] | None) -> SlideOutputs | ArrayOutputs:
    """In-memory arrays (``arrays`` = (return_arrays, return_probs)), or the files of
    ``paths``: a BigTIFF mask, or an NGFF label image when the mask path ends in .zarr."""
    if arrays[0]:
        return ArrayOutputs(shape, classes, tally, arrays[1])
    kw: dict[str, Any] = dict(out_tile=s.out_tile, compression=s.compression,
                              tags=tiff_tags(px, description),
                              overlay_max_side=s.overlay_max_side)
    if "mask" in paths and is_zarr(paths["mask"]):
        return OmeZarrOutputs(paths, shape, classes, tally, pixel_size_um=px, **kw)
    return SlideOutputs(paths, shape, classes, tally, **kw)


def _model_grid(source: SlideSource, final: Outputs, model_shape: tuple[int, int] | None,
                spec: ModelSpec | None, tmp: Path, s: _Settings) -> tuple[SlideSource, Outputs]:
    """What the tiles are read from and written to: ``source`` and ``final`` themselves, or,
    when the slide is segmented resampled (``model_shape``), ``source`` resampled to the
    model's grid and outputs on that grid (kept in ``tmp``) that map back into ``final``."""
    if model_shape is None or spec is None:
        return source, final
    outputs = ResampledOutputs(final, model_shape, tmp, out_tile=s.out_tile,
                               compression=s.compression, overlay_max_side=s.overlay_max_side)
    return ResampledSource(source, model_shape, order=1,
                           pixel_size_um=spec.pixel_size_um), outputs


class SlideLayout(NamedTuple):
    """What a driver needs to split a slide into regions of column panels (read from the
    file's metadata and the normalisation's strided subsample; no model weights).

    ``panels``: [x0, x1) of each panel; ``resampled``: whether the slide is segmented
    resampled to the model's pixel size (then it is not split)."""

    name: str
    shape: tuple[int, int]
    pixel_size_um: float | None
    offset: float
    scale: float
    panels: list[tuple[int, int]]
    resampled: bool


def slide_layout(spec: ModelSpec, input: str | Path, *, panel_width: int = 8192,
                 out_tile: int = 512, pixel_size_um: float | None = None,
                 resample: str = "auto", normalization: Any = None, level: int = 0
                 ) -> SlideLayout:
    """The :class:`SlideLayout` of ``input`` as :func:`segment_slide` would segment it."""
    with open_slide(input, level) as source:
        px = pixel_size_um or source.pixel_size_um
        resampled = _resample_decision(source, px, spec, resample) is not None
        offset, scale = _affine(source, spec, normalization)
        return SlideLayout(source.name, source.shape, px, offset, scale,
                           plan_panels(source.shape[1], panel_width, out_tile), resampled)


def segment_slide(
    model_or_backend: SegmentationModel | Backend | ModelSpec | Any,
    input: str | Path | np.ndarray | SlideSource,
    output_path: str | Path | None = None,
    *,
    backend: str | Backend | None = None,
    roi_size: int | Sequence[int] | None = None,
    sw_batch_size: int = 8,
    overlap: float = DEFAULT_OVERLAP,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    padding_mode: str = "reflect",
    tta: bool = False,
    probabilities_path: str | Path | None = None,
    uncertainty_path: str | Path | None = None,
    overlay_path: str | Path | None = None,
    overlay_max_side: int = 4096,
    mask: str | Path | np.ndarray | None = None,
    classes: Any = None,
    normalization: Normalization | tuple[float, float] | None = None,
    panel_width: int = 8192,
    out_tile: int = 512,
    compression: str | None = "zlib",
    queue_size: int = 2,
    num_threads: int = 1,
    progress: bool = True,
    pixel_size_um: float | None = None,
    resample: str = "auto",
    return_arrays: bool = False,
    return_probs: bool = False,
    description: dict[str, Any] | None = None,
    level: int = 0,
    outputs: Any = None,
    panels: Sequence[int] | None = None,
) -> SlideResult:
    """Segment a slide of any size into a tiled BigTIFF (or OME-Zarr) label image, streaming.

    Args:
        model_or_backend: a :class:`~temseg.checkpoint.SegmentationModel` (run with
            ``backend``, default "torch" in fp32), a :class:`~temseg.spec.ModelSpec` with a
            ``backend`` instance, or a backend ``(B, 1, th, tw) float32 normalised ->
            (B, C, th, tw) float32 probabilities`` (its ``.spec`` if it has one, else
            ``roi_size`` is required and the TEM classes / default percentiles apply).
        input: TIFF / BigTIFF (tiled or strip; read lazily), OME-Zarr (level ``level``;
            read lazily), PNG (loaded), an (H, W) array or a
            :class:`~temseg.io.slides.SlideSource`. Non-finite pixels are an error.
        output_path: labels as a tiled BigTIFF (H, W) uint8 in the class table's grey values,
            tiles ``out_tile``, ``compression``, or, for a path ending in ``.ome.zarr``, an
            NGFF label image (:mod:`temseg.io.omezarr`); None: not written.
        roi_size, sw_batch_size, overlap, mode, sigma_scale, padding_mode: sliding window
            (MONAI names); ``roi_size`` None: the model's (twice its training patch).
        tta: average the backend over the dihedral transforms (:class:`.tta.TTABackend`).
        probabilities_path: (C, H, W) uint8 ``round(255 p)``; uncertainty_path: (H, W)
            uint8 ``255 * H(p) / log C``; overlay_path: RGB PNG thumbnail (longest side <=
            ``overlay_max_side``).
        mask: ground truth for a confusion matrix: a mask file in grey values (read lazily)
            or an (H, W) array of class indices.
        classes, normalization: override the model's (``normalization`` may also be a fixed
            ``(offset, scale)``); the percentiles are estimated on a strided subsample.
        panel_width: widest column panel streamed at once (memory ~ panel_width).
        queue_size: tile rows prefetched; num_threads: C++ accumulator threads.
        pixel_size_um: the input's pixel size (default: its TIFF tags). resample: "auto"
            (inputs finer than the model are segmented shrunk to its pixel size and the
            outputs mapped back: the probabilities interpolated, the labels their argmax,
            :class:`~temseg.io.outputs.ResampledOutputs`; coarser ones as they are, since
            enlarging blurs them and measured worse: README), "always" or "never".
        return_arrays / return_probs: also return the labels / probabilities in memory.
        description: recorded in every TIFF's JSON description (e.g. backend, precision).
        outputs: instead of the files: any object of the outputs protocol (``add``,
            ``commit``, ``discard``, ``needs_probs``, ``tally``), e.g. a
            :class:`~temseg.io.omezarr.RegionOutputs`.
        panels: segment only these column panels of the slide's plan (a region; with
            ``outputs``; not for slides that are resampled).

    Returns :class:`SlideResult`. Raises DataError naming the file for unreadable or
    mismatching inputs; whatever the backend raises. No output (nor temporary) file is left
    behind on error; all outputs are committed together at the end, the mask last.
    """
    t_start = time.perf_counter()
    predictor, spec = _resolve(model_or_backend, backend)
    predictor = TTABackend(predictor) if tta else predictor
    classes = classes or (spec.classes if spec is not None else TEM_CLASSES)
    settings = _Settings(sw_batch_size, overlap, mode, sigma_scale, padding_mode, panel_width,
                         out_tile, queue_size, num_threads, progress, panels, compression,
                         overlay_max_side)
    source = open_slide(input, level)
    truth: SlideSource | None = None
    active: Outputs | None = outputs
    try:
        roi = _pair(roi_size if roi_size is not None else _default_roi(spec))
        _validate(roi, source.shape, sw_batch_size, overlap, resample, source.name, spec)
        truth, tally = _open_tally(mask, source, classes)
        px = pixel_size_um or source.pixel_size_um
        final = outputs if outputs is not None else _final_outputs(
            _paths(mask=output_path, overlay=overlay_path, uncertainty=uncertainty_path,
                   probabilities=probabilities_path), source.shape, classes, tally, px,
            (return_arrays, return_probs), settings, description)
        active, tally = final, final.tally
        model_shape = _resample_decision(source, px, spec, resample)
        if model_shape is not None and panels is not None:
            raise ValueError(f"{source.name}: a slide segmented resampled cannot be split "
                             "into regions")
        with tempfile.TemporaryDirectory(prefix=".temseg-resample-", dir=_tmp_parent(
                output_path)) as tmp:
            grid_source, active = _model_grid(source, final, model_shape, spec, Path(tmp),
                                              settings)
            result = _segment(grid_source, predictor, active, spec, classes.num_classes, roi,
                              normalization, settings)
            _commit(active, result)
    except BaseException:
        if active is not None:
            active.discard()
        raise
    finally:
        if truth is not None and not isinstance(mask, SlideSource):
            truth.close()
        if source is not input:
            source.close()
    if panels is None:
        result.pixels = source.size
    return _completed(result, source, tally, final, time.perf_counter() - t_start)


def _commit(outputs: Outputs, result: SlideResult) -> None:
    """Commit every output (timed as "finish"; "resample_back" too when resampled)."""
    t = time.perf_counter()
    result.outputs = outputs.commit()
    result.timings["finish"] = time.perf_counter() - t
    if isinstance(outputs, ResampledOutputs):
        result.timings["resample_back"] = result.timings["finish"]


def _completed(result: SlideResult, source: SlideSource, tally: Tally, final: Outputs,
               seconds: float) -> SlideResult:
    """``result`` with what is known at the end: the input's name and shape, wall time,
    class counts, confusion matrix and in-memory arrays."""
    result.input, result.shape, result.seconds = source.name, source.shape, seconds
    result.mpix_per_s = result.pixels / 1e6 / max(seconds, 1e-9)
    result.class_pixels, result.confusion = tally.class_pixels, tally.confusion
    if isinstance(final, ArrayOutputs):
        result.labels, result.probs = final.labels, final.probs
    return result
