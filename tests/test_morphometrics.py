"""Morphometrics: per-instance measurements against skimage.measure.regionprops, the split of
touching instances, streaming exactness across band seams, the command line, instance
metrics, and errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.measure import label, regionprops

from temseg.cli import main
from temseg.data import DataError
from temseg.labels import TEM_CLASSES
from temseg.morphometrics import (
    SplitRule,
    combine_instance_scores,
    instance_labels,
    instance_scores,
    measure_mask,
    write_morphometrics,
)
from temseg.synth import render_labels_region

GREY = np.asarray(TEM_CLASSES.values, np.uint8)


def _blobs(shape: tuple[int, int], seed: int) -> np.ndarray:
    """(H, W) uint8 class indices: smooth random blobs of classes 0..4 (touching blobs of
    different classes, irregular shapes, some at the border)."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.random((5, *shape)), (0, 5, 5))
    cls = field.argmax(0).astype(np.uint8)
    cls[field.max(0) < np.quantile(field.max(0), 0.3)] = 0
    return cls


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _assert_matches_regionprops(res, ref_labels: np.ndarray, ps: float) -> None:
    props = regionprops(ref_labels)
    t = res.table
    assert res.n_instances == len(props)
    np.testing.assert_array_equal(t["id"], [p.label for p in props])
    for key, attr, scale in (("area", "area", ps * ps),
                             ("equivalent_diameter", "equivalent_diameter_area", ps),
                             ("perimeter", "perimeter", ps),
                             ("major_axis_length", "axis_major_length", ps),
                             ("minor_axis_length", "axis_minor_length", ps),
                             ("eccentricity", "eccentricity", 1.0),
                             ("solidity", "solidity", 1.0)):
        ref = np.array([getattr(p, attr) for p in props]) * scale
        np.testing.assert_allclose(t[key], ref, rtol=1e-6, atol=1e-9, err_msg=key)
    np.testing.assert_allclose(t["y0"], [p.centroid[0] for p in props], rtol=1e-9)
    np.testing.assert_allclose(t["x0"], [p.centroid[1] for p in props], rtol=1e-9)
    bbox = np.stack([t["bbox_min_y"], t["bbox_min_x"], t["bbox_max_y"], t["bbox_max_x"]], 1)
    np.testing.assert_array_equal(bbox, [p.bbox for p in props])
    elongated = t["eccentricity"] > 0.3  # orientation is ill-defined for near-circles
    ref_orient = np.array([p.orientation for p in props])
    np.testing.assert_allclose(t["orientation"][elongated], ref_orient[elongated], atol=1e-6)


def test_components_match_regionprops() -> None:
    """Without splitting, instances are the 8-connected same-class components, measured as
    regionprops measures them (ids in raster order, as skimage.measure.label numbers)."""
    cls = _blobs((160, 210), seed=1)
    res = measure_mask(cls, pixel_size_um=0.5, rule=SplitRule(neck_ratio=0), band_rows=23)
    inst = np.where(np.isin(cls, (2, 3)), cls, 0)
    ref = label(inst, connectivity=2, background=0)
    assert ref.max() > 20
    _assert_matches_regionprops(res, ref, 0.5)
    np.testing.assert_array_equal(res.table["class"], [cls[ref == i][0]
                                                       for i in range(1, ref.max() + 1)])


def test_split_instances_match_regionprops_of_their_label_image() -> None:
    """With splitting, the table still equals regionprops of the instance label image."""
    labels = render_labels_region(0, 0, 300, 340, seed=3)
    res = measure_mask(labels, pixel_size_um=0.01, return_labels=True, band_rows=41)
    assert res.labels is not None and res.labels.max() == res.n_instances
    _assert_matches_regionprops(res, res.labels, 0.01)
    border = ((res.table["bbox_min_y"] == 0) | (res.table["bbox_min_x"] == 0)
              | (res.table["bbox_max_y"] == 300) | (res.table["bbox_max_x"] == 340))
    np.testing.assert_array_equal(res.table["image_border_touching"], border)
    assert border.any() and not border.all()


