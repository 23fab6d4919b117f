"""The bad-input matrix: every defect of issue 10 (training side) as one row.

A row says what is given (a function that builds it under ``tmp_path`` and runs temseg on it),
which error it must raise and substrings its message must contain (the file, the problem).
Add a row to cover a new case. Library rows call the Python API; CLI rows call ``main`` and
check the exit code and stderr. Behaviour checks that are not errors (umask, stale temporaries,
warnings) follow the tables.
"""

from __future__ import annotations

import errno
import fcntl
import inspect
import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch

from temseg.checkpoint import SegmentationModel, load_model, save_checkpoint
from temseg.cli import main
from temseg.data import DataError, Sample, load_dataset
from temseg.models import UNetConfig, build_model
from temseg.train import TrainConfig, loop, train

TINY = UNetConfig(width=8, heads=2)
TINY_ARGS = ["--epochs", "1", "--width", "8", "--heads", "2", "--patch-size", "64",
             "--patches-per-image", "4", "--batch-size", "4", "--val-crop", "64", "--no-progress"]


def tiny(data: Path, out: Path, **kw: Any) -> TrainConfig:
    """A training run of a second or two on the ``blocks`` data."""
    base: dict[str, Any] = dict(data=str(data), out=str(out), model=TINY, epochs=1,
                                batch_size=4, patch_size=64, patches_per_image=4, val_crop=64,
                                val_fraction=0.34, progress=False, seed=1)
    return TrainConfig(**{**base, **kw})


def poke(path: Path, value: float, at: tuple[int, int]) -> None:
    """Rewrite an image or mask file as float32 with ``value`` at ``at``."""
    arr = tifffile.imread(path).astype(np.float32)
    arr[at] = value
    tifffile.imwrite(path, arr)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in ("best.pt", "last.pt")}


def trained(blocks: Path, tmp: Path) -> tuple[Path, dict[str, bytes]]:
    """A run folder after one good epoch, and the bytes of its checkpoints."""
    out = tmp / "run"
    train(tiny(blocks, out))
    return out, snapshot(out)


# --- the library rows ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One bad input: ``run(blocks, tmp)`` must raise ``error`` with all of ``needles`` in its
    message; ``after(tmp)``, when given, checks what must (not) have happened."""

    id: str
    run: Callable[[Path, Path], Any]
    error: type[BaseException]
    needles: tuple[str, ...]
    after: Callable[[Path], None] | None = None


def nan_image(blocks: Path, tmp: Path) -> Any:
    poke(blocks / "images" / "img_1.tif", np.nan, (5, 7))
    return load_dataset(blocks)


def inf_image_trains(blocks: Path, tmp: Path) -> Any:
    poke(blocks / "images" / "img_1.tif", -np.inf, (3, 4))
    return train(tiny(blocks, tmp / "run"))


def nothing_saved(tmp: Path) -> None:
    assert not (tmp / "run" / "best.pt").exists()


def float_mask(value: float) -> Callable[[Path, Path], Any]:
    def run(blocks: Path, tmp: Path) -> Any:
        poke(blocks / "masks" / "img_2.tif", value, (0, 0))
        return load_dataset(blocks)
    return run


def nan_sample_in_memory(blocks: Path, tmp: Path) -> Any:
    samples = load_dataset(blocks)
    image = samples[0].image.astype(np.float32)
    image[1, 2] = np.nan
    samples[0] = Sample("img_0", image, samples[0].labels, None, "img_0")
    return train(tiny("", tmp / "run"), samples=samples)


def out_is_a_file(blocks: Path, tmp: Path) -> Any:
    (tmp / "run.txt").write_text("my notes")
    return train(tiny(blocks, tmp / "run.txt"))


def run_without_resume(blocks: Path, tmp: Path) -> Any:
    (tmp / "run").mkdir()
    (tmp / "run" / "last.pt").write_bytes(b"an earlier run")
    return train(tiny(blocks, tmp / "run", resume=False))


def resume_other_architecture(blocks: Path, tmp: Path) -> Any:
    save_checkpoint(tmp / "run" / "last.pt", SegmentationModel(build_model(TINY)),
                    {"epoch": 1, "step": 3})
    return train(tiny(blocks, tmp / "run", resume=True, model=UNetConfig(width=16, heads=2)))


class NanLoss(torch.nn.Module):
    """A loss that turns NaN: what a diverging run or a bad batch gives."""

    def __init__(self, **kw: Any) -> None:
        super().__init__()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return logits.mean() * float("nan")


def nan_loss(blocks: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    out, before = trained(blocks, tmp)
    (tmp / "before.pickle").write_bytes(pickle.dumps(before))
    monkeypatch.setattr(loop, "DiceCELoss", NanLoss)
    return train(tiny(blocks, out, epochs=3, resume=True))


def checkpoints_kept(tmp: Path) -> None:
    before = pickle.loads((tmp / "before.pickle").read_bytes())
    assert snapshot(tmp / "run") == before
    assert not list((tmp / "run").glob(".*.part.*")), "temporaries left behind"


def disk_full(exc: BaseException) -> Callable[..., Any]:
    def run(blocks: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
        out, before = trained(blocks, tmp)
        (tmp / "before.pickle").write_bytes(pickle.dumps(before))

        def save(obj: Any, f: Any, *a: Any, **kw: Any) -> None:
            Path(f).write_bytes(b"half a checkpoint")
            raise exc

        monkeypatch.setattr(torch, "save", save)
        return train(tiny(blocks, out, epochs=2, resume=True))
    return run


class Evil:
    """A pickle that writes a file when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "code ran"))


