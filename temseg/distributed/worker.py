"""The Ray actor of :mod:`temseg.distributed`: a :class:`~temseg.inference.Predictor` opened
once per worker process, then applied to whole files, regions of slides (column panels
written straight into the output store) and stripes of the output pyramid.

The class is plain Python; :func:`temseg.distributed.runner.start_workers` wraps it with
``ray.remote`` (resources and restart policy given there), so importing it needs no Ray.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..inference import Predictor, SlidingWindowInferer
from ..inference.slide import SlideLayout
from ..io.omezarr import LabelStore

__all__ = ["TaskResult", "Worker", "WorkerConfig"]


@dataclass(frozen=True)
class WorkerConfig:
    """How every worker opens the model (:meth:`Predictor.open` arguments).

    ``slide_options``: ``panel_width`` (the region width: every worker and a single-process
    run with the same value give the same labels) and ``out_tile`` (the chunk side);
    ``threads``: torch intra-op threads per worker (its ``num_cpus``)."""

    model: str
    backend: str = "auto"
    device: str = "auto"
    amp: str = "auto"
    window: SlidingWindowInferer = field(default_factory=SlidingWindowInferer)
    tta: bool = False
    resample: str = "auto"
    slide_options: dict[str, Any] = field(default_factory=dict)
    threads: int = 1

    def fingerprint(self) -> dict[str, Any]:
        """What makes the labels: the model file (path, size, mtime) and the settings."""
        path = Path(self.model)
        stat = path.stat() if path.is_file() else None
        return {"model": str(path.resolve()), "model_size": stat.st_size if stat else None,
                "model_mtime_ns": stat.st_mtime_ns if stat else None,
                "backend": self.backend, "device": self.device, "amp": self.amp,
                "window": {k: v for k, v in asdict(self.window).items() if k != "progress"},
                "tta": self.tta, "resample": self.resample,
                "slide_options": dict(self.slide_options)}


@dataclass
class TaskResult:
    """What one task did: ``value`` (task-specific), ``pixels`` segmented, ``seconds`` of
    work, and where it ran (``pid``, ``node``)."""

    value: Any
    pixels: int
    seconds: float
    pid: int
    node: str


class Worker:
    """One worker process (a Ray actor): the model and its backend opened once."""

    def __init__(self, config: WorkerConfig) -> None:
        import torch

        torch.set_num_threads(max(1, int(config.threads)))
        self.predictor = Predictor.open(config.model, config.backend, config.device,
                                        amp=config.amp, window=config.window, tta=config.tta,
                                        resample=config.resample, progress=False,
                                        slide_options=dict(config.slide_options))
        self.node = _node_id()

    def _result(self, value: Any, pixels: int, t0: float) -> TaskResult:
        return TaskResult(value, pixels, time.perf_counter() - t0, os.getpid(), self.node)

    def info(self) -> dict[str, Any]:
        """pid, node, backend and precision of this worker."""
        return {"pid": os.getpid(), "node": self.node, "backend": self.predictor.backend.name,
                "precision": self.predictor.backend.precision}

    def layout(self, path: str, pixel_size_um: float | None, level: int) -> TaskResult:
        """The slide's :class:`SlideLayout` and the model's class table (as a dict)."""
        t0 = time.perf_counter()
        layout = self.predictor.layout(path, pixel_size_um, level)
        return self._result((layout, self.predictor.spec.classes.to_dict()), 0, t0)

    def predict_file(self, path: str, out_dir: str, options: dict[str, Any]) -> TaskResult:
        """:meth:`Predictor.predict_file`; value: the mask path, or ``{"error": reason}``
        when this file fails (the batch goes on)."""
        t0 = time.perf_counter()
        try:
            result = self.predictor.predict_file(path, out_dir, **options)
        except Exception as exc:  # one bad file must not stop the batch
            reason = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            return self._result({"error": reason}, 0, t0)
        return self._result(str(result.outputs["mask"]), result.pixels, t0)

    def predict_region(self, path: str, store: str, name: str, panels: list[int],
                       columns: tuple[int, int], layout: SlideLayout,
                       level: int) -> TaskResult:
        """:meth:`Predictor.predict_region`: the panels into the store, then the marker."""
        t0 = time.perf_counter()
        result = self.predictor.predict_region(path, store, name, panels, columns, layout,
                                               level)
        return self._result(name, result.pixels, t0)

    def downsample(self, store: str, level: int, u0: int, u1: int) -> TaskResult:
        """Columns [u0, u1) of pyramid ``level`` of the store (from the level above)."""
        t0 = time.perf_counter()
        LabelStore.open(store).downsample(level, u0, u1)
        return self._result((level, u0, u1), 0, t0)


def _node_id() -> str:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # not inside Ray (a worker used directly)
        return "local"
