"""Baseline whole-image inference: a simple non-blended tile loop in NumPy.

The whole slide is read into memory and normalised to float32, padded to a multiple of the
tile, cut into non-overlapping tiles that go through the model (fp32 eager, NCHW) a batch at a
time, and the softmax scores are written into a full-size (C, H, W) float32 array whose argmax
is the segmentation. No overlap, no blending, no streaming.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch
from torch import nn

from temseg.data.normalize import Normalization
from temseg.labels import TEM_CLASSES


@torch.inference_mode()
def tile_loop_probabilities(model: nn.Module, image: np.ndarray, tile: int = 256,
                            batch_size: int = 8) -> np.ndarray:
    """Class probabilities of a normalised image.

    Args:
        model: (B, 1, tile, tile) float32 -> (B, C, tile, tile) logits.
        image: (H, W) float32, already normalised.
        tile: tile side; the image is reflect-padded (edge-padded where it is smaller than the
            pad) up to a multiple of it.
        batch_size: tiles per model call.

    Returns:
        (C, H, W) float32 softmax scores.
    """
    height, width = image.shape
    ph, pw = (-height) % tile, (-width) % tile
    mode = "reflect" if ph < height and pw < width else "edge"
    padded = np.pad(image.astype(np.float32, copy=False), ((0, ph), (0, pw)), mode=mode)
    origins = [(y, x) for y in range(0, padded.shape[0], tile)
               for x in range(0, padded.shape[1], tile)]
    probs: np.ndarray | None = None
    for i in range(0, len(origins), batch_size):
        chunk = origins[i : i + batch_size]
        batch = np.stack([padded[y : y + tile, x : x + tile] for y, x in chunk])[:, None]
        scores = torch.softmax(model(torch.from_numpy(batch)), dim=1).numpy()
        if probs is None:
            probs = np.zeros((scores.shape[1], *padded.shape), dtype=np.float32)
        for (y, x), s in zip(chunk, scores, strict=True):
            probs[:, y : y + tile, x : x + tile] = s
    assert probs is not None
    return probs[:, :height, :width]


def tile_loop_inference(model: nn.Module, image: np.ndarray, tile: int = 256,
                        batch_size: int = 8) -> np.ndarray:
    """Labels of a normalised (H, W) float32 image: (H, W) uint8 argmax classes."""
    probs = tile_loop_probabilities(model, image, tile, batch_size)
    return probs.argmax(axis=0).astype(np.uint8)


def segment_file(model: nn.Module, src: str | Path, dst: str | Path, tile: int = 256,
                 batch_size: int = 8, normalization: Normalization | None = None) -> Path:
    """Read a slide, segment it with :func:`tile_loop_inference`, write the labels as a uint8
    TIFF in the mask grey values 0/50/100/150/200 (the seed's whole-file path: everything in
    memory at once)."""
    image = tifffile.imread(src)
    normalized = (normalization or Normalization())(image)
    labels = tile_loop_inference(model.eval(), normalized, tile, batch_size)
    tifffile.imwrite(dst, TEM_CLASSES.decode(labels), compression="zlib")
    return Path(dst)
