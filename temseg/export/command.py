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
                precision=args.precision,
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


def _default_cache() -> Path:
    from .tensorrt import DEFAULT_TIMING_CACHE

    return DEFAULT_TIMING_CACHE
