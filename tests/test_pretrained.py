"""Shipped models: the registry, the hash check, fp16 packing, and the shipped tem-mouse-cc
model on the shipped real example image (a Dice floor), by name through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import temseg.pretrained as pretrained
from temseg.checkpoint import load_model, read_checkpoint
from temseg.cli import main
from temseg.examples import example_data, example_image
from temseg.pretrained.pack import pack

SHIPPED = "tem-mouse-cc"
# Dice floor of the shipped model on the shipped example image (fp32 torch, whole image,
# mean over the classes present). Measured 0.842 on 2026-12-07 (docs/models.md; the model
# before it, 0.827).
EXAMPLE_DICE_FLOOR = 0.82


@pytest.fixture
def registry(tmp_path: Path, tiny_checkpoint: Path, monkeypatch) -> Path:
    """A registry in tmp_path holding the tiny checkpoint as shipped model "tiny"."""
    monkeypatch.setattr(pretrained, "HERE", tmp_path)
    monkeypatch.setattr(pretrained, "REGISTRY", tmp_path / "registry.json")
    pack(tiny_checkpoint, "tiny", summary="a test model", classes_seen=("background",),
         folder=tmp_path)
    return tmp_path


def test_pack_writes_fp16_weights_and_the_hash(registry: Path, tiny_checkpoint: Path):
    entry = json.loads((registry / "registry.json").read_text())["tiny"]
    assert entry["sha256"] == pretrained.sha256(registry / "tiny.pt")
    packed = read_checkpoint("tiny")
    assert Path(packed["path"]) == registry / "tiny.pt"
    floats = [t for t in packed["state_dict"].values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    assert "train_state" not in packed
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        full, half = load_model(tiny_checkpoint)(x), load_model("tiny")(x)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, atol=2e-2, rtol=2e-2)


def test_a_damaged_file_is_refused_with_its_name(registry: Path, tmp_path: Path, capsys):
    data = bytearray((registry / "tiny.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (registry / "tiny.pt").write_bytes(bytes(data))
    with pytest.raises(pretrained.PretrainedError, match="damaged or was replaced"):
        read_checkpoint("tiny")
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, np.zeros((64, 64), np.uint8))
    assert main(["predict", "tiny", str(img), "--out", str(tmp_path / "seg")]) == 2
    err = capsys.readouterr().err
    assert "tiny.pt" in err and "reinstall temseg" in err
    assert not (tmp_path / "seg").exists() or not any((tmp_path / "seg").iterdir())
    (registry / "tiny.pt").unlink()
    with pytest.raises(pretrained.PretrainedError, match="missing"):
        read_checkpoint("tiny")


def test_a_local_run_folder_of_the_same_name_wins(registry: Path, tmp_path: Path,
                                                  tiny_checkpoint: Path, monkeypatch):
    (tmp_path / "work" / "tiny").mkdir(parents=True)
    (tmp_path / "work" / "tiny" / "best.pt").write_bytes(tiny_checkpoint.read_bytes())
    monkeypatch.chdir(tmp_path / "work")
    assert read_checkpoint("tiny")["path"] == str(Path("tiny") / "best.pt")


def test_shipped_model_is_small_and_listed(capsys):
    model = pretrained.available()[SHIPPED]
    assert model.path.stat().st_size <= 8 * 1024 * 1024
    assert pretrained.verified_path(model) == model.path
    assert set(model.classes_seen) == {"background", "myelinated_axon", "unmyelinated_axon"}
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert SHIPPED in out and "classes seen" in out


def test_shipped_model_on_the_shipped_example(tmp_path: Path, capsys):
    """``temseg evaluate tem-mouse-cc EXAMPLE`` and ``temseg predict tem-mouse-cc IMG``: no
    training, a Dice floor on the real image it never saw."""
    out = tmp_path / "report.json"
    assert main(["evaluate", SHIPPED, str(example_data()), "--backend", "torch", "--amp", "off",
                 "--no-progress", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dice"]["blood_vessel"] is None and report["dice"]["schwann_cell"] is None
    assert report["mean_dice"] >= EXAMPLE_DICE_FLOOR, report["dice"]
    image, _ = example_image()
    assert main(["predict", SHIPPED, str(image), "--out", str(tmp_path / "seg"),
                 "--no-progress"]) == 0
    mask = tifffile.imread(tmp_path / "seg" / f"{image.stem}_mask.tif")
    assert mask.shape == (600, 600) and set(np.unique(mask)) <= {0, 100, 150}


def test_export_a_shipped_model_by_name(tmp_path: Path):
    onnx = pytest.importorskip("onnx")
    assert main(["export", SHIPPED, "--out", str(tmp_path / "m.onnx")]) == 0
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert meta  # the model's spec travels in the export
