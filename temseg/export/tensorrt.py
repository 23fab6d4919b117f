"""TensorRT engines built from the exported ONNX (GPU hosts only).

* :func:`build_engine`: TensorRT Python API build of an ONNX file: one optimisation profile
  per tile size with a (min, opt, max) batch range, fp16 / bf16 / fp32, a strongly typed
  network when the installed TensorRT prefers it (then the precision comes from the ONNX
  itself: :func:`export_tensorrt` exports a float16 / bfloat16 graph for it), a timing cache
  kept between builds, and the metadata saved beside the engine (``<engine>.json``).
* :func:`compare_with_onnxruntime`: the engine's output against ONNX Runtime (fp32) on sample
  tiles.
* :data:`TENSORRT_10_ONNX_OPS` / :func:`unsupported_ops`: the ONNX operators TensorRT 10's
  ONNX parser supports, to check an export without TensorRT at hand.

The engine's runtime (:class:`~temseg.inference.backends.tensorrt.TensorRTRunner`) lives
with the inference backends. This module imports without TensorRT; everything that needs it
raises :class:`TensorRTUnavailable` with the reason (no ``tensorrt`` package, only the type stubs,
no CUDA device). It type-checks with mypy against ``tensorrt-stubs``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..inference.backends.tensorrt import (
    TARGET_MAJOR,
    TensorRTRunner,
    TensorRTUnavailable,
    require_tensorrt,
    tensorrt_unavailable_reason,
)
from ..spec import ModelSpec, read_onnx_metadata, write_sidecar

if TYPE_CHECKING:
    import tensorrt as trt

__all__ = [
    "DEFAULT_TIMING_CACHE",
    "STRONGLY_TYPED_SINCE",
    "TENSORRT_10_ONNX_OPS",
    "ShapeProfile",
    "TensorRTRunner",
    "TensorRTUnavailable",
    "build_engine",
    "compare_with_onnxruntime",
    "default_profiles",
    "export_tensorrt",
    "prefers_strongly_typed",
    "tensorrt_unavailable_reason",
    "unsupported_ops",
]

log = logging.getLogger("temseg.export.tensorrt")

DEFAULT_TIMING_CACHE = Path.home() / ".cache" / "temseg" / "tensorrt-timing.cache"
# TensorRT 10.12 deprecated weakly typed networks (builder precision flags FP16/BF16 choosing
# layer precisions); from then on a strongly typed network, whose precision is that of the
# ONNX graph, is the preferred way to get a reduced-precision engine.
STRONGLY_TYPED_SINCE = (10, 12)

# ONNX operators (default domain) supported by TensorRT 10.x's ONNX parser.
# Source: onnx-tensorrt, docs/operators.md ("Supported ONNX Operators", TensorRT 10.x branch),
# written out conservatively: operators listed there with restrictions that our graphs never
# hit (e.g. Resize: nearest/linear/cubic only; Pad: constant/reflect/edge) are included,
# experimental or plugin-backed ones and the training/sequence/quantisation operators that a
# segmentation network does not use are left out.
TENSORRT_10_ONNX_OPS: frozenset[str] = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan",
    "Atanh", "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip",
    "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum",
    "DepthToSpace", "Div", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike",
    "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
    "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual",
    "GroupNormalization", "HardSigmoid", "HardSwish", "Identity", "If",
    "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Less",
    "LessOrEqual", "Log", "LogSoftmax", "LpNormalization", "LpPool", "LRN", "MatMul", "Max",
    "MaxPool", "Mean", "Min", "Mish", "Mod", "Mul", "Neg", "Not", "OneHot", "Or", "Pad",
    "Pow", "PRelu", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "Round", "ScatterElements", "ScatterND",
    "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax",
    "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan",
    "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Where",
    "Xor",
})
_RESIZE_MODES = {b"nearest", b"linear", b"cubic"}
_PAD_MODES = {b"constant", b"reflect", b"edge"}


def _version_tuple(version: str) -> tuple[int, int]:
    parts = (version.split(".") + ["0"])[:2]
    return int(parts[0]), int(parts[1])


def prefers_strongly_typed(version: str) -> bool:
    """True for TensorRT versions that deprecate weakly typed networks (>= 10.12)."""
    return _version_tuple(version) >= STRONGLY_TYPED_SINCE


def unsupported_ops(model: Any) -> list[str]:
    """Problems that would stop TensorRT 10's ONNX parser, for an ``onnx.ModelProto``.

    Returns a list of messages (empty when every op is supported): ops outside
    :data:`TENSORRT_10_ONNX_OPS`, ops of custom domains, Resize / Pad modes TensorRT lacks.
    """
    import onnx

    from .onnx import onnx_op_types

    problems = [f"{op} (domain {dom!r}): custom domain, no TensorRT parser support"
                for dom, op in sorted(onnx_op_types(model)) if dom not in ("", "ai.onnx")]
    problems += [f"{op}: not on TensorRT {TARGET_MAJOR}'s ONNX operator list"
                 for dom, op in sorted(onnx_op_types(model))
                 if dom in ("", "ai.onnx") and op not in TENSORRT_10_ONNX_OPS]
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Resize" and attrs.get("mode", b"nearest") not in _RESIZE_MODES:
            problems.append(f"Resize {node.name}: mode {attrs['mode']!r}")
        if node.op_type == "Pad" and attrs.get("mode", b"constant") not in _PAD_MODES:
            problems.append(f"Pad {node.name}: mode {attrs['mode']!r}")
    return problems


@dataclass(frozen=True)
class ShapeProfile:
    """One optimisation profile: square tiles of side ``tile`` (batch range min/opt/max).

    ``shapes()`` gives the (min, opt, max) input shapes (B, 1, tile, tile).
    """

    tile: int
    min_batch: int = 1
    opt_batch: int = 4
    max_batch: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"batch range must satisfy 1 <= min <= opt <= max, got "
                             f"{self.min_batch}, {self.opt_batch}, {self.max_batch}")

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        t = self.tile
        return ((self.min_batch, 1, t, t), (self.opt_batch, 1, t, t), (self.max_batch, 1, t, t))


def default_profiles(tile_sizes: Sequence[int], batch: tuple[int, int, int] = (1, 4, 16),
                     multiple: int = 8) -> list[ShapeProfile]:
    """One :class:`ShapeProfile` per tile size (each a multiple of ``multiple``)."""
    bad = [t for t in tile_sizes if t <= 0 or t % multiple]
    if bad or not tile_sizes:
        raise ValueError(f"tile sizes must be positive multiples of {multiple}, got "
                         f"{list(tile_sizes)}")
    return [ShapeProfile(int(t), *batch) for t in dict.fromkeys(tile_sizes)]


def _parse_errors(parser: trt.OnnxParser) -> str:
    msgs = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        msgs.append(str(err.desc()) if hasattr(err, "desc") else str(err))
    return "; ".join(msgs) or "unknown parser error"


def _builder_config(trt: Any, builder: Any, info: ModelSpec, profiles: Sequence[ShapeProfile],
                    precision: str, strongly_typed: bool, workspace_gb: float) -> Any:
    """The builder config: workspace limit, the precision flag of a weakly typed build and
    one optimisation profile per ``profiles`` entry."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if not strongly_typed:
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "bf16":
            config.set_flag(trt.BuilderFlag.BF16)
    for p in profiles:
        profile = builder.create_optimization_profile()
        lo, opt, hi = p.shapes()
        profile.set_shape(info.input_name, trt.Dims(list(lo)), trt.Dims(list(opt)),
                          trt.Dims(list(hi)))
        config.add_optimization_profile(profile)
    return config


