"""MONAI-compatible 2-D sliding-window inference backed by the C++ tiler (:mod:`temseg._C`):
:func:`sliding_window_inference` and :class:`SlidingWindowInferer` (MONAI's names).

The grid (``TileGrid``), blending window (``make_window``) and the streaming band
accumulator come from the C++ core, batching and stitching from the tile loop of
:mod:`.tiles` (shared with the whole-slide pipeline); this module only pads the input,
produces the tile rows and copies finished row bands into the output tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from temseg import _C

from ..spec import DEFAULT_OVERLAP
from .tiles import Stitcher, TileRow, accumulator, predict_rows

__all__ = ["DEFAULT_OVERLAP", "PADDING_MODES", "SlidingWindowInferer", "pad_like_monai",
           "sliding_window_inference"]

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
    rows = _tile_rows(padded, grid, roi)
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, total=n_img * grid.n_rows, unit="tile row")
    stitcher = Stitcher(lambda b, c: accumulator(hp, wp, roi, c, window),
                        lambda k: grid.final_row_after(k + 1))
    out_device = torch.device(device) if device is not None else inputs.device
    out_dtype = inputs.dtype if inputs.dtype.is_floating_point else torch.float32
    output: torch.Tensor | None = None
    for band in stitcher(predict_rows(rows, lambda x: predictor(x, **kwargs), sw_batch_size,
                                      roi)):
        if output is None:
            output = torch.empty((n_img, band.probs.shape[0], height, width),
                                 dtype=out_dtype, device=out_device)
        lo, hi = max(band.row0, top), min(band.row1, top + height)
        if lo < hi:
            part = band.probs[:, lo - band.row0 : hi - band.row0, left : left + width]
            output[band.key, :, lo - top : hi - top].copy_(torch.from_numpy(part))
    assert output is not None
    return output


def _tile_rows(padded: torch.Tensor, grid: Any, roi: tuple[int, int]) -> Iterator[TileRow]:
    """Tile rows of every image of ``padded`` (N, C, H, W), image-major then grid order.
    CPU float32 inputs are cut by the C++ extractor (GIL released); others by torch."""
    th, tw = roi
    origins = grid.origins()  # (n_win, 2) int64, row-major
    n_cols = grid.n_cols
    as_np = padded.detach().contiguous().numpy() \
        if padded.device.type == "cpu" and padded.dtype == torch.float32 else None
    for b in range(padded.shape[0]):
        for k in range(grid.n_rows):
            row = origins[k * n_cols : (k + 1) * n_cols]
            if as_np is not None:
                tiles: Any = _C.extract_tiles(as_np[b], row, roi)
            else:
                tiles = torch.stack([padded[b, :, y : y + th, x : x + tw] for y, x in row])
            yield TileRow(b, k, tiles, row)


@dataclass
class SlidingWindowInferer:
    """MONAI's ``SlidingWindowInferer``: the window settings, applied by calling it.

    ``inferer(inputs, network)`` is :func:`sliding_window_inference` with these settings;
    the whole-slide pipeline and :class:`~temseg.inference.Predictor` take the same object.
    ``roi_size`` None: the model's inference tile (``ModelSpec.roi_size``, twice its
    training patch) where a model is known. ``overlap`` defaults to temseg's
    :data:`DEFAULT_OVERLAP` (0.125; MONAI's class defaults to 0.25).
    """

    roi_size: int | tuple[int, int] | None = None
    sw_batch_size: int = 4
    overlap: float = DEFAULT_OVERLAP
    mode: str = "gaussian"
    sigma_scale: float = 0.125
    padding_mode: str = "reflect"
    cval: float = 0.0
    progress: bool = False

    def __post_init__(self) -> None:
        roi = (self.roi_size,) * 2 if isinstance(self.roi_size, int) else self.roi_size
        if roi is not None and any(int(r) < 1 for r in roi):
            raise ValueError(f"roi_size must be positive, got {self.roi_size!r}")
        if self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be >= 0 and < 1, got {self.overlap}")
        if self.mode not in ("gaussian", "constant", "cosine"):
            raise ValueError(f"mode must be gaussian, constant or cosine, got {self.mode!r}")
        if not self.sigma_scale > 0:
            raise ValueError(f"sigma_scale must be > 0, got {self.sigma_scale}")

    def roi(self, default: int | None = None) -> tuple[int, int]:
        """(th, tw): ``roi_size``, else ``default`` (ValueError when neither is known)."""
        roi = self.roi_size if self.roi_size is not None else default
        if roi is None:
            raise ValueError("roi_size is required when no model tells the tile size")
        return (int(roi), int(roi)) if isinstance(roi, int) else (int(roi[0]), int(roi[1]))

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor],
                 **kwargs: Any) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H, W); ``kwargs`` go to ``network``."""
        return sliding_window_inference(
            inputs, self.roi(), self.sw_batch_size, network, self.overlap, self.mode,
            self.sigma_scale, self.padding_mode, self.cval, progress=self.progress, **kwargs)
