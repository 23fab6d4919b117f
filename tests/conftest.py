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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a tiny untrained model (width 4, depth 2, training patch 64: inference
    tile 128) with a zero head bias, so that several classes come out."""
    import torch

    from temseg.checkpoint import SegmentationModel, save_checkpoint
    from temseg.models import UNetConfig, build_model

    torch.manual_seed(0)
    net = build_model(UNetConfig(width=4, depth=2, blocks_per_stage=1, bottleneck_blocks=1,
                                 heads=1, attention=False))
    model = SegmentationModel(net, patch_size=64).eval()
    with torch.no_grad():
        model.net.head.bias.zero_()
    path = tmp_path_factory.mktemp("tiny-model") / "tiny.pt"
    save_checkpoint(path, model)
    return path
