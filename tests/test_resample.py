"""Resampling inputs to the model's pixel size (temseg.io.resample, segment_slide)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F

from temseg.checkpoint import SegmentationModel, save_checkpoint
from temseg.cli import main
from temseg.inference.slide import segment_slide
from temseg.io.resample import ResampledSource, resampled_shape
from temseg.io.slides import ArraySource, open_slide
from temseg.metrics import confusion_matrix
from temseg.models import UNetConfig, build_model
from temseg.synth import render

MODEL_UM = 0.01
NARROW = UNetConfig(width=2, depth=2, blocks_per_stage=1, bottleneck_blocks=1, heads=1,
                    attention=False)
OPTS = {"roi_size": 64, "sw_batch_size": 3, "out_tile": 64, "progress": False}


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    """A tiny untrained model trained "at" 10 nm/px; zero head bias: several classes."""
    torch.manual_seed(0)
    m = SegmentationModel(build_model(NARROW), patch_size=32, pixel_size_um=MODEL_UM).eval()
    with torch.no_grad():
        m.net.head.bias.zero_()
    return m


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    image, labels = render(150, 230, seed=3)
    return image, labels


def torch_resize(a: np.ndarray, shape: tuple[int, int], mode: str) -> np.ndarray:
    """PyTorch's resize in float64 (in float32 its sample positions carry ~1e-5 errors).
    "linear": bilinear along each axis in turn, anti-aliased along an axis that shrinks."""
    t = torch.from_numpy(a.astype(np.float64))[None, None]
    if mode != "linear":
        return F.interpolate(t, size=shape, mode=mode)[0, 0].numpy()
    t = F.interpolate(t, size=(shape[0], a.shape[1]), mode="bilinear", align_corners=False,
                      antialias=shape[0] < a.shape[0])
    t = F.interpolate(t, size=shape, mode="bilinear", align_corners=False,
                      antialias=shape[1] < a.shape[1])
    return t[0, 0].numpy()


@pytest.mark.parametrize("shape", [(251, 389), (61, 97), (150, 1), (7, 230), (97, 400),
                                   (151, 229)])
def test_linear_matches_torch_interpolate(phantom, shape):
    image = phantom[0]
    got = ResampledSource(ArraySource(image), shape, order=1).read(0, shape[0])
    assert got.dtype == np.float32 and got.shape == shape and got.flags.c_contiguous
    # float32 sums of up to ~2 * 230 terms of 0-255 values
    np.testing.assert_allclose(got, torch_resize(image, shape, "linear"), atol=1e-4, rtol=2e-6)


@pytest.mark.parametrize("shape", [(251, 389), (61, 97), (300, 11)])
def test_nearest_matches_torch_nearest_exact(phantom, shape):
    labels = phantom[1]
    got = ResampledSource(ArraySource(labels), shape, order=0).read(0, shape[0])
    assert got.dtype == labels.dtype
    ref = torch_resize(labels, shape, "nearest-exact")
    # PyTorch rounds its scale: samples exactly on a pixel border may land on the pixel before
    rows = [i for i in range(shape[0]) if ((2 * i + 1) * 150) % (2 * shape[0])]
    cols = [j for j in range(shape[1]) if ((2 * j + 1) * 230) % (2 * shape[1])]
    np.testing.assert_array_equal(got[np.ix_(rows, cols)], ref[np.ix_(rows, cols)])
    i = np.arange(shape[0])[:, None] * 2 + 1
    j = np.arange(shape[1])[None, :] * 2 + 1
    exact = labels[i * 150 // (2 * shape[0]), j * 230 // (2 * shape[1])]
    np.testing.assert_array_equal(got, exact)


def test_shrinking_averages_instead_of_aliasing():
    """Stripes of 0 / 200 one pixel wide, halved: every input pixel counts (mean ~100);
    point sampling would give all 0 or all 200."""
    stripes = np.tile(np.array([0, 200], np.uint8), (64, 64))
    got = ResampledSource(ArraySource(stripes), (64, 64)).read(0, 64)
    np.testing.assert_allclose(got[:, 1:-1], 100.0, atol=1e-3)


def test_regions_equal_the_whole_and_tiff_equals_array(phantom, tmp_path: Path):
    """Forward row bands, column panels starting over, and strided subsamples of a tiled
    TIFF give exactly the pixels of the whole resampled array."""
    image = phantom[0]
    path = tmp_path / "tiled.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(image, tile=(32, 32), compression="zlib")
    shape = (263, 401)
    whole = ResampledSource(ArraySource(image), shape).read(0, shape[0])
    with open_slide(path) as src:
        rs = ResampledSource(src, shape)
        for x0, x1 in [(0, 150), (150, 401), (7, 9)]:
            for y0 in range(0, shape[0], 40):
                y1 = min(y0 + 57, shape[0])
                np.testing.assert_array_equal(rs.read(y0, y1, x0, x1), whole[y0:y1, x0:x1])
        np.testing.assert_array_equal(rs[::5, ::3], whole[::5, ::3])


def test_resampled_shape():
    assert resampled_shape((600, 601), 0.005, 0.01) == (300, 300)  # round half to even
    assert resampled_shape((3, 3), 0.001, 0.01) == (1, 1)


@pytest.mark.parametrize("pixel_um", [0.005, 0.016])  # finer (down) and coarser (up)
def test_segment_slide_resamples_and_maps_back(model, phantom, tmp_path: Path, pixel_um):
    """Segmented on the model's grid; its uint8 probabilities brought back through the
    images' filter (ResampledSource order 1, checked against PyTorch above) and the labels
    their argmax (nnU-Net's rule); uncertainty nearest; the confusion matrix on the input's
    grid. The labels are then closer to the truth than the model grid's labels taken back
    nearest."""
    image, truth = phantom
    out = tmp_path / "mask.tif"
    res = segment_slide(model, image, out, pixel_size_um=pixel_um, mask=truth, resample="always",
                        probabilities_path=tmp_path / "p.tif",
                        uncertainty_path=tmp_path / "u.tif", **OPTS)
    shape = resampled_shape(image.shape, pixel_um, MODEL_UM)
    resampled = ResampledSource(ArraySource(image), shape).read(0, shape[0])
    ref = segment_slide(model, resampled, tmp_path / "ref.tif",
                        probabilities_path=tmp_path / "ref_p.tif",
                        uncertainty_path=tmp_path / "ref_u.tif", **OPTS)
    ref_probs = tifffile.imread(ref.outputs["probabilities"])
    assert ref_probs.shape == (5, *shape)

    def back(a: np.ndarray, order: int = 0) -> np.ndarray:
        return ResampledSource(ArraySource(a), image.shape, order=order).read(0, image.shape[0])

    smooth = np.stack([back(p, order=1) for p in ref_probs])
    expect_labels = smooth.argmax(0)
    got = tifffile.imread(res.outputs["mask"])
    labels = model.classes.encode(got)
    np.testing.assert_array_equal(labels, expect_labels)
    assert len(np.unique(got)) >= 2
    nearest = model.classes.encode(back(tifffile.imread(ref.outputs["mask"])))
    assert (labels != nearest).any()  # not the 2 x 2 blocks of nearest sampling
    assert (labels == truth).mean() >= (nearest == truth).mean()
    np.testing.assert_array_equal(res.confusion, confusion_matrix(labels, truth, 5))
    np.testing.assert_array_equal(res.class_pixels, np.bincount(labels.ravel(), minlength=5))
    assert res.shape == image.shape and "resample_back" in res.timings
    probs = tifffile.imread(res.outputs["probabilities"])
    assert probs.shape == (5, *image.shape) and probs.dtype == np.uint8
    np.testing.assert_array_equal(probs, np.clip(np.rint(smooth), 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(tifffile.imread(res.outputs["uncertainty"]),
                                  back(tifffile.imread(ref.outputs["uncertainty"])))
    with tifffile.TiffFile(out) as tif:  # the input's pixel size is recorded
        x_res = tif.pages[0].tags["XResolution"].value
        assert abs(1e4 / (x_res[0] / x_res[1]) - pixel_um) < 1e-6
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("ref"))
    assert left == ["mask.tif", "p.tif", "u.tif"]  # no temporary left behind


def test_no_resampling_when_sizes_agree_or_off_or_coarser_in_auto(model, phantom, caplog):
    image = phantom[0]
    plain = segment_slide(model, image, None, **OPTS)
    close = segment_slide(model, image, None, pixel_size_um=MODEL_UM * 1.01, **OPTS)
    coarser = segment_slide(model, image, None, pixel_size_um=0.02, **OPTS)  # auto
    finer = segment_slide(model, image, None, pixel_size_um=0.005, **OPTS)  # auto: shrinks
    with caplog.at_level(logging.WARNING, logger="temseg.slide"):
        off = segment_slide(model, image, None, pixel_size_um=0.005, resample="never", **OPTS)
    assert "resampling is off" in caplog.text
    for r in (close, coarser, off):
        assert "resample_back" not in r.timings
        np.testing.assert_array_equal(r.class_pixels, plain.class_pixels)
    assert plain.tiles == close.tiles == coarser.tiles == off.tiles
    assert "resample_back" in finer.timings and finer.shape == image.shape
    with pytest.raises(ValueError, match="resample must be one of"):
        segment_slide(model, image, None, resample="yes", **OPTS)


def test_cli_predict_pixel_size(model, phantom, tmp_path: Path, caplog):
    image = phantom[0]
    save_checkpoint(tmp_path / "m.pt", model)
    tifffile.imwrite(tmp_path / "img.tif", image)  # no pixel size in the file
    with caplog.at_level(logging.INFO, logger="temseg.slide"):
        assert main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "img.tif"), "--out",
                     str(tmp_path / "out"), "--pixel-size", "0.02", "--roi-size", "64",
                     "--resample", "always", "--no-progress"]) == 0
    assert "resampling 230x150 px at 0.02 um to 460x300 px" in caplog.text
    assert tifffile.imread(tmp_path / "out" / "img_mask.tif").shape == image.shape
