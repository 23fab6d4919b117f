"""The training loop: AdamW, warm-up + cosine, AMP/compile policy, per-epoch validation,
atomic best/last checkpoints, resume, metrics CSV/JSON, curves, time budget, DDP.

:func:`train` is set-up (:func:`resume_checkpoint`, :func:`init_distributed`,
:class:`Trainer`), then per epoch :meth:`Trainer.train_epoch` and :meth:`Trainer.end_epoch`
(validation, checkpoints, metrics), then :meth:`Trainer.summary`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from ..atomic import FolderLock, remove_stale_temporaries, write_json, write_text
from ..checkpoint import SegmentationModel, load_weights, read_checkpoint, save_checkpoint
from ..data import (
    Augment,
    CenterCropDataset,
    Normalization,
    PatchDataset,
    Sample,
    check_finite,
    load_dataset,
)
from ..data.calibration import calibration_patches
from ..data.rescale import resample_samples
from ..labels import TEM_CLASSES, ClassTable
from ..losses import DeepSupervisionLoss, DiceCELoss
from ..metrics import confusion_matrix, summarize
from ..models import UNetConfig, build_model
from ..policy import choose_compile, choose_device, choose_precision, machine
from ..progress import progress_bar
from .config import TrainConfig
from .curves import plot_curves
from .ema import WeightAverage
from .split import split_samples

log = logging.getLogger("temseg.train")

RUN_FILES = ("best.pt", "last.pt", "config.json", "metrics.json", "metrics.csv", "curves.png",
             "summary.json")
LOCK_NAME = ".temseg-train.lock"
_TRAIN_STATE = ("epoch", "step", "elapsed", "best", "best_epoch", "history", "optimizer",
                "scaler")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss or weights, a failed process); the checkpoints
    on disk stay as the last good epoch left them."""


def lr_factor(progress: float, warmup: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1]: linear warm-up over the first
    ``warmup`` fraction, then cosine decay to 1% at the end."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 1e-3)
    t = (progress - warmup) / max(1e-8, 1 - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))


