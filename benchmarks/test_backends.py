"""CPU whole-slide throughput (MPix/s) of temseg's inference backends behind the same C++
tiler: torch eager (channels-last) in fp32 and in bf16 autocast (skipped on CPUs without
native bf16, where it runs several times slower), torch.compile, ONNX Runtime, and the
AOTInductor package the C++ runtime loads (through ``torch._inductor.aoti_load_package``).

Same weights, same synthetic slide (``TEMSEG_BENCH_SLIDE``, capped at 1024 px here to keep
``make bench`` short: four backends, torch.compile warm-up and AOTI compilation included),
256 px tiles, overlap 0.25,
gaussian blending, TIFF in and label TIFF out (:func:`benchmarks.contenders.slide_temseg`).
Export / compilation happens before the timed rounds (torch.compile: one untimed warm-up
slide, since it compiles per batch shape). torch eager is the reference row (ratio 1.00).

Run: ``.venv/bin/python -m pytest benchmarks/test_backends.py --benchmark-only``
(``TEMSEG_BENCH_QUICK=1`` for a smoke run).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from .contenders import BenchConfig, annotate, slide_temseg, write_test_slide

BACKENDS = ("torch", "torch-bf16", "torch.compile", "onnxruntime", "aoti")


class _AotiBackend:
    """An AOTInductor package (softmax embedded) as a tiler backend."""

    name = "aoti"
    num_classes = 5

    def __init__(self, path: Path) -> None:
        from temseg.export.aoti import load_aoti

        self.run = load_aoti(path)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.run(batch.contiguous())


@pytest.fixture(scope="module")
def slide(bench_cfg: BenchConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("backend_slide")
    return write_test_slide(folder / f"slide_{_size(bench_cfg)}.tif", _size(bench_cfg), seed=1)


def _size(cfg: BenchConfig) -> int:
    return min(cfg.slide, 1024)


def _backend(name: str, net: torch.nn.Module, cfg: BenchConfig, folder: Path) -> tuple[Any, float]:
    """(backend, seconds spent exporting / compiling it before the timed rounds)."""
    from temseg.checkpoint import SegmentationModel
    from temseg.inference.backends import OnnxRuntimeBackend, TorchBackend

    model = SegmentationModel(copy.deepcopy(net).eval(), patch_size=cfg.tile)
    t0 = time.perf_counter()
    if name == "torch":
        backend: Any = TorchBackend(model)
    elif name == "torch-bf16":
        from temseg.policy import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            pytest.skip("no native bf16 on this CPU (AVX2 only): bf16 runs several times "
                        "slower than fp32, so temseg never picks it here")
        backend = TorchBackend(model, amp=torch.bfloat16)
    elif name == "torch.compile":
        backend = TorchBackend(model, compile=True)
    elif name == "onnxruntime":
        pytest.importorskip("onnxruntime")
        backend = OnnxRuntimeBackend.from_model(model, cache_dir=folder)
    else:
        from temseg.export.aoti import export_aoti

        path = export_aoti(model, folder / "model.pt2", softmax=True, sample_tile=cfg.tile,
                           max_batch=cfg.sw_batch, dynamic_tiles=False)
        backend = _AotiBackend(path)
    backend(torch.zeros(cfg.sw_batch, 1, cfg.tile, cfg.tile))
    return backend, time.perf_counter() - t0


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_whole_slide(benchmark, bench_cfg: BenchConfig, net: torch.nn.Module,
                             slide: Path, name: str, tmp_path: Path) -> None:
    """TIFF in, label TIFF out through segment_slide with backend ``name``."""
    backend, prepare_s = _backend(name, net, bench_cfg, tmp_path)
    dst = tmp_path / "labels.tif"
    if name == "torch.compile":  # compiles once per tile batch shape: warm up on the slide
        slide_temseg(backend, slide, dst, bench_cfg)
    size = _size(bench_cfg)
    annotate(benchmark, f"backends: whole-slide inference {size}x{size} (CPU)",
             f"temseg {name} + C++ tiler", unit="MPix/s", work=size * size / 1e6,
             baseline=name == "torch", backend=name, prepare_seconds=round(prepare_s, 1),
             tile=bench_cfg.tile, sw_batch=bench_cfg.sw_batch, width=bench_cfg.width,
             threads=bench_cfg.threads)
    benchmark.pedantic(lambda: slide_temseg(backend, slide, dst, bench_cfg),
                       rounds=bench_cfg.slide_rounds, iterations=1, warmup_rounds=0)
    assert dst.is_file()
