"""Whole-slide segmentation with bounded memory: :func:`segment_slide`.

The slide is cut into column panels of at most ``panel_width`` pixels (aligned to the output
tiles) and each panel is streamed top to bottom through four stages running concurrently:

1. read (thread): rows of the panel (plus the tiles reaching into it) are read lazily from
   the TIFF (:mod:`.slide_reader`); the C++ core extracts and normalises the tiles of one
   tile row (``_C.extract_tiles``);
2. infer (calling thread): the backend (optionally wrapped in test-time augmentation) runs on
   batches of ``sw_batch_size`` tiles;
3. stitch (thread): the C++ ``BandAccumulator`` of the panel blends the tile scores and
   releases finished row bands (probabilities / argmax labels);
4. write (thread): bands become output tiles (grey-value labels, optional uncertainty and
   probabilities) encoded into spool files (:mod:`.tile_spool`), the overlay thumbnail,
   the confusion matrix against a ground-truth mask, and the progress bar (MPix/s).

Stages are connected by bounded queues, so memory depends on the panel width and the tile
size but not on the slide size. The tiles of the global MONAI grid that overlap a panel are
added to its accumulator in grid order, so every pixel receives the same tile scores in
the same order as the in-memory :func:`~temseg.inference.sliding_window_inference`: labels
are identical. Outputs are written at the end from the spools, each to a temporary file
renamed into place (the label mask last), so an interrupted run never leaves a file that
looks complete.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import tifffile
import torch
from PIL import Image

from .. import _C
from ..atomic import atomic_path
from ..checkpoint import SegmentationModel, default_roi_size
from ..data.io import DataError
from ..data.normalize import Normalization
from ..labels import TEM_CLASSES, ClassTable
from .backends import Backend, make_backend
from .pipeline import Pipeline
from .resample import RESAMPLE_MODES, RESAMPLE_TOLERANCE, ResampledSource, resampled_shape
from .slide_reader import ArraySource, RowWindow, SlideSource, open_slide
from .tile_spool import TiledTiffSpool, TileRowAssembler
from .tta import TTABackend

__all__ = ["SlideResult", "plan_panels", "segment_slide"]

log = logging.getLogger("temseg.slide")


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
        panels: column panels.
        offset, scale: the intensity normalisation ``(x - offset) * scale`` used.
        class_pixels: (C,) int64 predicted pixels per class.
        confusion: (C, C) int64 ``cm[truth, pred]`` when a mask was given, else None.
        timings: busy seconds per stage ("normalize", "read", "extract", "infer", "stitch",
            "write", "finish") -- stages overlap, so they add up to more than ``seconds``.
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


class _Meta(NamedTuple):
    """What the pipeline needs to know about the model besides the backend."""

    classes: ClassTable
    normalization: Normalization
    patch_size: int | None
    pixel_size_um: float | None
    roi_size: int | None  # default inference tile (recorded by exports, else 2x the patch)


class _TileRow(NamedTuple):
    panel: int
    k: int
    tiles: np.ndarray  # (n, 1, th, tw) float32 normalised
    origins: np.ndarray  # (n, 2) int64 (y, x - panel x0): accumulator coordinates


class _Band(NamedTuple):
    panel: int
    row0: int
    row1: int
    labels: np.ndarray  # (h, panel width) uint8
    probs: np.ndarray | None  # (C, h, panel width) float32


def plan_panels(width: int, panel_width: int, out_tile: int) -> list[tuple[int, int]]:
    """Column panels [x0, x1) covering [0, width): widths a multiple of ``out_tile`` (the
    last one ends at ``width``), at most ``max(panel_width, out_tile)`` rounded down to it."""
    step = max(out_tile, panel_width // out_tile * out_tile)
    return [(x, min(x + step, width)) for x in range(0, width, step)]


def _pair(roi: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(roi, int):
        return roi, roi
    th, tw = (int(r) for r in roi)
    return th, tw


def _has_metadata(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("normalization", "classes", "patch_size"))


def _metadata_source(model_or_backend: Any) -> Any:
    """What carries the model metadata: the model / ``ModelInfo`` itself, else a bare
    backend's ``.model`` / ``.info``, else None."""
    if _has_metadata(model_or_backend):
        return model_or_backend
    return next((m for m in (getattr(model_or_backend, "model", None),
                             getattr(model_or_backend, "info", None))
                 if m is not None and _has_metadata(m)), None)


