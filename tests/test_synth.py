"""Tests of the synthetic TEM phantom generator (temseg.synth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from temseg import synth
from temseg.synth import CLASS_VALUES, PhantomConfig, render, render_region, write_dataset

LUT = np.asarray(CLASS_VALUES, dtype=np.uint8)


def _clear_caches() -> None:
    synth._cell_units.cache_clear()
    synth._cell_dots.cache_clear()


def test_shapes_dtypes_and_render_is_region_at_origin() -> None:
    image, labels = render(200, 300, 0)
    assert image.shape == labels.shape == (200, 300)
    assert image.dtype == np.uint8 and labels.dtype == np.uint8
    assert labels.max() <= 4
    assert image.std() > 20  # not a flat image
    image2, labels2 = render_region(0, 0, 200, 300, 0)
    assert np.array_equal(image, image2) and np.array_equal(labels, labels2)


def test_same_seed_identical_different_seed_different() -> None:
    a_img, a_lab = render(256, 320, 7)
    _clear_caches()
    b_img, b_lab = render(256, 320, 7)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    c_img, c_lab = render(256, 320, 8)
    assert not np.array_equal(a_img, c_img)
    assert not np.array_equal(a_lab, c_lab)


def test_region_is_crop_of_larger_region() -> None:
    # the big window straddles cell (256), chunk (256 rows / 1024 cols), noise-block (128)
    # borders and negative coordinates
    y0, x0, h, w = -160, -96, 700, 1240
    seed = 3
    big_img, big_lab = render_region(y0, x0, h, w, seed)
    _clear_caches()  # crops must not depend on what happens to be cached
    windows = [
        (-160, -96, 1, 1), (0, 0, 256, 256), (250, 250, 12, 12), (-5, 250, 300, 20),
        (127, 1020, 10, 30), (255, 1023, 2, 2), (100, -96, 37, 1240), (311, 517, 229, 401),
        (-160, 900, 700, 244), (383, 0, 5, 5),
    ]
    for y, x, hh, ww in windows:
        img, lab = render_region(y, x, hh, ww, seed)
        sl = (slice(y - y0, y - y0 + hh), slice(x - x0, x - x0 + ww))
        assert np.array_equal(img, big_img[sl]), (y, x, hh, ww)
        assert np.array_equal(lab, big_lab[sl]), (y, x, hh, ww)
        assert np.array_equal(synth.render_labels_region(y, x, hh, ww, seed), big_lab[sl])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_classes_with_reasonable_share(seed: int) -> None:
    _, labels = render(512, 512, seed)
    share = np.bincount(labels.ravel(), minlength=5) / labels.size
    assert share.size == 5
    assert share[0] <= 0.60, share
    assert (share[1:] >= 0.02).all(), share


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_all_classes_present_at_256(seed: int) -> None:
    labels = synth.render_labels_region(0, 0, 256, 256, seed)
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3, 4}


def test_image_statistics_match_tissue() -> None:
    image, labels = render(512, 512, 11)
    mat = synth._materials(0, 0, 512, 512, 11)
    assert np.array_equal(synth._CLASS_OF[mat], labels)
    img = image.astype(np.float64)

    def mean(m: int) -> float:
        sel = mat == m
        assert sel.sum() > 200, m
        return float(img[sel].mean())

    myelin, axoplasm, matrix = mean(synth._MYELIN), mean(synth._AXO), mean(synth._ECM)
    lumen, schwann = mean(synth._LUMEN), mean(synth._CYTO)
    assert myelin < 80 and myelin + 60 < matrix < axoplasm - 20
    assert lumen > 200 and lumen > axoplasm
    assert schwann < matrix
    # unmyelinated axons are brighter than the Schwann cytoplasm that wraps them
    assert mean(synth._UAXO) > schwann + 40


def test_write_dataset_round_trip(tmp_path: Path) -> None:
    cfg = PhantomConfig(pixel_size_um=0.004)
    paths = write_dataset(tmp_path / "ds", n_images=2, height=160, width=192, seed=5, config=cfg)
    assert [p.name for p in paths] == ["synth_000.tif", "synth_001.tif"]
    for i, p in enumerate(paths):
        assert p == tmp_path / "ds" / "images" / p.name
        image, labels = render(160, 192, 5 + i, cfg)
        mask_path = tmp_path / "ds" / "masks" / p.name
        mask = tifffile.imread(mask_path)
        assert np.array_equal(tifffile.imread(p), image)
        assert mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= set(CLASS_VALUES)
        assert np.array_equal(mask, LUT[labels])
        for f in (p, mask_path):
            with tifffile.TiffFile(f) as tf:
                page = tf.pages[0]
                assert page.tags["ResolutionUnit"].value == 3  # centimetre
                assert page.resolution[0] == pytest.approx(1e4 / 0.004)
                assert tf.shaped_metadata[0]["PixelSizeMicrometers"] == pytest.approx(0.004)
    # atomic writes leave no temporary files behind
    assert sorted(x.name for x in (tmp_path / "ds" / "images").iterdir()) == [
        "synth_000.tif", "synth_001.tif"]
    assert len(list((tmp_path / "ds" / "masks").iterdir())) == 2


def test_write_slide_tiled_bigtiff_equals_render(tmp_path: Path) -> None:
    h, w, seed = 1500, 1300, 9
    out = synth.write_slide(tmp_path / "slide.tif", h, w, seed=seed, tile=256, band_rows=512,
                            mask_path=tmp_path / "slide_mask.tif")
    assert out == tmp_path / "slide.tif"
    image, labels = render(h, w, seed)
    for path, expected in ((out, image), (tmp_path / "slide_mask.tif", LUT[labels])):
        with tifffile.TiffFile(path) as tf:
            assert tf.is_bigtiff
            page = tf.pages[0]
            assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
            assert page.shape == (h, w) and page.dtype == np.uint8
            assert tf.shaped_metadata[0]["PixelSizeMicrometers"] == pytest.approx(0.005)
            assert np.array_equal(page.asarray(), expected)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["slide.tif", "slide_mask.tif"]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        PhantomConfig(cell_size=64)
    with pytest.raises(ValueError):
        PhantomConfig(g_ratio_range=(0.8, 0.6))
    with pytest.raises(ValueError):
        render(0, 10, 0)