def _hand_drawn() -> np.ndarray:
    """(200, 260) class indices with known instances:

    * myelinated (2): three isolated discs, one touching pair (2 instances), one disc cut by
      the top border, one 3:1 ellipse (one instance), one disc touching an unmyelinated
      disc (different classes: separate) -> 8 instances from 6 components;
    * unmyelinated (3): one touching pair of small discs (2), one disc next to the fibre
      above, one isolated -> 4 instances from 3 components.
    """
    shape = (200, 260)
    cls = np.zeros(shape, np.uint8)
    cls[150:190, 5:45] = 4  # a Schwann cell: not an instance class
    cls[10:40, 200:250] = 1  # a vessel
    for cy, cx, r in ((40, 40, 15), (40, 100, 12), (110, 40, 10),
                      (120, 110, 14), (120, 135, 12),  # touching pair
                      (3, 170, 12)):  # cut by the border
        cls[_disc(shape, cy, cx, r)] = 2
    yy, xx = np.mgrid[:200, :260]
    cls[((yy - 170) / 8.0) ** 2 + ((xx - 150) / 24.0) ** 2 <= 1] = 2  # ellipse
    cls[_disc(shape, 100, 210, 13)] = 2
    cls[_disc(shape, 100, 234, 10) & (cls != 2)] = 3  # touching the fibre, other class
    for cy, cx in ((60, 170), (60, 184)):  # touching small pair
        cls[_disc(shape, cy, cx, 8)] = 3
    cls[_disc(shape, 160, 230, 7)] = 3
    return cls


def test_hand_drawn_counts_and_touching_pairs() -> None:
    cls = _hand_drawn()
    res = measure_mask(cls, pixel_size_um=0.1)
    agg = res.aggregates["classes"]
    assert agg["myelinated_axon"]["count"] == 8
    assert agg["unmyelinated_axon"]["count"] == 4
    assert res.n_split_components == 2
    assert agg["myelinated_axon"]["count_not_border_touching"] == 7
    merged = measure_mask(cls, pixel_size_um=0.1, rule=SplitRule(neck_ratio=0))
    assert merged.aggregates["classes"]["myelinated_axon"]["count"] == 7
    assert merged.aggregates["classes"]["unmyelinated_axon"]["count"] == 3
    # the split pair: each part about its disc (r 14 and 12 px), the cut along the neck
    t = res.table
    near = np.hypot(t["y0"] - 120, t["x0"] - 122) < 20
    assert near.sum() == 2
    areas = np.sort(t["area"][near]) / 0.01
    np.testing.assert_allclose(areas, [math.pi * 12**2, math.pi * 14**2], rtol=0.12)
    ellipse = np.hypot(t["y0"] - 170, t["x0"] - 150) < 3
    assert ellipse.sum() == 1 and t["eccentricity"][ellipse][0] > 0.9
    # density per mm^2 of image and fractions
    mm2 = 200 * 260 * 0.01 * 1e-6
    assert agg["myelinated_axon"]["density_per_mm2"] == pytest.approx(8 / mm2)
    assert res.aggregates["area_fractions"]["blood_vessel"] == pytest.approx(
        (cls == 1).mean())


@pytest.mark.parametrize("band_rows", [1, 7, 64])
def test_narrow_bands_give_the_in_memory_table(band_rows: int) -> None:
    """Instances crossing band seams are merged: any band height gives exactly the table
    (and instance image) of one band holding the whole mask."""
    labels = render_labels_region(0, 0, 420, 380, seed=5)
    for k, (cy, cx) in enumerate(((60, 60), (200, 300), (330, 120))):  # touching pairs
        labels[_disc(labels.shape, cy, cx, 16) | _disc(labels.shape, cy + 20, cx + 18, 13)] = \
            2 + k % 2
    whole = measure_mask(labels, pixel_size_um=0.01, band_rows=420, return_labels=True)
    banded = measure_mask(labels, pixel_size_um=0.01, band_rows=band_rows,
                          return_labels=True)
    assert whole.n_instances > 40 and whole.n_split_components >= 3
    assert whole.table.keys() == banded.table.keys()
    for key, col in whole.table.items():
        assert np.array_equal(col, banded.table[key]), key
    np.testing.assert_array_equal(whole.labels, banded.labels)


