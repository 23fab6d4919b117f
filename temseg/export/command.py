"""``temseg export``: the command behind the CLI sub-command (arguments parsed in temseg.cli)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["run_export", "verify_onnx"]


def verify_onnx(model: Any, path: str | Path, tiles: list[tuple[int, int]] | None = None,
                seed: int = 0) -> float:
    """Max abs difference between ONNX Runtime (CPU) and PyTorch eager on random tiles.

    ``tiles``: (batch, side) pairs (default: batch 1 and 3 at the patch size and at half of
    it). Compares logits, or probabilities when the export embeds the softmax.
    """
    import onnxruntime as ort

    from ..spec import read_onnx_metadata

    info = read_onnx_metadata(path)
    m = info.tile_multiple
    side = max(m, (info.patch_size // m) * m)
    tiles = tiles or [(1, side), (3, max(m, (side // 2 // m) * m))]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    net = model.eval().cpu()
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch, t in tiles:
        x = torch.randn(batch, 1, t, t, generator=gen)
        with torch.no_grad():
            ref = net(x).float()
        if info.softmax:
            ref = ref.softmax(1)
        got = session.run(None, {info.input_name: x.numpy()})[0]
        worst = max(worst, float(np.abs(got - ref.numpy()).max()))
    return worst


def run_export(args: Any) -> int:
    """Run ``temseg export`` from the arguments :mod:`temseg.cli` parsed (a namespace with
    model, format, out, softmax, opset, tile_sizes, batch, precision, ...); the exit code."""
    from ..checkpoint import load_model

    out = Path(args.out)
    problem = _precision_problem(args)
    if problem:
        print(f"temseg export: error: {problem}", file=sys.stderr)
        return 2
    if args.format == "tensorrt":
        from .tensorrt import TensorRTUnavailable, export_tensorrt, tensorrt_unavailable_reason

        reason = tensorrt_unavailable_reason()
        if reason is not None:  # before loading anything: say so at once
            print(f"temseg export: error: cannot build a TensorRT engine here: {reason}",
                  file=sys.stderr)
            return 3
        model = load_model(args.model)
        try:
            report = export_tensorrt(
                model, out, tile_sizes=args.tile_sizes, batch=tuple(args.batch),
                precision=args.precision or "fp16",
                strongly_typed={"auto": None, "on": True, "off": False}[args.strongly_typed],
                softmax=args.softmax, opset=args.opset,
                timing_cache=args.timing_cache or _default_cache(),
                workspace_gb=args.workspace_gb)
        except TensorRTUnavailable as exc:
            print(f"temseg export: error: {exc}", file=sys.stderr)
            return 3
        print(json.dumps(report, indent=2))
        return 0

    model = load_model(args.model)
    if args.format == "onnx" and args.precision == "int8":
        return _export_int8(model, out, args)
    if args.format == "onnx":
        from .onnx import export_onnx

        export_onnx(model, out, softmax=args.softmax, opset=args.opset)
        msg = f"ONNX model written to {out} (opset {args.opset}, dynamic batch/height/width"
        if not args.no_verify:
            diff = verify_onnx(model, out)
            msg += f"; max |ONNX Runtime - PyTorch| = {diff:.2e}"
            if diff > 1e-3:
                print(f"temseg export: error: {out}: ONNX Runtime differs from PyTorch by "
                      f"{diff:.3g}", file=sys.stderr)
                return 1
        print(msg + ")")
        return 0
    if args.format == "aoti":
        from .aoti import export_aoti

        tiles = args.tile_sizes or [model.roi_size]
        export_aoti(model, out, softmax=True, sample_tile=min(tiles),
                    max_batch=args.batch[2], max_tile=max(1024, max(tiles)))
        print(f"AOTInductor package written to {out} (metadata also in {out}.json)")
        return 0
    raise ValueError(f"unknown export format {args.format!r}")


def _precision_problem(args: Any) -> str | None:
    """What is wrong with ``--precision`` / ``--calibration-data`` for ``--format`` (None when
    nothing is)."""
    precision = getattr(args, "precision", None)
    calibration = getattr(args, "calibration_data", None)
    if precision == "int8" and args.format != "onnx":
        return f"--precision int8 is for --format onnx, not {args.format}"
    if args.format == "onnx" and precision not in (None, "fp32", "int8"):
        return f"--format onnx exports fp32 or int8, not {precision}"
    if precision == "int8" and not calibration:
        return "--precision int8 needs --calibration-data DATA (training images + masks)"
    if calibration and precision != "int8":
        return "--calibration-data is only used with --precision int8"
    if calibration and not Path(calibration).is_dir():
        return f"{calibration}: calibration data folder not found"
    return None


def _export_int8(model: Any, out: Path, args: Any) -> int:
    """``temseg export --format onnx --precision int8 --calibration-data DATA``."""
    import tempfile

    from ..spec import ModelSpec
    from .onnx import export_onnx
    from .quantize import calibration_tiles, quantize_onnx

    tiles = calibration_tiles(args.calibration_data, ModelSpec.from_model(model))
    with tempfile.TemporaryDirectory(prefix="temseg-int8-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "model.onnx", softmax=args.softmax,
                           opset=args.opset)
        quantize_onnx(fp32, out, tiles)
    msg = f"int8 ONNX model written to {out} (convolutions int8, calibrated on {len(tiles)} "
    msg += f"patches of {args.calibration_data}"
    if not args.no_verify:
        msg += f"; label agreement with PyTorch fp32 {verify_int8(model, out, tiles):.4f}"
    print(msg + ")")
    return 0


def verify_int8(model: Any, path: str | Path, tiles: np.ndarray) -> float:
    """Fraction of the calibration tiles' pixels where the int8 model (ONNX Runtime) gives
    the label PyTorch fp32 gives."""
    import onnxruntime as ort

    from ..spec import read_onnx_metadata

    info = read_onnx_metadata(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model.net.eval().cpu()(torch.from_numpy(tiles)).argmax(1).numpy()
    got = session.run(None, {info.input_name: tiles})[0].argmax(1)
    return float((got == ref).mean())


def _default_cache() -> Path:
    from .tensorrt import DEFAULT_TIMING_CACHE

    return DEFAULT_TIMING_CACHE
