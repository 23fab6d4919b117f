"""Whole-slide streaming inference (temseg.inference.slide.segment_slide) and its users."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from temseg.checkpoint import SegmentationModel, save_checkpoint
from temseg.cli import main
from temseg.data import DataError, load_dataset
from temseg.inference import Predictor, SlidingWindowInferer, sliding_window_inference
from temseg.inference.backends import TorchBackend
from temseg.inference.slide import plan_panels, segment_slide
from temseg.inference.tiles import TileRow, predict_rows
from temseg.inference.tta import TTABackend
from temseg.io.slides import RowWindow, open_slide
from temseg.labels import TEM_CLASSES
from temseg.metrics import confusion_matrix
from temseg.models import UNetConfig, build_model
from temseg.spec import DEFAULT_OVERLAP
from temseg.synth import render, write_slide

ROI = 64
NARROW = UNetConfig(width=2, depth=2, blocks_per_stage=1, bottleneck_blocks=1, heads=1,
                    attention=False)


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    """A tiny untrained model; zero head bias so that several classes come out."""
    torch.manual_seed(0)
    # the default inference tile is twice the training patch: ROI
    m = SegmentationModel(build_model(NARROW), patch_size=ROI // 2).eval()
    with torch.no_grad():
        m.net.head.bias.zero_()
    return m


@pytest.fixture(scope="module")
def backend(model: SegmentationModel) -> TorchBackend:
    return TorchBackend(model)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return render(160, 250, seed=5)[0]


def in_memory_probs(backend, model: SegmentationModel, image: np.ndarray,
                    batch: int = 3) -> np.ndarray:
    """The in-memory reference: (C, H, W) float32."""
    x = torch.from_numpy(model.normalization(image))[None, None]
    return sliding_window_inference(x, ROI, batch, backend, overlap=DEFAULT_OVERLAP,
                                    padding_mode="reflect")[0].numpy()


def write_input(kind: str, image: np.ndarray, folder: Path) -> Path:
    if kind == "tiled":
        path = folder / "tiled.tif"
        with tifffile.TiffWriter(path, bigtiff=True) as tw:
            tw.write(image, tile=(64, 64), compression="zlib")
    elif kind == "strip":  # uncompressed, contiguous: read with pread
        path = folder / "strip.tif"
        tifffile.imwrite(path, image)
    elif kind == "strip_zlib":  # compressed strips: read through zarr
        path = folder / "strip_zlib.tif"
        tifffile.imwrite(path, image, compression="zlib", rowsperstrip=16)
    else:
        path = folder / "image.png"
        Image.fromarray(image).save(path)
    return path


@pytest.mark.parametrize(("kind", "panel_width"), [
    ("tiled", 128), ("tiled", 8192), ("strip", 128), ("strip_zlib", 128), ("png", 8192)])
def test_streamed_labels_equal_in_memory(kind: str, panel_width: int, model, backend, image,
                                         tmp_path: Path) -> None:
    path = write_input(kind, image, tmp_path)
    out = tmp_path / "out" / "mask.tif"
    res = segment_slide(model, path, out, backend=backend, sw_batch_size=3,
                        panel_width=panel_width, out_tile=64, progress=False)
    ref = in_memory_probs(backend, model, image)
    ref_labels = ref.argmax(0).astype(np.uint8)
    assert len(np.unique(ref_labels)) >= 2  # a meaningful comparison
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and page.tilewidth == 64
        got = tif.asarray()
    assert got.shape == image.shape and got.dtype == np.uint8
    assert set(np.unique(got)) <= {0, 50, 100, 150, 200}
    np.testing.assert_array_equal(got, TEM_CLASSES.decode(ref_labels))
    assert res.outputs == {"mask": out} and res.panels == len(plan_panels(250, panel_width, 64))
    np.testing.assert_array_equal(res.class_pixels, np.bincount(ref_labels.ravel(), minlength=5))
    assert sorted(p.name for p in out.parent.iterdir()) == ["mask.tif"]  # no temp files


def test_same_labels_as_segment(model, image, tmp_path: Path) -> None:
    """Default torch backend, in-memory array input: same labels as predict.segment."""
    res = segment_slide(model, image, tmp_path / "m.tif", sw_batch_size=4, progress=False)
    ref = in_memory_probs(TorchBackend(model), model, image, batch=4).argmax(0)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"), TEM_CLASSES.decode(ref))
    assert res.shape == image.shape and res.tiles > 0 and res.mpix_per_s > 0


def test_slide_smaller_than_tile_is_padded(model, backend, image, tmp_path: Path) -> None:
    small = np.ascontiguousarray(image[:20, :37])
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, small)
    segment_slide(model, path, tmp_path / "s.tif", backend=backend, progress=False)
    ref = in_memory_probs(backend, model, small).argmax(0).astype(np.uint8)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "s.tif"), TEM_CLASSES.decode(ref))


def test_probabilities_and_uncertainty(model, backend, image, tmp_path: Path) -> None:
    res = segment_slide(model, image, tmp_path / "m.tif", backend=backend, sw_batch_size=3,
                        probabilities_path=tmp_path / "p.tif",
                        uncertainty_path=tmp_path / "u.tif", overlay_path=tmp_path / "o.png",
                        overlay_max_side=100, panel_width=128, out_tile=64, progress=False)
    assert set(res.outputs) == {"mask", "probabilities", "uncertainty", "overlay"}
    ref = in_memory_probs(backend, model, image)
    probs = tifffile.imread(tmp_path / "p.tif")
    assert probs.shape == (5, *image.shape) and probs.dtype == np.uint8
    assert np.abs(probs.astype(np.int16) - np.rint(ref * 255)).max() <= 1
    unc = tifffile.imread(tmp_path / "u.tif")
    assert unc.shape == image.shape and unc.dtype == np.uint8
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(ref > 0, ref * np.log(ref), 0).sum(0) / math.log(5)
    assert np.abs(unc.astype(np.int16) - np.rint(ent * 255)).max() <= 1
    with Image.open(tmp_path / "o.png") as im:
        assert im.mode == "RGB" and max(im.size) <= 100


def test_failing_backend_leaves_no_files(model, backend, image, tmp_path: Path) -> None:
    calls = []

    def flaky(batch: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("backend died")
        return backend(batch)

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="backend died"):
        segment_slide(flaky, image, out / "m.tif", roi_size=ROI, sw_batch_size=2,
                      probabilities_path=out / "p.tif", uncertainty_path=out / "u.tif",
                      overlay_path=out / "o.png", panel_width=128, out_tile=64,
                      progress=False)
    assert list(out.iterdir()) == []  # neither outputs nor temporary / spool files


def test_batch_reports_bad_file_and_continues(model, image, tmp_path: Path) -> None:
    good = write_input("tiled", image, tmp_path)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 50)
    truncated = tmp_path / "truncated.tif"
    data = write_input("strip", image, tmp_path).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    png = write_input("png", image, tmp_path)
    out = tmp_path / "out"
    predictor = Predictor.open(model, "torch", "cpu", amp="off", progress=False,
                               window=SlidingWindowInferer(sw_batch_size=4))
    done, failed = predictor.predict_files([good, bad, truncated, png], out, uncertainty=True)
    assert [p.name for p in done] == ["tiled_mask.tif", "image_mask.tif"]
    assert [p for p, _ in failed] == [bad, truncated]
    assert all(str(p) in reason for p, reason in failed)
    assert sorted(p.name for p in out.iterdir()) == [
        "image_mask.tif", "image_overlay.png", "image_uncertainty.tif", "tiled_mask.tif",
        "tiled_overlay.png", "tiled_uncertainty.tif"]
    np.testing.assert_array_equal(tifffile.imread(done[0]), tifffile.imread(done[1]))


def test_tta_with_equivariant_predictor_changes_nothing(image) -> None:
    def pointwise(batch: torch.Tensor) -> torch.Tensor:  # commutes with flips / rotations
        x = batch[:, :1]
        return torch.softmax(torch.cat([x, -x, 2 * x - 1, x * x, 0.5 * torch.ones_like(x)],
                                       1), 1)

    plain = segment_slide(pointwise, image, None, roi_size=ROI, mask=np.zeros_like(image),
                          progress=False)
    tta = segment_slide(TTABackend(pointwise), image, None, roi_size=ROI,
                        mask=np.zeros_like(image), progress=False)
    tta2 = segment_slide(pointwise, image, None, roi_size=ROI, tta=True,
                         mask=np.zeros_like(image), progress=False)
    assert plain.confusion is not None and (plain.confusion[0] > 0).sum() >= 2
    np.testing.assert_array_equal(plain.confusion, tta.confusion)
    np.testing.assert_array_equal(plain.confusion, tta2.confusion)
    assert tta.tiles == plain.tiles


@pytest.mark.parametrize("shape", [(2, 1, 16, 16), (2, 1, 16, 24)])
def test_tta_undoes_each_transform(shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape)
    seen = []

    def position_dependent(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.clone())
        return torch.cat([batch, batch * 2], 1)

    out = TTABackend(position_dependent)(x)
    torch.testing.assert_close(out, torch.cat([x, 2 * x], 1))
    assert len(seen) == (8 if shape[-1] == shape[-2] else 4)
    assert len({tuple(s.flatten()[:5].tolist()) for s in seen}) == len(seen)


def test_evaluate_streaming_equals_in_memory(model, blocks: Path) -> None:
    predictor = Predictor.open(model, "torch", "cpu", amp="off", progress=False,
                               window=SlidingWindowInferer(sw_batch_size=4))
    report = predictor.evaluate_folder(blocks)
    samples = load_dataset(blocks)
    cm = sum(confusion_matrix(in_memory_probs(predictor.backend, model, s.image, 4).argmax(0),
                              s.labels, 5) for s in samples)
    np.testing.assert_array_equal(np.asarray(report["confusion_matrix"]), cm)
    assert set(report["images"]) == {s.name for s in samples}
    again = predictor.evaluate_samples(samples)
    assert again["confusion_matrix"] == report["confusion_matrix"]


def test_mask_size_mismatch_names_the_file(model, image, tmp_path: Path) -> None:
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(mask, np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match="mask.tif"):
        segment_slide(model, image, None, mask=mask, progress=False)


def test_lazy_reader_regions_and_subsample(image, tmp_path: Path) -> None:
    for kind in ("tiled", "strip", "strip_zlib", "png"):
        with open_slide(write_input(kind, image, tmp_path)) as src:
            assert src.shape == image.shape and src.dtype == np.uint8
            np.testing.assert_array_equal(src.read(17, 101, 33, 250), image[17:101, 33:250])
            np.testing.assert_array_equal(src[3::7, 1::5], image[3::7, 1::5])
            window = RowWindow(src, 10, 200)
            for y0 in range(0, 160, 37):
                y1 = min(y0 + 50, 160)
                np.testing.assert_array_equal(window.rows(y0, y1), image[y0:y1, 10:200])
    src = open_slide(write_input("tiled", image, tmp_path))
    assert src.chunk_rows == 64
    assert model_norm_affine(src) == model_norm_affine(image)
    src.close()


def model_norm_affine(x) -> tuple[float, float]:
    from temseg.data.normalize import Normalization

    return Normalization(max_samples=5000).affine(x)


def test_big_tiled_bigtiff_uint16(model, backend, tmp_path: Path) -> None:
    """A slide written by synth.write_slide (tiled BigTIFF) converted to uint16."""
    path = tmp_path / "slide.tif"
    write_slide(path, 300, 200, seed=2, tile=64)
    img16 = tifffile.imread(path).astype(np.uint16) * 257
    path16 = tmp_path / "slide16.tif"
    with tifffile.TiffWriter(path16, bigtiff=True) as tw:
        tw.write(img16, tile=(64, 64))
    segment_slide(model, path16, tmp_path / "m.tif", backend=backend, sw_batch_size=3,
                  progress=False)
    ref = in_memory_probs(backend, model, img16).argmax(0).astype(np.uint8)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"), TEM_CLASSES.decode(ref))


def test_cli_predict_with_options(model, image, tmp_path: Path) -> None:
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model)
    src = write_input("tiled", image, tmp_path)
    out = tmp_path / "out"
    rc = main(["predict", str(ckpt), str(src), "--out", str(out), "--backend", "torch",
               "--tta", "--probabilities", "--uncertainty", "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "tiled_mask.tif", "tiled_overlay.png", "tiled_probabilities.tif",
        "tiled_uncertainty.tif"]
    assert tifffile.imread(out / "tiled_probabilities.tif").shape == (5, *image.shape)


def test_same_command_gives_byte_identical_outputs_under_load(model, image, tmp_path: Path
                                                               ) -> None:
    """Same input, model and machine: byte-identical masks (and the precision recorded),
    also while another process loads every core (the backend / precision rule reads the
    CPU's features, never a clock)."""
    import json
    import subprocess
    import sys

    path = write_input("tiled", image, tmp_path)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model)
    args = ["predict", str(ckpt), str(path), "--roi-size", str(ROI), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        assert main([*args, "--out", str(tmp_path / "b")]) == 0
    finally:
        for h in hogs:
            h.kill()
    a, b = (tmp_path / d / "tiled_mask.tif" for d in "ab")
    assert a.read_bytes() == b.read_bytes()
    with tifffile.TiffFile(a) as tif:
        desc = json.loads(tif.pages[0].description)
    assert desc["temseg"]["precision"] in ("fp32", "bf16")
    assert desc["temseg"]["backend"]


def test_batches_never_span_panels() -> None:
    """split_keys (the slide pipeline's setting): a panel's batches do not depend on the
    panels before it, so a region predicted alone sees the same batches (temseg.distributed);
    without it (MONAI's in-memory semantics) batches are filled across keys."""
    def rows() -> list[TileRow]:
        return [TileRow(key, k, np.zeros((3, 1, 8, 8), np.float32), np.zeros((3, 2), np.int64))
                for key in (0, 1) for k in range(2)]

    def batches(split: bool) -> list[int]:
        sizes: list[int] = []
        chunks = list(predict_rows(rows(), lambda x: torch.zeros(len(x), 2, 8, 8), 4, (8, 8),
                                   on_batch=sizes.append, split_keys=split))
        assert sum(c.scores is None for c in chunks) == 4  # every row ends once
        return sizes

    assert batches(False) == [4, 4, 4]  # 12 tiles, a batch spans the panels 0 and 1
    assert batches(True) == [4, 2, 4, 2]  # each panel: 6 tiles = 4 + 2