def test_tiled_tiff_streamed_equals_array(tmp_path: Path) -> None:
    labels = render_labels_region(0, 0, 512, 448, seed=7)
    path = tmp_path / "slide_mask.tif"
    tifffile.imwrite(path, GREY[labels], tile=(64, 64), compression="zlib",
                     metadata={"PixelSizeMicrometers": 0.02})
    from_file = measure_mask(path, band_rows=48)
    from_array = measure_mask(labels, pixel_size_um=0.02)
    assert from_file.pixel_size_um == pytest.approx(0.02)
    for key, col in from_array.table.items():
        assert np.array_equal(col, from_file.table[key]), key


def test_ome_zarr_input(tmp_path: Path) -> None:
    import zarr

    labels = _hand_drawn()
    root = zarr.open_group(str(tmp_path / "mask.ome.zarr"), mode="w")
    root.attrs["multiscales"] = [{"datasets": [{"path": "0"}]}]
    arr = root.create_array("0", shape=(1, 1, *labels.shape), chunks=(1, 1, 32, 64),
                            dtype=np.uint8)
    arr[...] = GREY[labels][None, None]
    res = measure_mask(tmp_path / "mask.ome.zarr", pixel_size_um=0.1, band_rows=30)
    ref = measure_mask(labels, pixel_size_um=0.1)
    np.testing.assert_array_equal(res.table["area"], ref.table["area"])


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_cli_writes_csv_json_png(tmp_path: Path) -> None:
    labels = _hand_drawn()
    mask = tmp_path / "nerve_mask.tif"
    tifffile.imwrite(mask, GREY[labels], metadata={"PixelSizeMicrometers": 0.1})
    probs = np.zeros((5, *labels.shape), np.uint8)
    probs[(labels, *np.indices(labels.shape))] = 204  # p = 0.8 for the labelled class
    tifffile.imwrite(tmp_path / "nerve_probabilities.tif", probs)
    out = tmp_path / "out"
    assert main(["morphometrics", str(mask), "--out", str(out), "--no-progress",
                 "--probabilities"]) == 0
    head, rows = _read_csv(out / "nerve_instances.csv")
    assert head[:6] == ["id", "class", "class_name", "x0 (px)", "y0 (px)", "area (um^2)"]
    assert "equivalent_diameter (um)" in head and "image_border_touching" in head
    assert len(rows) == 12
    col = {h: [r[i] for r in rows] for i, h in enumerate(head)}
    np.testing.assert_allclose([float(v) for v in col["mean_probability"]], 0.8, rtol=1e-6)
    assert sorted(set(col["image_border_touching"])) == ["False", "True"]
    report = json.loads((out / "nerve_morphometrics.json").read_text())
    assert report["classes"]["myelinated_axon"]["count"] == 8
    assert report["units"] == "um" and report["pixel_size_um"] == pytest.approx(0.1)
    for name in ("myelinated_axon", "unmyelinated_axon"):
        png = out / f"nerve_diameter_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_pixel_size_reports_px(tmp_path: Path) -> None:
    from PIL import Image

    mask = tmp_path / "plain.png"
    Image.fromarray(GREY[_hand_drawn()]).save(mask)
    res = measure_mask(mask)
    assert res.pixel_size_um is None and res.units["area"] == "px^2"
    assert res.aggregates["classes"]["myelinated_axon"]["density_per_mm2"] is None
    paths = write_morphometrics(res, tmp_path / "out", histograms=False)
    head, _ = _read_csv(paths["csv"])
    assert "area (px^2)" in head and "mean_probability" not in head


