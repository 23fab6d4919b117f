"""MONAI-compatible 2-D sliding-window inference backed by the C++ tiler (:mod:`temseg._C`).

The grid (``TileGrid``), blending window (``make_window``) and the streaming band
accumulator (``BandAccumulator``) come from the C++ core; this module only pads the input,
batches windows for the predictor and copies finished row bands into the output tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from temseg import _C

__all__ = ["PADDING_MODES", "pad_like_monai", "sliding_window_inference"]

PADDING_MODES = ("constant", "reflect", "replicate", "circular")


def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    vals = tuple(value)
    if len(vals) != 2:
        raise ValueError(f"{name} must be a number or a pair for 2-D inputs, got {value!r}")
    return float(vals[0]), float(vals[1])


def _roi(roi_size: Sequence[int | None] | int, image_size: tuple[int, int]) -> tuple[int, int]:
    """MONAI ``fall_back_tuple``: None / non-positive components take the image size."""
    if isinstance(roi_size, int):
        roi_size = (roi_size, roi_size)
    roi = tuple(roi_size)
    if len(roi) != 2:
        raise ValueError(f"roi_size must have 2 components for 2-D inputs, got {roi_size!r}")
    th, tw = (int(r) if r is not None and r > 0 else s
              for r, s in zip(roi, image_size, strict=True))
    return th, tw


def _pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source indices for padding an axis of length n (reflect is numpy/periodic for big pads)."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate":
        return i.clamp(0, n - 1)
    if mode == "circular":
        return i.remainder(n)
    if n == 1:  # reflect of a single pixel repeats it
        return torch.zeros_like(i)
    m = i.remainder(2 * (n - 1))
    return torch.where(m < n, m, 2 * (n - 1) - m)


def pad_like_monai(
    inputs: torch.Tensor, roi: tuple[int, int], padding_mode: str = "constant", cval: float = 0.0
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (N, C, H, W) up to ``roi`` where smaller, split like MONAI (``diff // 2`` before).

    Returns the padded tensor (N, C, max(H, th), max(W, tw)) and the (top, left) offsets.
    ``reflect`` / ``replicate`` / ``circular`` match ``torch.nn.functional.pad`` wherever that
    is defined and extend periodically (numpy semantics) when the pad exceeds the input.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    h, w = inputs.shape[-2:]
    dh, dw = max(roi[0] - h, 0), max(roi[1] - w, 0)
    top, left = dh // 2, dw // 2
    if dh == 0 and dw == 0:
        return inputs, (0, 0)
    if padding_mode == "constant":
        pads = (left, dw - left, top, dh - top)
        return F.pad(inputs, pads, mode="constant", value=cval), (top, left)
    out = inputs
    if dh:
        out = out.index_select(-2, _pad_index(h, top, dh - top, padding_mode, inputs.device))
    if dw:
        out = out.index_select(-1, _pad_index(w, left, dw - left, padding_mode, inputs.device))
    return out, (top, left)


def sliding_window_inference(
    inputs: torch.Tensor,
    roi_size: Sequence[int] | int,
    sw_batch_size: int,
    predictor: Callable[..., torch.Tensor],
    overlap: Sequence[float] | float = 0.25,
    mode: str = "gaussian",
    sigma_scale: Sequence[float] | float = 0.125,
    padding_mode: str = "constant",
    cval: float = 0.0,
    device: torch.device | str | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> torch.Tensor:
    """Sliding-window inference of a 2-D ``predictor`` over ``inputs`` (MONAI semantics).

    Windows follow ``monai.inferers.sliding_window_inference``: stride
    ``max(1, int(roi * (1 - overlap)))`` per axis, last window flush with the border, windows
    of all images flattened (image-major, then row-major) into batches of ``sw_batch_size``;
    inputs smaller than ``roi_size`` are padded (``padding_mode`` / ``cval``, ``diff // 2``
    before) and the output is cropped back. Blending (``mode`` "constant" | "gaussian" |
    "cosine", ``sigma_scale``) and the weighted average run in the C++ band accumulator in
    float32, streaming tile row by tile row (accumulator memory ~ roi_h x W x C_out).

    Args:
        inputs: (N, C_in, H, W) tensor on any device.
        roi_size: window size (th, tw) or int; None / non-positive components take H or W.
        sw_batch_size: windows per predictor call.
        predictor: callable (B, C_in, th, tw) -> (B, C_out, th, tw) tensor (any device);
            ``kwargs`` are forwarded to it.
        overlap: fraction in [0, 1), scalar or per axis.
        mode: blending window, "gaussian" (default), "constant" or "cosine".
        sigma_scale: gaussian sigma as a fraction of the window size (scalar or per axis).
        padding_mode: "constant", "reflect", "replicate" or "circular" (inputs < roi only).
        cval: fill value for ``padding_mode="constant"``.
        device: device of the output (default: ``inputs.device``).
        progress: show a tqdm progress bar over predictor batches.

    Returns:
        (N, C_out, H, W) tensor, dtype of ``inputs`` if floating point else float32.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
        shape = tuple(inputs.shape) if hasattr(inputs, "shape") else type(inputs).__name__
        raise ValueError(f"inputs must be a (N, C, H, W) tensor, got {shape}")
    n_img, _, height, width = inputs.shape
    if height == 0 or width == 0 or n_img == 0:
        raise ValueError(f"inputs must not be empty, got shape {tuple(inputs.shape)}")
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
    roi = _roi(roi_size, (height, width))
    ov = _pair(overlap, "overlap")
    if not all(0.0 <= o < 1.0 for o in ov):
        raise ValueError(f"overlap must be >= 0 and < 1, got {overlap!r}")
    sig = _pair(sigma_scale, "sigma_scale")

    padded, (top, left) = pad_like_monai(inputs, roi, padding_mode, cval)
    hp, wp = padded.shape[-2:]
    grid = _C.TileGrid(hp, wp, roi, ov)
    window = _C.make_window(roi, mode, sig)
    origins = grid.origins()  # (n_win, 2) int64, row-major
    n_win, n_cols = len(grid), grid.n_cols
    th, tw = roi

    out_device = torch.device(device) if device is not None else inputs.device
    out_dtype = inputs.dtype if inputs.dtype.is_floating_point else torch.float32
    output: torch.Tensor | None = None
    output_np: np.ndarray | None = None  # numpy view of a CPU output (plain memcpy writes)
    # CPU float32 inputs: windows are gathered by the C++ extractor (GIL released, no torch
    # intra-op threads); other inputs are sliced and stacked by torch.
    padded_np = padded.detach().contiguous().numpy() \
        if padded.device.type == "cpu" and padded.dtype == torch.float32 else None

    def gather(idx: range) -> torch.Tensor:
        """Windows idx (flattened image-major) as (len(idx), C_in, th, tw)."""
        if padded_np is None:
            wins = []
            for i in idx:
                y, x = origins[i % n_win]
                wins.append(padded[i // n_win, :, y : y + th, x : x + tw])
            return torch.stack(wins)
        parts = []
        for b in range(idx[0] // n_win, (idx[-1] // n_win) + 1):
            lo = max(idx[0], b * n_win) - b * n_win
            hi = min(idx[-1] + 1, (b + 1) * n_win) - b * n_win
            parts.append(_C.extract_tiles(padded_np[b], origins[lo:hi], roi))
        return torch.from_numpy(parts[0] if len(parts) == 1 else np.concatenate(parts))

    accs: dict[int, _C.BandAccumulator] = {}  # live accumulators by image index

    def flush(b: int, row: int) -> None:
        """Copy finished padded rows [released, row) of image b into the cropped output."""
        acc = accs[b] if row < hp else accs.pop(b)
        assert output is not None
        r0 = acc.released_row
        probs, _ = acc.finalize_until(row)
        lo, hi = max(r0, top), min(row, top + height)
        if lo < hi:
            band = probs[:, lo - r0 : hi - r0, left : left + width]
            if output_np is not None:
                output_np[b, :, lo - top : hi - top] = band
            else:
                output[b, :, lo - top : hi - top].copy_(torch.from_numpy(band))

    total = n_img * n_win
    starts = range(0, total, sw_batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts)
    for s in starts:
        idx = range(s, min(s + sw_batch_size, total))
        seg = predictor(gather(idx), **kwargs)
        if not isinstance(seg, torch.Tensor) or seg.ndim != 4 or seg.shape[0] != len(idx) \
                or tuple(seg.shape[2:]) != roi:
            got = tuple(seg.shape) if isinstance(seg, torch.Tensor) else type(seg).__name__
            raise ValueError(f"predictor must return a (B, C_out, {th}, {tw}) tensor with "
                             f"B = {len(idx)}, got {got}")
        scores = np.ascontiguousarray(seg.detach().to("cpu", torch.float32).numpy())
        if output is None:
            output = torch.empty((n_img, scores.shape[1], height, width), dtype=out_dtype,
                                 device=out_device)
            if out_device.type == "cpu" and out_dtype != torch.bfloat16:
                output_np = output.numpy()
        # Split the batch at image and tile-row boundaries so each tile row is released as
        # soon as it is complete (keeps the band at roi_h rows).
        j = 0
        while j < len(idx):
            i = idx[j]
            b, w = divmod(i, n_win)
            row_end = min((w // n_cols + 1) * n_cols, n_win)
            k = min(len(idx) - j, row_end - w)
            if w == 0:
                accs[b] = _C.BandAccumulator(hp, wp, roi, scores.shape[1], window)
            accs[b].add(scores[j : j + k], origins[w : w + k])
            if w + k == row_end:
                flush(b, grid.final_row_after(row_end // n_cols))
            j += k
    assert output is not None
    return output
