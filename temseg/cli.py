"""The ``temseg`` command line: train, cv, evaluate, predict, export, models, demo, synth,
morphometrics.

Argument names follow MONAI where one exists (``--roi-size``, ``--sw-batch-size``,
``--overlap``, ``--mode``, ``--sigma-scale``). This is the only module that parses arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .models import UNetConfig
from .spec import DEFAULT_OVERLAP

if TYPE_CHECKING:
    from .train import TrainConfig


def _window_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sliding window (MONAI names)")
    g.add_argument("--roi-size", type=int, default=None,
                   help="tile side in pixels (default: twice the model's training patch size)")
    g.add_argument("--sw-batch-size", type=int, default=4, help="tiles per model call")
    g.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                   help=f"tile overlap fraction (default {DEFAULT_OVERLAP}; MONAI's is 0.25: "
                        "docs/benchmarks.md, 'Less wasted overlap')")
    g.add_argument("--mode", choices=["gaussian", "constant", "cosine"], default="gaussian",
                   help="blending of overlapping tiles")
    g.add_argument("--sigma-scale", type=float, default=0.125,
                   help="gaussian sigma as a fraction of the tile size")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def _slide_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("whole-slide inference")
    g.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average over flips and 90-degree rotations")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--amp", choices=["auto", "bf16", "off"], default="auto",
                   help="precision of the torch and openvino backends: auto = int8 "
                        "(openvino, CPUs with VNNI, checkpoints with calibration patches), "
                        "else bf16 where this CPU/GPU has bf16 units (never on AVX2-only "
                        "CPUs); bf16 = floating point in bf16; off = fp32 (matches onnxruntime "
                        "and the C++ runtime)")
    g.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="pixel size of the inputs in micrometres (default: from the TIFF "
                        "tags)")
    g.add_argument("--resample", choices=["auto", "always", "never"], default="auto",
                   help="inputs whose pixel size differs from the model's by more than 2%%: "
                        "segment them resampled to the model's and map the outputs back; "
                        "auto (default) does it for finer inputs only (enlarging coarser "
                        "ones blurs them and measured worse)")


def _output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inputs and outputs")
    g.add_argument("--format", choices=["tiff", "ome-zarr"], default="tiff",
                   help="mask format: tiled BigTIFF <stem>_mask.tif (default) or an NGFF label "
                        "image <stem>_mask.ome.zarr (pyramid, class names and colours)")
    g.add_argument("--level", type=int, default=0,
                   help="pyramid level of OME-Zarr inputs (0: full resolution)")
    g.add_argument("--panel-width", type=int, default=None, metavar="PX",
                   help="widest column panel streamed at once (memory); with --cluster ray "
                        "the width of a slide's regions. Default 8192, 4096 with --cluster "
                        "ray; the same value gives the same labels with and without Ray")
    g.add_argument("--out-tile", type=int, default=512, metavar="PX",
                   help="tile side of the output TIFFs and chunk side of OME-Zarr outputs "
                        "(a multiple of 16; panels are multiples of it)")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out on Ray (pip install temseg[ray]; docs/scaling.md)")
    g.add_argument("--cluster", choices=["none", "ray"], default="none",
                   help="ray: spread files over a pool of workers and split large slides "
                        "(--format ome-zarr) into regions")
    g.add_argument("--address", default=None,
                   help="Ray address: auto (the running cluster), ray://HOST:PORT (Ray "
                        "Client) or HOST:PORT; default: RAY_ADDRESS, else a local cluster")
    g.add_argument("--num-workers", type=int, default=None,
                   help="workers (default: as many as the cluster's CPUs / GPUs hold)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs per worker (its torch threads)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker")
    g.add_argument("--split-mpix", type=float, default=64.0, metavar="MPIX",
                   help="split slides of at least this size into regions (with --format "
                        "ome-zarr; negative: never)")
    g.add_argument("--max-retries", type=int, default=3,
                   help="restarts of a killed worker and retries of its task")


def _slide_options(args: argparse.Namespace, default_panel: int = 8192) -> dict:
    width = getattr(args, "panel_width", None)
    return {"panel_width": width or default_panel, "out_tile": getattr(args, "out_tile", 512)}


def _predictor(args: argparse.Namespace):
    """The Predictor of ``temseg predict`` / ``evaluate``: MODEL opened once."""
    from .inference import Predictor, SlidingWindowInferer

    if args.pixel_size is not None and not args.pixel_size > 0:
        raise ValueError(f"--pixel-size must be a positive number of micrometres, got "
                         f"{args.pixel_size}")
    window = SlidingWindowInferer(args.roi_size, args.sw_batch_size, args.overlap, args.mode,
                                  args.sigma_scale)
    return Predictor.open(args.model, args.backend, args.device, amp=args.amp,
                          window=window, tta=args.tta, resample=args.resample,
                          progress=not args.no_progress, slide_options=_slide_options(args))


def _predict_on_ray(args: argparse.Namespace, out: Path, options: dict) -> tuple[list, list]:
    """``temseg predict --cluster ray``: the model is opened by the workers only."""
    from .distributed import ClusterOptions, WorkerConfig, predict_on_ray
    from .inference import SlidingWindowInferer

    window = SlidingWindowInferer(args.roi_size, args.sw_batch_size, args.overlap, args.mode,
                                  args.sigma_scale)
    config = WorkerConfig(args.model, args.backend, args.device, args.amp, window, args.tta,
                          args.resample, _slide_options(args, 4096),
                          threads=max(1, round(args.cpus_per_worker)))
    cluster = ClusterOptions(args.address, args.num_workers, args.cpus_per_worker,
                             args.gpus_per_worker, args.max_retries, args.split_mpix,
                             progress=not args.no_progress)
    report = predict_on_ray(config, args.inputs, out, cluster, **options)
    print(report.summary())
    return report.outputs, report.failed


def _check_writable(path: str) -> None:
    """Fail before any work when a report cannot be written to ``path``."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"--out {p}: is a folder; give a file name for the JSON report")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise ValueError(f"--out {p}: folder {parent} is not writable")