def _resolve(model_or_backend: Any, backend: str | Backend | None,
             classes: ClassTable | None, normalization: Normalization | None
             ) -> tuple[Callable[[torch.Tensor], torch.Tensor], _Meta]:
    """(backend callable, model metadata) from the arguments of :func:`segment_slide`.

    ``model_or_backend`` is a SegmentationModel (run with ``backend``: a name, default
    "torch", or an instance), model metadata such as an export's ``ModelInfo`` (needs a
    backend instance), or a bare backend (metadata from its ``.model`` / ``.info`` if any).
    """
    if isinstance(model_or_backend, SegmentationModel):
        meta_src: Any = model_or_backend
        if backend is None or isinstance(backend, str):
            device = next(model_or_backend.parameters()).device
            run = make_backend(backend or "torch", model_or_backend, device)
        else:
            run = backend
    elif _has_metadata(model_or_backend):
        if backend is None or isinstance(backend, str):
            raise ValueError("model metadata without weights needs a backend instance "
                             "(backend=...)")
        meta_src, run = model_or_backend, backend
    else:
        if backend is not None:
            raise ValueError("backend= is only used together with a model or its metadata")
        run = model_or_backend
        meta_src = _metadata_source(run)
    meta = _Meta(
        classes or (meta_src.classes if meta_src is not None else TEM_CLASSES),
        normalization or (meta_src.normalization if meta_src is not None
                          else Normalization()),
        int(meta_src.patch_size) if meta_src is not None else None,
        getattr(meta_src, "pixel_size_um", None),
        None if meta_src is None else int(getattr(meta_src, "roi_size", None)
                                          or default_roi_size(meta_src.patch_size)),
    )
    return run, meta


