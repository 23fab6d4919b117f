"""What the suites measure: sizes, and each contender as a plain callable.

Shared by the pytest-benchmark suites (timing, in process) and by :mod:`benchmarks.peak_memory`
(peak memory, one fresh subprocess per contender), so both measure the same code.

Sizes come from :class:`BenchConfig` (environment variables ``TEMSEG_BENCH_*``, see
docs/benchmarks.md); the defaults make ``make bench`` about 26 minutes on a 2-core CPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tifffile
import torch
import torch.nn.functional as F
from torch import nn

from temseg.data.normalize import Normalization
from temseg.labels import TEM_CLASSES
from temseg.models import ResUNet, UNetConfig, build_model

from .baseline import BaselineDiceCELoss, BaselineTrainStep, baseline_from, explicit_attention
from .baseline import segment_file as baseline_segment_file

NUM_CLASSES = 5
CUDA_SKIP = ("CUDA not available: Triton kernels are not timed on the CPU "
             "(the interpreter is not a performance path)")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in ("1", "true", "on", "yes")


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of every measure (``TEMSEG_BENCH_QUICK=1``: tiny sizes for a smoke run)."""

    threads: int = 2
    width: int = 16
    tile: int = 256
    sw_batch: int = 8
    overlap: float = 0.25
    train_batch: int = 8
    train_widths: tuple[int, ...] = (16,)
    train_rounds: int = 3
    compile: bool = True
    attn_heads: int = 8
    attn_head_dim: int = 32
    attn_cases: tuple[tuple[int, int], ...] = ((8, 1024), (2, 4096))  # (batch, tokens)
    attn_rounds: tuple[int, ...] = (3, 2)  # timed rounds per case
    loss_batch: int = 8
    loss_size: int = 256
    slide: int = 1536
    slide_rounds: int = 1
    # the MONAI comparison (benchmarks/test_inference.py): MONAI's settings on a real TEM slide
    peer_slide: int = 2560  # 512 px tiles: 49 at overlap 0.25, 36 at temseg's 0.125
    peer_widths: tuple[int, ...] = (32, 16)
    peer_roi: int = 512
    peer_sw_batch: int = 4
    mem_slide: int = 4096
    gemm_n: int = 2048
    seed: int = 0
    quick: bool = False

    @classmethod
    def from_env(cls) -> BenchConfig:
        quick = _env_flag("TEMSEG_BENCH_QUICK", False)
        base = cls.quick_sizes() if quick else cls()
        wide = _env_flag("TEMSEG_BENCH_WIDE", False)
        width = _env_int("TEMSEG_BENCH_WIDTH", base.width)
        return cls(
            threads=_env_int("TEMSEG_BENCH_THREADS", base.threads),
            width=width,
            tile=base.tile,
            sw_batch=base.sw_batch,
            overlap=base.overlap,
            train_batch=_env_int("TEMSEG_BENCH_TRAIN_BATCH", base.train_batch),
            train_widths=(width, 32) if wide and width != 32 else (width,),
            train_rounds=_env_int("TEMSEG_BENCH_TRAIN_ROUNDS", base.train_rounds),
            compile=_env_flag("TEMSEG_BENCH_COMPILE", base.compile),
            attn_heads=base.attn_heads,
            attn_head_dim=base.attn_head_dim,
            attn_cases=base.attn_cases,
            attn_rounds=base.attn_rounds,
            loss_batch=base.loss_batch,
            loss_size=base.loss_size,
            slide=_env_int("TEMSEG_BENCH_SLIDE", base.slide),
            slide_rounds=_env_int("TEMSEG_BENCH_SLIDE_ROUNDS", base.slide_rounds),
            peer_slide=_env_int("TEMSEG_BENCH_PEER_SLIDE", base.peer_slide),
            peer_widths=base.peer_widths,
            peer_roi=base.peer_roi,
            peer_sw_batch=base.peer_sw_batch,
            mem_slide=_env_int("TEMSEG_BENCH_MEM_SLIDE", base.mem_slide),
            gemm_n=base.gemm_n,
            seed=base.seed,
            quick=quick,
        )

    @classmethod
    def quick_sizes(cls) -> BenchConfig:
        """Tiny sizes: checks that every suite runs end to end (numbers meaningless)."""
        return cls(width=8, tile=64, sw_batch=4, train_batch=2, train_rounds=1, compile=False,
                   attn_cases=((2, 256),), attn_rounds=(2,), loss_batch=2, loss_size=64, slide=320,
                   slide_rounds=1, peer_slide=320, peer_widths=(8,), peer_roi=64,
                   peer_sw_batch=2, mem_slide=448, gemm_n=512, quick=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# machine


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# models


def make_net(width: int, seed: int = 0) -> ResUNet:
    """temseg's ResUNet (default architecture at ``width``) with seeded random weights and
    non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = build_model(UNetConfig(width=width))
    gen = torch.Generator().manual_seed(seed + 1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 1.5, generator=gen)
    return net.eval()


def save_net(net: ResUNet, path: str | Path) -> Path:
    """Write ``net`` as a temseg checkpoint (loadable with ``temseg.load_model``)."""
    from temseg.checkpoint import SegmentationModel, save_checkpoint

    save_checkpoint(path, SegmentationModel(net))
    return Path(path)


def load_net(path: str | Path) -> ResUNet:
    """The ResUNet of a checkpoint written by :func:`save_net`, eval mode."""
    from temseg.checkpoint import load_model

    return load_model(path).net.eval()


# --------------------------------------------------------------------------------------------
# attention


def attention_inputs(batch: int, tokens: int, heads: int, head_dim: int, seed: int = 0,
                     requires_grad: bool = False) -> tuple[torch.Tensor, ...]:
    """q, k, v (batch, heads, tokens, head_dim) float32 (and the output gradient)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, heads, tokens, head_dim)
    q, k, v, g = (torch.randn(shape, generator=gen) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(requires_grad)
    return q, k, v, g


def attention_impls() -> dict[str, Callable[..., torch.Tensor]]:
    """name -> f(q, k, v). ``temseg.kernels.attention`` is a row only where CUDA is present:
    on the CPU it *is* SDPA (its PyTorch path), and a second SDPA row would only add noise."""
    impls: dict[str, Callable[..., torch.Tensor]] = {
        "baseline (explicit softmax(QK^T)V)": explicit_attention,
        "F.scaled_dot_product_attention": F.scaled_dot_product_attention,
    }
    if torch.cuda.is_available():
        from temseg.kernels import attention

        impls["temseg.kernels.attention"] = attention
    return impls


# --------------------------------------------------------------------------------------------
# loss


def loss_inputs(batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, 5, size, size) float32 requiring grad and a target (B, size, size) int64
    with every class present."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, NUM_CLASSES, size, size, generator=gen).requires_grad_(True)
    target = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=gen)
    return logits, target


