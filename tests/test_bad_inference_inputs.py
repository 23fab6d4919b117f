"""Bad inputs and faults of ``temseg predict`` / ``evaluate`` (the inference half of the
bad-input matrix; training's is tests/test_bad_inputs.py). One row per case: the CLI
arguments after the model, the exit code, substrings of the message; add rows freely."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import tifffile
import torch

from temseg.checkpoint import SegmentationModel, save_checkpoint
from temseg.cli import main
from temseg.data import DataError
from temseg.inference import Predictor, segment_slide
from temseg.io.outputs import SlideOutputs
from temseg.models import UNetConfig, build_model
from temseg.synth import render

NARROW = UNetConfig(width=4, depth=2, blocks_per_stage=1, bottleneck_blocks=1, heads=1,
                    attention=False)


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    torch.manual_seed(0)
    m = SegmentationModel(build_model(NARROW), patch_size=32, pixel_size_um=0.01).eval()
    with torch.no_grad():
        m.net.head.bias.zero_()
    return m


@pytest.fixture()
def files(model: SegmentationModel, tmp_path: Path) -> dict[str, Path]:
    """A checkpoint, a good image, a float image with one inf pixel, a float image with a
    NaN off every strided sample, and a labelled folder."""
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model)
    image = render(96, 80, seed=2)[0]
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, image)
    inf = image.astype(np.float32)
    inf[40, 17] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", inf)
    nan = image.astype(np.float32)
    nan[51, 33] = np.nan  # odd row and column: missed by any strided subsample of step 2
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    tifffile.imwrite(tmp_path / "a" / "slide.tif", image)
    tifffile.imwrite(tmp_path / "b" / "slide.tif", image)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    tifffile.imwrite(data / "images" / "x.tif", image)
    tifffile.imwrite(data / "masks" / "x.tif", np.zeros_like(image))
    return {"ckpt": ckpt, "good": good, "tmp": tmp_path, "data": data}


class Case(NamedTuple):
    id: str
    args: list[str]  # {tmp} is replaced by the test folder
    code: int
    needles: tuple[str, ...]


CASES = [
    Case("inf-pixel", ["predict", "{tmp}/inf.tif", "--out", "{tmp}/o"], 1,
         ("inf.tif", "non-finite", "row 40, column 17")),
    Case("nan-off-the-sample", ["predict", "{tmp}/nan.tif", "--out", "{tmp}/o"], 1,
         ("nan.tif", "non-finite", "row 51, column 33")),
    Case("same-stem", ["predict", "{tmp}/a/slide.tif", "{tmp}/b/slide.tif", "--out",
                       "{tmp}/o"], 2, ("same name", "a/slide.tif", "b/slide.tif")),
    Case("pixel-size-negative", ["evaluate", "{tmp}/data", "--pixel-size", "-1"], 2,
         ("--pixel-size",)),
    Case("pixel-size-zero", ["evaluate", "{tmp}/data", "--pixel-size", "0"], 2,
         ("--pixel-size",)),
    Case("roi-size-zero", ["predict", "{tmp}/good.tif", "--out", "{tmp}/o", "--roi-size", "0"],
         2, ("roi_size",)),
    Case("roi-size-7", ["predict", "{tmp}/good.tif", "--out", "{tmp}/o", "--roi-size", "7"], 1,
         ("roi_size", "multiple of 4")),
    Case("roi-size-huge", ["predict", "{tmp}/good.tif", "--out", "{tmp}/o", "--roi-size",
                           "20000"], 1, ("roi_size 20000", "good.tif")),
    Case("evaluate-out-is-a-folder", ["evaluate", "{tmp}/data", "--out", "{tmp}/a"], 2,
         ("--out", "is a folder")),
    Case("predict-out-is-a-file", ["predict", "{tmp}/good.tif", "--out", "{tmp}/good.tif"], 2,
         ("exists and is not a folder",)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cli_rejects(case: Case, files: dict[str, Path], capsys) -> None:
    tmp = files["tmp"]
    args = [a.replace("{tmp}", str(tmp)) for a in case.args]
    args.insert(1, str(files["ckpt"]))
    code = main([*args, "--no-progress", "--backend", "torch"])
    err = capsys.readouterr().err
    assert code == case.code, err
    for needle in case.needles:
        assert needle in err, err
    if (tmp / "o").is_dir():  # a refused or failed input leaves none of its files
        assert not [p for p in (tmp / "o").iterdir() if not p.name.startswith("good_")] or \
            case.id.startswith("roi")


def test_library_names_the_first_non_finite_pixel(model: SegmentationModel) -> None:
    image = np.ones((64, 64), np.float32)
    image[5, 60] = np.nan
    with pytest.raises(DataError, match="row 5, column 60"):
        segment_slide(model, image, None, progress=False)


def test_a_failing_commit_leaves_the_old_outputs_and_no_new_mask(
        model: SegmentationModel, files: dict[str, Path], monkeypatch) -> None:
    """Killed or failing while committing: the new mask never sits beside old outputs."""
    out = files["tmp"] / "o"
    predictor = Predictor.open(model, "torch", "cpu", amp="off", progress=False)
    predictor.predict_file(files["good"], out, uncertainty=True)
    old = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_stage(self, staged):  # dies after writing some temporaries
        staged.path("uncertainty", self.paths["uncertainty"]).write_bytes(b"partial")
        raise OSError("disk died")

    monkeypatch.setattr(SlideOutputs, "stage", broken_stage)
    with pytest.raises(OSError, match="disk died"):
        predictor.predict_file(files["good"], out, uncertainty=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old


def test_stale_temporaries_of_killed_runs_are_removed(model: SegmentationModel,
                                                      files: dict[str, Path]) -> None:
    import os
    import time

    out = files["tmp"] / "o"
    out.mkdir()
    stale = out / ".good_mask.tif.abc123.part.tif"
    stale.write_bytes(b"x" * 100)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    Predictor.open(model, "torch", "cpu", amp="off", progress=False).predict_file(
        files["good"], out)
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == ["good_mask.tif", "good_overlay.png"]


def test_compiled_torch_backend_gives_the_eager_labels(model: SegmentationModel,
                                                       files: dict[str, Path]) -> None:
    """Model-level torch.compile (TorchBackend(compile=True)) against eager."""
    image = tifffile.imread(files["good"])
    eager = Predictor.open(model, "torch", "cpu", amp="off", progress=False).segment(image)
    compiled = Predictor.open(model, "torch", "cpu", amp="off", compile=True,
                              progress=False)
    assert compiled.backend.name == "torch+compile"
    labels = compiled.segment(image)
    assert (labels != eager).mean() < 1e-3  # near-ties may flip with fused kernels