def _dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) when launched by torchrun, else (0, 0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world


@dataclass
class Distributed:
    """This process's place in the run: rank, world size, its device, and whether it set up
    (and so tears down) the process group."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def collective_device(self) -> torch.device:
        """Where a collective's tensors must be: the GPU for NCCL, the CPU for gloo."""
        return self.device if "nccl" in str(dist.get_backend()) else torch.device("cpu")

    def any(self, *flags: bool) -> list[bool]:
        """Each of ``flags`` OR-ed over all processes: one all-reduce (none when alone)."""
        if self.world == 1:
            return list(flags)
        t = torch.tensor([float(f) for f in flags], device=self.collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def from_rank0(self, *values: Any) -> tuple[Any, ...]:
        """Rank 0's ``values`` on every process (a broadcast of picklable objects), so that
        choices made from local measurements (precision, compile) agree."""
        if self.world == 1:
            return values
        objects = list(values)
        dist.broadcast_object_list(objects, src=0)
        return tuple(objects)

    def close(self, ok: bool) -> None:
        """Wait for the others (after a run that went well) and end the group we made."""
        if self.world > 1 and ok:
            dist.barrier()
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(config: TrainConfig) -> Distributed:
    """Join the torchrun process group (NCCL on CUDA, else gloo) when WORLD_SIZE > 1; use one
    that the caller set up already."""
    rank, local_rank, world = _dist_info()
    device = choose_device(config.device)
    if world == 1:
        return Distributed(device=device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, device, owns)


def resume_checkpoint(config: TrainConfig) -> dict[str, Any] | None:
    """The resume rule, applied to ``config.out`` before any work: the ``last.pt`` checkpoint
    to resume from, or None to start afresh.

    Raises ValueError when ``out`` is a file; when it holds a ``last.pt`` and
    ``config.resume`` is False; when that ``last.pt`` has another architecture than
    ``config.model`` or no training state. ``resume`` without a ``last.pt`` starts afresh.
    """
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: the run folder (--out) exists and is not a folder")
    last = out / "last.pt"
    if not config.resume:
        if last.exists():
            raise ValueError(f"{out} already holds a run (last.pt): resume it (--resume, "
                             "TrainConfig.resume=True) or choose another --out")
        return None
    if not last.exists():
        log.info("%s: no last.pt to resume from: starting afresh", out)
        return None
    ckpt = read_checkpoint(last)
    saved = UNetConfig.from_dict(ckpt["model_config"])
    if saved != config.model:
        diff = [f for f in UNetConfig.__dataclass_fields__
                if getattr(saved, f) != getattr(config.model, f)]
        there = ", ".join(f"{f}={getattr(saved, f)}" for f in diff)
        here = ", ".join(f"{f}={getattr(config.model, f)}" for f in diff)
        raise ValueError(f"{last}: the run has another architecture ({there}) than this "
                         f"configuration ({here}): resume with the run's --width/--depth/"
                         "--heads/--no-attention, or choose another --out")
    missing = [k for k in _TRAIN_STATE if k not in ckpt.get("train_state", {})]
    if missing:
        raise ValueError(f"{last}: no training state to resume from (missing "
                         f"{', '.join(missing)})")
    return ckpt


def check_init_architecture(ckpt: dict[str, Any], model: UNetConfig) -> None:
    """ValueError unless the ``--init`` checkpoint ``ckpt`` has ``model``'s architecture
    (the number of classes may differ: the head is then new; so may the auxiliary heads of
    deep supervision: those that the checkpoint lacks start afresh)."""
    saved = UNetConfig.from_dict(ckpt["model_config"])
    diff = [f for f in UNetConfig.__dataclass_fields__ if f not in ("num_classes",
                                                                    "deep_supr_num")
            and getattr(saved, f) != getattr(model, f)]
    if diff:
        there = ", ".join(f"{f}={getattr(saved, f)}" for f in diff)
        here = ", ".join(f"{f}={getattr(model, f)}" for f in diff)
        raise ValueError(f"{ckpt['path']}: --init has another architecture ({there}) than "
                         f"this configuration ({here}): leave out --width/--depth/--heads "
                         "(they are then taken from the checkpoint) or give its values")


def init_weights(ckpt: dict[str, Any], own: dict[str, torch.Tensor],
                 classes: ClassTable) -> tuple[dict[str, torch.Tensor], str]:
    """The ``--init`` checkpoint's weights for a run whose model has the state ``own``, and
    what was taken (for the log): all of them; a new head when the class tables differ; and
    deep supervision's auxiliary heads as this run has them (those the checkpoint lacks start
    afresh, those this run lacks are dropped)."""
    new_head = ClassTable.from_dict(ckpt["classes"]) != classes
    note = "all weights"
    if new_head:
        note = (f"a new head for this run's classes ({', '.join(classes.names)}; "
                f"the checkpoint's: {', '.join(ckpt['classes']['names'])})")
    drop = ("head.", "aux_heads.") if new_head else ()
    weights = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith(drop)
               and (k in own or not k.startswith("aux_heads."))}
    fresh = [k for k in own if k not in weights and k.startswith(("aux_heads.", *drop))]
    if any(k.startswith("aux_heads.") for k in fresh):
        note += ", new deep-supervision heads"
    return {**weights, **{k: own[k] for k in fresh}}, note


def claim_run_folder(out: Path, started: float) -> FolderLock:
    """Create ``out``, lock it for this run and delete the temporaries that killed runs left
    there (only temseg's own, of the run's files, older than ``started``; only when the lock
    is held, else only those older than a day). ValueError when another run holds it."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = FolderLock(out, LOCK_NAME)
    except BlockingIOError:
        raise ValueError(f"{out}: another temseg train is running in this folder (it holds "
                         f"{out / LOCK_NAME})") from None
    removed = remove_stale_temporaries(out, RUN_FILES,
                                       started if lock.held else started - 86_400)
    if removed:
        log.info("%s: removed %d stale temporary file(s) of an interrupted run: %s", out,
                 len(removed), ", ".join(p.name for p in removed))
    return lock


@torch.no_grad()
def validate(model: torch.nn.Module, loader: DataLoader, loss_fn: torch.nn.Module,
             device: torch.device, num_classes: int) -> tuple[np.ndarray, float]:
    """Confusion matrix (C, C) and mean loss of ``model`` on ``loader``'s crops."""
    model.eval()
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    losses = []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x).float()
        losses.append(float(loss_fn(logits, y)))
        cm += confusion_matrix(logits.argmax(1), y, num_classes)
    return cm, float(np.mean(losses)) if losses else float("nan")