def _morphometrics_args(p: argparse.ArgumentParser) -> None:
    """The options of ``temseg morphometrics``."""
    from .morphometrics.rule import SplitRule

    p.add_argument("masks", nargs="+", help="label masks (TIFF/PNG/OME-Zarr, grey values "
                   "0/50/100/150/200), e.g. temseg predict's <stem>_mask.tif")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="pixel size in micrometres (default: from the TIFF tags; without "
                        "one, lengths are reported in px)")
    p.add_argument("--min-pixels", type=int, default=SplitRule.min_pixels,
                   help="instances of fewer pixels are fragments, left out (default "
                        "%(default)s; 0 keeps all)")
    p.add_argument("--neck-ratio", type=float, default=SplitRule.neck_ratio,
                   help="split touching instances at necks narrower than this fraction of "
                        "the radius of both parts (0: never split; default %(default)s)")
    p.add_argument("--band-rows", type=int, default=None,
                   help="rows read at a time (default: 2 MPix / mask width); memory only, "
                        "the result does not depend on it")
    p.add_argument("--probabilities", action="store_true",
                   help="add each instance's mean class probability from the "
                        "<stem>_probabilities.tif next to its mask")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


MODEL_HELP = ("shipped model name (temseg models, e.g. tem-mouse-cc), checkpoint file, training "
              "run folder, exported .onnx, TensorRT .engine or AOTInductor .pt2")
BACKEND_CHOICES = ["auto", "torch", "onnxruntime", "openvino", "tensorrt", "aoti"]
BACKEND_HELP = ("runtime for the tiles; auto: the file's own for engines and packages, on CPUs "
                "openvino (int8 on CPUs with VNNI for checkpoints with calibration patches, "
                "else bf16 on CPUs with bf16 units, else fp32), else torch in bf16 / fp32 "
                "onnxruntime; torch on GPUs (a fixed rule of the CPU's features, logged and "
                "recorded in the outputs)")


def _train_default(name: str) -> object:
    """The library's default of a TrainConfig field (one home for the recipe)."""
    from .train import TrainConfig

    return TrainConfig.__dataclass_fields__[name].default


