"""Shared fixtures: small on-disk datasets made here (never the real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile


def blocks_dataset(root: Path, n: int = 3, size: int = 96, seed: int = 0) -> Path:
    """A trivially learnable dataset: each class is a block of its own grey level.
    Writes root/images/img_i.tif (uint8) and root/masks/img_i.tif (0/50/100/150/200)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        labels = rng.integers(0, 5, size=(size // 16, size // 16)).repeat(16, 0).repeat(16, 1)
        image = (40 + 40 * labels + rng.normal(0, 5, labels.shape)).clip(0, 255).astype(np.uint8)
        tifffile.imwrite(root / "images" / f"img_{i}.tif", image)
        tifffile.imwrite(root / "masks" / f"img_{i}.tif", (labels * 50).astype(np.uint8))
    return root


@pytest.fixture
def blocks(tmp_path: Path) -> Path:
    return blocks_dataset(tmp_path / "blocks")
