"""OME-Zarr in and out (temseg.io.omezarr), without Ray: the NGFF label image written by
``temseg predict --format ome-zarr`` checked with ome-zarr's own reader, OME-Zarr 0.4 / 0.5
inputs segmented like the same image as TIFF, the pyramid's mode downsampling, the
completeness rule and regions of a slide written one by one."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from temseg.cli import main
from temseg.data import DataError
from temseg.inference import Predictor
from temseg.io.omezarr import LabelStore, OmeZarrSource, downsample_mode, pyramid_shapes
from temseg.io.slides import open_slide
from temseg.labels import TEM_CLASSES
from temseg.synth import render

ome_zarr = pytest.importorskip("ome_zarr")
PX = 0.02  # um
OPTS = ["--backend", "torch", "--amp", "off", "--no-progress", "--out-tile", "64",
        "--panel-width", "128"]


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint: Path) -> Path:
    return tiny_checkpoint


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return render(200, 330, seed=4)[0]


def write_tiff(path: Path, image: np.ndarray) -> Path:
    res = 1e4 / PX
    tifffile.imwrite(path, image, tile=(64, 64), resolution=(res, res),
                     resolutionunit="CENTIMETER")
    return path


def write_ome(path: Path, image: np.ndarray, version: str) -> Path:
    """An OME-Zarr image written by ome-zarr itself (axes yx, micrometres, a pyramid)."""
    from ome_zarr.format import format_from_version
    from ome_zarr.writer import write_image

    fmt = format_from_version(version)
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    shapes = [image.shape, tuple(-(-s // 2) for s in image.shape)]
    write_image(image, group, axes="yx", axes_units={"y": "micrometer", "x": "micrometer"},
                scale={"y": PX, "x": PX}, fmt=fmt, scale_factors=[2],
                storage_options={"chunks": (64, 64)})
    assert [tuple(group[k].shape) for k in sorted(group.array_keys())] == shapes
    return path


def test_label_image_opens_with_ome_zarr_reader(ckpt, image, tmp_path: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    src = write_tiff(tmp_path / "a.tif", image)
    assert main(["predict", str(ckpt), str(src), "--out", str(tmp_path / "o"), *OPTS]) == 0
    assert main(["predict", str(ckpt), str(src), "--out", str(tmp_path / "o"), *OPTS,
                 "--format", "ome-zarr"]) == 0
    store = tmp_path / "o" / "a_mask.ome.zarr"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "a_mask.ome.zarr", "a_mask.tif", "a_overlay.png"]  # no .part, no progress left
    node = next(iter(Reader(parse_url(str(store)))()))
    assert node.load(Label) is not None and node.load(Multiscales) is not None
    shapes = [tuple(d.shape) for d in node.data]
    assert shapes == pyramid_shapes(image.shape, 64) and len(shapes) == 4
    level0 = np.asarray(node.data[0])
    np.testing.assert_array_equal(level0, tifffile.imread(tmp_path / "o" / "a_mask.tif"))
    assert len(np.unique(level0)) >= 2
    np.testing.assert_array_equal(np.asarray(node.data[1]), downsample_mode(level0))
    scale = node.metadata["coordinateTransformations"][0][0]
    assert scale == {"type": "scale", "scale": [PX, PX]}
    assert [a["unit"] for a in node.metadata["axes"]] == ["micrometer", "micrometer"]
    props = node.metadata["properties"]
    assert [props[v]["class"] for v in TEM_CLASSES.values] == list(TEM_CLASSES.names)
    assert node.metadata["color"][50] == pytest.approx(
        [c / 255 for c in TEM_CLASSES.colors[1]] + [1.0])
    assert open_slide(store).pixel_size_um == pytest.approx(PX)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_input_equals_tiff_input(version, ckpt, image, tmp_path: Path) -> None:
    tif = write_tiff(tmp_path / "b.tif", image)
    ome = write_ome(tmp_path / "b.ome.zarr", image, version)
    source = open_slide(ome)
    assert isinstance(source, OmeZarrSource) and source.shape == image.shape
    assert source.pixel_size_um == pytest.approx(PX)
    np.testing.assert_array_equal(source.read(10, 90, 5, 300), image[10:90, 5:300])
    for inp, out in ((tif, "t"), (ome, "z")):
        assert main(["predict", str(ckpt), str(inp), "--out", str(tmp_path / out), *OPTS]) == 0
    # outputs are named after the stem without .ome.zarr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "z" / "b_mask.tif"),
                                  tifffile.imread(tmp_path / "t" / "b_mask.tif"))
    level1 = open_slide(ome, level=1)
    assert level1.shape == (100, 165) and level1.pixel_size_um == pytest.approx(2 * PX)
    assert main(["predict", str(ckpt), str(ome), "--out", str(tmp_path / "l1"), *OPTS,
                 "--level", "1"]) == 0
    assert tifffile.imread(tmp_path / "l1" / "b_mask.tif").shape == (100, 165)
    with pytest.raises(DataError, match="level 2 asked"):
        open_slide(ome, level=2)


def test_downsample_mode() -> None:
    block = np.array([[1, 2, 7, 7, 4],
                      [2, 2, 8, 9, 4],
                      [3, 4, 5, 5, 6]], np.uint8)
    # majority 2; a 2-2 tie (7 top-left); no majority -> top-left; odd edges repeat
    np.testing.assert_array_equal(downsample_mode(block), [[2, 7, 4], [3, 5, 6]])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (37, 50)).astype(np.uint8)
    small = downsample_mode(labels)
    assert small.shape == (19, 25) and set(np.unique(small)) <= set(np.unique(labels))


def test_interrupted_store_never_looks_complete(tmp_path: Path) -> None:
    path = tmp_path / "x_mask.ome.zarr"
    job = {"input": "x.tif", "size": 1}
    store = LabelStore.create(path, (100, 130), TEM_CLASSES, 64, PX, job)
    writer = store.writer()
    writer.add(np.full((100, 64), 50, np.uint8), 0, 0)  # holds the last 36 rows
    writer.flush()
    store.mark("region-00000", {"columns": [0, 64]})
    assert not path.exists() and LabelStore.part_path(path).is_dir()
    with pytest.raises(DataError, match="incomplete temseg output"):
        open_slide(LabelStore.part_path(path))
    assert LabelStore.resume(path, {**job, "size": 2}) is None  # another input: start again
    again = LabelStore.resume(path, job)
    assert again is not None and list(again.marks()) == ["region-00000"]
    again.build_pyramid()
    assert again.finish() == path and not LabelStore.progress_path(path).exists()
    assert open_slide(path).read(0, 100, 0, 64).min() == 50
    assert not LabelStore.part_path(path).exists()


def test_regions_written_in_any_order_equal_whole_slide(ckpt, tmp_path: Path) -> None:
    """Predictor.predict_region over every panel (shuffled) == predict_file, bit for bit."""
    image = render(160, 576, seed=8)[0]
    src = write_tiff(tmp_path / "c.tif", image)
    p = Predictor.open(ckpt, "torch", "cpu", amp="off", progress=False,
                       slide_options={"panel_width": 128, "out_tile": 64})
    whole = p.predict_file(src, tmp_path / "w", mask_format="ome-zarr", overlay=False)
    layout = p.layout(src)
    assert len(layout.panels) == 5 and layout.pixel_size_um == pytest.approx(PX)
    path = tmp_path / "r" / "c_mask.ome.zarr"
    store = LabelStore.create(path, layout.shape, TEM_CLASSES, 64, layout.pixel_size_um)
    order = list(range(len(layout.panels)))
    random.Random(0).shuffle(order)
    for i in order:
        res = p.predict_region(src, path, f"region-{i:05d}", [i], layout.panels[i], layout)
        assert res.panels == 1 and res.pixels == 160 * (layout.panels[i][1] -
                                                          layout.panels[i][0])
    assert len(store.marks()) == 5
    store.build_pyramid()
    store.finish()
    for k in range(len(store.shapes)):
        a = zarr.open_group(str(path), mode="r")[str(k)]
        b = zarr.open_group(str(whole.outputs["mask"]), mode="r")[str(k)]
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resampled_slide_into_ome_zarr(ckpt, image, tmp_path: Path) -> None:
    """A slide finer than the model is segmented shrunk and mapped back: the OME-Zarr mask
    equals the TIFF mask (both come through ResampledOutputs) and keeps the input's pixel
    size."""
    from temseg.checkpoint import load_model

    src = write_tiff(tmp_path / "d.tif", image)
    model = load_model(ckpt)
    model.pixel_size_um = 2 * PX
    p = Predictor.open(model, "torch", "cpu", amp="off", progress=False,
                       slide_options={"panel_width": 128, "out_tile": 64})
    tif = p.predict_file(src, tmp_path / "o")
    zr = p.predict_file(src, tmp_path / "o", mask_format="ome-zarr")
    assert "resample_back" in zr.timings and sorted(zr.outputs) == ["mask", "overlay"]
    source = open_slide(zr.outputs["mask"])
    assert source.shape == image.shape and source.pixel_size_um == pytest.approx(PX)
    np.testing.assert_array_equal(source.read(0, image.shape[0]),
                                  tifffile.imread(tif.outputs["mask"]))