def _normalized(samples: list[Sample], norm: Normalization) -> list[np.ndarray]:
    return [norm(s.image) for s in samples]


def _pixel_size(samples: list[Sample]) -> float | None:
    sizes = [s.pixel_size_um for s in samples if s.pixel_size_um]
    return float(np.median(sizes)) if sizes else None


def _training_samples(config: TrainConfig, samples: list[Sample] | None) -> list[Sample]:
    """``samples``, checked for non-finite pixels, or the data set of ``config.data``."""
    if samples is None:
        return load_dataset(config.data)
    for s in samples:
        check_finite(s.image, f"sample {s.name}")
    return samples


@dataclass
class EpochStats:
    """What one pass over the training patches gave."""

    epoch: int
    losses: list[float] = field(default_factory=list)
    seen: int = 0
    started: float = field(default_factory=time.perf_counter)
    stopped: bool = False  # by the time limit, part way through

    def rate(self) -> float:
        return self.seen / max(1e-9, time.perf_counter() - self.started)


def train(config: TrainConfig, samples: list[Sample] | None = None) -> dict[str, Any]:
    """Train a model as ``config`` says; returns the summary also written to
    ``OUT/summary.json``. ``samples`` may be given in memory instead of ``config.data``.

    Files in ``config.out``: ``config.json``, ``best.pt``, ``last.pt`` (with the optimiser
    state for resuming), ``metrics.csv``, ``metrics.json``, ``curves.png``, ``summary.json``.
    A folder holding a ``last.pt`` is resumed only with ``config.resume``
    (:func:`resume_checkpoint`). Raises ValueError / DataError for bad input before any
    training, TrainingError for a non-finite loss, DiskFullError when the disk fills; the
    checkpoints on disk are then those of the last good epoch.
    """
    resume_from = resume_checkpoint(config)
    started = time.time()
    ddp = init_distributed(config)
    lock, ok = None, False
    try:
        if ddp.main:
            lock = claim_run_folder(Path(config.out), started)
        summary = Trainer(config, samples, ddp, resume_from).run()
        ok = True
        return summary
    finally:
        if lock is not None:
            lock.release()
        ddp.close(ok)