def _grey_rows(block: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """Raw pixels -> uint8 display grey: normalised [-1, 1] mapped to [0, 255], clipped."""
    g = (block.astype(np.float32) - np.float32(offset)) * np.float32(scale * 127.5)
    return np.clip(g + np.float32(127.5), 0, 255).astype(np.uint8)


def _entropy_u8(probs: np.ndarray) -> np.ndarray:
    """(C, h, w) float32 probabilities -> (h, w) uint8 normalised entropy
    ``-sum p log p / log C`` scaled to 0-255 (0: certain, 255: uniform)."""
    n = probs.shape[0]
    h = np.zeros(probs.shape[1:], np.float32)
    for p in probs:
        with np.errstate(divide="ignore", invalid="ignore"):
            h -= np.where(p > 0, p * np.log(p), 0.0).astype(np.float32)
    return np.clip(np.rint(h * np.float32(255.0 / math.log(n))), 0, 255).astype(np.uint8)


def _quantise(probs: np.ndarray) -> np.ndarray:
    """(C, h, w) float32 in [0, 1] -> uint8 round(255 p)."""
    return np.clip(np.rint(probs * np.float32(255.0)), 0, 255).astype(np.uint8)


def _save_overlay(path: Path, grey: np.ndarray, labels: np.ndarray, classes: ClassTable,
                  alpha: float = 0.45) -> None:
    """RGB PNG: ``grey`` (h, w) uint8 with non-background ``labels`` (h, w) tinted in the class
    colours (as :func:`temseg.predict.overlay`), composed in row chunks."""
    colors = np.asarray(classes.colors, dtype=np.float32)
    rgb = np.empty((*grey.shape, 3), np.uint8)
    for r in range(0, grey.shape[0], 256):
        g = grey[r : r + 256].astype(np.float32)[..., None]
        lab = labels[r : r + 256]
        tinted = (1 - alpha) * g + alpha * colors[lab]
        rgb[r : r + 256] = np.where((lab > 0)[..., None], tinted, g).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def segment_slide(
    model_or_backend: SegmentationModel | Backend | Any,
    input: str | Path | np.ndarray | SlideSource,
    output_path: str | Path | None = None,
    *,
    backend: str | Backend | None = None,
    roi_size: int | Sequence[int] | None = None,
    sw_batch_size: int = 8,
    overlap: float = 0.25,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    padding_mode: str = "reflect",
    tta: bool = False,
    probabilities_path: str | Path | None = None,
    uncertainty_path: str | Path | None = None,
    overlay_path: str | Path | None = None,
    overlay_max_side: int = 4096,
    mask: str | Path | np.ndarray | None = None,
    classes: ClassTable | None = None,
    normalization: Normalization | tuple[float, float] | None = None,
    panel_width: int = 8192,
    out_tile: int = 512,
    compression: str | None = "zlib",
    queue_size: int = 2,
    num_threads: int = 1,
    progress: bool = True,
    pixel_size_um: float | None = None,
    resample: str = "auto",
) -> SlideResult:
    """Segment a slide of any size into a tiled BigTIFF label image, streaming.

    Args:
        model_or_backend: a :class:`~temseg.checkpoint.SegmentationModel` (run with
            ``backend``, default "torch"), model metadata (e.g. an export's ``ModelInfo``:
            ``normalization``, ``classes``, ``patch_size``) together with a ``backend``
            instance, or a bare backend ``(B, 1, th, tw) float32 normalised ->
            (B, C, th, tw) float32 probabilities`` (metadata from its ``.model`` / ``.info``,
            else ``roi_size`` is required and the TEM classes / default percentiles apply).
        input: TIFF / BigTIFF (tiled or strip; read lazily), PNG (loaded), an (H, W) array or
            a :class:`SlideSource`. Grey values of any integer or float type.
        output_path: labels as a tiled BigTIFF (H, W) uint8 in the class table's grey values
            (0/50/100/150/200), tiles ``out_tile``, ``compression``; None: not written.
        backend: backend name (see ``temseg.inference.backends.BACKENDS``) or instance.
        roi_size, sw_batch_size, overlap, mode, sigma_scale: sliding window (MONAI names);
            ``roi_size`` None: the model's ``roi_size`` (twice its training patch).
        padding_mode: padding of tiles reaching outside slides smaller than the tile.
        tta: average the backend over the 8 dihedral transforms (flips / rot180 for
            non-square tiles), each undone on the output before stitching.
        probabilities_path: (C, H, W) uint8 ``round(255 p)`` tiled BigTIFF (C pages).
        uncertainty_path: (H, W) uint8 normalised entropy ``255 * H(p) / log C``.
        overlay_path: RGB PNG thumbnail (longest side <= ``overlay_max_side``) of the slide
            with the classes tinted.
        mask: ground truth for a confusion matrix: a mask file in grey values (read lazily)
            or an (H, W) array of class indices.
        classes, normalization: override the model's (``normalization`` may also be a fixed
            ``(offset, scale)``); the normalisation is estimated on a strided subsample of
            the slide read lazily (same numbers as for the whole image in memory).
        panel_width: widest column panel streamed at once (memory ~ panel_width).
        out_tile: output TIFF tile side (multiple of 16).
        queue_size: tile rows prefetched by the reader.
        num_threads: C++ threads of the accumulator (0: all cores). Default 1: it runs in
            its own thread beside the model, whose intra-op threads already use the cores.
        progress: tqdm progress bar in MPix/s.
        pixel_size_um: the input's pixel size in micrometres (default: from its TIFF tags).
        resample: what to do when the input's and the model's pixel sizes are both known
            and differ by more than 2 %. "always": segment the input resampled to the
            model's pixel size (streamed, :class:`~temseg.inference.resample.ResampledSource`)
            and bring the outputs back to the input's grid (nearest; the confusion matrix and
            class counts are taken there, the overlay thumbnail stays at the model's grid).
            "auto" (default): the same for inputs finer than the model (shrinking); coarser
            ones are segmented as they are, because enlarging blurs them: on held-out mice
            (tem-mouse-cc, README "Results on real TEM data") enlarging 0.8x / 0.6x coarser
            copies cost 0.06 / 0.08 mean Dice while shrinking 1.25x / 1.5x finer ones gained
            0.025 / 0.10. "never": segment as is (with a warning).

    Returns:
        :class:`SlideResult`.

    Raises:
        DataError naming the file for unreadable or mismatching inputs; whatever the backend
        raises. No output file (nor temporary file) is left behind on error.
    """
    args = dict(locals())
    t_start = time.perf_counter()
    if resample not in RESAMPLE_MODES:
        raise ValueError(f"resample must be one of {RESAMPLE_MODES}, got {resample!r}")
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be >= 0 and < 1, got {overlap}")
    run, meta = _resolve(model_or_backend, backend,
                         classes, normalization if isinstance(normalization,
                                                              Normalization) else None)
    predictor = TTABackend(run) if tta else run
    roi = roi_size if roi_size is not None else meta.roi_size
    if roi is None:
        raise ValueError("roi_size is required when segmenting with a bare backend")

    own_source = not isinstance(input, SlideSource)
    source = open_slide(input)
    truth: SlideSource | None = None
    spools: dict[str, TiledTiffSpool] = {}
    try:
        px, model_px = pixel_size_um or source.pixel_size_um, meta.pixel_size_um
        differ = bool(model_px and px and abs(px / model_px - 1.0) > RESAMPLE_TOLERANCE)
        if differ and (resample == "always" or (resample == "auto" and px < model_px)):
            if isinstance(model_or_backend, SegmentationModel):
                args["backend"] = run  # made once, reused on the model's grid
            return _segment_resampled(source, float(px), float(model_px), meta.classes, args)
        if differ and resample == "never":
            log.warning("%s: pixel size %.4g um differs from the model's %.4g um and "
                        "resampling is off; results may suffer", source.name, px, model_px)
        elif differ:
            log.info("%s: pixel size %.4g um is coarser than the model's %.4g um: segmented "
                     "as it is (resample='always' enlarges it)", source.name, px, model_px)
        elif model_px and not px:
            log.info("%s: pixel size unknown, assumed to be the model's (%.4g um)",
                     source.name, model_px)
        height, width = source.shape
        name = source.name
        if mask is not None:
            truth = _open_truth(mask, source)
        timings: dict[str, float] = defaultdict(float)
        t0 = time.perf_counter()
        if isinstance(normalization, tuple):
            offset, scale = (float(v) for v in normalization)
        else:
            offset, scale = meta.normalization.affine(source)  # lazy strided subsample
        timings["normalize"] = time.perf_counter() - t0

        th, tw = _pair(roi)
        th, tw = (th if th > 0 else height), (tw if tw > 0 else width)
        grid = _C.TileGrid(height, width, (th, tw), overlap)
        window = _C.make_window((th, tw), mode, sigma_scale)
        n_classes = meta.classes.num_classes
        row_starts = np.asarray(grid.row_starts, dtype=np.int64)
        col_starts = np.asarray(grid.col_starts, dtype=np.int64)
        panels = plan_panels(width, panel_width, out_tile)
        panel_cols = []
        for x0, x1 in panels:
            sel = np.nonzero((col_starts < x1) & (col_starts + tw > x0))[0]
            panel_cols.append(col_starts[sel[0] : sel[-1] + 1])
        need_probs = probabilities_path is not None or uncertainty_path is not None

        tiff_kwargs: dict[str, Any] = {}
        if source.pixel_size_um:
            res = 1e4 / source.pixel_size_um
            tiff_kwargs = {"resolution": (res, res), "resolutionunit": "CENTIMETER"}
        if output_path is not None:
            spools["mask"] = TiledTiffSpool(output_path, (height, width), out_tile, compression)
        if uncertainty_path is not None:
            spools["uncertainty"] = TiledTiffSpool(uncertainty_path, (height, width), out_tile,
                                                   compression)
        if probabilities_path is not None:
            spools["probabilities"] = TiledTiffSpool(probabilities_path,
                                                     (n_classes, height, width), out_tile,
                                                     compression)
        step = max(1, math.ceil(max(height, width) / overlay_max_side))
        thumb_shape = (-(-height // step), -(-width // step))
        thumb_grey = np.zeros(thumb_shape, np.uint8) if overlay_path is not None else None
        thumb_lab = np.zeros(thumb_shape, np.uint8) if overlay_path is not None else None
        confusion = np.zeros((n_classes, n_classes), np.int64) if truth is not None else None
        class_pixels = np.zeros(n_classes, np.int64)
        lut = np.asarray(meta.classes.values, dtype=np.uint8)
        tiles_done = [0]

        from tqdm import tqdm

        bar = tqdm(total=height * width, unit="MPix", unit_scale=1e-6, desc=Path(name).name,
                   disable=not progress, mininterval=1.0,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} MPix "
                              "[{elapsed}<{remaining}, {rate_noinv_fmt}]")
        pipe = Pipeline()
        tile_rows = pipe.channel(queue_size)
        scores_ch = pipe.channel(4)
        bands = pipe.channel(4)

        def read() -> None:
            for p, ((x0, x1), cols) in enumerate(zip(panels, panel_cols, strict=True)):
                rx0, rx1 = max(0, int(cols[0])), min(width, int(cols[-1]) + tw)
                rows = RowWindow(source, rx0, rx1)
                next_thumb = 0
                tc0, tc1 = -(-x0 // step), -(-x1 // step)  # thumbnail columns of the panel
                for k, y in enumerate(row_starts):
                    y0, y1 = max(int(y), 0), min(int(y) + th, height)
                    t = time.perf_counter()
                    band = rows.rows(y0, y1)
                    t1 = time.perf_counter()
                    local = np.empty((len(cols), 2), np.int64)
                    local[:, 0], local[:, 1] = y - y0, cols - rx0
                    tiles = _C.extract_tiles(band, local, (th, tw), offset=offset, scale=scale,
                                             pad_mode=padding_mode, num_threads=1)
                    if thumb_grey is not None and y1 > next_thumb:
                        r = -(-max(y0, next_thumb) // step) * step
                        sel = band[r - y0 : y1 - y0 : step, tc0 * step - rx0 :
                                   (tc1 - 1) * step - rx0 + 1 : step]
                        thumb_grey[r // step : r // step + len(sel), tc0:tc1] = \
                            _grey_rows(sel, offset, scale)
                        next_thumb = y1
                    t2 = time.perf_counter()
                    timings["read"] += t1 - t
                    timings["extract"] += t2 - t1
                    acc_origins = np.empty_like(local)
                    acc_origins[:, 0], acc_origins[:, 1] = y, cols - x0
                    tile_rows.put(_TileRow(p, k, tiles, acc_origins))
            tile_rows.close()

        def infer() -> None:
            # Batches are filled across tile rows and panels in grid order (like the
            # in-memory path); scores go to the stitcher split back per tile row, followed by
            # a row-end marker once a tile row is complete.
            pending: list[tuple[_TileRow, int]] = []  # (tile row, first tile not predicted)
            n_pending = 0

            def run_batch() -> int:
                parts: list[tuple[_TileRow, int, int]] = []
                take = 0
                while pending and take < sw_batch_size:
                    row, i = pending[0]
                    n = min(len(row.tiles) - i, sw_batch_size - take)
                    parts.append((row, i, n))
                    take += n
                    if i + n == len(row.tiles):
                        pending.pop(0)
                    else:
                        pending[0] = (row, i + n)
                arrays = [row.tiles[i : i + n] for row, i, n in parts]
                batch = torch.from_numpy(arrays[0] if len(arrays) == 1
                                         else np.concatenate(arrays))
                t = time.perf_counter()
                with torch.inference_mode():
                    out = predictor(batch)
                if not isinstance(out, torch.Tensor) or tuple(out.shape) != (
                        take, n_classes, th, tw):
                    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)
                    raise ValueError(f"{name}: backend must return ({take}, {n_classes}, "
                                     f"{th}, {tw}) probabilities, got {got}")
                scores = np.ascontiguousarray(out.detach().to("cpu", torch.float32).numpy())
                timings["infer"] += time.perf_counter() - t
                tiles_done[0] += take
                off = 0
                for row, i, n in parts:
                    scores_ch.put((row.panel, -1, scores[off : off + n],
                                   row.origins[i : i + n]))
                    off += n
                    if i + n == len(row.tiles):
                        scores_ch.put((row.panel, row.k, None, None))
                return take

            for row in tile_rows:
                pending.append((row, 0))
                n_pending += len(row.tiles)
                while n_pending >= sw_batch_size:
                    n_pending -= run_batch()
            while pending:
                n_pending -= run_batch()
            scores_ch.close()

        def stitch() -> None:
            acc, current = None, -1
            for p, k, scores, origins in scores_ch:
                t = time.perf_counter()
                if p != current:
                    x0, x1 = panels[p]
                    acc = _C.BandAccumulator(height, x1 - x0, (th, tw), n_classes, window,
                                             num_threads=num_threads)
                    current = p
                assert acc is not None
                if scores is not None:
                    acc.add(scores, origins)
                    timings["stitch"] += time.perf_counter() - t
                    continue
                r0 = acc.released_row
                probs, labels = acc.finalize_until(grid.final_row_after(k + 1), need_probs, True)
                r1 = acc.released_row
                timings["stitch"] += time.perf_counter() - t
                if r1 > r0:
                    bands.put(_Band(p, r0, r1, labels, probs))
            bands.close()

        def write() -> None:
            current = -1
            assemblers: dict[str, TileRowAssembler] = {}
            for band in bands:
                t = time.perf_counter()
                x0, x1 = panels[band.panel]
                if band.panel != current:
                    assemblers = {kind: TileRowAssembler(s, x0, x1) for kind, s in spools.items()}
                    current = band.panel
                labels = band.labels
                if "mask" in assemblers:
                    assemblers["mask"].add(lut[labels])
                if band.probs is not None:
                    if "uncertainty" in assemblers:
                        assemblers["uncertainty"].add(_entropy_u8(band.probs))
                    if "probabilities" in assemblers:
                        assemblers["probabilities"].add(_quantise(band.probs))
                class_pixels[:] += np.bincount(labels.ravel(), minlength=n_classes)[:n_classes]
                if thumb_lab is not None:
                    r = -(-band.row0 // step) * step
                    tc0, tc1 = -(-x0 // step), -(-x1 // step)
                    sel = labels[r - band.row0 :: step, tc0 * step - x0 :: step]
                    thumb_lab[r // step : r // step + len(sel), tc0:tc1] = sel[:, : tc1 - tc0]
                if truth is not None and confusion is not None:
                    block = truth.read(band.row0, band.row1, x0, x1)
                    if not isinstance(mask, np.ndarray):
                        block = meta.classes.encode(block, source=truth.name)
                    idx = block.astype(np.int64).ravel() * n_classes + labels.ravel()
                    confusion[:] += np.bincount(
                        idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
                timings["write"] += time.perf_counter() - t
                bar.update(labels.size)

        pipe.spawn("temseg-read", read)
        pipe.spawn("temseg-stitch", stitch)
        pipe.spawn("temseg-write", write)
        try:
            pipe.run(infer)
        finally:
            bar.close()

        t = time.perf_counter()
        outputs: dict[str, Path] = {}
        for kind in ("uncertainty", "probabilities"):
            if kind in spools:
                outputs[kind] = spools.pop(kind).finish(**tiff_kwargs)
        if overlay_path is not None:
            assert thumb_grey is not None and thumb_lab is not None
            _save_overlay(Path(overlay_path), thumb_grey, thumb_lab, meta.classes)
            outputs["overlay"] = Path(overlay_path)
        if "mask" in spools:  # last: its presence means everything else was written
            outputs["mask"] = spools.pop("mask").finish(**tiff_kwargs)
        timings["finish"] = time.perf_counter() - t
    finally:
        for s in spools.values():
            s.discard()
        if truth is not None and not isinstance(mask, SlideSource):
            truth.close()
        if own_source:
            source.close()

    seconds = time.perf_counter() - t_start
    return SlideResult(
        input=name, shape=(height, width), outputs=outputs, seconds=seconds,
        mpix_per_s=height * width / 1e6 / max(seconds, 1e-9), tiles=tiles_done[0],
        panels=len(panels), offset=offset, scale=scale, class_pixels=class_pixels,
        confusion=confusion, timings=dict(timings))


def _open_truth(mask: str | Path | np.ndarray | SlideSource, source: SlideSource
                ) -> SlideSource:
    """The ground truth of ``source``: an (H, W) array of class indices or a mask file in
    grey values (read lazily). Raises DataError when its size differs."""
    truth = ArraySource(mask, "<mask>") if isinstance(mask, np.ndarray) else open_slide(mask)
    if truth.shape != source.shape:
        if truth is not mask:
            truth.close()
        raise DataError(f"{truth.name}: mask size {truth.shape[1]}x{truth.shape[0]} does not "
                        f"match image {source.name} size {source.shape[1]}x{source.shape[0]}")
    return truth


class _TiffPlane(SlideSource):
    """Plane ``plane`` of a (C, H, W) uint8 TIFF written by :class:`TiledTiffSpool`."""

    def __init__(self, z: Any, plane: int, name: str) -> None:
        self.z, self.plane, self.name = z, plane, name
        self.shape = (int(z.shape[1]), int(z.shape[2]))
        self.dtype = np.dtype(np.uint8)
        self.chunk_rows = int(z.chunks[1])

    def _read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.asarray(self.z[self.plane, y0:y1, x0:x1])


def _segment_resampled(source: SlideSource, pixel_size_um: float, model_pixel_size_um: float,
                       classes: ClassTable, args: dict[str, Any]) -> SlideResult:
    """:func:`segment_slide` of ``source`` resampled to the model's pixel size; the outputs
    (written at the model's grid into a temporary folder beside the output) are brought
    back to the input's grid band by band (nearest), where the confusion matrix is taken."""
    import tempfile

    import zarr

    t_start = time.perf_counter()
    height, width = source.shape
    shape = resampled_shape(source.shape, pixel_size_um, model_pixel_size_um)
    log.info("%s: resampling %dx%d px at %.4g um to %dx%d px at the model's %.4g um",
             source.name, width, height, pixel_size_um, shape[1], shape[0],
             model_pixel_size_um)
    n_classes = classes.num_classes
    out_tile, compression = args["out_tile"], args["compression"]
    finals = {kind: args[f"{kind}_path"] for kind in ("output", "uncertainty", "probabilities")
              if args[f"{kind}_path"] is not None}
    mask = args["mask"]
    truth: SlideSource | None = None
    spools: dict[str, TiledTiffSpool] = {}
    parent = Path(args["output_path"]).parent if args["output_path"] is not None else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".temseg-resample-", dir=parent) as tmp_dir:
        tmp = {kind: Path(tmp_dir) / f"{kind}.tif"
               for kind in ("output", "uncertainty", "probabilities")}
        virtual = ResampledSource(source, shape, order=1, pixel_size_um=model_pixel_size_um)
        inner = segment_slide(**{
            **args, "input": virtual, "pixel_size_um": model_pixel_size_um, "resample": "never",
            "mask": None, "output_path": tmp["output"],
            "uncertainty_path": tmp["uncertainty"] if "uncertainty" in finals else None,
            "probabilities_path": tmp["probabilities"] if "probabilities" in finals
            else None})
        t = time.perf_counter()
        try:
            if mask is not None:
                truth = _open_truth(mask, source)
            res = 1e4 / pixel_size_um
            tiff_kwargs = {"resolution": (res, res), "resolutionunit": "CENTIMETER"}
            for kind, path in finals.items():
                spools[kind] = TiledTiffSpool(path, (n_classes, height, width)
                                              if kind == "probabilities" else (height, width),
                                              out_tile, compression)
            backs: dict[str, list[SlideSource]] = {}
            opened: list[Any] = []
            labels_in = open_slide(tmp["output"])
            opened.append(labels_in)
            backs["output"] = [ResampledSource(labels_in, source.shape, order=0)]
            if "uncertainty" in finals:
                u = open_slide(tmp["uncertainty"])
                opened.append(u)
                backs["uncertainty"] = [ResampledSource(u, source.shape, order=0)]
            if "probabilities" in finals:
                tif = tifffile.TiffFile(tmp["probabilities"])
                opened.append(tif)
                z = zarr.open(tif.aszarr(), mode="r")
                backs["probabilities"] = [
                    ResampledSource(_TiffPlane(z, c, str(tmp["probabilities"])),
                                    source.shape, order=0) for c in range(n_classes)]
            assemblers = {kind: TileRowAssembler(sp, 0, width) for kind, sp in spools.items()}
            confusion = np.zeros((n_classes, n_classes), np.int64) if truth is not None \
                else None
            class_pixels = np.zeros(n_classes, np.int64)
            try:
                for y0 in range(0, height, out_tile):
                    y1 = min(y0 + out_tile, height)
                    grey = backs["output"][0].read(y0, y1)
                    labels = classes.encode(grey, source=str(tmp["output"]))
                    class_pixels += np.bincount(labels.ravel(),
                                                minlength=n_classes)[:n_classes]
                    if truth is not None and confusion is not None:
                        block = truth.read(y0, y1)
                        if not isinstance(mask, np.ndarray):
                            block = classes.encode(block, source=truth.name)
                        idx = block.astype(np.int64).ravel() * n_classes + labels.ravel()
                        confusion += np.bincount(idx, minlength=n_classes ** 2).reshape(
                            n_classes, n_classes)
                    for kind, asm in assemblers.items():
                        band = grey if kind == "output" else np.stack(
                            [b.read(y0, y1) for b in backs[kind]])
                        asm.add(band)
            finally:
                for f in opened:
                    f.close()
            outputs = dict(inner.outputs)
            outputs.pop("mask", None)
            for kind in ("uncertainty", "probabilities", "output"):  # the mask last
                if kind in spools:
                    outputs["mask" if kind == "output" else kind] = \
                        spools.pop(kind).finish(**tiff_kwargs)
        finally:
            for sp in spools.values():
                sp.discard()
            if truth is not None and not isinstance(mask, SlideSource):
                truth.close()
    timings = {**inner.timings, "resample_back": time.perf_counter() - t}
    seconds = time.perf_counter() - t_start
    return SlideResult(
        input=source.name, shape=(height, width), outputs=outputs, seconds=seconds,
        mpix_per_s=height * width / 1e6 / max(seconds, 1e-9), tiles=inner.tiles,
        panels=inner.panels, offset=inner.offset, scale=inner.scale,
        class_pixels=class_pixels, confusion=confusion, timings=timings)
