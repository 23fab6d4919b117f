"""Whole-slide inference, file to file, in MPix/s, and peak memory on the largest slide.

Contenders (same weights, 256 px tiles, batches of ``sw_batch`` tiles):

* baseline: the whole slide in memory, non-overlapping tiles, no blending
  (:mod:`benchmarks.baseline.infer`);
* MONAI ``sliding_window_inference`` with temseg's model as a user would call it (eager fp32,
  NCHW), overlap 0.25, gaussian blending, whole slide and full score map in memory;
* temseg: its best inference backend on this machine (torch or ONNX Runtime, whichever is
  faster here, measured in this run by the ``best_backend`` fixture) behind the C++ tiler,
  overlap 0.25, gaussian, streaming the slide from the TIFF.

temseg and MONAI run ~1.8x as many tile pixels as the baseline (overlap 0.25); MPix/s counts
slide pixels, so that cost is in the numbers.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from .baseline import baseline_from
from .contenders import (
    BenchConfig,
    annotate,
    make_backend,
    onnxruntime_backend_available,
    slide_baseline,
    slide_monai,
    slide_temseg,
    slide_tiles,
    temseg_slide_entry,
    write_test_slide,
)
from .peak_memory import measure as peak_memory

CONTENDERS = ("baseline", "monai", "temseg")


@pytest.fixture(scope="session")
def slides(bench_cfg: BenchConfig, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The timing slide and the (larger) peak-memory slide, synthetic TEM phantoms."""
    folder = tmp_path_factory.mktemp("slides")
    timing = write_test_slide(folder / f"slide_{bench_cfg.slide}.tif", bench_cfg.slide, seed=1)
    memory = write_test_slide(folder / f"slide_{bench_cfg.mem_slide}.tif", bench_cfg.mem_slide,
                              seed=2)
    return SimpleNamespace(timing=timing, memory=memory, folder=folder)


def _rate(backend: Any, tiles: torch.Tensor, reps: int = 2) -> float:
    """MPix/s of ``backend`` on a batch of tiles (best of ``reps`` after a warm-up)."""
    backend(tiles)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        backend(tiles)
        best = min(best, time.perf_counter() - t0)
    return tiles.shape[0] * tiles.shape[-2] * tiles.shape[-1] / best / 1e6