class Trainer:
    """One training run, set up by the constructor; :meth:`run` trains it."""

    def __init__(self, config: TrainConfig, samples: list[Sample] | None,
                 ddp: Distributed, resume_from: dict[str, Any] | None = None) -> None:
        self.config, self.ddp, self.out = config, ddp, Path(config.out)
        if config.threads:
            torch.set_num_threads(config.threads)
        samples = resample_samples(_training_samples(config, samples), config.pixel_size)
        self.train_s, self.val_s = split_samples(samples, config.val_fraction,
                                                 config.val_groups, config.seed)
        self.val_note = "validation on held-out groups"
        if not self.val_s:
            self.val_s = self.train_s
            self.val_note = ("--val-fraction 0" if config.val_fraction <= 0 else "only one "
                             "group") + ": validation reuses the training images"
        norm, self.classes, device = Normalization(), TEM_CLASSES, ddp.device

        torch.manual_seed(config.seed)
        self.net = build_model(config.model)
        self.model = SegmentationModel(self.net, norm, self.classes, config.patch_size,
                                       _pixel_size(samples), torch.from_numpy(
                                           calibration_patches(self.train_s, norm,
                                                               config.patch_size)))
        self.model.to(device)
        if device.type == "cpu":
            self.model.to(memory_format=torch.channels_last)
        self.precision, use_compile, self.compile_reason = ddp.from_rank0(
            choose_precision(device, config.amp), *choose_compile(device, config.compile))
        self._build_data(norm)
        self._build_optimizer()
        self.state: dict[str, Any] = {"epoch": 0, "step": 0, "elapsed": 0.0, "best": -1.0,
                                      "best_epoch": None, "history": []}
        if resume_from is not None:
            self._resume(resume_from)
            if config.init and ddp.main:
                log.info("resuming %s: --init %s is not applied again", self.out, config.init)
        elif config.init:
            self._initialise(config.init)
        self.ema = WeightAverage(self.net, config.ema_decay) if config.ema_decay else None
        if self.ema is not None and resume_from is not None and "ema" in resume_from[
                "train_state"]:
            self.ema.load(resume_from["state_dict"], resume_from["train_state"]["ema"])
        self.train_model: torch.nn.Module = self.net
        if ddp.world > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None)
        if use_compile:
            self.train_model = torch.compile(self.train_model)
        self.budget = config.time_limit * 60 if config.time_limit else None
        self.t_start = time.perf_counter()
        if ddp.main:
            write_json(self.out / "config.json", config.to_dict())
            log.info("device %s | %s | %s | %d train / %d val images (%s) | %d steps/epoch",
                     device, self.precision.reason, self.compile_reason, len(self.train_s),
                     len(self.val_s), self.val_note, self.steps_per_epoch)

    def _build_data(self, norm: Normalization) -> None:
        c = self.config
        augment = Augment(free_rotation=c.rotate_probability, scale=c.scale_augment,
                          gamma=c.gamma_augment, gamma_p=c.gamma_probability,
                          blur=c.blur_augment, elastic=c.elastic_augment,
                          elastic_p=c.elastic_probability)
        self.train_ds = PatchDataset(_normalized(self.train_s, norm),
                                     [s.labels for s in self.train_s], c.patch_size,
                                     c.patches_per_image, augment=augment, seed=c.seed)
        per_process = len(self.train_ds) // self.ddp.world
        if per_process < c.batch_size:
            raise ValueError(f"batch size {c.batch_size} (--batch-size) is more than the "
                             f"{per_process} training patches per epoch and process "
                             f"({len(self.train_s)} images x {c.patches_per_image} "
                             f"--patches-per-image / {self.ddp.world})")
        val_ds = CenterCropDataset(_normalized(self.val_s, norm),
                                   [s.labels for s in self.val_s], c.val_crop)
        self.val_loader = DataLoader(val_ds, batch_size=max(1, c.batch_size // 4))
        self.steps_per_epoch = max(1, len(self.train_ds) // (c.batch_size * self.ddp.world))
        self.total_steps = self.steps_per_epoch * c.epochs

    def _build_optimizer(self) -> None:
        c = self.config
        decay = [p for n, p in self.net.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.net.named_parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": c.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=c.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.scaler)
        self.loss_fn = DeepSupervisionLoss(DiceCELoss(batch=True, lambda_dice=c.lambda_dice,
                                                      border_weight=c.border_weight))

    def _initialise(self, source: str) -> None:
        """Start from the weights of ``source`` (a checkpoint, run folder or shipped model):
        all of them when its class table is this run's, else all but a new head (logged)."""
        ckpt = read_checkpoint(source)
        check_init_architecture(ckpt, self.config.model)
        own = self.net.state_dict()
        weights, note = init_weights(ckpt, own, self.classes)
        load_weights(self.net, {k: v.to(own[k].dtype) if k in own else v
                                for k, v in weights.items()}, ckpt["path"])
        if self.ddp.main:
            log.info("initialised from %s: %s", ckpt["path"], note)

    def _resume(self, ckpt: dict[str, Any]) -> None:
        path, ts = ckpt["path"], ckpt["train_state"]
        # with --ema-decay the model of last.pt is the average, the raw weights beside it
        load_weights(self.net, ts.get("weights", ckpt["state_dict"]), path)
        try:
            self.optimizer.load_state_dict(ts["optimizer"])
            self.scaler.load_state_dict(ts["scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{path}: its optimiser state does not fit the model "
                             f"({type(exc).__name__}: {exc})") from exc
        self.state = {k: ts[k] for k in self.state}
        if self.ddp.main:
            log.info("resumed from %s at epoch %d", path, self.state["epoch"])

    def run(self) -> dict[str, Any]:
        """Train to ``config.epochs`` or the time limit; the summary (empty off rank 0)."""
        self.t_start = time.perf_counter() - self.state["elapsed"]
        stopped = False
        while self.state["epoch"] < self.config.epochs and not stopped:
            stats = self.train_epoch()
            if not stats.losses:
                break
            self.end_epoch(stats)
            stopped = stats.stopped
        return self.summary(stopped) if self.ddp.main else {}

    def train_epoch(self) -> EpochStats:
        """One pass over this process's share of the patches (or until the time limit).
        TrainingError, on every process, as soon as one of them has a non-finite loss."""
        c, ddp, stats = self.config, self.ddp, EpochStats(self.state["epoch"])
        self.train_ds.set_epoch(stats.epoch)
        order = torch.randperm(len(self.train_ds), generator=torch.Generator().manual_seed(
            c.seed * 100_003 + stats.epoch)).tolist()
        order = order[ddp.rank::ddp.world][: self.steps_per_epoch * c.batch_size]
        loader = DataLoader(Subset(self.train_ds, order), batch_size=c.batch_size,
                            drop_last=True, num_workers=c.num_workers)
        self.train_model.train()
        bar = progress_bar(loader, desc=f"epoch {stats.epoch + 1}/{c.epochs}", leave=False,
                           disable=not (ddp.main and c.progress), unit="batch")
        with bar:
            for x, y in bar:
                loss = self._step(x, y)
                stats.losses.append(loss)
                stats.seen += x.shape[0]
                bar.set_postfix(loss=f"{np.mean(stats.losses[-20:]):.3f}",
                                patches_s=f"{stats.rate():.1f}")
                bad, over = ddp.any(not math.isfinite(loss), self._over_budget())
                if bad:
                    raise TrainingError(
                        f"non-finite loss ({loss} here) at epoch {stats.epoch + 1}, step "
                        f"{self.state['step']}: training stopped; {self.out} keeps the "
                        f"checkpoints of epoch {self.state['epoch']} (try a lower --lr)")
                if over:
                    stats.stopped = True
                    break
        return stats

    def _over_budget(self) -> bool:
        return self.budget is not None and time.perf_counter() - self.t_start > self.budget

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One optimiser step on a batch; its loss."""
        c, device = self.config, self.ddp.device
        progress = self.state["step"] / max(1, self.total_steps)
        if self.budget:
            progress = max(progress, (time.perf_counter() - self.t_start) / self.budget)
        for group in self.optimizer.param_groups:
            group["lr"] = c.lr * lr_factor(progress, c.warmup)
        x = x.to(device, non_blocking=True)
        if device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        with self.precision.autocast(device):
            logits = self.train_model(x, deep_supervision=c.model.deep_supr_num > 0)
        loss = self.loss_fn(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.net)
        self.state["step"] += 1
        return loss.item()

    def end_epoch(self, stats: EpochStats) -> None:
        """After an epoch: rank 0 validates and writes the checkpoints and metrics; a failure
        there (e.g. a full disk) is raised on rank 0 and a TrainingError on the others."""
        self.state["epoch"] = stats.epoch + 1
        self.state["elapsed"] = time.perf_counter() - self.t_start
        bad = [n for n, t in self.net.state_dict().items()
               if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise TrainingError(f"non-finite weights after epoch {stats.epoch + 1} ({bad[0]}, "
                                f"...): training stopped; {self.out} keeps the checkpoints of "
                                f"epoch {stats.epoch} (try a lower --lr)")
        error: Exception | None = None
        if self.ddp.main:
            try:
                self._validate_and_save(stats)
            except Exception as exc:  # every process must learn of it, or the others hang
                error = exc
        if self.ddp.any(error is not None)[0]:
            if error is not None:
                raise error
            raise TrainingError(f"rank 0 failed at the end of epoch {stats.epoch + 1}; see "
                                "its log")

    @contextmanager
    def _averaged(self) -> Iterator[dict[str, Any]]:
        """The network holds the weight average inside (with --ema-decay); yields what
        ``last.pt`` must keep besides to resume (the raw weights and the EMA's state)."""
        if self.ema is None:
            yield {}
            return
        with self.ema.applied(self.net) as raw:
            yield {"weights": raw, "ema": self.ema.state_dict()}

    def _validate_and_save(self, stats: EpochStats) -> None:
        with self._averaged() as resume_extra:
            self._validate_and_save_model(stats, resume_extra)

    def _validate_and_save_model(self, stats: EpochStats, resume_extra: dict[str, Any]) -> None:
        state, names = self.state, self.classes.names
        cm, val_loss = validate(self.net, self.val_loader, self.loss_fn, self.ddp.device,
                                self.classes.num_classes)
        report = summarize(cm, names)
        row = {
            "epoch": stats.epoch + 1, "step": state["step"], "partial_epoch": stats.stopped,
            "train_loss": float(np.mean(stats.losses)), "val_loss": val_loss,
            "val_mean_dice": report["mean_dice"], "val_mean_iou": report["mean_iou"],
            "val_dice": report["dice"], "val_iou": report["iou"],
            "lr": self.optimizer.param_groups[0]["lr"], "elapsed_s": state["elapsed"],
            "patches_per_s": stats.rate() * self.ddp.world,
        }
        state["history"].append(row)
        improved = (report["mean_dice"] or 0.0) > state["best"]
        if improved:
            state["best"], state["best_epoch"] = report["mean_dice"] or 0.0, stats.epoch + 1
            save_checkpoint(self.out / "best.pt", self.model)
        save_checkpoint(self.out / "last.pt", self.model, {
            **state, "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), **resume_extra})
        _write_metrics(self.out, state["history"], names)
        mean = report["mean_dice"]
        log.info("epoch %d: train loss %.4f, val loss %.4f, val mean Dice %s%s (%.0f s)",
                 stats.epoch + 1, row["train_loss"], val_loss,
                 "undefined" if mean is None else f"{mean:.4f}",
                 " *best*" if improved else "", state["elapsed"])

    def summary(self, stopped: bool) -> dict[str, Any]:
        """The run's summary, also written to ``summary.json``."""
        state = self.state
        summary = {"epochs_done": state["epoch"], "steps": state["step"],
                   "elapsed_s": state["elapsed"], "best_epoch": state["best_epoch"],
                   "best_val_mean_dice": state["best"], "stopped_by_time_limit": stopped,
                   "precision": self.precision.reason, "compile": self.compile_reason,
                   "machine": machine(), "train_images": [s.name for s in self.train_s],
                   "val_images": [s.name for s in self.val_s], "out": str(self.out)}
        write_json(self.out / "summary.json", summary)
        return summary


def _write_metrics(out: Path, history: list[dict], names: tuple[str, ...]) -> None:
    write_json(out / "metrics.json", history)
    buf = io.StringIO()
    fields = ["epoch", "step", "train_loss", "val_loss", "val_mean_dice", "val_mean_iou",
              "lr", "elapsed_s", "patches_per_s"]
    writer = csv.writer(buf)
    writer.writerow(fields + [f"dice_{n}" for n in names] + [f"iou_{n}" for n in names])
    for h in history:
        writer.writerow([h[f] for f in fields] + [h["val_dice"][n] for n in names]
                        + [h["val_iou"][n] for n in names])
    write_text(out / "metrics.csv", buf.getvalue())
    plot_curves(history, out / "curves.png", names)


def load_config(run_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run folder."""
    return TrainConfig.from_dict(json.loads((Path(run_dir) / "config.json").read_text()))
