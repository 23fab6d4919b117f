"""Scale-out on Ray (``temseg predict --cluster ray``; ``pip install temseg[ray]``).

Many files are spread over a pool of workers (each opens the model and its backend once);
one large slide written as OME-Zarr is split into regions, one per column panel of the
slide's plan, each written by its worker straight into the output store (chunk-aligned, so
no two workers write the same chunk). The labels equal a single process's with the same
``panel_width`` bit for bit: a region sees exactly the tiles, tile batches and accumulation
order it sees in the whole slide (:func:`temseg.inference.tiles.predict_rows`,
``split_keys``). Killed workers are restarted and their region retried; a killed driver
leaves a ``.part`` store with per-region done-markers, and the same command resumes it.
See docs/scaling.md.
"""

from .jobs import InputJob, Task
from .runner import ClusterOptions, ClusterReport, WorkerPool, WorkerStats, connect, predict_on_ray
from .worker import TaskResult, Worker, WorkerConfig

__all__ = ["ClusterOptions", "ClusterReport", "InputJob", "Task", "TaskResult", "Worker",
           "WorkerConfig", "WorkerPool", "WorkerStats", "connect", "predict_on_ray"]
