"""The work of one input file as a small state machine of worker tasks.

An :class:`InputJob` is either one ``predict_file`` task (the file segmented whole by one
worker: any output format and option), or, for a large slide written as OME-Zarr, a split:

1. ``layout`` (on a worker: shape, pixel size, normalisation, column panels);
2. the label store is created at ``<mask>.part`` (or resumed: same job fingerprint), one
   ``predict_region`` task per panel not yet marked done; each writes its columns of level 0
   (chunk-aligned: no two regions share a chunk) and then its done-marker;
3. the pyramid, level by level, in column stripes (``downsample`` tasks), each level
   marked done once all its stripes are;
4. on the driver: the overlay from the regions' thumbnail pieces, then the store is sealed
   (NGFF metadata) and renamed onto its final name, the mask last.

Nothing of the slide passes through the driver but the thumbnail (at most ``4096`` px a
side) and the markers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..inference.slide import SlideLayout
from ..io.omezarr import LabelStore, assemble_thumbnail
from ..io.outputs import output_paths
from ..io.slides import slide_stem
from ..labels import ClassTable
from .worker import TaskResult

__all__ = ["InputJob", "Task"]


@dataclass
class Task:
    """One call of a :class:`~.worker.Worker` method for ``job``."""

    method: str
    args: tuple
    job: InputJob
    label: str

    def submit(self, actor: Any) -> Any:
        """Start it on ``actor`` (a Ray actor handle); returns the ObjectRef."""
        return getattr(actor, self.method).remote(*self.args)


@dataclass
class InputJob:
    """One input file (see the module docstring).

    Attributes:
        options: :meth:`~temseg.inference.Predictor.predict_file` keywords (overlay,
            probabilities, uncertainty, pixel_size_um, mask_format, level).
        split_pixels: split slides of at least this many pixels (OME-Zarr output, at least
            two panels, no probabilities / uncertainty, not resampled); None: never.
        fingerprint: the model and settings (:meth:`WorkerConfig.fingerprint`): a store is
            resumed only for the same fingerprint, input file and layout.
        output, error: the mask written, or why the file failed.
        regions, resumed: regions of a split slide, and those already done by an earlier
            run.
    """

    path: Path
    out_dir: Path
    options: dict[str, Any]
    split_pixels: int | None
    fingerprint: dict[str, Any]
    output: Path | None = None
    error: str | None = None
    regions: int = 0
    resumed: int = 0
    _store: LabelStore | None = None
    _layout: SlideLayout | None = None
    _pending: set[str] = field(default_factory=set)

    @property
    def done(self) -> bool:
        return self.output is not None or self.error is not None

    def start(self) -> list[Task]:
        if self.split_pixels is None or not self._splittable_options():
            return [self._whole()]
        args = (str(self.path), self.options.get("pixel_size_um"), self.options.get("level", 0))
        return [Task("layout", args, self, f"{self.path.name}: layout")]

    def _splittable_options(self) -> bool:
        o = self.options
        return o.get("mask_format") == "ome-zarr" and not (o.get("probabilities")
                                                           or o.get("uncertainty"))

    def _whole(self) -> Task:
        return Task("predict_file", (str(self.path), str(self.out_dir), self.options), self,
                    self.path.name)

    def fail(self, reason: str) -> None:
        """Mark the file failed (later results of its tasks are ignored)."""
        if self.error is None:
            self.error = reason if str(self.path) in reason else f"{self.path}: {reason}"

    def on_result(self, task: Task, result: TaskResult) -> list[Task]:
        """The follow-up tasks once ``task`` returned ``result``."""
        if self.error is not None:
            return []
        if task.method == "predict_file":
            if isinstance(result.value, dict):
                self.fail(result.value["error"])
            else:
                self.output = Path(result.value)
            return []
        if task.method == "layout":
            return self._on_layout(*result.value)
        self._pending.discard(task.label)
        if self._pending:
            return []
        if task.method == "predict_region":
            return self._level(1)
        assert self._store is not None
        self._store.mark(f"level-{task.args[1]}", {})
        return self._level(task.args[1] + 1)

    def _mask_path(self) -> Path:
        return output_paths(self.out_dir, slide_stem(self.path), mask_format="ome-zarr")["mask"]

    def _job(self, layout: SlideLayout) -> dict[str, Any]:
        stat = self.path.stat()
        return {"input": str(self.path.resolve()), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "shape": list(layout.shape),
                "offset": layout.offset, "scale": layout.scale,
                "panels": [list(p) for p in layout.panels],
                "level": self.options.get("level", 0), **self.fingerprint}

    def _on_layout(self, layout: SlideLayout, classes: dict) -> list[Task]:
        pixels = layout.shape[0] * layout.shape[1]
        assert self.split_pixels is not None
        if pixels < self.split_pixels or len(layout.panels) < 2 or layout.resampled:
            return [self._whole()]
        self._layout = layout
        job, path = self._job(layout), self._mask_path()
        store = LabelStore.resume(path, job)
        if store is None:
            chunk = int(self.fingerprint["slide_options"].get("out_tile", 512))
            store = LabelStore.create(path, layout.shape, ClassTable.from_dict(classes),
                                      chunk, layout.pixel_size_um, job)
        self._store = store
        done = store.marks()
        self.regions = len(layout.panels)
        names = [f"region-{i:05d}" for i in range(self.regions)]
        self.resumed = sum(name in done for name in names)
        tasks = [Task("predict_region", (str(self.path), str(path), name, [i],
                                         tuple(layout.panels[i]), layout,
                                         self.options.get("level", 0)), self, name)
                 for i, name in enumerate(names) if name not in done]
        self._pending = {t.label for t in tasks}
        return tasks or self._level(1)

    def _level(self, k: int) -> list[Task]:
        """The stripes of pyramid level ``k`` not done yet (or the next level, or the end)."""
        store = self._store
        assert store is not None and self._layout is not None
        if k >= len(store.shapes):
            self._finish()
            return []
        if f"level-{k}" in store.marks():
            return self._level(k + 1)
        width = self._layout.panels[0][1] - self._layout.panels[0][0]
        tasks = [Task("downsample", (str(store.path), k, u0, u1), self,
                      f"level-{k}:{u0}")
                 for u0, u1 in store.stripes(k, max(width >> k, store.chunk))]
        self._pending = {t.label for t in tasks}
        return tasks

    def _finish(self) -> None:
        """The overlay from the regions' pieces, then the store sealed and renamed."""
        store = self._store
        assert store is not None
        if self.options.get("overlay", True):
            overlay = output_paths(self.out_dir, slide_stem(self.path))["overlay"]
            regions = [f"region-{i:05d}" for i in range(self.regions)]
            thumb = assemble_thumbnail(store, regions, 4096)
            with atomic_path(overlay) as tmp:
                thumb.save(tmp, store.classes)
        self.output = store.finish()
