"""``temseg predict --cluster ray``: connect to Ray, start a pool of workers, run the jobs.

* :func:`connect`: Ray's own address resolution (``None``: ``RAY_ADDRESS`` or a new local
  cluster; ``"auto"``: the running cluster; ``"ray://HOST:PORT"``: Ray Client).
* :class:`WorkerPool`: ``num_workers`` actors (:class:`~.worker.Worker`, each ``num_cpus`` /
  ``num_gpus``), restarted by Ray when their process dies (``max_restarts``) with the call
  in flight retried on the new process (``max_task_retries``); a worker that is gone for good
  hands its task to the others.
* :func:`predict_on_ray`: the whole command: one :class:`~.jobs.InputJob` per input, tasks
  handed to free workers one at a time (so a slow region never holds up a queue), progress
  over files and regions, and a :class:`ClusterReport` with MPix/s per worker.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jobs import InputJob, Task
from .worker import TaskResult, Worker, WorkerConfig

__all__ = ["ClusterOptions", "ClusterReport", "WorkerPool", "WorkerStats", "connect",
           "predict_on_ray"]

log = logging.getLogger("temseg.distributed")
SEGMENTING = ("predict_file", "predict_region")


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how wide to run.

    Attributes:
        address: Ray address (see :func:`connect`).
        num_workers: actors (None: as many as the cluster's CPUs / GPUs allow).
        cpus_per_worker, gpus_per_worker: resources of each actor (its torch threads: the
            CPUs).
        max_retries: restarts of a dead worker process, and retries of its call in flight.
        split_mpix: slides of at least this many MPix written as OME-Zarr are split into
            regions (one per column panel of ``panel_width``); smaller files go whole.
        progress: a progress bar over files and regions.
    """

    address: str | None = None
    num_workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_retries: int = 3
    split_mpix: float = 64.0
    progress: bool = True


@dataclass
class WorkerStats:
    """What one worker did: its processes (a restart adds a pid), segmentation tasks,
    pixels and busy seconds; ``other_seconds``: layout and pyramid tasks."""

    index: int
    node: str
    pids: list[int]
    tasks: int = 0
    pixels: int = 0
    seconds: float = 0.0
    other_seconds: float = 0.0

    @property
    def mpix_per_s(self) -> float:
        return self.pixels / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def add(self, method: str, result: TaskResult) -> None:
        if result.pid not in self.pids:
            self.pids.append(result.pid)
        if method in SEGMENTING:
            self.tasks += 1
            self.pixels += result.pixels
            self.seconds += result.seconds
        else:
            self.other_seconds += result.seconds


@dataclass
class ClusterReport:
    """The outcome of :func:`predict_on_ray`: masks written, failed inputs with the reason,
    per-worker statistics, wall seconds (``startup_seconds`` of them connecting to Ray and
    starting the workers), pixels segmented, regions (and those resumed)."""

    outputs: list[Path]
    failed: list[tuple[Path, str]]
    workers: list[WorkerStats]
    seconds: float
    pixels: int
    regions: int = 0
    resumed: int = 0
    startup_seconds: float = 0.0

    @property
    def mpix_per_s(self) -> float:
        return self.pixels / 1e6 / max(self.seconds, 1e-9)

    def summary(self) -> str:
        """A table: one line per worker, then the total."""
        lines = [f"{'worker':>6} {'node':>10} {'pids':>12} {'tasks':>5} {'MPix':>8} "
                 f"{'busy s':>8} {'MPix/s':>7}"]
        for w in self.workers:
            pids = ",".join(map(str, w.pids))
            lines.append(f"{w.index:>6} {w.node[:10]:>10} {pids[:12]:>12} {w.tasks:>5} "
                         f"{w.pixels / 1e6:>8.1f} {w.seconds:>8.1f} {w.mpix_per_s:>7.2f}")
        lines.append(f"total: {self.pixels / 1e6:.1f} MPix in {self.seconds:.1f} s = "
                     f"{self.mpix_per_s:.2f} MPix/s (start-up {self.startup_seconds:.1f} s); "
                     f"{self.regions} regions"
                     + (f" ({self.resumed} resumed)" if self.resumed else ""))
        return "\n".join(lines)


