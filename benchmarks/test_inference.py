"""Whole-slide inference, file to file, in MPix/s: temseg against MONAI at its best, with
every contender's labels compared with temseg fp32's; and peak memory on the largest slide.

**Against MONAI** (``test_whole_slide_vs_monai``; one measure per model width, 32 = the
architecture's reference width and 16 = the training default): a real TEM slide
(:func:`benchmarks.contenders.write_tem_slide`, 2560 px: 49 tiles of 512 px at overlap 0.25,
36 at 0.125), MONAI's settings (roi 512, overlap 0.25, gaussian, sw_batch 4), same weights
(:func:`benchmarks.contenders.trained_net`). temseg rows run the slide once untimed first
(OpenVINO and torch.compile compile once per batch shape):

* MONAI ``sliding_window_inference`` out of the box (eager fp32 NCHW), with channels-last, and
  **at its best** (bf16 autocast + channels-last where the CPU has bf16 units, else fp32
  channels-last): the reference row of the measure (ratio 1.00);
* temseg fp32 (torch eager behind the C++ tiler): the labels every row is compared with;
* temseg's default path (``temseg predict`` with no options: the backend and precision of the
  fixed rule in :func:`temseg.inference.backends.default_backend`, never a timing);
* temseg int8 (OpenVINO on a ``temseg export --precision int8`` model, calibrated on the
  example data) where the CPU has VNNI;
* temseg's default path at its own default window (roi 512, overlap
  :data:`temseg.spec.DEFAULT_OVERLAP`, 0.125: fewer overlap FLOPs, docs/benchmarks.md "Less
  wasted overlap").

**Peak memory** (``test_whole_slide_peak_memory``): the seed's baseline tile loop, MONAI out
of the box and temseg's default path on a large phantom slide, each in a fresh process.
MPix/s counts slide pixels, so the overlap's cost is in the numbers.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from temseg.policy import cpu_has_vnni
from temseg.spec import DEFAULT_OVERLAP

from .contenders import (
    BenchConfig,
    annotate,
    int8_export,
    label_agreement,
    make_backend,
    monai_best_settings,
    slide_monai,
    slide_temseg,
    slide_tiles,
    temseg_slide_entry,
    trained_net,
    write_tem_slide,
    write_test_slide,
)
from .peak_memory import measure as peak_memory
from .roofline import flops_per_pixel

CONTENDERS = ("baseline", "monai", "temseg")
# temseg fp32 first: every later row's labels are compared with its
PEERS = ("temseg-fp32", "monai-fp32", "monai-channels-last", "monai-best", "temseg",
         "temseg-int8", "temseg-own-window")


@pytest.fixture(scope="session")
def slides(bench_cfg: BenchConfig, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The (large) peak-memory slide, a synthetic TEM phantom."""
    folder = tmp_path_factory.mktemp("slides")
    memory = write_test_slide(folder / f"slide_{bench_cfg.mem_slide}.tif", bench_cfg.mem_slide,
                              seed=2)
    return SimpleNamespace(memory=memory, folder=folder)


@pytest.fixture(scope="session")
def default_backend(net: torch.nn.Module) -> SimpleNamespace:
    """What ``temseg predict`` runs on this CPU with no options (the fixed rule)."""
    backend = make_backend("auto", net)
    return SimpleNamespace(name=backend.name, backend=backend)


def _label(contender: str, best: SimpleNamespace) -> str:
    """Row names of the peak-memory measure."""
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
        extra.update(backend=best.name, entry=temseg_slide_entry())
    return extra


@pytest.fixture(scope="session")
def tem_slide(bench_cfg: BenchConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    size = bench_cfg.peer_slide
    return write_tem_slide(tmp_path_factory.mktemp("tem") / f"tem_{size}.tif", size)


@pytest.fixture(scope="session")
def peer_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, str], Path]:
    """(width, contender) -> its label TIFF, for the agreement column."""
    return {}


