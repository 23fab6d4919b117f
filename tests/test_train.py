from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from temseg import load_model
from temseg.checkpoint import read_checkpoint, save_checkpoint
from temseg.data import load_dataset
from temseg.models import UNetConfig
from temseg.train import TrainConfig, loop, lr_factor, train
from temseg.train.ema import WeightAverage

TINY = UNetConfig(width=8, heads=2)


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), model=TINY, epochs=2, batch_size=4,
                patch_size=64, patches_per_image=4, val_crop=96, val_fraction=0.34,
                progress=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_shape():
    assert lr_factor(0.0, 0.1) < 0.01
    assert lr_factor(0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor(0.55, 0.1) == pytest.approx(0.505, abs=1e-3)
    assert lr_factor(1.0, 0.1) == pytest.approx(0.01)


def test_run_writes_outputs_and_checkpoint_round_trips(blocks: Path, tmp_path: Path):
    out = tmp_path / "run"
    summary = train(tiny_config(blocks, out))
    for name in ("best.pt", "last.pt", "metrics.csv", "metrics.json", "curves.png",
                 "config.json", "summary.json"):
        assert (out / name).is_file(), name
    history = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]["val_dice"]) == {"background", "blood_vessel", "myelinated_axon",
                                           "unmyelinated_axon", "schwann_cell"}
    assert summary["val_images"] and not set(summary["val_images"]) & set(summary["train_images"])
    model = load_model(out)
    x = torch.randn(1, 1, 40, 40)
    again = tmp_path / "copy.pt"
    save_checkpoint(again, model)
    torch.testing.assert_close(load_model(again)(x), model(x))
    assert load_model(out / "last.pt").config == TINY
    # calibration patches for its int8 version: normalised patches of the training images
    cal = model.calibration
    assert cal is not None and cal.shape == (16, 1, 64, 64) and cal.dtype == torch.float32
    assert -1.6 < float(cal.min()) < -0.5 and 0.5 < float(cal.max()) < 1.6
    torch.testing.assert_close(load_model(again).calibration, cal)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_equals_uninterrupted(blocks: Path, tmp_path: Path, monkeypatch, ema: float):
    straight = tmp_path / "straight"
    train(tiny_config(blocks, straight, epochs=2, ema_decay=ema))
    resumed = tmp_path / "resumed"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the run dies right after writing last.pt of epoch 1

    with monkeypatch.context() as m:
        m.setattr(loop, "_write_metrics", crash)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(blocks, resumed, epochs=2, ema_decay=ema))
    assert read_checkpoint(resumed / "last.pt")["train_state"]["epoch"] == 1
    train(tiny_config(blocks, resumed, epochs=2, resume=True, ema_decay=ema))  # its last.pt
    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(resumed / "last.pt")
    for key in ("state_dict",) + (("weights",) if ema else ()):
        x, y = a.get(key, a["train_state"].get(key)), b.get(key, b["train_state"].get(key))
        for k in x:
            torch.testing.assert_close(x[k], y[k], rtol=1e-5, atol=1e-6, msg=f"{key} {k}")
    if ema:  # the saved model is the average, not the raw weights of the last step
        w = a["train_state"]["weights"]
        assert any(not torch.equal(w[k], a["state_dict"][k]) for k in w)


def test_weight_average_follows_its_formula():
    net = torch.nn.Linear(3, 2)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    ema = WeightAverage(net, decay=0.5)
    expected = {k: v.clone() for k, v in start.items()}
    for t in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0 + t)
        ema.update(net)
        d = min(0.5, (1 + t) / (10 + t))
        expected = {k: d * expected[k] + (1 - d) * v for k, v in net.state_dict().items()}
    raw = {k: v.clone() for k, v in net.state_dict().items()}
    with ema.applied(net):
        for k, v in net.state_dict().items():
            torch.testing.assert_close(v, expected[k])
    for k, v in net.state_dict().items():  # the raw weights are back
        torch.testing.assert_close(v, raw[k])
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, decay=1.0)