def loss_impls() -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """name -> loss(logits, target): the baseline, temseg's DiceCELoss (training settings:
    batch Dice, lambda_dice 0.5; with and without the default border weight 5, which MONAI has
    no equivalent of) and MONAI's DiceCELoss with the same settings."""
    from monai.losses import DiceCELoss as MonaiDiceCELoss

    from temseg.losses import DiceCELoss

    monai_loss = MonaiDiceCELoss(softmax=True, to_onehot_y=True, batch=True, lambda_dice=0.5,
                                 lambda_ce=1.0)
    return {
        "baseline (one-hot, separate tensors)": BaselineDiceCELoss(),
        "temseg DiceCELoss": DiceCELoss(batch=True, lambda_dice=0.5),
        "temseg DiceCELoss, border weight 5": DiceCELoss(batch=True, lambda_dice=0.5,
                                                         border_weight=5.0),
        "MONAI DiceCELoss": lambda logits, target: monai_loss(logits, target[:, None]),
    }


# --------------------------------------------------------------------------------------------
# training step


class TemsegTrainStep:
    """One step of :func:`temseg.train.loop.train` as its run-time policy sets it up: model and
    batches in channels-last memory format, ``torch.compile`` when ``compile`` (the loop's
    ``--compile on``; the CPU default is off), AMP as :func:`temseg.policy.choose_precision`
    decides, temseg's DiceCELoss, AdamW with the loop's parameter groups, gradient clipping.

    Call with x (B, 1, H, W) float32 and y (B, H, W) int64; returns the loss as a float.
    """

    def __init__(self, net: nn.Module, compile: bool = False, amp: str = "auto",
                 lr: float = 2e-3, weight_decay: float = 1e-4, lambda_dice: float = 0.5) -> None:
        from temseg.losses import DiceCELoss
        from temseg.policy import choose_compile, choose_precision

        self.device = torch.device("cpu")
        self.net = net.train().to(memory_format=torch.channels_last)
        self.precision = choose_precision(self.device, amp)
        self.use_compile, self.compile_reason = choose_compile(
            self.device, "on" if compile else "off")
        decay = [p for p in net.parameters() if p.ndim > 1]
        no_decay = [p for p in net.parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
        self.loss_fn = DiceCELoss(batch=True, lambda_dice=lambda_dice)
        self.forward = torch.compile(self.net) if self.use_compile else self.net

    @property
    def policy(self) -> str:
        """What the policy chose, for the report."""
        amp = "AMP off" if self.precision.dtype is None else f"AMP {self.precision.dtype}"
        comp = "compile" if self.use_compile else "eager"
        return f"channels_last + {comp} + {amp} ({self.precision.reason})"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        x = x.contiguous(memory_format=torch.channels_last)
        with self.precision.autocast(self.device):
            logits = self.forward(x)
        loss = self.loss_fn(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
        self.optimizer.step()
        return float(loss.item())


def train_batch(batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised image batch (B, 1, size, size) and labels (B, size, size) int64."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, size, size, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=gen)
    return x, y


def make_train_step(contender: str, width: int, seed: int = 0,
                    amp: str = "auto") -> Callable[..., float]:
    """``"baseline"`` | ``"temseg"`` (policy, eager) | ``"temseg+compile"`` |
    ``"temseg+other-amp"`` (eager, the AMP setting the policy did *not* choose, to show what
    that choice is worth here); all start from the same weights. ``amp`` is temseg's ``--amp``
    ("auto": the policy decides)."""
    net = make_net(width, seed).train()
    if contender == "baseline":
        return BaselineTrainStep(baseline_from(net))
    if contender == "temseg":
        return TemsegTrainStep(net, compile=False, amp=amp)
    if contender == "temseg+compile":
        return TemsegTrainStep(net, compile=True, amp=amp)
    if contender == "temseg+other-amp":
        from temseg.policy import choose_precision

        chosen = choose_precision(torch.device("cpu"), "auto")
        return TemsegTrainStep(net, compile=False, amp="bf16" if chosen.dtype is None else "off")
    raise ValueError(f"unknown training contender {contender!r}")


# --------------------------------------------------------------------------------------------
# whole-slide inference


def slide_tiles(size: int, tile: int, overlap: float) -> tuple[int, int]:
    """(tiles of temseg's / MONAI's overlapping grid, tiles of the baseline's plain grid) for a
    square slide."""
    from temseg import _C

    grid = _C.TileGrid(size, size, (tile, tile), (overlap, overlap))
    return len(grid), math.ceil(size / tile) ** 2


def write_test_slide(path: str | Path, size: int, seed: int = 0) -> Path:
    """A synthetic TEM phantom slide (tiled uint8 TIFF) of ``size`` x ``size``."""
    from temseg.synth import write_slide

    return write_slide(path, size, size, seed=seed, tile=256)


def write_tem_slide(path: str | Path, size: int) -> Path:
    """A ``size`` x ``size`` slide of real TEM: temseg's shipped example micrograph
    (600 x 600, mouse corpus callosum, MIT) mirrored out to the size, tiled uint8 TIFF with no
    pixel size (every contender then runs the same pixels)."""
    import numpy as np

    from temseg.examples import example_image

    image = tifffile.imread(example_image()[0])
    reps = math.ceil(size / image.shape[0]) + 1
    tiled = np.pad(image, ((0, reps * image.shape[0]), (0, reps * image.shape[1])),
                   mode="symmetric")[:size, :size]
    tifffile.imwrite(path, np.ascontiguousarray(tiled), tile=(256, 256), compression="zlib")
    return Path(path)


def trained_net(width: int, seed: int = 0) -> ResUNet:
    """A model at ``width`` whose labels vary over TEM: the shipped ``tem-mouse-cc`` (trained)
    when it has this width, else :func:`make_net` with its head scaled x40 (random weights
    otherwise give one label almost everywhere, and a label agreement of 1 proves nothing)."""
    from temseg.checkpoint import load_model

    shipped = load_model("tem-mouse-cc").net.eval()
    if shipped.config.width == width:
        return shipped
    net = make_net(width, seed)
    with torch.no_grad():
        net.head.weight.mul_(40.0)
    return net


def monai_best_settings() -> tuple[str, bool]:
    """(precision, channels_last) of MONAI at its best on this CPU, as a user who knows
    ``torch.autocast`` and ``channels_last`` runs it: bf16 autocast + channels-last where the
    CPU has native bf16 units, fp32 channels-last elsewhere (bf16 is emulated there)."""
    from temseg.policy import cpu_has_native_bf16

    return ("bf16" if cpu_has_native_bf16() else "fp32"), True


def slide_baseline(model: nn.Module, src: str | Path, dst: str | Path, cfg: BenchConfig) -> Path:
    """The baseline's whole-slide path (see :mod:`benchmarks.baseline.infer`) with ``model``
    (a :class:`~benchmarks.baseline.BaselineResUNet`, see ``baseline_from``)."""
    return baseline_segment_file(model.eval(), src, dst, cfg.tile, cfg.sw_batch)


@torch.inference_mode()
def slide_monai(net: ResUNet, src: str | Path, dst: str | Path, cfg: BenchConfig,
                precision: str = "fp32", channels_last: bool = False, roi: int | None = None,
                sw_batch: int | None = None) -> Path:
    """MONAI ``sliding_window_inference`` with temseg's model as a user would call it:
    overlap ``cfg.overlap``, gaussian blending, the whole slide and its full-size score map in
    memory; out of the box (eager fp32 NCHW) or with ``precision`` "bf16" (``torch.autocast``)
    and ``channels_last`` model and tiles."""
    from monai.inferers import sliding_window_inference

    image = tifffile.imread(src)
    x = torch.from_numpy(Normalization()(image))[None, None]
    net = net.eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            logits = net(batch)
        return torch.softmax(logits.float(), dim=1)

    roi = roi or cfg.tile
    probs = sliding_window_inference(x, (roi, roi), sw_batch or cfg.sw_batch, predictor,
                                     overlap=cfg.overlap, mode="gaussian")
    if channels_last:
        net.to(memory_format=torch.contiguous_format)
    labels = probs[0].argmax(0).to(torch.uint8).numpy()
    tifffile.imwrite(dst, TEM_CLASSES.decode(labels), compression="zlib")
    return Path(dst)


def temseg_slide_entry() -> str:
    """The temseg whole-slide entry point measured."""
    return "temseg.inference.Predictor.segment_slide (TIFF to TIFF, streaming)"


def slide_temseg(backend: Any, src: str | Path, dst: str | Path, cfg: BenchConfig,
                 roi: int | None = None, sw_batch: int | None = None,
                 overlap: float | None = None) -> Path:
    """temseg's whole-slide path (the Predictor over ``segment_slide``): the slide is read
    band by band, tiles are extracted, normalised and blended (gaussian) by the C++ tiler
    around ``backend``; no overlay, no progress bar. ``roi`` / ``sw_batch`` / ``overlap``
    default to ``cfg``'s tile, batch and overlap."""
    from temseg.inference import Predictor, SlidingWindowInferer

    window = SlidingWindowInferer(roi or cfg.tile, sw_batch or cfg.sw_batch,
                                  cfg.overlap if overlap is None else overlap, "gaussian")
    predictor = Predictor(backend, window, progress=False,
                          slide_options={"num_threads": cfg.threads})
    predictor.segment_slide(Path(src), Path(dst))
    return Path(dst)


def make_backend(name: str, net: ResUNet, onnx_path: str | Path | None = None,
                 patch_size: int = 256) -> Any:
    """temseg's inference backend ``name`` around ``net``: "torch" | "torch-bf16" |
    "onnxruntime" | "openvino-fp32" | "openvino-bf16" | "openvino-int8" (``onnx_path``: an
    int8 export) | "auto" (what ``temseg predict`` picks on this CPU: the fixed rule of
    :func:`temseg.inference.backends.default_backend`). ONNX backends open ``onnx_path``
    when given, else export ``net`` once (cached)."""
    import copy

    from temseg.checkpoint import SegmentationModel
    from temseg.inference import backends

    # a copy: TorchBackend switches its model to channels-last in place
    model = SegmentationModel(copy.deepcopy(net).eval(), patch_size=patch_size)
    if name == "auto":  # with the calibration patches every checkpoint temseg trains carries
        model.calibration = torch.from_numpy(example_calibration(model))
        return backends.make_backend("auto", model)
    if name == "torch":
        return backends.TorchBackend(model)
    if name == "torch-bf16":
        return backends.TorchBackend(model, amp=torch.bfloat16)
    path = onnx_path or backends.cached_onnx(model)
    if name == "onnxruntime":
        return backends.OnnxRuntimeBackend(path)
    if name.startswith("openvino-"):
        precision = name.removeprefix("openvino-")
        float_precision = monai_best_settings()[0] if precision == "int8" else precision
        return backends.OpenVinoBackend(path, float_precision)
    raise ValueError(f"unknown backend {name!r}")


def example_calibration(model: Any) -> Any:
    """16 calibration patches (N, 1, P, P) float32 of the shipped example data, as
    :class:`temseg.train.Trainer` keeps with every model it trains."""
    from temseg.examples import example_data
    from temseg.export.quantize import calibration_tiles

    return calibration_tiles(example_data(), model.spec, count=16)


def int8_export(net: ResUNet, folder: str | Path, patch_size: int = 256) -> Path:
    """``net`` exported and quantised to int8 (:func:`temseg.export.quantize.quantize_onnx`),
    calibrated on patches of the shipped example data, as ``temseg export --precision int8
    --calibration-data`` does."""
    import copy

    from temseg.checkpoint import SegmentationModel
    from temseg.examples import example_data
    from temseg.export.onnx import export_onnx
    from temseg.export.quantize import calibration_tiles, quantize_onnx
    from temseg.spec import ModelSpec

    model = SegmentationModel(copy.deepcopy(net).eval(), patch_size=patch_size)
    fp32 = export_onnx(model, Path(folder) / "model.onnx", softmax=True)
    tiles = calibration_tiles(example_data(), ModelSpec.from_model(model))
    return quantize_onnx(fp32, Path(folder) / "model.int8.onnx", tiles)


def label_agreement(a: str | Path, b: str | Path) -> float:
    """Fraction of pixels where two label TIFFs agree."""
    return float((tifffile.imread(a) == tifffile.imread(b)).mean())


def onnxruntime_backend_available() -> bool:
    """True when temseg has an ONNX Runtime backend and its dependencies import."""
    try:
        from temseg.inference import backends
    except ImportError:
        return False
    if not hasattr(backends, "OnnxRuntimeBackend"):
        return False
    check = getattr(backends, "onnxruntime_available", None)
    return bool(check()) if check is not None else True


# --------------------------------------------------------------------------------------------
# annotations read by benchmarks.summary


def annotate(benchmark: Any, measure: str, contender: str, unit: str = "ms",
             work: float | None = None, baseline: bool = False, **extra: Any) -> None:
    """Label a pytest-benchmark row for :mod:`benchmarks.summary`.

    Args:
        benchmark: the pytest-benchmark fixture.
        measure: the table's measure (rows with the same measure are compared).
        contender: who is measured.
        unit: "ms" (time per round), or a throughput unit ("patches/s", "MPix/s") computed as
            ``work / seconds`` per round.
        work: patches or megapixels processed per round (throughput units).
        baseline: this row is the reference of its measure (ratio 1.00).
        extra: more JSON-ready facts (peak memory, what the policy chose, ...).
    """
    benchmark.group = measure
    benchmark.extra_info.update({"measure": measure, "contender": contender, "unit": unit,
                                 "role": "baseline" if baseline else "contender"})
    if work is not None:
        benchmark.extra_info["work"] = work
    benchmark.extra_info.update(extra)
