"""Calibration patches: a few normalised training patches kept with a model, from which its
int8 version is calibrated (:func:`temseg.export.quantize.quantize_onnx`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .io import Sample
from .normalize import Normalization
from .patches import pad_to

__all__ = ["CALIBRATION_PATCHES", "calibration_patches"]

CALIBRATION_PATCHES = 16


def calibration_patches(samples: Sequence[Sample], normalization: Normalization,
                        patch_size: int, count: int = CALIBRATION_PATCHES,
                        seed: int = 0) -> np.ndarray:
    """``count`` patches (N, 1, P, P) float32 of ``samples`` (already at the model's pixel
    size), normalised as training normalises them, at random positions (reflect-padded when
    an image is smaller than P), the images taken in turn. ValueError without samples."""
    if not samples:
        raise ValueError("no images to take calibration patches from")
    rng = np.random.default_rng(seed)
    tiles = []
    for i in range(count):
        image = pad_to(normalization(samples[i % len(samples)].image), patch_size, patch_size)
        y = int(rng.integers(0, image.shape[0] - patch_size + 1))
        x = int(rng.integers(0, image.shape[1] - patch_size + 1))
        tiles.append(image[y:y + patch_size, x:x + patch_size])
    return np.stack(tiles)[:, None].astype(np.float32)