def malicious_checkpoint(tmp: Path) -> Path:
    path = tmp / "evil.pt"
    torch.save({"format": "temseg-checkpoint", "payload": Evil(tmp / "pwned.txt")}, path)
    return path


def not_pwned(tmp: Path) -> None:
    assert not (tmp / "pwned.txt").exists(), "loading the checkpoint ran its code"


def edited_checkpoint(edit: Callable[[dict], None]) -> Callable[[Path, Path], Any]:
    def run(blocks: Path, tmp: Path) -> Any:
        path = tmp / "edited.pt"
        save_checkpoint(path, SegmentationModel(build_model(TINY)))
        ckpt = torch.load(path, weights_only=True)
        edit(ckpt)
        torch.save(ckpt, path)
        return load_model(path)
    return run


def wider(ckpt: dict) -> None:
    ckpt["model_config"]["width"] = 16


def drop_weight(ckpt: dict) -> None:
    del ckpt["state_dict"]["head.weight"]


def corrupt_onnx(blocks: Path, tmp: Path) -> Any:
    pytest.importorskip("onnx")
    from temseg.spec import read_onnx_metadata

    (tmp / "model.onnx").write_bytes(b"\x08\x07garbage, not a protobuf\xff\xff\xff")
    return read_onnx_metadata(tmp / "model.onnx")


OPTIONS = [  # (TrainConfig fields, the CLI flags, a substring of the library's message)
    ({"epochs": 0}, ["--epochs", "0"], "epochs"),
    ({"time_limit": 0.0}, ["--time-limit", "0"], "time_limit"),
    ({"time_limit": -1.0}, ["--time-limit", "-1"], "time_limit"),
    ({"batch_size": 0}, ["--batch-size", "0"], "batch_size"),
    ({"patch_size": 0}, ["--patch-size", "0"], "patch_size"),
    ({"patch_size": 30}, ["--patch-size", "30"], "multiple of 8"),
    ({"val_crop": 0}, ["--val-crop", "0"], "val_crop"),
    ({"model": UNetConfig(width=0, heads=2)}, ["--width", "0"], "width"),
    ({"model": UNetConfig(width=8, heads=3)}, ["--heads", "3"], "heads"),
    ({"model": UNetConfig(width=8, heads=2, depth=0)}, ["--depth", "0"], "depth"),
    ({"val_fraction": 1.0}, ["--val-fraction", "1"], "val_fraction"),
    ({"val_fraction": -0.1}, ["--val-fraction", "-0.1"], "val_fraction"),
    ({"lr": 0.0}, ["--lr", "0"], "lr"),
    ({"lr": float("nan")}, ["--lr", "nan"], "lr"),
    ({"patches_per_image": 0}, ["--patches-per-image", "0"], "patches_per_image"),
    ({"scale_augment": 0.5}, ["--scale-augment", "0.5"], "scale_augment"),
    ({"rotate_probability": 1.5}, ["--rotate-probability", "1.5"], "rotate_probability"),
    ({"gamma_augment": 0.5}, ["--gamma-augment", "0.5"], "gamma_augment"),
    ({"blur_augment": -1.0}, ["--blur-augment", "-1"], "blur_augment"),
    ({"elastic_augment": -1.0}, ["--elastic-augment", "-1"], "elastic_augment"),
    ({"elastic_probability": 2.0}, ["--elastic-probability", "2"], "elastic_probability"),
    ({"border_weight": -1.0}, ["--border-weight", "-1"], "border_weight"),
    ({"ema_decay": 1.0}, ["--ema-decay", "1"], "ema_decay"),
    ({"model": UNetConfig(width=8, heads=2, deep_supr_num=3)}, ["--deep-supr-num", "3"],
     "deep_supr_num"),
    ({"pixel_size": 0.0}, ["--pixel-size", "0"], "pixel_size"),
]


