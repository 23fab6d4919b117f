from __future__ import annotations

from pathlib import Path

import pytest
import tifffile

from temseg.cli import main


def test_train_unknown_label_value_is_a_clear_error(blocks: Path, tmp_path: Path, capsys):
    mask = tifffile.imread(blocks / "masks" / "img_1.tif")
    mask[0, 0] = 123
    tifffile.imwrite(blocks / "masks" / "img_1.tif", mask)
    assert main(["train", str(blocks), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "img_1.tif" in err and "123" in err


def test_train_missing_folder(tmp_path: Path, capsys):
    assert main(["train", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    assert "folder not found" in capsys.readouterr().err


def test_train_refuses_to_overwrite_a_run_without_resume(blocks: Path, tmp_path: Path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "last.pt").write_bytes(b"x")
    assert main(["train", str(blocks), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_train_cli_end_to_end(blocks: Path, tmp_path: Path):
    out = tmp_path / "r"
    args = ["train", str(blocks), "--out", str(out), "--epochs", "1", "--width", "8",
            "--heads", "2", "--patch-size", "64", "--patches-per-image", "4",
            "--batch-size", "4", "--val-crop", "64", "--no-progress"]
    assert main(args) == 0
    assert (out / "best.pt").is_file()
    assert main(args + ["--resume", "--epochs", "2"]) == 0
    assert (out / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs


@pytest.mark.parametrize("content", [b"", b"II*\x00junk"])
def test_bad_image_files_name_the_file(tmp_path: Path, content: bytes):
    from temseg.data import DataError, read_image

    p = tmp_path / "x.tif"
    p.write_bytes(content)
    with pytest.raises(DataError, match="x.tif"):
        read_image(p)