def _peer(contender: str, net: torch.nn.Module, cfg: BenchConfig, folder: Path
          ) -> tuple[Any, str, dict[str, Any]]:
    """(run(src, dst), row label, extra facts) of one contender against MONAI."""
    roi, batch = cfg.peer_roi, cfg.peer_sw_batch
    if contender.startswith("monai"):
        precision, channels_last = {"monai-fp32": ("fp32", False),
                                    "monai-channels-last": ("fp32", True),
                                    "monai-best": monai_best_settings()}[contender]
        if contender == "monai-channels-last" and monai_best_settings()[0] == "fp32":
            pytest.skip("MONAI at its best is fp32 channels-last on this CPU (no bf16 units)")
        label = ("MONAI sliding_window_inference, "
                 f"{'bf16 autocast' if precision == 'bf16' else 'fp32'}"
                 f"{' + channels-last' if channels_last else ' NCHW'}"
                 f"{' (at its best)' if contender == 'monai-best' else ''}")
        with torch.inference_mode():
            net(torch.zeros(batch, 1, roi, roi))
        return (lambda src, dst: slide_monai(net, src, dst, cfg, precision, channels_last,
                                             roi, batch)), label, {"precision": precision}
    if contender == "temseg-int8" and not cpu_has_vnni():
        pytest.skip("no VNNI on this CPU: temseg does not run int8 here")
    name = {"temseg-fp32": "torch", "temseg": "auto", "temseg-own-window": "auto",
            "temseg-int8": "openvino-int8"}[contender]
    onnx = int8_export(net, folder, roi // 2) if contender == "temseg-int8" else None
    backend = make_backend(name, net, onnx, patch_size=roi // 2)
    window = {"roi": roi, "overlap": DEFAULT_OVERLAP if contender == "temseg-own-window"
              else cfg.overlap}
    suffix = {"temseg": ", default path at MONAI's window",
              "temseg-own-window": ", default path and window"}.get(contender, "")
    label = (f"temseg {backend.precision} ({backend.name} + C++ tiler{suffix}, roi "
             f"{window['roi']}, overlap {window['overlap']})")

    def run(src: Path, dst: Path) -> Path:
        return slide_temseg(backend, src, dst, cfg, window["roi"], batch, window["overlap"])

    return run, label, {"backend": backend.name, "precision": backend.precision, **window}


@pytest.mark.parametrize("contender", PEERS)
@pytest.mark.parametrize("width", BenchConfig.from_env().peer_widths)
def test_whole_slide_vs_monai(benchmark, bench_cfg: BenchConfig, tem_slide: Path,
                              peer_runs: dict, width: int, contender: str,
                              tmp_path: Path) -> None:
    """TIFF in, label TIFF out, on a real TEM slide at MONAI's settings."""
    net = trained_net(width, bench_cfg.seed)
    run, label, extra = _peer(contender, net, bench_cfg, tmp_path)
    extra["flops_per_pixel"] = round(flops_per_pixel(net, extra.get("roi", bench_cfg.peer_roi)))
    dst = tmp_path / "labels.tif"
    size = bench_cfg.peer_slide
    overlapping, _ = slide_tiles(size, extra.get("roi", bench_cfg.peer_roi),
                                 extra.get("overlap", bench_cfg.overlap))
    tile = extra.get("roi", bench_cfg.peer_roi)
    annotate(benchmark, f"whole-slide inference vs MONAI, width {width}, real TEM "
             f"{size}x{size}", label, unit="MPix/s", work=size * size / 1e6,
             baseline=contender == "monai-best", slide=f"{size}x{size}", roofline=True,
             model_width=width, tiles=overlapping,
             tile_pixels_per_slide_pixel=round(overlapping * tile**2 / size**2, 3), **extra)
    if contender.startswith("temseg"):  # untimed: compiles each batch shape of this slide once
        run(tem_slide, dst)
    benchmark.pedantic(run, args=(tem_slide, dst), rounds=bench_cfg.slide_rounds,
                       iterations=1, warmup_rounds=0)
    peer_runs[(width, contender)] = dst
    reference = peer_runs.get((width, "temseg-fp32"))
    if reference is not None:
        benchmark.extra_info["agreement_with_temseg_fp32"] = round(
            label_agreement(dst, reference), 5)


@pytest.mark.parametrize("contender", CONTENDERS)
def test_whole_slide_peak_memory(benchmark, bench_cfg: BenchConfig, checkpoint: Path,
                                 slides: SimpleNamespace, default_backend: SimpleNamespace,
                                 contender: str, tmp_path: Path) -> None:
    """The same paths on the largest slide, each in a fresh process: peak RSS (and the MPix/s
    of that run, start-up excluded)."""
    size = bench_cfg.mem_slide
    spec = {"measure": "slide", "contender": contender, "checkpoint": str(checkpoint),
            "src": str(slides.memory), "dst": str(tmp_path / "labels.tif"),
            "backend": "auto", "config": bench_cfg.to_dict()}
    result: dict[str, Any] = {}

    def run() -> None:
        result.update(peak_memory(spec))

    annotate(benchmark, f"whole-slide peak memory {size}x{size} (fresh process per contender)",
             _label(contender, default_backend), unit="MPix/s", work=size * size / 1e6,
             baseline=contender == "baseline", **_extra(contender, size, bench_cfg,
                                                        default_backend))
    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    # the summary's MPix/s for this row: the work inside the child, start-up excluded
    benchmark.extra_info.update(result, seconds=result["work_seconds"])