def _config_row(fields: dict, flags: list[str], needle: str) -> Bad:
    return Bad(f"config{flags[0]}={flags[1]}",
               lambda blocks, tmp: tiny(blocks, tmp / "run", **fields), ValueError, (needle,))


LIBRARY: list[Bad] = [
    Bad("nan-image", nan_image, DataError, ("img_1.tif", "(5, 7)", "NaN")),
    Bad("inf-image-trains", inf_image_trains, DataError, ("img_1.tif", "(3, 4)"),
        after=nothing_saved),
    Bad("nan-mask", float_mask(np.nan), DataError, ("img_2.tif", "non-finite")),
    Bad("inf-mask", float_mask(np.inf), DataError, ("img_2.tif", "non-finite")),
    Bad("nan-sample-in-memory", nan_sample_in_memory, DataError, ("img_0", "(1, 2)"),
        after=nothing_saved),
    Bad("out-is-a-file", out_is_a_file, ValueError, ("run.txt", "not a folder")),
    Bad("run-without-resume", run_without_resume, ValueError, ("run", "last.pt", "resume")),
    Bad("resume-other-architecture", resume_other_architecture, ValueError,
        ("last.pt", "width=8", "width=16")),
    Bad("nan-loss", nan_loss, RuntimeError, ("non-finite", "loss"), after=checkpoints_kept),
    Bad("disk-full", disk_full(OSError(errno.ENOSPC, "No space left on device")), OSError,
        ("disk full", ".pt"), after=checkpoints_kept),
    Bad("disk-full-torch-zip", disk_full(RuntimeError(
        "[enforce fail at inline_container.cc:664] . unexpected pos 6528 vs 6416")), OSError,
        ("disk full", ".pt"), after=checkpoints_kept),
    Bad("malicious-checkpoint", lambda blocks, tmp: load_model(malicious_checkpoint(tmp)),
        ValueError, ("evil.pt", "trust"), after=not_pwned),
    Bad("checkpoint-missing-key", edited_checkpoint(lambda c: c.pop("model_config")),
        ValueError, ("edited.pt", "model_config")),
    Bad("checkpoint-wrong-shapes", edited_checkpoint(wider), ValueError,
        ("edited.pt", "shape", "stem")),
    Bad("checkpoint-missing-weight", edited_checkpoint(drop_weight), ValueError,
        ("edited.pt", "missing", "head.weight")),
    Bad("corrupt-onnx", corrupt_onnx, ValueError, ("model.onnx",)),
    *(_config_row(*row) for row in OPTIONS),
]


