"""CPU whole-slide throughput (MPix/s) of temseg's inference backends behind the same C++
tiler: torch eager (channels-last) in fp32 and in bf16 autocast (bf16 rows are skipped on
CPUs without native bf16, where it runs several times slower), torch.compile, torch.compile
in bf16 with inductor's ``freezing`` (BatchNorm folded, weights prepacked), ONNX Runtime
(graph optimisations at ORT_ENABLE_ALL) in fp32 and on the int8 export, OpenVINO in fp32,
bf16 and int8, and the AOTInductor package the C++ runtime loads (through
``torch._inductor.aoti_load_package``). int8 rows (calibrated on the example data's patches)
are skipped on CPUs without VNNI.

Same weights, same synthetic slide (``TEMSEG_BENCH_SLIDE``, capped at 1024 px here to keep
``make bench`` short: ten backends, warm-ups and compilation included),
256 px tiles, overlap 0.25,
gaussian blending, TIFF in and label TIFF out (:func:`benchmarks.contenders.slide_temseg`).
Export / compilation happens before the timed rounds (every row but torch eager runs one
untimed warm-up slide: torch.compile, OpenVINO and AOTI prepare each batch shape once).
torch eager is the reference row (ratio 1.00).

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

from temseg.inference.backends.aoti import AotiBackend

from .contenders import (
    BenchConfig,
    annotate,
    int8_export,
    make_backend,
    slide_temseg,
    write_test_slide,
)

BACKENDS = ("torch", "torch-bf16", "torch.compile", "torch-bf16+freezing", "onnxruntime",
            "onnxruntime-int8", "openvino-fp32", "openvino-bf16", "openvino-int8", "aoti")


@pytest.fixture(scope="module")
def slide(bench_cfg: BenchConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("backend_slide")
    return write_test_slide(folder / f"slide_{_size(bench_cfg)}.tif", _size(bench_cfg), seed=1)


def _size(cfg: BenchConfig) -> int:
    return min(cfg.slide, 1024)


def _needs_bf16() -> None:
    from temseg.policy import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        pytest.skip("no native bf16 on this CPU (AVX2 only): bf16 runs several times "
                    "slower than fp32, so temseg never picks it here")


class _Frozen:
    """torch-bf16 compiled with inductor's ``freezing`` (constant-folds BatchNorm into the
    convolutions and prepacks the weights for oneDNN); every call (so every batch shape's
    compilation) runs with freezing on."""

    name = "torch-bf16+compile+freezing"

    def __init__(self, model: Any) -> None:
        from temseg.inference.backends import TorchBackend

        self.inner = TorchBackend(model, compile=True, amp=torch.bfloat16)
        self.num_classes, self.spec, self.precision = (self.inner.num_classes,
                                                       self.inner.spec, "bf16")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch._inductor.config.patch(freezing=True):
            return self.inner(batch)


def _backend(name: str, net: torch.nn.Module, cfg: BenchConfig, folder: Path) -> tuple[Any, float]:
    """(backend, seconds spent exporting / compiling it before the timed rounds)."""
    from temseg.checkpoint import SegmentationModel
    from temseg.inference.backends import OnnxRuntimeBackend, TorchBackend

    model = SegmentationModel(copy.deepcopy(net).eval(), patch_size=cfg.tile)
    t0 = time.perf_counter()
    if name == "torch":
        backend: Any = TorchBackend(model)
    elif name == "torch-bf16":
        _needs_bf16()
        backend = TorchBackend(model, amp=torch.bfloat16)
    elif name == "torch.compile":
        backend = TorchBackend(model, compile=True)
    elif name == "torch-bf16+freezing":
        _needs_bf16()
        backend = _Frozen(model)
    elif name == "onnxruntime":
        pytest.importorskip("onnxruntime")
        backend = OnnxRuntimeBackend.from_model(model, cache_dir=folder)
    elif name.endswith("-int8"):
        from temseg.policy import cpu_has_vnni

        if not cpu_has_vnni():
            pytest.skip("no VNNI on this CPU: temseg does not run int8 here")
        backend = make_backend(name if name.startswith("openvino") else "onnxruntime", net,
                               int8_export(net, folder, cfg.tile), patch_size=cfg.tile)
    elif name.startswith("openvino"):
        pytest.importorskip("openvino")
        if name.endswith("bf16"):
            _needs_bf16()
        backend = make_backend(name, net, patch_size=cfg.tile)
    else:
        from temseg.export.aoti import export_aoti

        path = export_aoti(model, folder / "model.pt2", softmax=True, sample_tile=cfg.tile,
                           max_batch=cfg.sw_batch, dynamic_tiles=False)
        backend = AotiBackend(path)
    backend(torch.zeros(cfg.sw_batch, 1, cfg.tile, cfg.tile))
    return backend, time.perf_counter() - t0


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_whole_slide(benchmark, bench_cfg: BenchConfig, net: torch.nn.Module,
                             slide: Path, name: str, tmp_path: Path) -> None:
    """TIFF in, label TIFF out through segment_slide with backend ``name``."""
    backend, prepare_s = _backend(name, net, bench_cfg, tmp_path)
    dst = tmp_path / "labels.tif"
    if name != "torch":  # compiled runtimes prepare each batch shape once: warm up
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