@pytest.fixture(scope="session")
def best_backend(net: torch.nn.Module, bench_cfg: BenchConfig,
                 tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """temseg's fastest inference backend on this machine, chosen by timing each available
    one on the same batch of tiles (torch eager channels-last; torch in bf16 autocast where
    temseg's precision policy picks it for this CPU; ONNX Runtime when temseg has that backend
    and it is installed)."""
    candidates: dict[str, Any] = {"torch": make_backend("torch", net)}
    onnx_path: Path | None = None
    notes: dict[str, str] = {}
    from temseg.policy import inference_precision

    if inference_precision("cpu", "auto").dtype == torch.bfloat16:
        # what `temseg predict` runs here by default (--amp auto): bf16 measured faster
        candidates["torch-bf16"] = make_backend("torch-bf16", net)
    if onnxruntime_backend_available():
        try:
            from temseg.checkpoint import SegmentationModel
            from temseg.export.onnx import export_onnx

            onnx_path = export_onnx(SegmentationModel(net),
                                    tmp_path_factory.mktemp("onnx") / "model.onnx", softmax=True)
            candidates["onnxruntime"] = make_backend("onnxruntime", net, onnx_path)
        except Exception as exc:  # report, fall back to torch
            notes["onnxruntime"] = f"unavailable: {type(exc).__name__}: {exc}"[:300]
    else:
        notes["onnxruntime"] = "temseg has no ONNX Runtime backend here (or it is not installed)"
    gen = torch.Generator().manual_seed(0)
    tiles = torch.randn(bench_cfg.sw_batch, 1, bench_cfg.tile, bench_cfg.tile, generator=gen)
    rates = {name: round(_rate(b, tiles), 4) for name, b in candidates.items()}
    name = max(rates, key=rates.__getitem__)
    return SimpleNamespace(name=name, backend=candidates[name], rates=rates, notes=notes,
                           onnx_path=onnx_path)


def _label(contender: str, best: SimpleNamespace) -> str:
    return {"baseline": "baseline (tile loop, no overlap)",
            "monai": "MONAI sliding_window_inference",
            "temseg": f"temseg ({best.name} + C++ tiler)"}[contender]


def _extra(contender: str, size: int, cfg: BenchConfig, best: SimpleNamespace) -> dict:
    overlapping, plain = slide_tiles(size, cfg.tile, cfg.overlap)
    tiles = plain if contender == "baseline" else overlapping
    extra: dict[str, Any] = {"slide": f"{size}x{size}", "tiles": tiles, "roofline": True,
                             "tile_pixels_per_slide_pixel": round(tiles * cfg.tile**2 / size**2,
                                                                  3)}
    if contender == "temseg":
        extra.update(backend=best.name, backend_probe_mpix_s=best.rates,
                     backend_notes=best.notes, entry=temseg_slide_entry())
    return extra


@pytest.mark.parametrize("contender", CONTENDERS)
def test_whole_slide(benchmark, bench_cfg: BenchConfig, net: torch.nn.Module,
                     slides: SimpleNamespace, best_backend: SimpleNamespace, contender: str,
                     tmp_path: Path) -> None:
    """TIFF in, label TIFF out, on the timing slide."""
    src, dst = slides.timing, tmp_path / "labels.tif"
    warm = torch.zeros(bench_cfg.sw_batch, 1, bench_cfg.tile, bench_cfg.tile)
    if contender == "baseline":
        model = baseline_from(net).eval()
        with torch.inference_mode():
            model(warm)

        def run() -> None:
            slide_baseline(model, src, dst, bench_cfg)
    elif contender == "monai":
        with torch.inference_mode():
            net(warm)

        def run() -> None:
            slide_monai(net, src, dst, bench_cfg)
    else:
        def run() -> None:
            slide_temseg(best_backend.backend, src, dst, bench_cfg)

    size = bench_cfg.slide
    annotate(benchmark, f"whole-slide inference {size}x{size}", _label(contender, best_backend),
             unit="MPix/s", work=size * size / 1e6, baseline=contender == "baseline",
             **_extra(contender, size, bench_cfg, best_backend))
    benchmark.pedantic(run, rounds=bench_cfg.slide_rounds, iterations=1, warmup_rounds=0)
    assert dst.is_file()


@pytest.mark.parametrize("contender", CONTENDERS)
def test_whole_slide_peak_memory(benchmark, bench_cfg: BenchConfig, checkpoint: Path,
                                 slides: SimpleNamespace, best_backend: SimpleNamespace,
                                 contender: str, tmp_path: Path) -> None:
    """The same paths on the largest slide, each in a fresh process: peak RSS (and the MPix/s
    of that run, start-up excluded)."""
    size = bench_cfg.mem_slide
    spec = {"measure": "slide", "contender": contender, "checkpoint": str(checkpoint),
            "src": str(slides.memory), "dst": str(tmp_path / "labels.tif"),
            "backend": best_backend.name, "config": bench_cfg.to_dict()}
    if best_backend.name == "onnxruntime":
        spec["onnx"] = str(best_backend.onnx_path)
    result: dict[str, Any] = {}

    def run() -> None:
        result.update(peak_memory(spec))

    annotate(benchmark, f"whole-slide peak memory {size}x{size} (fresh process per contender)",
             _label(contender, best_backend), unit="MPix/s", work=size * size / 1e6,
             baseline=contender == "baseline", **_extra(contender, size, bench_cfg,
                                                        best_backend))
    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    # the summary's MPix/s for this row: the work inside the child, start-up excluded
    benchmark.extra_info.update(result, seconds=result["work_seconds"])
