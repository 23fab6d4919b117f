"""The training loop: AdamW, warm-up + cosine, AMP/compile policy, per-epoch validation,
atomic best/last checkpoints, resume, metrics CSV/JSON, curves, time budget, DDP."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..atomic import write_json, write_text
from ..checkpoint import SegmentationModel, read_checkpoint, save_checkpoint
from ..data import (
    Augment,
    CenterCropDataset,
    Normalization,
    PatchDataset,
    Sample,
    load_dataset,
)
from ..labels import TEM_CLASSES
from ..losses import DiceCELoss
from ..metrics import confusion_matrix, summarize
from ..models import build_model
from .config import TrainConfig
from .curves import plot_curves
from ..policy import choose_compile, choose_device, choose_precision
from .split import split_samples

log = logging.getLogger("temseg.train")


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


def train(config: TrainConfig, samples: list[Sample] | None = None) -> dict[str, Any]:
    """Train a model as ``config`` says; returns the summary also written to
    ``OUT/summary.json``. ``samples`` may be given in memory instead of ``config.data``.

    Files in ``config.out``: ``config.json``, ``best.pt``, ``last.pt`` (with the optimiser
    state for resuming), ``metrics.csv``, ``metrics.json``, ``curves.png``, ``summary.json``.
    A run folder with a ``last.pt`` is resumed from it.
    """
    rank, local_rank, world = _dist_info()
    device = choose_device(config.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if config.threads:
        torch.set_num_threads(config.threads)
    main = rank == 0
    out = Path(config.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)

    if samples is None:
        samples = load_dataset(config.data)
    train_s, val_s = split_samples(samples, config.val_fraction, config.val_groups, config.seed)
    val_note = "validation on held-out groups"
    if not val_s:
        val_s, val_note = train_s, "only one group: validation reuses the training images"
    norm = Normalization()
    classes = TEM_CLASSES

    torch.manual_seed(config.seed)
    net = build_model(config.model)
    model = SegmentationModel(net, norm, classes, config.patch_size, _pixel_size(samples))
    model.to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    precision = choose_precision(device, config.amp)
    use_compile, compile_reason = choose_compile(device, config.compile)

    train_ds = PatchDataset(_normalized(train_s, norm), [s.labels for s in train_s],
                            config.patch_size, config.patches_per_image,
                            augment=Augment(scale=config.scale_augment), seed=config.seed)
    val_ds = CenterCropDataset(_normalized(val_s, norm), [s.labels for s in val_s],
                               config.val_crop)
    val_loader = DataLoader(val_ds, batch_size=max(1, config.batch_size // 4))
    steps_per_epoch = max(1, len(train_ds) // (config.batch_size * world))
    total_steps = steps_per_epoch * config.epochs

    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.scaler)
    loss_fn = DiceCELoss(batch=True, lambda_dice=config.lambda_dice)

    state: dict[str, Any] = {"epoch": 0, "step": 0, "elapsed": 0.0, "best": -1.0,
                             "best_epoch": None, "history": []}
    if (out / "last.pt").is_file():
        ckpt = read_checkpoint(out / "last.pt")
        net.load_state_dict(ckpt["state_dict"])
        ts = ckpt["train_state"]
        optimizer.load_state_dict(ts["optimizer"])
        scaler.load_state_dict(ts["scaler"])
        state = {k: ts[k] for k in state}
        if main:
            log.info("resumed from %s at epoch %d", out / "last.pt", state["epoch"])

    train_model: torch.nn.Module = net
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    if use_compile:
        train_model = torch.compile(train_model)

    if main:
        write_json(out / "config.json", config.to_dict())
        log.info("device %s | %s | %s | %d train / %d val images (%s) | %d steps/epoch",
                 device, precision.reason, compile_reason, len(train_s), len(val_s), val_note,
                 steps_per_epoch)

    budget = config.time_limit * 60 if config.time_limit else None
    t_start = time.perf_counter() - state["elapsed"]
    stop = False
    while state["epoch"] < config.epochs and not stop:
        epoch = state["epoch"]
        train_ds.set_epoch(epoch)
        order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(
            config.seed * 100_003 + epoch)).tolist()
        order = order[rank::world][: steps_per_epoch * config.batch_size]
        loader = DataLoader(torch.utils.data.Subset(train_ds, order), batch_size=config.batch_size,
                            drop_last=True, num_workers=config.num_workers)
        train_model.train()
        losses, seen, t_epoch = [], 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not (main and config.progress), unit="batch")
        for x, y in bar:
            progress = state["step"] / max(1, total_steps)
            if budget:
                progress = max(progress, (time.perf_counter() - t_start) / budget)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(progress, config.warmup)
            x = x.to(device, non_blocking=True)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with precision.autocast(device):
                logits = train_model(x)
            loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            scaler.step(optimizer)
            scaler.update()
            state["step"] += 1
            losses.append(loss.item())
            seen += x.shape[0]
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}",
                            patches_s=f"{seen / (time.perf_counter() - t_epoch):.1f}")
            if budget is not None:
                over = torch.tensor(float(time.perf_counter() - t_start > budget))
                if world > 1:
                    dist.all_reduce(over, op=dist.ReduceOp.MAX)
                if over.item():
                    stop = True
                    break
        bar.close()
        if not losses:
            break
        state["epoch"] = epoch + 1
        state["elapsed"] = time.perf_counter() - t_start
        if main:
            cm, val_loss = validate(net, val_loader, loss_fn, device, classes.num_classes)
            report = summarize(cm, classes.names)
            row = {
                "epoch": epoch + 1, "step": state["step"], "partial_epoch": stop,
                "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                "val_mean_dice": report["mean_dice"], "val_mean_iou": report["mean_iou"],
                "val_dice": report["dice"], "val_iou": report["iou"],
                "lr": optimizer.param_groups[0]["lr"], "elapsed_s": state["elapsed"],
                "patches_per_s": seen * world / (time.perf_counter() - t_epoch),
            }
            state["history"].append(row)
            improved = (report["mean_dice"] or 0.0) > state["best"]
            if improved:
                state["best"], state["best_epoch"] = report["mean_dice"] or 0.0, epoch + 1
                save_checkpoint(out / "best.pt", model)
            save_checkpoint(out / "last.pt", model, {
                **state, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()})
            _write_metrics(out, state["history"], classes.names)
            mean = report["mean_dice"]
            log.info("epoch %d: train loss %.4f, val loss %.4f, val mean Dice %s%s (%.0f s)",
                     epoch + 1, row["train_loss"], val_loss,
                     "undefined" if mean is None else f"{mean:.4f}",
                     " *best*" if improved else "", state["elapsed"])
    summary: dict[str, Any] = {}
    if main:
        summary = {"epochs_done": state["epoch"], "steps": state["step"],
                   "elapsed_s": state["elapsed"], "best_epoch": state["best_epoch"],
                   "best_val_mean_dice": state["best"],
                   "stopped_by_time_limit": stop, "precision": precision.reason,
                   "compile": compile_reason, "train_images": [s.name for s in train_s],
                   "val_images": [s.name for s in val_s], "out": str(out)}
        write_json(out / "summary.json", summary)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
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
