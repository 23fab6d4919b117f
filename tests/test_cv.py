"""``temseg cv``: folds by group, no leakage of a fold's images into its training, the table,
resuming a study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from temseg import policy
from temseg.cli import main
from temseg.cv import assign_folds, cross_validate, format_cv_table, summarize_folds
from temseg.models import UNetConfig
from temseg.train import TrainConfig

TINY = UNetConfig(width=4, depth=2, heads=1, attention=False)


def test_folds_partition_the_groups_round_robin():
    groups = ["m3", "m1", "m2", "m5", "m4", "m1"]
    folds = assign_folds(groups, 2)
    assert folds == [["m1", "m3", "m5"], ["m2", "m4"]]
    assert sorted(g for f in folds for g in f) == sorted(set(groups))
    with pytest.raises(ValueError, match="--folds 6"):
        assign_folds(groups, 6)
    with pytest.raises(ValueError, match="--folds 1"):
        assign_folds(groups, 1)


def test_summary_statistics():
    reports = [{"plain": {"mean_dice": v}, "tta": {"mean_dice": v + 0.01}} for v in (0.8, 0.9)]
    s = summarize_folds(reports)
    assert s["plain"]["mean"] == pytest.approx(0.85)
    assert s["plain"]["std"] == pytest.approx(0.05)
    assert s["plain"]["min"] == pytest.approx(0.8)
    assert s["tta"]["max"] == pytest.approx(0.91)


def test_table_names_the_machine_of_each_fold():
    m = {"cpu_model": "CPU A", "cpu_flags": "avx2 fma", "logical_cpus": 2, "torch_threads": 1,
         "torch": "2.13.0", "cuda": None}
    reports = [{"fold": k, "test_groups": ["g"], "steps": 1, "machine": machine,
                "plain": {"mean_dice": 0.8, "dice": {"background": 0.8, "blood_vessel": None}}}
               for k, machine in enumerate([m, None, m])]
    table = format_cv_table(reports, summarize_folds(reports))
    assert ("Trained on: CPU A [avx2 fma], 1 torch threads of 2 CPUs, torch 2.13.0 (folds 0, 2)"
            in table)
    assert "Trained on: unrecorded (trained before temseg recorded it) (fold 1)" in table


def test_study_never_trains_on_a_fold_and_resumes(blocks: Path, tmp_path: Path):
    out = tmp_path / "cv"  # blocks: img_0, img_1, img_2, each its own group
    config = TrainConfig(data=str(blocks), out=str(out), model=TINY, epochs=1, batch_size=2,
                         patch_size=32, patches_per_image=2, val_crop=64, progress=False)
    result = cross_validate(config, folds=3)
    assert [r["test_groups"] for r in result["folds"]] == [["img_0"], ["img_1"], ["img_2"]]
    for r in result["folds"]:
        summary = json.loads((out / f"fold-{r['fold']}" / "summary.json").read_text())
        used = set(summary["train_images"]) | set(summary["val_images"])
        assert not used & set(r["test_images"]), "a fold's test image was used in training"
        assert r["plain"]["mean_dice"] is not None and "tta" in r
    table = (out / "cv.md").read_text()
    assert table.count("\n| ") == 4 and "mean +- sd (min)" in table
    assert all(r["machine"]["cpu_model"] == policy.cpu_model() for r in result["folds"])
    assert f"Trained on: {policy.cpu_model()}" in table and "(folds 0, 1, 2)" in table
    # a second run keeps the finished folds' models (no retraining)
    stamp = (out / "fold-0" / "best.pt").stat().st_mtime_ns
    again = cross_validate(config, folds=3, tta=False)
    assert (out / "fold-0" / "best.pt").stat().st_mtime_ns == stamp
    assert again["summary"]["plain"] == result["summary"]["plain"]


def test_cli_cv_rejects_too_many_folds(blocks: Path, tmp_path: Path, capsys):
    assert main(["cv", str(blocks), "--out", str(tmp_path / "cv"), "--folds", "4"]) == 2
    assert "--folds 4" in capsys.readouterr().err
