from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from temseg.data import DataError, find_pairs, group_of, load_dataset, read_image, read_mask
from temseg.data.normalize import Normalization
from temseg.labels import TEM_CLASSES


def test_remap_known_values():
    mask = np.array([[0, 50, 100], [150, 200, 0]], dtype=np.uint8)
    out = TEM_CLASSES.encode(mask)
    np.testing.assert_array_equal(out, [[0, 1, 2], [3, 4, 0]])
    np.testing.assert_array_equal(TEM_CLASSES.decode(out), mask)


@pytest.mark.parametrize("bad", [77, 255, 1])
def test_remap_rejects_other_values_naming_file(tmp_path: Path, bad: int):
    mask = np.zeros((8, 8), np.uint8)
    mask[2, 3] = bad
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, mask)
    with pytest.raises(DataError) as err:
        read_mask(path)
    assert str(path) in str(err.value) and str(bad) in str(err.value)


def test_remap_16bit_mask(tmp_path: Path):
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, np.array([[0, 200], [1000, 50]], np.uint16))
    with pytest.raises(DataError, match="1000"):
        read_mask(path)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("bigtiff", [False, True])
def test_read_tiff_bit_depths_and_pixel_size(tmp_path: Path, dtype, bigtiff: bool):
    rng = np.random.default_rng(0)
    img = rng.integers(0, np.iinfo(dtype).max, (33, 47)).astype(dtype)
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, img, bigtiff=bigtiff, resolution=(1e4 / 0.005, 1e4 / 0.005),
                     resolutionunit="CENTIMETER", metadata=None)
    out, px = read_image(path)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, img)
    assert px == pytest.approx(0.005, rel=1e-4)


def test_pixel_size_from_json_description(tmp_path: Path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8), metadata={"PixelSizeMicrometers": 0.0049})
    assert read_image(path)[1] == pytest.approx(0.0049)
    assert json.loads(tifffile.TiffFile(path).pages[0].description)["PixelSizeMicrometers"]


def test_no_pixel_size_when_absent(tmp_path: Path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8), metadata=None)
    assert read_image(path)[1] is None


@pytest.mark.parametrize("mode,dtype", [("L", np.uint8), ("I;16", np.uint16)])
def test_read_png(tmp_path: Path, mode: str, dtype):
    img = (np.arange(12 * 9).reshape(12, 9) * 7).astype(dtype)
    path = tmp_path / "a.png"
    Image.fromarray(img).save(path)
    assert Image.open(path).mode.startswith(mode[:1])
    out, px = read_image(path)
    np.testing.assert_array_equal(out.astype(np.int64), img.astype(np.int64))
    assert px is None


def test_normalization_independent_of_bit_depth():
    rng = np.random.default_rng(1)
    img8 = rng.integers(20, 230, (64, 64)).astype(np.uint8)
    img16 = img8.astype(np.uint16) * 257
    a, b = Normalization()(img8), Normalization()(img16)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert -1.2 < a.min() < -0.9 and 0.9 < a.max() < 1.2
    assert a.dtype == np.float32


def test_pairs_and_errors(blocks: Path, tmp_path: Path):
    pairs = find_pairs(blocks)
    assert [p[0].stem for p in pairs] == ["img_0", "img_1", "img_2"]
    with pytest.raises(DataError, match="folder not found"):
        find_pairs(tmp_path / "nope")
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(DataError, match="no images"):
        find_pairs(empty)
    (blocks / "masks" / "img_1.tif").unlink()
    with pytest.raises(DataError, match="no mask for image.*img_1"):
        find_pairs(blocks)


def test_size_mismatch_names_files(blocks: Path):
    tifffile.imwrite(blocks / "masks" / "img_2.tif", np.zeros((10, 12), np.uint8))
    with pytest.raises(DataError, match="img_2.tif: mask size 12x10 does not match"):
        load_dataset(blocks)


def test_corrupt_file_names_it(blocks: Path):
    bad = blocks / "images" / "img_0.tif"
    bad.write_bytes(b"II*\x00garbage-not-a-tiff")
    with pytest.raises(DataError, match="img_0.tif: cannot read image"):
        load_dataset(blocks)


def test_groups_from_bids_subject():
    assert group_of("sub-366A_sample-0001_acq-roi_TEM") == "sub-366A"
    assert group_of("slide_7") == "slide_7"
