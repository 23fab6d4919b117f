"""Multi-process training for real: ``torchrun --nproc_per_node 2 temseg train`` on the gloo
backend (CPU), with a time limit, resume, and the failure paths that must not leave a process
hanging in a collective."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from temseg.checkpoint import read_checkpoint
from temseg.models import UNetConfig
from temseg.train import TrainConfig, loop

# temseg's CLI, with save_checkpoint recording which rank wrote what, and optional faults:
# NAN_RANK turns that rank's loss NaN from its second step.
WORKER = r'''
import os, sys
from temseg.train import loop

rank = os.environ["RANK"]
save = loop.save_checkpoint

def recording_save(path, *args, **kwargs):
    save(path, *args, **kwargs)
    with open(os.environ["SAVES_LOG"], "a") as f:
        f.write(f"{rank} {os.path.basename(path)}\n")

loop.save_checkpoint = recording_save
if os.environ.get("NAN_RANK") == rank:
    class NanAfterFirst(loop.DiceCELoss):
        calls = 0
        def forward(self, logits, target):
            NanAfterFirst.calls += 1
            loss = super().forward(logits, target)
            return loss * float("nan") if NanAfterFirst.calls > 1 else loss
    loop.DiceCELoss = NanAfterFirst
from temseg.cli import main
sys.exit(main(sys.argv[1:]))
'''

ARGS = ["--width", "8", "--heads", "2", "--patch-size", "64", "--patches-per-image", "8",
        "--batch-size", "4", "--val-crop", "64", "--no-progress", "--device", "cpu",
        "--val-fraction", "0.34"]


def torchrun(tmp: Path, data: Path, out: Path, *extra: str,
             **env: str) -> subprocess.CompletedProcess:
    worker = tmp / "worker.py"
    worker.write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(worker), "train", str(data), "--out", str(out), *ARGS, *extra]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "SAVES_LOG": str(tmp / "saves.log"),
                "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **env}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=120)


def saves(tmp: Path) -> list[str]:
    log = tmp / "saves.log"
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


@pytest.mark.slow
def test_two_processes_time_limit_then_resume(blocks: Path, tmp_path: Path):
    out = tmp_path / "run"
    first = torchrun(tmp_path, blocks, out, "--epochs", "1000", "--time-limit", "0.05")
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by_time_limit"] and 1 <= summary["epochs_done"] < 1000
    done = summary["epochs_done"]
    written = saves(tmp_path)
    assert written and all(w.startswith("0 ") for w in written), written  # rank 0 only
    assert written.count("0 last.pt") == done  # once per epoch

    second = torchrun(tmp_path, blocks, out, "--epochs", str(done + 1), "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert saves(tmp_path).count("0 last.pt") == 1
    history = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, done + 2))
    assert read_checkpoint(out / "last.pt")["train_state"]["epoch"] == done + 1
    # 2 processes x 4 patches a step: 2 images x 8 patches make 2 steps an epoch
    assert read_checkpoint(out / "last.pt")["train_state"]["step"] == summary["steps"] + 2


@pytest.mark.slow
def test_a_nan_loss_on_one_process_stops_both(blocks: Path, tmp_path: Path):
    out = tmp_path / "run"
    run = torchrun(tmp_path, blocks, out, "--epochs", "3", NAN_RANK="1")
    assert run.returncode != 0
    assert run.stderr.count("non-finite loss") >= 2  # each process says so, none hangs
    assert not (out / "best.pt").exists() and not (out / "last.pt").exists()
    assert saves(tmp_path) == []


class Rank1(loop.Distributed):
    """Rank 1 of two, told by the all-reduce that rank 0 failed (no process group needed)."""

    def any(self, *flags: bool) -> list[bool]:
        return [True] * len(flags)


def test_rank0_failing_at_the_end_of_an_epoch_stops_the_others(blocks: Path, tmp_path: Path,
                                                                monkeypatch):
    config = TrainConfig(data=str(blocks), out=str(tmp_path / "run"), epochs=1, batch_size=2,
                         patch_size=64, patches_per_image=4, val_crop=64,
                         model=UNetConfig(width=8, heads=2), progress=False, amp="off")
    trainer = loop.Trainer(config, None, loop.Distributed())
    trainer.ddp = Rank1(rank=1, world=2)
    monkeypatch.setattr(loop, "save_checkpoint", None)  # rank 1 must not even try
    with pytest.raises(loop.TrainingError, match="rank 0 failed"):
        trainer.end_epoch(loop.EpochStats(0, losses=[1.0], seen=2))


@pytest.mark.parametrize("backend,device,expect", [("nccl", "cuda:1", "cuda:1"),
                                                   ("gloo", "cpu", "cpu"),
                                                   ("gloo", "cuda:0", "cpu")])
def test_collectives_use_the_device_of_their_backend(monkeypatch, backend, device, expect):
    import torch

    monkeypatch.setattr(loop.dist, "get_backend", lambda *a: backend)
    ddp = loop.Distributed(rank=0, world=2, device=torch.device(device))
    assert ddp.collective_device() == torch.device(expect)