@pytest.mark.parametrize("case", LIBRARY, ids=lambda c: c.id)
def test_library_rejects(case: Bad, blocks: Path, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    wants_patch = len(inspect.signature(case.run).parameters) == 3
    args = (blocks, tmp_path, monkeypatch) if wants_patch else (blocks, tmp_path)
    with pytest.raises(case.error) as info:
        case.run(*args)
    for needle in case.needles:
        assert needle in str(info.value), f"{needle!r} not in {info.value}"
    if case.after:
        monkeypatch.undo()
        case.after(tmp_path)


# --- the CLI rows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BadCli:
    """``temseg ARGS`` (``{data}``, ``{tmp}`` filled in) must exit ``code`` with all of
    ``needles`` on stderr; ``setup(blocks, tmp, monkeypatch)`` prepares the case."""

    id: str
    args: list[str]
    code: int
    needles: tuple[str, ...]
    setup: Callable[..., None] | None = None
    after: Callable[[Path], None] | None = field(default=None)


def _cli_train(*extra: str) -> list[str]:
    return ["train", "{data}", "--out", "{tmp}/run", *TINY_ARGS, *extra]


def _nan_loss_setup(blocks: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "DiceCELoss", NanLoss)


def _disk_full_setup(blocks: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def save(*a: Any, **kw: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", save)


def _evil_setup(blocks: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    malicious_checkpoint(tmp)


def _file_setup(blocks: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp / "run").write_text("not a folder")


def _nan_image_setup(blocks: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    poke(blocks / "images" / "img_0.tif", np.inf, (2, 9))


CLI: list[BadCli] = [
    *(BadCli(f"cli{flags[0]}={flags[1]}", _cli_train(*flags), 2, (flags[0],),
             after=nothing_saved) for _, flags, _ in OPTIONS),
    BadCli("cli-out-is-a-file", _cli_train(), 2, ("run", "not a folder"), _file_setup),
    BadCli("cli-nan-image", _cli_train(), 2, ("img_0.tif", "(2, 9)"), _nan_image_setup,
           after=nothing_saved),
    BadCli("cli-nan-loss", _cli_train(), 1, ("non-finite loss",), _nan_loss_setup,
           after=nothing_saved),
    BadCli("cli-disk-full", _cli_train(), 1, ("disk full",), _disk_full_setup,
           after=nothing_saved),
    BadCli("cli-malicious-checkpoint", ["export", "{tmp}/evil.pt", "--out", "{tmp}/m.onnx"], 2,
           ("evil.pt", "--trust-checkpoint"), _evil_setup, after=not_pwned),
]


@pytest.mark.parametrize("case", CLI, ids=lambda c: c.id)
def test_cli_rejects(case: BadCli, blocks: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    if case.setup:
        case.setup(blocks, tmp_path, monkeypatch)
    args = [a.format(data=blocks, tmp=tmp_path) for a in case.args]
    assert main(args) == case.code
    err = capsys.readouterr().err
    for needle in case.needles:
        assert needle in err, f"{needle!r} not in {err}"
    assert "Traceback" not in err
    if case.after:
        case.after(tmp_path)


# --- behaviour that is not an error ----------------------------------------------------------


def test_mask_without_image_is_a_warning(blocks: Path, caplog: pytest.LogCaptureFixture):
    (blocks / "masks" / "orphan.tif").write_bytes((blocks / "masks" / "img_0.tif").read_bytes())
    with caplog.at_level(logging.WARNING):
        assert len(load_dataset(blocks)) == 3
    assert any("orphan.tif" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_honour_the_umask(tmp_path: Path, umask: int, mode: int):
    from temseg.atomic import write_json

    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        save_checkpoint(tmp_path / "m.pt", SegmentationModel(build_model(TINY)))
    finally:
        os.umask(old)
    for name in ("a.json", "m.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_stale_temporaries_are_removed_at_start(blocks: Path, tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    stale = [run / ".last.k2j4_9xq.part.pt", run / ".best.abcdefgh.part.pt",
             run / ".metrics.0a1b2c3d.part.csv"]
    kept = [run / "notes.part.pt", run / ".mydata.abcdefgh.part.pt", run / "last.pt.bak"]
    for p in stale + kept:
        p.write_bytes(b"x" * 100)
        os.utime(p, (1e9, 1e9))
    train(tiny(blocks, run))
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert (run / "best.pt").is_file()


def test_a_folder_in_use_by_another_run_is_refused(blocks: Path, tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".last.k2j4_9xq.part.pt").write_bytes(b"being written by the other run")
    with open(run / ".temseg-train.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="another"):
            train(tiny(blocks, run))
    assert (run / ".last.k2j4_9xq.part.pt").exists()


def test_resume_without_last_pt_starts_fresh(blocks: Path, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="temseg.train"):
        summary = train(tiny(blocks, tmp_path / "run", resume=True))
    assert summary["epochs_done"] == 1
    assert any("starting afresh" in r.getMessage() for r in caplog.records)


def test_checkpoints_load_without_pickle(blocks: Path, tmp_path: Path):
    out, _ = trained(blocks, tmp_path)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert {"optimizer", "scaler", "history"} <= set(ckpt["train_state"])


def legacy_checkpoint(tmp: Path) -> Path:
    """An older checkpoint holding a numpy scalar: loadable only with pickle."""
    model = SegmentationModel(build_model(TINY), pixel_size_um=np.float64(0.01))
    path = tmp / "legacy.pt"
    torch.save({**model.metadata(), "state_dict": model.net.state_dict()}, path)
    return path


def test_legacy_checkpoint_needs_explicit_trust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture):
    path = legacy_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="legacy.pt.*trust"):
        load_model(path)
    with caplog.at_level(logging.WARNING):
        assert load_model(path, trust=True).pixel_size_um == pytest.approx(0.01)
    assert any("legacy.pt" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv("TEMSEG_TRUST_CHECKPOINT", "1")
    assert load_model(path).config == TINY


def test_cli_trust_flag_resumes_from_a_legacy_checkpoint(blocks: Path, tmp_path: Path,
                                                        monkeypatch, capsys, caplog):
    monkeypatch.setenv("TEMSEG_TRUST_CHECKPOINT", "")  # restored after the test
    out, _ = trained(blocks, tmp_path)
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["pixel_size_um"] = np.float64(0.01)  # as an older temseg might have stored it
    torch.save(ckpt, out / "last.pt")
    args = ["train", str(blocks), "--out", str(out), *TINY_ARGS, "--epochs", "2", "--resume"]
    assert main(args) == 2
    assert "--trust-checkpoint" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING, logger="temseg.checkpoint"):
        assert main(args + ["--trust-checkpoint"]) == 0
    assert any("full unpickling" in r.getMessage() for r in caplog.records)
    assert os.environ["TEMSEG_TRUST_CHECKPOINT"] == ""
    assert torch.load(out / "last.pt", weights_only=True)["train_state"]["epoch"] == 2