def test_same_seed_same_weights(blocks: Path, tmp_path: Path):
    train(tiny_config(blocks, tmp_path / "a", epochs=1))
    train(tiny_config(blocks, tmp_path / "b", epochs=1))
    a = read_checkpoint(tmp_path / "a" / "last.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "b" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_time_limit_stops_cleanly(blocks: Path, tmp_path: Path):
    out = tmp_path / "run"
    summary = train(tiny_config(blocks, out, epochs=1000, time_limit=0.05))
    assert summary["stopped_by_time_limit"]
    assert summary["epochs_done"] < 1000
    assert (out / "best.pt").is_file()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: not a readable checkpoint"):
        load_model(bad)
    with pytest.raises(FileNotFoundError, match="no best.pt or last.pt"):
        load_model(tmp_path)


def test_dataset_loads_for_training(blocks: Path):
    samples = load_dataset(blocks)
    assert len(samples) == 3 and samples[0].labels.max() <= 4


def _fresh_trainer(config: TrainConfig) -> loop.Trainer:
    return loop.Trainer(config, None, loop.Distributed())


def test_init_starts_from_the_checkpoints_weights(blocks: Path, tmp_path: Path):
    train(tiny_config(blocks, tmp_path / "a", epochs=1))
    saved = read_checkpoint(tmp_path / "a")["state_dict"]
    trainer = _fresh_trainer(tiny_config(blocks, tmp_path / "b", init=str(tmp_path / "a")))
    own = trainer.net.state_dict()
    assert own.keys() == saved.keys()
    assert all(torch.equal(own[k], saved[k]) for k in saved)
    scratch = _fresh_trainer(tiny_config(blocks, tmp_path / "c")).net.state_dict()
    assert not torch.equal(scratch["head.weight"], saved["head.weight"])


def test_init_with_other_classes_gets_a_new_head(blocks: Path, tmp_path: Path, caplog):
    from temseg.checkpoint import SegmentationModel
    from temseg.labels import ClassTable
    from temseg.models import build_model

    torch.manual_seed(5)
    three = ClassTable(("a", "b", "c"), (0, 1, 2), ((0, 0, 0),) * 3)
    other = SegmentationModel(build_model(UNetConfig(width=8, heads=2, num_classes=3)),
                              classes=three, patch_size=64)
    save_checkpoint(tmp_path / "other.pt", other)
    with caplog.at_level("INFO", logger="temseg.train"):
        trainer = _fresh_trainer(tiny_config(blocks, tmp_path / "b",
                                             init=str(tmp_path / "other.pt")))
    assert "a new head" in caplog.text
    own, theirs = trainer.net.state_dict(), other.net.state_dict()
    body = [k for k in theirs if not k.startswith("head.")]
    assert body and all(torch.equal(own[k], theirs[k]) for k in body)
    assert own["head.weight"].shape[0] == 5


def test_init_with_another_architecture_is_refused(blocks: Path, tmp_path: Path):
    train(tiny_config(blocks, tmp_path / "a", epochs=1))
    with pytest.raises(ValueError, match="another architecture.*width=8.*width=16"):
        _fresh_trainer(tiny_config(blocks, tmp_path / "b", init=str(tmp_path / "a"),
                                   model=UNetConfig(width=16, heads=2)))


def test_deep_supervision_from_a_plain_checkpoint(blocks: Path, tmp_path: Path, caplog):
    # --init takes the body and head; the auxiliary heads start afresh and their losses train
    # them; the saved model predicts with the main head
    train(tiny_config(blocks, tmp_path / "a", epochs=1))
    saved = read_checkpoint(tmp_path / "a")["state_dict"]
    ds = dict(init=str(tmp_path / "a"), model=UNetConfig(width=8, heads=2, deep_supr_num=2))
    with caplog.at_level("INFO", logger="temseg.train"):
        own = _fresh_trainer(tiny_config(blocks, tmp_path / "b", **ds)).net.state_dict()
    assert "new deep-supervision heads" in caplog.text
    assert all(torch.equal(own[k], saved[k]) for k in saved)
    aux = {f"aux_heads.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")}
    assert set(own) - set(saved) == aux
    train(tiny_config(blocks, tmp_path / "c", epochs=1, **ds))
    after = read_checkpoint(tmp_path / "c" / "last.pt")["state_dict"]
    assert not any(torch.equal(after[k], own[k]) for k in aux)
    model = load_model(tmp_path / "c")
    assert model.config.deep_supr_num == 2
    assert model(torch.randn(1, 1, 40, 40)).shape == (1, 5, 40, 40)


def test_cli_init_takes_the_architecture_of_the_checkpoint(blocks: Path, tmp_path: Path):
    from temseg.cli import main

    train(tiny_config(blocks, tmp_path / "a", epochs=1))
    args = ["train", str(blocks), "--out", str(tmp_path / "b"), "--epochs", "1",
            "--batch-size", "4", "--patch-size", "64", "--patches-per-image", "4",
            "--val-crop", "96", "--no-progress", "--init", str(tmp_path / "a")]
    assert main(args) == 0
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["model"]["width"] == 8 and config["init"] == str(tmp_path / "a")
    assert main(["train", str(blocks), "--out", str(tmp_path / "c"), "--init",
                 str(tmp_path / "missing")]) == 2


def test_resample_sample_halves_images_and_labels_like_inference():
    import numpy as np

    from temseg.data import DataError, Sample
    from temseg.data.rescale import resample_sample, resample_samples

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (6, 5)).repeat(16, 0).repeat(16, 1).astype(np.uint8)
    image = (40 * labels + rng.normal(0, 3, labels.shape)).astype(np.float32)
    s = Sample("m_1", image, labels, 0.005, "m")
    half = resample_sample(s, 0.01)
    assert half.image.shape == half.labels.shape == (48, 40) and half.pixel_size_um == 0.01
    # nearest-exact at factor 2 samples the input pixel 2i + 1 (temseg.io.resample's rule)
    assert np.array_equal(half.labels, labels[1::2, 1::2])
    assert abs(float(half.image.mean()) - float(image.mean())) < 0.5
    assert resample_sample(s, 0.00501) is s  # within 2 %: unchanged
    with pytest.raises(DataError, match="m_1: the image records no pixel size"):
        resample_sample(Sample("m_1", image, labels, None, "m"), 0.01)
    # training's rule: shrink finer samples only; coarser and unrecorded ones stay
    unknown = Sample("m_2", image, labels, None, "m")
    out = resample_samples([s, unknown], 0.01)
    assert out[0].pixel_size_um == 0.01 and out[1] is unknown
    assert resample_samples([s], 0.0025)[0] is s


def test_training_at_a_pixel_size_records_it(blocks: Path, tmp_path: Path):
    from temseg.data import Sample

    samples = [Sample(s.name, s.image, s.labels, 0.005, s.group)
               for s in load_dataset(blocks)]
    train(tiny_config(blocks, tmp_path / "run", epochs=1, pixel_size=0.0075,
                      val_crop=64), samples=samples)
    ckpt = read_checkpoint(tmp_path / "run")
    assert ckpt["pixel_size_um"] == pytest.approx(0.0075)