def _augment_args(t: argparse._ArgumentGroup) -> None:
    """``temseg train``'s patch augmentation options (Augment; defaults: TrainConfig's)."""
    d = _train_default
    t.add_argument("--rotate-probability", type=float, default=d("rotate_probability"),
                   metavar="P", help="share of the patches rotated by a free angle (and "
                                     "zoomed, --scale-augment); the rest get exact 90-degree "
                                     "rotations and flips only")
    t.add_argument("--scale-augment", type=float, default=d("scale_augment"), metavar="S",
                   help="with the free rotation, zoom patches by a factor log-uniform in "
                        "[1/S, S] (1: off; more robust to pixel-size differences, "
                        "docs/accuracy.md)")
    t.add_argument("--gamma-augment", type=float, default=d("gamma_augment"), metavar="G",
                   help="gamma curve log-uniform in [1/G, G] on a share of the patches "
                        "(--gamma-probability; 1: off)")
    t.add_argument("--gamma-probability", type=float, default=d("gamma_probability"),
                   metavar="P", help="share of the patches that get the gamma curve")
    t.add_argument("--blur-augment", type=float, default=d("blur_augment"), metavar="SIGMA",
                   help="Gaussian blur of sigma in [0.5, SIGMA] px on 20%% of the patches "
                        "(0: off)")
    t.add_argument("--elastic-augment", type=float, default=d("elastic_augment"), metavar="PX",
                   help="elastic deformation with the free rotation: control points every "
                        "64 px shifted N(0, PX) px, bicubic between, on a share of the patches "
                        "(--elastic-probability; 0: off)")
    t.add_argument("--elastic-probability", type=float, default=d("elastic_probability"),
                   metavar="P", help="share of the patches that get the elastic deformation")


def _train_args(t: argparse.ArgumentParser) -> None:
    """The options of ``temseg train`` (defaults: TrainConfig's, the cross-validated recipe of
    docs/accuracy.md)."""
    from .train import DEFAULT_MODEL

    d = _train_default
    t.add_argument("data", help="folder with images/ and masks/ (same file stems)")
    t.add_argument("--out", required=True, help="run folder (checkpoints, metrics, curves)")
    t.add_argument("--epochs", type=int, default=d("epochs"))
    t.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="wall-clock budget; stops cleanly and keeps the best checkpoint")
    t.add_argument("--batch-size", type=int, default=d("batch_size"))
    t.add_argument("--patch-size", type=int, default=d("patch_size"))
    t.add_argument("--patches-per-image", type=int, default=d("patches_per_image"))
    _augment_args(t.add_argument_group("augmentation"))
    t.add_argument("--pixel-size", type=_pixel_size_arg, default=None, metavar="UM",
                   help=f"train at this pixel size in micrometres: finer images and masks "
                        f"are shrunk to it on loading, coarser ones kept; 'native': as they "
                        f"are (default {d('pixel_size')}, or the --init checkpoint's); "
                        "inference resamples inputs to the model's and maps the masks back")
    t.add_argument("--val-crop", type=int, default=d("val_crop"),
                   help="side of the central validation crop of each validation image")
    t.add_argument("--val-fraction", type=float, default=d("val_fraction"),
                   help="fraction of the image groups (animals, sub-XXX) held out for "
                        "validation (0: validate on the training images)")
    t.add_argument("--val-groups", nargs="*", default=(),
                   help="explicit validation groups (e.g. sub-366A) or image stems")
    t.add_argument("--lr", type=float, default=d("lr"))
    t.add_argument("--weight-decay", type=float, default=d("weight_decay"))
    t.add_argument("--lambda-dice", type=float, default=d("lambda_dice"))
    t.add_argument("--border-weight", type=float, default=d("border_weight"), metavar="W",
                   help="the cross-entropy of the thin background lines between touching "
                        "axons counts 1 + W times (U-Net's separation weights; 0: off)")
    t.add_argument("--ema-decay", type=float, default=d("ema_decay"), metavar="D",
                   help="validate and save a moving average of the weights, decay D per "
                        "step (warmed up as min(D, (1 + t) / (10 + t)); 0: off, the raw "
                        "weights)")
    t.add_argument("--width", type=int, default=None,
                   help=f"channels after the stem (default {DEFAULT_MODEL.width}, or the "
                        "--init checkpoint's)")
    t.add_argument("--depth", type=int, default=None,
                   help=f"downsampling stages (default {DEFAULT_MODEL.depth}, or --init's)")
    t.add_argument("--heads", type=int, default=None,
                   help=f"attention heads in the bottleneck (default {DEFAULT_MODEL.heads}, "
                        "or --init's)")
    t.add_argument("--no-attention", action="store_true")
    t.add_argument("--deep-supr-num", type=int, default=None, metavar="N",
                   help="deep supervision: auxiliary heads on the decoder's 1/2 .. 1/2**N "
                        "resolution outputs, their losses weighted 1/2**level (MONAI "
                        "DynUNet's name; default 0: off; inference uses the main head only)")
    t.add_argument("--init", default=None, metavar="MODEL",
                   help="start from these weights: a checkpoint, run folder or shipped model "
                        "name (temseg models), e.g. tem-mouse-cc to fine-tune; a new head when "
                        "its classes differ")
    t.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto")
    t.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    t.add_argument("--device", default="auto")
    t.add_argument("--num-workers", type=int, default=0)
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last.pt (starts afresh when there "
                        "is none); without it a folder holding a last.pt is refused")
    t.add_argument("--no-progress", action="store_true")


