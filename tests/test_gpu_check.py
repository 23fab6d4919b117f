"""benchmarks/gpu_check.py cannot rot: its dry run (the same code paths on the CPU, tiny sizes,
kernels through the Triton interpreter) runs every section, fails nothing, and names every row
that only a GPU can produce as skipped with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = ("env", "attention", "loss", "attention_speed", "loss_speed", "train", "slide",
            "train_compile", "deploy")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    pytest.importorskip("triton", reason="the dry run runs the kernels through Triton's "
                        "interpreter")
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-6000:]
    return json.loads(out.read_text()), res.stdout


def test_every_section_runs_and_nothing_fails(dry_run: tuple[dict, str]) -> None:
    data, stdout = dry_run
    assert data["complete"] and data["meta"]["dry_run"]
    assert tuple(data["sections"]) == SECTIONS
    assert all(info["state"] == "done" for info in data["sections"].values())
    rows = data["rows"]
    for section in SECTIONS:
        assert any(r["section"] == section and r["status"] in ("pass", "skip") for r in rows), \
            section
    failed = [f"{r['section']}/{r['name']}: {r['note']}" for r in rows if r["status"] == "fail"]
    assert not failed, failed
    assert not [r for r in rows if r["name"].startswith("(")], "a section's setup or time " \
        "guard cut it short"
    # the code paths ran: correctness checks passed on the CPU, not only skipped
    for section in ("env", "attention", "loss", "train", "slide"):
        assert any(r["section"] == section and r["status"] == "pass" for r in rows), section
    # the table comes last
    assert stdout.rstrip().splitlines()[-1].startswith("gpu_check: ")
    assert f"{data['summary']['fail']} fail" in stdout.rstrip().splitlines()[-1]


def test_gpu_only_rows_are_skipped_with_a_reason(dry_run: tuple[dict, str]) -> None:
    rows = dry_run[0]["rows"]
    gpu_only = [r for r in rows if r["gpu_only"]]
    assert {r["section"] for r in gpu_only} == set(SECTIONS)
    for r in gpu_only:
        assert r["status"] == "skip" and r["note"], r
        assert r["value"] is None, r  # a CPU number is never reported as a GPU measurement
    # bf16 cannot run under the interpreter; TensorRT is never claimed
    assert all(r["status"] == "skip" for r in rows if r["name"].startswith("bfloat16"))
    trt = [r for r in rows if r["name"] == "TensorRT engine"]
    assert len(trt) == 1 and trt[0]["status"] == "skip" and "tensorrt" in trt[0]["note"].lower()
