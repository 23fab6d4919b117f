"""Data: readers, the label remap, normalisation, patch sampling and augmentation."""

from .io import (
    DataError,
    Sample,
    check_finite,
    find_pairs,
    group_of,
    load_dataset,
    read_image,
    read_mask,
)
from .normalize import Normalization
from .patches import Augment, CenterCropDataset, PatchDataset, center_crop, pad_to

__all__ = [
    "Augment",
    "CenterCropDataset",
    "DataError",
    "Normalization",
    "PatchDataset",
    "Sample",
    "center_crop",
    "check_finite",
    "find_pairs",
    "group_of",
    "load_dataset",
    "pad_to",
    "read_image",
    "read_mask",
]