def _load_timing_cache(config: Any, cache_path: Path) -> None:
    """Give ``config`` the timing cache in ``cache_path`` (a new one when it is missing or
    was made for another GPU / TensorRT)."""
    blob = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("%s: timing cache does not match this GPU/TensorRT; starting a new one",
                    cache_path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=True)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    profiles: Sequence[ShapeProfile],
    *,
    precision: str = "fp16",
    strongly_typed: bool | None = None,
    timing_cache: str | Path | None = DEFAULT_TIMING_CACHE,
    workspace_gb: float = 4.0,
    info: ModelSpec | None = None,
) -> Path:
    """Build a serialised TensorRT engine from an ONNX file.

    Args:
        onnx_path: the ONNX export (:func:`temseg.export.export_onnx`); for a strongly typed
            build its precision is the engine's (export it with ``dtype=float16/bfloat16``).
        engine_path: output engine file; ``<engine_path>.json`` receives the metadata.
        profiles: optimisation profiles (at least one).
        precision: "fp16", "bf16" or "fp32"; sets the builder flag of a weakly typed build.
        strongly_typed: None: when :func:`prefers_strongly_typed` for the installed version.
        timing_cache: file read before and written after the build (None: no cache).
        workspace_gb: builder workspace memory limit.
        info: metadata to save (default: the ONNX file's own).

    Returns:
        ``engine_path``. Raises :class:`TensorRTUnavailable` without TensorRT / CUDA and
        RuntimeError naming the file when parsing or building fails.
    """
    require_tensorrt(f"{engine_path}")
    import tensorrt as trt

    from ..atomic import atomic_path

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if precision not in ("fp16", "bf16", "fp32"):
        raise ValueError(f"precision must be fp16, bf16 or fp32, got {precision!r}")
    if not profiles:
        raise ValueError(f"{engine_path}: at least one optimisation profile is needed")
    info = info or read_onnx_metadata(onnx_path)
    if strongly_typed is None:
        strongly_typed = prefers_strongly_typed(trt.__version__)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser failed: {_parse_errors(parser)}")

    config = _builder_config(trt, builder, info, profiles, precision, strongly_typed,
                             workspace_gb)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None:
        _load_timing_cache(config, cache_path)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{engine_path}: TensorRT engine build failed (see the TensorRT "
                           "log above)")
    log.info("%s: engine built in %.1f s", engine_path, time.perf_counter() - t0)
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(memoryview(serialized))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))

    extra = {**info.extra, "tensorrt_version": trt.__version__, "precision": precision,
             "strongly_typed": strongly_typed, "profiles": [asdict(p) for p in profiles],
             "onnx": onnx_path.name}
    write_sidecar(engine_path, info.replace(extra=extra))
    return engine_path