def _pixel_size_arg(text: str) -> float | str:
    return "native" if text == "native" else float(text)


def _train_pixel_size(args: argparse.Namespace, init: dict | None) -> float | None:
    """--pixel-size: the value given ('native': None), else the --init checkpoint's, else
    the recipe's (:data:`temseg.train.DEFAULT_PIXEL_SIZE`)."""
    from .train import DEFAULT_PIXEL_SIZE

    if args.pixel_size == "native":
        return None
    if args.pixel_size is not None:
        return args.pixel_size
    if init is not None:
        return init.get("pixel_size_um")
    return DEFAULT_PIXEL_SIZE


def _model_config(args: argparse.Namespace, init: dict | None) -> UNetConfig:
    """The architecture: the flags given, the rest from --init's checkpoint, else the
    recipe's (:data:`temseg.train.DEFAULT_MODEL`)."""
    from .train import DEFAULT_MODEL

    base = DEFAULT_MODEL
    if init is not None:
        base = UNetConfig.from_dict(init["model_config"])
        base = UNetConfig(**{**base.to_dict(), "num_classes": DEFAULT_MODEL.num_classes})
    given = {k: getattr(args, k) for k in ("width", "depth", "heads", "deep_supr_num")
             if getattr(args, k) is not None}
    if args.no_attention:
        given["attention"] = False
    return UNetConfig(**{**base.to_dict(), **given})


