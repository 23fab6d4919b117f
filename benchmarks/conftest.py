"""Shared fixtures of the benchmark suites, and what goes into the JSON besides the timings.

* ``machine_info`` (pytest-benchmark's machine block) gains the CPU model and SIMD flags, the
  torch/numpy/MONAI/ONNX Runtime versions, the thread count and the load average;
* the JSON gains a top-level ``"temseg"`` block: the sizes used (:class:`BenchConfig`), the
  load average at the end, and the rows that were skipped with their reasons (pytest-benchmark
  writes only the rows that ran; the summary lists the others).

Per-row annotations (measure, contender, unit, work per round, peak memory) live in each
benchmark's ``extra_info``: see :func:`benchmarks.contenders.annotate`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from temseg.policy import machine

from .contenders import BenchConfig, load_average, make_net, save_net

_SKIPPED: list[dict[str, str]] = []


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def pytest_benchmark_update_machine_info(config: pytest.Config,
                                         machine_info: dict[str, Any]) -> None:
    """Add what the summary's machine line needs."""
    cfg = BenchConfig.from_env()
    machine_info.update({
        **machine(),
        "torch_threads": cfg.threads,
        "numpy": _version("numpy"),
        "monai": _version("monai"),
        "onnxruntime": _version("onnxruntime"),
        "load_average_start": _LOAD_START,
    })


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list[Any],
                                 output_json: dict[str, Any]) -> None:
    """Sizes, end load average and skipped rows, under the top-level key ``"temseg"``."""
    from .contenders import temseg_slide_entry

    output_json["temseg"] = {
        "config": BenchConfig.from_env().to_dict(),
        "load_average_end": load_average(),
        "slide_entry": temseg_slide_entry(),
        "skipped": list(_SKIPPED),
    }


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember skipped benchmark rows and why."""
    if report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(
            report.longrepr)
        _SKIPPED.append({"name": report.nodeid.split("::")[-1], "file": report.fspath,
                         "reason": reason.removeprefix("Skipped: ")})


_LOAD_START = load_average()


@pytest.fixture(scope="session")
def bench_cfg() -> BenchConfig:
    """The sizes of this run (environment ``TEMSEG_BENCH_*``)."""
    return BenchConfig.from_env()


@pytest.fixture(scope="session", autouse=True)
def _torch_threads(bench_cfg: BenchConfig) -> Iterator[None]:
    """Every contender runs on the same number of intra-op threads."""
    saved = torch.get_num_threads()
    torch.set_num_threads(bench_cfg.threads)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def net(bench_cfg: BenchConfig) -> torch.nn.Module:
    """temseg's ResUNet at the benchmark width, seeded, eval mode (shared weights)."""
    return make_net(bench_cfg.width, bench_cfg.seed)


@pytest.fixture(scope="session")
def checkpoint(net: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``net`` as a temseg checkpoint, for the peak-memory subprocesses."""
    return save_net(net, tmp_path_factory.mktemp("model") / "net.pt")
