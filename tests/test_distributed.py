"""``temseg predict --cluster ray`` on a local Ray cluster of two nodes of one CPU each
(started and stopped by the module fixture): a batch of files and one slide split into 8
regions give the labels of ``temseg predict`` without Ray, bit for bit; a worker killed
with SIGKILL mid-run is replaced and its region retried; a driver killed mid-run leaves no
complete-looking output and the same command resumes it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from temseg.cli import main
from temseg.data import DataError
from temseg.io.omezarr import LabelStore
from temseg.io.slides import open_slide
from temseg.synth import render

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[1]
SLIDE_OPTS = ["--format", "ome-zarr", "--panel-width", "128", "--out-tile", "64",
              "--no-progress"]


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine, one CPU each; this process is the driver."""
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 80 * 2**20}
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    c.add_node(**node)
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> SimpleNamespace:
    """A tiny model, a 256 x 1024 slide (8 panels of 128 px), three small files and a broken
    one, and the single-process references."""
    root = tmp_path_factory.mktemp("distributed")
    ckpt = tiny_checkpoint
    slide = root / "slide.tif"
    with tifffile.TiffWriter(slide, bigtiff=True) as tw:
        tw.write(render(256, 1024, seed=3)[0], tile=(64, 64), compression="zlib")
    files = []
    for i, (h, w) in enumerate([(200, 300), (150, 260), (230, 190)]):
        files.append(root / f"f{i}.tif")
        tifffile.imwrite(files[-1], render(h, w, seed=10 + i)[0])
    bad = root / "bad.tif"
    bad.write_bytes(b"II*\x00 not a tiff")
    d = SimpleNamespace(root=root, ckpt=str(ckpt), slide=slide, files=files, bad=bad)
    assert main(["predict", d.ckpt, *map(str, files), "--out", str(root / "ref_files"),
                 "--no-progress"]) == 0
    assert main(["predict", d.ckpt, str(slide), "--out", str(root / "ref_slide"),
                 *SLIDE_OPTS]) == 0
    assert main(["predict", d.ckpt, str(slide), "--out", str(root / "ref_default"),
                 "--no-progress"]) == 0  # default panels (8192 px): one for this slide
    return d


def levels(store: Path) -> list[np.ndarray]:
    group = zarr.open_group(str(store), mode="r")
    return [np.asarray(group[k]) for k in sorted(group.array_keys(), key=int)]


def assert_same_slide(out: Path, data: SimpleNamespace) -> None:
    """Every pyramid level equals the single-process store; level 0 equals the default
    ``temseg predict`` TIFF; the overlay equals the single-process one."""
    got, ref = levels(out / "slide_mask.ome.zarr"), levels(data.root / "ref_slide" /
                                                          "slide_mask.ome.zarr")
    assert len(got) == len(ref) == 5
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)
    default = tifffile.imread(data.root / "ref_default" / "slide_mask.tif")
    assert len(np.unique(default)) >= 3
    np.testing.assert_array_equal(got[0], default)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "slide_overlay.png")),
                                  np.asarray(Image.open(data.root / "ref_slide" /
                                                        "slide_overlay.png")))


def test_batch_of_files_on_an_actor_pool(cluster, data, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    inputs = [str(data.files[0]), str(data.bad), *map(str, data.files[1:])]
    rc = main(["predict", data.ckpt, *inputs, "--out", str(out), "--cluster", "ray",
               "--address", cluster.address, "--no-progress"])
    assert rc == 1  # the broken file failed, the others went on
    captured = capsys.readouterr()
    assert "3 segmented" in captured.out and f"FAILED {data.bad}" in captured.err
    for f in data.files:
        np.testing.assert_array_equal(tifffile.imread(out / f"{f.stem}_mask.tif"),
                                      tifffile.imread(data.root / "ref_files" /
                                                      f"{f.stem}_mask.tif"))
    rows = [line for line in captured.out.splitlines() if re.match(r"\s+\d+ ", line)]
    assert len(rows) == 2 and sum(int(r.split()[3]) for r in rows) == 4  # tasks: 2 workers


def test_slide_split_into_regions_equals_single_process(cluster, data, tmp_path: Path,
                                                         capsys) -> None:
    out = tmp_path / "out"
    assert main(["predict", data.ckpt, str(data.slide), "--out", str(out), "--cluster",
                 "ray", "--split-mpix", "0", *SLIDE_OPTS]) == 0
    text = capsys.readouterr().out
    assert "8 regions" in text and "resumed" not in text
    assert_same_slide(out, data)
    assert sorted(p.name for p in out.iterdir()) == ["slide_mask.ome.zarr",
                                                     "slide_overlay.png"]


def test_worker_killed_mid_run_is_replaced(cluster, data, tmp_path: Path) -> None:
    from temseg.distributed import ClusterOptions, WorkerConfig, predict_on_ray

    killed: list[int] = []

    def kill_the_other_worker(task, result, pool) -> None:
        if task.method == "predict_region" and not killed:  # the other one is mid-region
            killed.append(next(pid for pid in pool.pids if pid != result.pid))
            os.kill(killed[0], signal.SIGKILL)

    config = WorkerConfig(data.ckpt, slide_options={"panel_width": 128, "out_tile": 64})
    out = tmp_path / "out"
    report = predict_on_ray(config, [data.slide], out,
                            ClusterOptions(split_mpix=0, progress=False),
                            on_task=kill_the_other_worker, mask_format="ome-zarr")
    assert killed and not report.failed and report.regions == 8
    victim = next(w for w in report.workers if killed[0] in w.pids)
    assert len(victim.pids) >= 2  # a new process took its place and finished regions
    assert sum(w.tasks for w in report.workers) >= 8
    assert_same_slide(out, data)


def test_killed_driver_resumes(cluster, data, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["predict", data.ckpt, str(data.slide), "--out", str(out), "--cluster", "ray",
            "--address", cluster.address, "--split-mpix", "0", *SLIDE_OPTS]
    mask = out / "slide_mask.ome.zarr"
    progress = LabelStore.progress_path(mask)
    driver = subprocess.Popen([sys.executable, "-m", "temseg", *args], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not list(progress.glob("region-*.json")):
        assert driver.poll() is None, "the driver ended before any region was done"
        assert time.monotonic() < deadline, "no region done in time"
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert not mask.exists() and LabelStore.part_path(mask).is_dir()
    with pytest.raises(DataError, match="incomplete"):
        open_slide(LabelStore.part_path(mask))
    assert main(args) == 0  # the same command again
    resumed = int(re.search(r"8 regions \((\d+) resumed\)", capsys.readouterr().out)[1])
    assert 1 <= resumed < 8
    assert_same_slide(out, data)
    assert not progress.exists() and not LabelStore.part_path(mask).exists()