def connect(address: str | None = None, **init_kwargs: Any) -> bool:
    """Connect to Ray (a no-op when already connected); True when this call connected.
    ValueError when Ray is not installed."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError("--cluster ray needs Ray: pip install 'temseg[ray]'") from exc

    if ray.is_initialized():
        return False
    ray.init(address=address, **init_kwargs)
    return True


def _pool_size(options: ClusterOptions) -> int:
    import ray

    if options.num_workers is not None:
        if options.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {options.num_workers}")
        return options.num_workers
    res = ray.cluster_resources()
    n = int(res.get("CPU", 1) // max(options.cpus_per_worker, 1e-9))
    if options.gpus_per_worker > 0:
        n = min(n, int(res.get("GPU", 0) // options.gpus_per_worker))
    if n < 1:
        raise ValueError(f"the cluster ({res.get('CPU', 0)} CPUs, {res.get('GPU', 0)} GPUs) "
                         "cannot hold one worker of the asked resources")
    return n


class WorkerPool:
    """Actors of :class:`~.worker.Worker` on the connected cluster."""

    def __init__(self, config: WorkerConfig, options: ClusterOptions) -> None:
        import ray

        remote = ray.remote(num_cpus=options.cpus_per_worker,
                            num_gpus=options.gpus_per_worker,
                            max_restarts=options.max_retries,
                            max_task_retries=options.max_retries)(Worker)
        self.actors = [remote.remote(config) for _ in range(_pool_size(options))]
        infos = ray.get([a.info.remote() for a in self.actors])
        self.stats = [WorkerStats(i, info["node"], [info["pid"]])
                      for i, info in enumerate(infos)]
        log.info("%d workers started (%s, %s)", len(infos), infos[0]["backend"],
                 infos[0]["precision"])

    @property
    def pids(self) -> list[int]:
        """The current process of each worker (the last seen)."""
        return [s.pids[-1] for s in self.stats]

    def run(self, tasks: Sequence[Task],
            on_result: Callable[[Task, TaskResult], list[Task]],
            on_error: Callable[[Task, BaseException], None]) -> None:
        """Run ``tasks`` and the follow-ups ``on_result`` returns, one per free worker."""
        import ray
        from ray.exceptions import RayActorError

        queue, free = deque(tasks), deque(range(len(self.actors)))
        inflight: dict[Any, tuple[Task, int]] = {}
        while queue or inflight:
            while queue and free:
                task, i = queue.popleft(), free.popleft()
                inflight[task.submit(self.actors[i])] = (task, i)
            if not inflight:
                raise RuntimeError(f"every worker died; {len(queue)} tasks left undone")
            ref = ray.wait(list(inflight), num_returns=1)[0][0]
            task, i = inflight.pop(ref)
            try:
                result = ray.get(ref)
            except RayActorError as exc:  # gone for good: its task goes to the others
                log.error("worker %d died (%s); its task %s goes to another", i, exc,
                          task.label)
                queue.appendleft(task)
                continue
            except Exception as exc:  # the task raised: its input fails, the rest go on
                free.append(i)
                on_error(task, exc)
                continue
            free.append(i)
            self.stats[i].add(task.method, result)
            queue.extend(on_result(task, result))

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


@dataclass
class _Progress:
    """A bar over files and regions (a split slide's regions replace its one unit)."""

    enabled: bool
    bar: Any = None
    pixels: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def start(self, total: int) -> None:
        from ..progress import progress_bar

        self.bar = progress_bar(total=total, desc="temseg ray", unit="task",
                                disable=not self.enabled, mininterval=1.0)

    def update(self, task: Task, result: TaskResult, follow: list[Task]) -> None:
        if task.method == "layout":
            regions = sum(t.method == "predict_region" for t in follow)
            if regions or task.job.regions:
                self.bar.total += regions - 1
                self.bar.refresh()
        elif task.method in SEGMENTING:
            self.pixels += result.pixels
            rate = self.pixels / 1e6 / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{rate:.2f} MPix/s", refresh=False)
            self.bar.update(1)


def predict_on_ray(config: WorkerConfig, inputs: Sequence[str | Path], out_dir: str | Path,
                   options: ClusterOptions | None = None,
                   on_task: Callable[[Task, TaskResult, WorkerPool], None] | None = None,
                   **predict_options: Any) -> ClusterReport:
    """Segment ``inputs`` into ``out_dir`` on Ray: the outputs of
    :meth:`~temseg.inference.Predictor.predict_files` with the same settings, bit for bit.

    ``predict_options``: :meth:`~temseg.inference.Predictor.predict_file` keywords
    (``mask_format="ome-zarr"`` lets large slides be split into regions). ``on_task(task,
    result, pool)``: called on the driver after each finished task (``pool.pids``: the
    worker processes). Inputs whose outputs would
    collide are refused before any work; a failing file is reported, the rest go on."""
    from ..inference.predictor import check_unique_stems

    options = options or ClusterOptions()
    paths = [Path(p) for p in inputs]
    check_unique_stems(paths)
    t0 = time.perf_counter()
    connect(options.address)
    pool = WorkerPool(config, options)
    startup = time.perf_counter() - t0
    split = None if options.split_mpix < 0 else int(options.split_mpix * 1e6)
    jobs = [InputJob(p, Path(out_dir), dict(predict_options), split, config.fingerprint())
            for p in paths]
    progress = _Progress(options.progress)
    progress.start(len(jobs))

    def on_result(task: Task, result: TaskResult) -> list[Task]:
        follow = task.job.on_result(task, result)
        progress.update(task, result, follow)
        if on_task is not None:
            on_task(task, result, pool)
        return follow

    try:
        pool.run([t for job in jobs for t in job.start()], on_result,
                 lambda task, exc: task.job.fail(f"{task.label}: {_cause(exc)}"))
    finally:
        progress.bar.close()
        pool.close()
    report = _report(jobs, pool.stats, time.perf_counter() - t0)
    report.startup_seconds = startup
    return report


def _cause(exc: BaseException) -> str:
    """The worker's own exception behind a Ray error, as text."""
    cause = getattr(exc, "cause", None)
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)


def _report(jobs: list[InputJob], stats: list[WorkerStats], seconds: float) -> ClusterReport:
    for job in jobs:
        if not job.done:
            job.fail("not finished")
        if job.error is not None:
            log.error("failed: %s", job.error)
    return ClusterReport([j.output for j in jobs if j.output is not None],
                         [(j.path, j.error) for j in jobs if j.error is not None],
                         stats, seconds, sum(s.pixels for s in stats),
                         sum(j.regions for j in jobs), sum(j.resumed for j in jobs))