def compare_with_onnxruntime(engine_path: str | Path, onnx_path: str | Path,
                             tiles: np.ndarray, batch_size: int = 4) -> dict[str, float]:
    """Run ``tiles`` (N, 1, H, W) float32 through the engine and through ONNX Runtime (fp32).

    Returns max abs difference of the probabilities, mean abs difference and the fraction of
    pixels whose argmax label differs.
    """
    import onnxruntime as ort

    runner = TensorRTRunner(engine_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    info = read_onnx_metadata(onnx_path)
    max_abs, sum_abs, n_val, n_diff, n_pix = 0.0, 0.0, 0, 0, 0
    for i in range(0, len(tiles), batch_size):
        x = np.ascontiguousarray(tiles[i:i + batch_size], dtype=np.float32)
        ref = torch.from_numpy(session.run(None, {info.input_name: x})[0])
        got = runner(torch.from_numpy(x)).cpu()
        if not info.softmax:
            ref, got = ref.softmax(1), got.softmax(1)
        diff = (ref - got).abs()
        max_abs = max(max_abs, float(diff.max()))
        sum_abs += float(diff.sum())
        n_val += diff.numel()
        n_diff += int((ref.argmax(1) != got.argmax(1)).sum())
        n_pix += ref.shape[0] * ref.shape[2] * ref.shape[3]
    return {"max_abs_prob": max_abs, "mean_abs_prob": sum_abs / max(n_val, 1),
            "label_mismatch": n_diff / max(n_pix, 1)}


def export_tensorrt(
    model: Any,
    engine_path: str | Path,
    *,
    tile_sizes: Sequence[int] | None = None,
    batch: tuple[int, int, int] = (1, 4, 16),
    precision: str = "fp16",
    strongly_typed: bool | None = None,
    softmax: bool = False,
    opset: int = 18,
    timing_cache: str | Path | None = DEFAULT_TIMING_CACHE,
    workspace_gb: float = 4.0,
    verify_tiles: np.ndarray | None = None,
    max_label_mismatch: float = 0.01,
) -> dict[str, Any]:
    """Model -> ONNX (``<engine>.onnx``, fp32) -> TensorRT engine -> check against ONNX Runtime.

    A strongly typed fp16 / bf16 build also writes ``<engine>.<precision>.onnx`` (the network
    in that precision, I/O float32) and builds from it. ``verify_tiles`` (N, 1, H, W) float32
    normalised tiles (default: 4 random tiles per profile) are compared; a label mismatch
    above ``max_label_mismatch`` raises RuntimeError.

    Returns a report dict (paths, build settings, comparison numbers).
    """
    require_tensorrt(f"{engine_path}")
    import tensorrt as trt

    from .onnx import export_onnx

    engine_path = Path(engine_path)
    net = getattr(model.net, "_orig_mod", model.net)
    tiles = list(tile_sizes or [int(model.roi_size)])
    profiles = default_profiles(tiles, batch, int(net.multiple))
    if strongly_typed is None:
        strongly_typed = prefers_strongly_typed(trt.__version__)
    onnx_fp32 = export_onnx(model, engine_path.with_suffix(".onnx"), softmax=softmax,
                            opset=opset)
    problems = unsupported_ops(__import__("onnx").load(str(onnx_fp32)))
    if problems:
        raise RuntimeError(f"{onnx_fp32}: not parseable by TensorRT {TARGET_MAJOR}: "
                           + "; ".join(problems))
    build_from = onnx_fp32
    if strongly_typed and precision != "fp32":
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        build_from = export_onnx(model, engine_path.with_suffix(f".{precision}.onnx"),
                                 softmax=softmax, opset=opset, dtype=dtype)
    build_engine(build_from, engine_path, profiles, precision=precision,
                 strongly_typed=strongly_typed, timing_cache=timing_cache,
                 workspace_gb=workspace_gb, info=read_onnx_metadata(onnx_fp32))
    if verify_tiles is None:
        rng = np.random.default_rng(0)
        verify_tiles = np.concatenate([rng.standard_normal((4, 1, p.tile, p.tile),
                                                           dtype=np.float32)
                                       for p in profiles[:1]])
    stats = compare_with_onnxruntime(engine_path, onnx_fp32, verify_tiles)
    report = {"engine": str(engine_path), "onnx": str(onnx_fp32), "built_from": str(build_from),
              "precision": precision, "strongly_typed": strongly_typed,
              "profiles": [asdict(p) for p in profiles], "tensorrt_version": trt.__version__,
              "vs_onnxruntime": stats}
    if stats["label_mismatch"] > max_label_mismatch:
        raise RuntimeError(f"{engine_path}: engine disagrees with ONNX Runtime on "
                           f"{stats['label_mismatch']:.2%} of pixels (max abs probability "
                           f"difference {stats['max_abs_prob']:.3g})")
    return report