def _export_args(x: argparse.ArgumentParser) -> None:
    """The options of ``temseg export``."""
    x.add_argument("model", help="checkpoint file, training run folder or shipped model "
                   "name (temseg models)")
    x.add_argument("--format", choices=["onnx", "tensorrt", "aoti"], default="onnx",
                   help="onnx: portable graph with metadata; tensorrt: GPU engine (+ .json "
                        "metadata, needs CUDA); aoti: AOTInductor package for the C++ runtime")
    x.add_argument("--out", required=True, help="output file (.onnx, .engine, .pt2)")
    x.add_argument("--softmax", action="store_true",
                   help="embed the softmax: the model outputs probabilities, not logits")
    x.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17)")
    x.add_argument("--tile-sizes", type=int, nargs="+", default=None, metavar="PX",
                   help="tensorrt: one optimisation profile per tile size; aoti: the tile "
                        "size range (default: the model's inference tile, 2x its patch size)")
    x.add_argument("--batch", type=int, nargs=3, default=(1, 4, 16),
                   metavar=("MIN", "OPT", "MAX"), help="batch range (tensorrt profiles; aoti "
                   "uses MAX)")
    x.add_argument("--precision", choices=["fp16", "bf16", "fp32", "int8"], default=None,
                   help="tensorrt engine precision (default fp16); onnx: fp32 (default) or "
                        "int8 (static post-training quantisation of the convolutions, "
                        "calibrated on --calibration-data)")
    x.add_argument("--calibration-data", default=None, metavar="DATA",
                   help="onnx --precision int8: training data folder (images/ + masks/) "
                        "whose patches calibrate the activation ranges")
    x.add_argument("--strongly-typed", choices=["auto", "on", "off"], default="auto",
                   help="tensorrt: strongly typed network (auto: when the installed TensorRT "
                        "prefers it)")
    x.add_argument("--timing-cache", default=None,
                   help="tensorrt timing cache kept between builds "
                        "(default ~/.cache/temseg/tensorrt-timing.cache)")
    x.add_argument("--workspace-gb", type=float, default=4.0, help="tensorrt workspace limit")
    x.add_argument("--no-verify", action="store_true",
                   help="skip the comparison of the export with PyTorch / ONNX Runtime")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="temseg", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--trust-checkpoint", action="store_true", help=_TRUST_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    _train_args(sub.add_parser("train", help="train a model on DATA/images + DATA/masks"))

    c = sub.add_parser("cv", help="leave-animals-out cross-validation of a training recipe "
                       "(the train options; --out is the study folder)")
    _train_args(c)
    c.add_argument("--folds", type=int, default=3,
                   help="folds of the image groups (animals, sub-XXX), dealt round-robin")
    c.add_argument("--no-tta", action="store_true",
                   help="evaluate each fold without test-time augmentation only")

    sub.add_parser("models", help="the models shipped with temseg (use their names as MODEL)")

    e = sub.add_parser("evaluate", help="per-class Dice/IoU of a model on a labelled folder")
    e.add_argument("model", help=MODEL_HELP)
    e.add_argument("data", help="folder with images/ and masks/")
    e.add_argument("--out", default=None, help="JSON report path (default: print only)")
    e.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help=BACKEND_HELP)
    e.add_argument("--no-instances", action="store_true",
                   help="pixel metrics only (instance metrics hold each image's labels in "
                        "memory)")
    _window_args(e)
    _slide_args(e)

    p = sub.add_parser("predict", help="segment images; writes masks and overlays")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("inputs", nargs="+", help="image files (TIFF/PNG) or OME-Zarr images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help=BACKEND_HELP)
    _window_args(p)
    _slide_args(p)
    p.add_argument("--probabilities", action="store_true",
                   help="also write <stem>_probabilities.tif: (C, H, W) uint8 round(255 p)")
    p.add_argument("--uncertainty", action="store_true",
                   help="also write <stem>_uncertainty.tif: uint8 normalised entropy (0-255)")
    p.add_argument("--morphometrics", action="store_true",
                   help="also measure the instances of each mask (as temseg morphometrics): "
                        "<stem>_instances.csv, <stem>_morphometrics.json, histograms")
    _output_args(p)
    _cluster_args(p)

    _export_args(sub.add_parser("export", help="export a model for deployment (ONNX, "
                                "TensorRT, AOTI)"))

    d = sub.add_parser("demo", help="synthesise data, train a few minutes, segment a slide")
    d.add_argument("--out", default="temseg-demo")
    d.add_argument("--epochs", type=int, default=10, help="training epochs (18 steps each)")
    d.add_argument("--minutes", type=float, default=4.0, help="cap on the training time")
    d.add_argument("--seed", type=int, default=0)

    m = sub.add_parser("morphometrics", help="per-axon table, aggregates and diameter "
                       "histograms of label masks (instances split at necks)")
    _morphometrics_args(m)

    s = sub.add_parser("synth", help="write a synthetic TEM dataset (images/ + masks/)")
    s.add_argument("out")
    s.add_argument("--n", type=int, default=4)
    s.add_argument("--size", type=int, default=768)
    s.add_argument("--seed", type=int, default=0)
    for name in ("train", "cv", "evaluate", "predict", "export", "demo"):  # also after the command
        sub.choices[name].add_argument("--trust-checkpoint", action="store_true",
                                       default=argparse.SUPPRESS, help=_TRUST_HELP)
    return parser


_TRUST_HELP = ("load checkpoints with full unpickling, which can run code stored in them: only "
               "for older checkpoints from a source you trust (same as TEMSEG_TRUST_CHECKPOINT=1)")


@contextlib.contextmanager
def _trusting(trust: bool) -> Iterator[None]:
    """``--trust-checkpoint``: TEMSEG_TRUST_CHECKPOINT=1 for the duration of the command."""
    from .checkpoint import TRUST_ENV

    old = os.environ.get(TRUST_ENV)
    if trust:
        os.environ[TRUST_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = old


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from .data import DataError
    from .train import TrainingError

    try:
        with _trusting(args.trust_checkpoint):
            return _run(args)
    except (DataError, FileNotFoundError, ValueError) as exc:  # bad input: nothing was done
        print(f"temseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (TrainingError, OSError, RuntimeError) as exc:  # the run failed
        from .inference.backends.tensorrt import TensorRTUnavailable

        if isinstance(exc, TensorRTUnavailable):  # no TensorRT / CUDA here
            print(f"temseg {args.command}: error: {exc}", file=sys.stderr)
            return 3
        if not isinstance(exc, (TrainingError, OSError)):
            raise
        print(f"temseg {args.command}: error: {exc}", file=sys.stderr)
        return 1


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of ``temseg train`` / ``temseg cv``'s flags (validated)."""
    from .checkpoint import read_checkpoint
    from .train import TrainConfig

    init = read_checkpoint(args.init) if args.init else None  # read once, hash checked
    return TrainConfig(
        data=args.data, out=args.out, epochs=args.epochs, time_limit=args.time_limit,
        batch_size=args.batch_size, patch_size=args.patch_size,
        patches_per_image=args.patches_per_image, rotate_probability=args.rotate_probability,
        scale_augment=args.scale_augment,
        gamma_augment=args.gamma_augment, gamma_probability=args.gamma_probability,
        blur_augment=args.blur_augment, elastic_augment=args.elastic_augment,
        elastic_probability=args.elastic_probability,
        pixel_size=_train_pixel_size(args, init),
        val_crop=args.val_crop,
        val_fraction=args.val_fraction, val_groups=tuple(args.val_groups), lr=args.lr,
        weight_decay=args.weight_decay, lambda_dice=args.lambda_dice,
        border_weight=args.border_weight, ema_decay=args.ema_decay, seed=args.seed,
        amp=args.amp, compile=args.compile, device=args.device,
        num_workers=args.num_workers, threads=args.threads, progress=not args.no_progress,
        resume=args.resume, init=args.init, model=_model_config(args, init))


def _train(args: argparse.Namespace) -> int:
    """``temseg train``: TrainConfig from the flags, then train."""
    from .train import train

    summary = train(_train_config(args))
    print(json.dumps(summary, indent=2))
    return 0


def _cv(args: argparse.Namespace) -> int:
    """``temseg cv``: the study; prints its table."""
    from .cv import cross_validate, format_cv_table

    result = cross_validate(_train_config(args), folds=args.folds, tta=not args.no_tta)
    print(format_cv_table(result["folds"], result["summary"]))
    print(f"study written to {args.out}/cv.json and cv.md")
    return 0


def _models(args: argparse.Namespace) -> int:
    """``temseg models``: name, size, classes seen and summary of each shipped model."""
    from .pretrained import available

    models = available()
    if not models:
        print("no models are shipped with this installation")
    for m in models.values():
        size = m.path.stat().st_size / 1e6 if m.path.is_file() else float("nan")
        print(f"{m.name}  ({size:.1f} MB, {m.path})\n  {m.summary}\n  classes seen: "
              f"{', '.join(m.classes_seen)}; pixel size {m.pixel_size_um} um")
        for key, value in m.info.items():
            print(f"  {key}: {value}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """``temseg evaluate``: the report table(s), and JSON with --out (checked first)."""
    from .atomic import write_json
    from .metrics import format_table

    if args.out:
        _check_writable(args.out)
    report = _predictor(args).evaluate_folder(args.data, pixel_size_um=args.pixel_size,
                                              instances=not args.no_instances)
    print(format_table(report))
    if "instances" in report:
        from .morphometrics import format_instance_table

        print(format_instance_table(report["instances"]))
    if args.out:
        write_json(args.out, report)
        print(f"report written to {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    """``temseg predict``: every input segmented (on Ray with --cluster ray); exit 1 when any
    failed."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    options = dict(probabilities=args.probabilities, uncertainty=args.uncertainty,
                   morphometrics=args.morphometrics, pixel_size_um=args.pixel_size,
                   mask_format=args.format, level=args.level)
    if args.cluster == "ray":
        done, failed = _predict_on_ray(args, out, options)
    else:
        done, failed = _predictor(args).predict_files(args.inputs, out, **options)
    print(f"{len(done)} segmented into {args.out}, {len(failed)} failed")
    for path, reason in failed:
        print(f"  FAILED {path}: {reason}", file=sys.stderr)
    return 1 if failed else 0


def _export(args: argparse.Namespace) -> int:
    """``temseg export``."""
    from .export.command import run_export

    return run_export(args)


def _demo(args: argparse.Namespace) -> int:
    """``temseg demo``."""
    from .demo import run_demo

    report = run_demo(args.out, epochs=args.epochs, minutes=args.minutes, seed=args.seed)
    return 0 if report["mean_dice"] is not None else 1


def _morphometrics(args: argparse.Namespace) -> int:
    """``temseg morphometrics``."""
    from .morphometrics.command import run_morphometrics

    return run_morphometrics(args)


def _synth(args: argparse.Namespace) -> int:
    """``temseg synth``."""
    from .synth import write_dataset

    paths = write_dataset(args.out, n_images=args.n, height=args.size, width=args.size,
                          seed=args.seed)
    print(f"{len(paths)} images written to {args.out}")
    return 0


_COMMANDS = {"train": _train, "cv": _cv, "models": _models, "evaluate": _evaluate,
             "predict": _predict, "export": _export, "demo": _demo,
             "morphometrics": _morphometrics, "synth": _synth}


def _run(args: argparse.Namespace) -> int:
    return _COMMANDS[args.command](args)

if __name__ == "__main__":
    sys.exit(main())