def test_instance_scores_known_matches() -> None:
    """Truth: fibres A, B and a small F far from a big E (class 2), one unmyelinated C.
    Prediction: A exact, B shifted (IoU < 1), C missed, a false fibre D, and E + F merged
    through a bridge into one blob (one instance: it matches E only)."""
    shape = (160, 220)
    a, b = _disc(shape, 30, 30, 12), _disc(shape, 30, 80, 12)
    b_shift = _disc(shape, 32, 81, 12)
    c, d = _disc(shape, 100, 30, 6), _disc(shape, 100, 80, 10)
    e, f = _disc(shape, 120, 160, 20), _disc(shape, 120, 194, 8)
    bridge = np.zeros(shape, bool)
    bridge[118:123, 175:190] = True
    truth = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    for m in (a, b, e, f):
        truth[m] = 2
    truth[c] = 3
    for m in (a, b_shift, d, e | f | bridge):
        pred[m] = 2
    rule = SplitRule(neck_ratio=0)
    s = instance_scores(truth, pred, iou=0.5, rule=rule)
    my = s["myelinated_axon"]
    iou_b = (b & b_shift).sum() / (b | b_shift).sum()
    iou_e = e.sum() / (e | f | bridge).sum()
    assert (my["n_true"], my["n_pred"], my["tp"], my["fp"], my["fn"]) == (4, 4, 3, 1, 1)
    assert my["precision"] == pytest.approx(0.75) and my["recall"] == pytest.approx(0.75)
    assert my["sq"] == pytest.approx((1 + iou_b + iou_e) / 3)
    assert my["pq"] == pytest.approx((1 + iou_b + iou_e) / (3 + 0.5 + 0.5))
    assert my["count_error"] == 0
    un = s["unmyelinated_axon"]
    assert (un["tp"], un["fn"], un["recall"], un["precision"], un["count_error"]) == (
        0, 1, 0.0, None, -1)
    assert un["count_error_relative"] == -1.0
    pooled = combine_instance_scores([s, s])
    assert pooled["myelinated_axon"]["tp"] == 6
    assert pooled["myelinated_axon"]["pq"] == pytest.approx(my["pq"])
    ids, id_class = instance_labels(truth, rule=rule)
    assert ids.max() == 5 and sorted(id_class[1:]) == [2, 2, 2, 2, 3]


def test_errors_name_the_file(tmp_path: Path) -> None:
    bad = GREY[_hand_drawn()]
    bad[5, 5] = 77
    path = tmp_path / "bad_mask.tif"
    tifffile.imwrite(path, bad)
    with pytest.raises(DataError, match=r"bad_mask\.tif.*77"):
        measure_mask(path)
    with pytest.raises(DataError, match="file not found"):
        measure_mask(tmp_path / "missing.tif")
    with pytest.raises(DataError, match="probabilities of shape"):
        measure_mask(_hand_drawn(), probabilities=np.zeros((5, 3, 3), np.float32))
    with pytest.raises(ValueError, match="neck_ratio"):
        SplitRule(neck_ratio=1.5)
    with pytest.raises(ValueError, match="unknown instance class"):
        measure_mask(_hand_drawn(), instance_classes=("axon",))
    good = tmp_path / "good_mask.tif"
    tifffile.imwrite(good, GREY[_hand_drawn()])
    code = main(["morphometrics", str(path), str(good), "--out", str(tmp_path / "o"),
                 "--probabilities", "--no-progress"])
    assert code == 1  # both fail: bad values, and no probabilities next to good_mask.tif
    assert main(["morphometrics", str(good), "--out", str(tmp_path / "o"), "--no-progress",
                 "--pixel-size", "0.05"]) == 0
