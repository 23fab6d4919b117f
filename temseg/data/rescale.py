"""Training data at a chosen pixel size (nnU-Net's target spacing).

A model sees structures at the scale it was trained on. Training at a coarser pixel size than
the data's puts more tissue into each 256 px patch (whole large axons, with their myelin, rather
than their interiors alone) for the same cost per step; inference then resamples inputs to the
model's pixel size and maps the labels back (``temseg predict``'s ``--resample auto``), so
masks stay at the input's resolution.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from .io import DataError, Sample

log = logging.getLogger("temseg.data")


def resample_sample(sample: Sample, pixel_size_um: float) -> Sample:
    """``sample`` seen at ``pixel_size_um``: the image bilinear with antialiasing (float32),
    the labels nearest-exact; the conventions of :mod:`temseg.io.resample`, so training and
    inference resample alike. Within 2 % of the sample's own pixel size it is returned as is.
    DataError naming the sample when it records no pixel size."""
    from ..io.resample import resampled_shape

    if not sample.pixel_size_um:
        raise DataError(f"{sample.name}: the image records no pixel size (TIFF resolution "
                        f"tags or PixelSizeMicrometers): cannot resample it to {pixel_size_um}")
    if abs(sample.pixel_size_um / pixel_size_um - 1) <= 0.02:
        return sample
    shape = resampled_shape(sample.image.shape, sample.pixel_size_um, pixel_size_um)
    image = torch.from_numpy(np.asarray(sample.image, np.float32))[None, None]
    image = F.interpolate(image, size=shape, mode="bilinear", antialias=True,
                          align_corners=False)[0, 0].numpy()
    labels = torch.from_numpy(sample.labels.astype(np.uint8))[None, None]
    labels = F.interpolate(labels, size=shape, mode="nearest-exact")[0, 0].numpy()
    return replace(sample, image=image, labels=labels.astype(sample.labels.dtype),
                   pixel_size_um=float(pixel_size_um))


def resample_samples(samples: list[Sample], pixel_size_um: float | None) -> list[Sample]:
    """The samples finer than ``pixel_size_um`` (by more than 2 %) shrunk to it; coarser ones
    and those that record no pixel size are kept as they are (never enlarged: that would
    only blur them), and said in the log. None: all as they are."""
    if pixel_size_um is None:
        return samples
    out, kept = [], []
    for s in samples:
        finer = bool(s.pixel_size_um) and s.pixel_size_um < pixel_size_um / 1.02
        out.append(resample_sample(s, pixel_size_um) if finer else s)
        if not finer:
            kept.append(s.name)
    if len(kept) < len(samples):
        log.info("training at %g um per pixel: %d image(s) shrunk to it", pixel_size_um,
                 len(samples) - len(kept))
    if kept:
        log.info("kept at their own pixel size (as coarse or coarser, or unrecorded): %s",
                 ", ".join(kept[:5]) + (" ..." if len(kept) > 5 else ""))
    return out
