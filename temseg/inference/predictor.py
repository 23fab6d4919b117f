"""The :class:`Predictor`: a model opened once with its backend and window settings, then
applied to arrays, files, batches of files and labelled data (nnU-Net's ``nnUNetPredictor``
habit; the window settings are MONAI's :class:`SlidingWindowInferer`).

Every path goes through :func:`~temseg.inference.slide.segment_slide` (the streaming
pipeline), so an in-memory array, a 100k x 100k BigTIFF and an evaluation see the same tile
loop and give the same labels; every model source (checkpoint, run folder, ``.onnx``,
TensorRT engine, AOTInductor package) works with every method.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..checkpoint import SegmentationModel
from ..data import DataError, Sample, find_pairs
from ..io.omezarr import LabelStore, RegionOutputs
from ..io.outputs import clean_stale_parts, output_paths
from ..io.slides import slide_stem
from ..metrics import summarize
from ..policy import choose_device
from ..spec import ModelSpec
from .backends import Backend, open_backend
from .slide import SlideLayout, SlideResult, segment_slide, slide_layout
from .sliding_window import SlidingWindowInferer

__all__ = ["Predictor", "check_unique_stems"]

log = logging.getLogger("temseg.predict")


@dataclass
class Predictor:
    """A backend (which carries the model's :class:`~temseg.spec.ModelSpec`) with the
    sliding-window settings and the slide options.

    Attributes:
        backend: see :mod:`temseg.inference.backends`.
        window: tile size (None: the model's ``roi_size``), batch, overlap, blending.
        tta: average over the dihedral transforms of each tile.
        resample: "auto" | "always" | "never" (see :func:`segment_slide`).
        progress: progress bars (MPix/s).
        slide_options: further :func:`segment_slide` keywords (panel_width, out_tile, ...).
    """

    backend: Backend
    window: SlidingWindowInferer = field(default_factory=SlidingWindowInferer)
    tta: bool = False
    resample: str = "auto"
    progress: bool = True
    slide_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, source: str | Path | SegmentationModel, backend: str = "auto",
             device: str | torch.device = "auto", amp: str = "auto", compile: bool = False,
             **settings: Any) -> Predictor:
        """Open a checkpoint, run folder, ``.onnx``, ``.engine`` or ``.pt2`` (or a loaded
        SegmentationModel) once; ``settings``: the dataclass fields (window, tta, ...)."""
        dev = choose_device(str(device)) if isinstance(device, str) else device
        run = open_backend(source, backend, dev, amp, compile)
        predictor = cls(run, **settings)
        log.info("%s: backend %s, precision %s", getattr(source, "name", source), run.name,
                 run.precision)
        return predictor

    @property
    def spec(self) -> ModelSpec:
        return self.backend.spec

    def describe(self) -> dict[str, Any]:
        """What made an output (recorded in every TIFF's description): temseg version,
        backend, precision, window settings and the model's tile / pixel size."""
        return {"temseg": {"version": __version__, "backend": self.backend.name,
                           "precision": self.backend.precision, "tta": self.tta,
                           "window": {**asdict(self.window), "roi_size": self.roi()},
                           "model_patch_size": self.spec.patch_size,
                           "model_pixel_size_um": self.spec.pixel_size_um}}

    def roi(self) -> tuple[int, int]:
        """The tile size used: the window's, else the model's."""
        return self.window.roi(self.spec.roi_size)

    def segment_slide(self, input: Any, output_path: str | Path | None = None,
                      **kw: Any) -> SlideResult:
        """:func:`~temseg.inference.slide.segment_slide` of ``input`` with this predictor's
        backend and settings into explicit output paths (``kw``: its other keywords)."""
        w = self.window
        return segment_slide(
            self.spec, input, output_path, backend=self.backend, roi_size=self.roi(),
            sw_batch_size=w.sw_batch_size, overlap=w.overlap, mode=w.mode,
            sigma_scale=w.sigma_scale, padding_mode=w.padding_mode, tta=self.tta,
            resample=self.resample, description=self.describe(),
            **{"progress": self.progress, **self.slide_options, **kw})

    def predict(self, image: np.ndarray, *, probabilities: bool = False,
                pixel_size_um: float | None = None, mask: np.ndarray | None = None
                ) -> SlideResult:
        """An in-memory (H, W) image: ``result.labels`` (H, W) uint8 and, with
        ``probabilities``, ``result.probs`` (C, H, W) float32 (``mask``: class indices)."""
        return self.segment_slide(image, return_arrays=True, return_probs=probabilities,
                         pixel_size_um=pixel_size_um, mask=mask, progress=False)

    def segment(self, image: np.ndarray, pixel_size_um: float | None = None) -> np.ndarray:
        """Class indices of an (H, W) image: (H, W) uint8."""
        labels = self.predict(image, pixel_size_um=pixel_size_um).labels
        assert labels is not None
        return labels

    def predict_file(self, path: str | Path, out_dir: str | Path, *, overlay: bool = True,
                     probabilities: bool = False, uncertainty: bool = False,
                     morphometrics: bool = False, pixel_size_um: float | None = None,
                     mask: str | Path | None = None, mask_format: str = "tiff",
                     level: int = 0) -> SlideResult:
        """Segment one file (TIFF, PNG, OME-Zarr at ``level``) into
        ``out_dir/<stem>_mask.tif`` (tiled BigTIFF, grey values; ``mask_format`` "ome-zarr":
        ``<stem>_mask.ome.zarr``, an NGFF label image), ``<stem>_overlay.png`` and, when
        asked, ``_probabilities.tif`` / ``_uncertainty.tif``, committed together
        (:mod:`temseg.io.outputs`). ``morphometrics``: then measure the mask's instances,
        streaming (:func:`temseg.morphometrics.measure_mask`), into ``<stem>_instances.csv``,
        ``<stem>_morphometrics.json`` and diameter histograms."""
        path = Path(path)
        paths = output_paths(out_dir, slide_stem(path), overlay=overlay,
                             probabilities=probabilities, uncertainty=uncertainty,
                             mask_format=mask_format)
        clean_stale_parts(paths)
        result = self.segment_slide(path, paths["mask"], overlay_path=paths.get("overlay"),
                                    probabilities_path=paths.get("probabilities"),
                                    uncertainty_path=paths.get("uncertainty"),
                                    pixel_size_um=pixel_size_um, mask=mask, level=level)
        if morphometrics:
            from ..morphometrics import measure_mask, write_morphometrics

            measured = measure_mask(result.outputs["mask"], pixel_size_um=pixel_size_um,
                                    classes=self.spec.classes,
                                    probabilities=result.outputs.get("probabilities"))
            result.outputs.update(write_morphometrics(measured, out_dir, slide_stem(path)))
        return result

    def layout(self, path: str | Path, pixel_size_um: float | None = None, level: int = 0
               ) -> SlideLayout:
        """How :meth:`predict_file` cuts ``path`` into column panels (and its normalisation),
        for splitting it into regions (:mod:`temseg.distributed`)."""
        options = {k: v for k, v in self.slide_options.items()
                   if k in ("panel_width", "out_tile", "normalization")}
        return slide_layout(self.spec, path, pixel_size_um=pixel_size_um,
                            resample=self.resample, level=level, **options)

    def predict_region(self, path: str | Path, store: str | Path, name: str,
                       panels: Sequence[int], columns: tuple[int, int],
                       layout: SlideLayout, level: int = 0) -> SlideResult:
        """Segment the column panels ``panels`` (slide columns ``columns``) of ``path`` into
        level 0 of the label store being written for ``store`` (:class:`~temseg.io.omezarr.
        LabelStore`), then mark region ``name`` done. ``layout``: :meth:`layout`'s, so that
        every region uses the slide's normalisation. The labels equal those of
        :meth:`predict_file` with the same ``panel_width`` bit for bit."""
        outputs = RegionOutputs(LabelStore.open(store), name, columns)
        return self.segment_slide(path, None, outputs=outputs, panels=panels,
                         normalization=(layout.offset, layout.scale),
                         pixel_size_um=layout.pixel_size_um, level=level, progress=False)

    def predict_files(self, inputs: Sequence[str | Path], out_dir: str | Path,
                      **options: Any) -> tuple[list[Path], list[tuple[Path, str]]]:
        """:meth:`predict_file` for each input; a file that fails is reported and skipped,
        the rest go on. Inputs whose outputs would collide (same stem) are refused before
        any work. Returns (written mask paths, [(failed input, reason), ...])."""
        paths = [Path(p) for p in inputs]
        check_unique_stems(paths)
        done, failed = [], []
        for path in paths:
            try:
                result = self.predict_file(path, out_dir, **options)
            except Exception as exc:  # one bad file must not stop the batch
                reason = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
                log.error("skipped: %s", reason)
                failed.append((path, reason))
                continue
            log.info("%s: %dx%d px in %.1f s (%.2f MPix/s) -> %s", path, result.shape[1],
                     result.shape[0], result.seconds, result.mpix_per_s,
                     result.outputs["mask"])
            done.append(result.outputs["mask"])
        return done, failed

    def evaluate_folder(self, data_dir: str | Path, pixel_size_um: float | None = None,
                        instances: bool = True) -> dict:
        """Per-class Dice/IoU on ``DATA/images`` + ``DATA/masks`` (pooled confusion matrix,
        per-image Dice under ``"images"``), streaming: any slide size. ``instances``: also
        instance metrics per class (``"instances"``: matching at IoU >= 0.5, precision,
        recall, F1, PQ, count error, pooled over the images; per image under
        ``"instances_per_image"``); they hold each image's labels in memory (~6 bytes/px)."""
        matrices, scores = {}, {}
        for image_path, mask_path in find_pairs(data_dir):
            result = self.segment_slide(image_path, mask=mask_path, pixel_size_um=pixel_size_um,
                               return_arrays=instances)
            matrices[image_path.stem] = result.confusion
            if instances:
                scores[image_path.stem] = self._instances(mask_path, result.labels)
        return self._report(matrices, scores)

    def _instances(self, mask_path: Path, labels: np.ndarray | None) -> dict:
        from ..data import read_mask
        from ..morphometrics import instance_scores

        assert labels is not None
        return instance_scores(read_mask(mask_path, self.spec.classes), labels,
                               self.spec.classes)

    def evaluate_samples(self, samples: Sequence[Sample]) -> dict:
        """As :meth:`evaluate_folder` for in-memory samples (labels as class indices)."""
        matrices = {}
        for s in samples:
            if s.image.shape != s.labels.shape:
                raise DataError(f"{s.name}: labels {s.labels.shape} and image "
                                f"{s.image.shape} differ in size")
            matrices[s.name] = self.predict(s.image, mask=s.labels,
                                            pixel_size_um=s.pixel_size_um).confusion
        return self._report(matrices)

    def _report(self, matrices: dict[str, np.ndarray | None],
                instances: dict[str, dict] | None = None) -> dict:
        names = self.spec.classes.names
        n = len(names)
        total = sum((cm for cm in matrices.values() if cm is not None),
                    np.zeros((n, n), np.int64))
        report = summarize(total, names)
        report["images"] = {k: summarize(cm, names)["dice"] for k, cm in matrices.items()}
        if instances:
            from ..morphometrics import combine_instance_scores

            report["instances"] = combine_instance_scores(list(instances.values()))
            report["instances_per_image"] = instances
        report["backend"], report["precision"] = self.backend.name, self.backend.precision
        return report


def check_unique_stems(paths: Sequence[Path]) -> None:
    """Raise ValueError when two inputs would write the same ``<stem>_*`` outputs."""
    counts = Counter(slide_stem(p) for p in paths)
    clashes = [p for p in paths if counts[slide_stem(p)] > 1]
    if clashes:
        raise ValueError("inputs with the same name would overwrite each other's outputs: "
                         + ", ".join(map(str, clashes))
                         + " (segment them into different --out folders or rename them)")
