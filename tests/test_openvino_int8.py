"""The OpenVINO backend (fp32 / bf16 on an ONNX export) and int8 static post-training
quantisation (``temseg export --precision int8``), run through the C++ tiler like the others."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")

from temseg.checkpoint import SegmentationModel, save_checkpoint  # noqa: E402
from temseg.cli import main  # noqa: E402
from temseg.data.normalize import Normalization  # noqa: E402
from temseg.export import export_onnx  # noqa: E402
from temseg.export.quantize import calibration_tiles, quantize_onnx  # noqa: E402
from temseg.inference.backends import (  # noqa: E402
    OnnxRuntimeBackend,
    OpenVinoBackend,
    open_backend,
)
from temseg.models import UNetConfig, build_model  # noqa: E402
from temseg.policy import cpu_has_native_bf16  # noqa: E402
from temseg.spec import ModelSpec, read_onnx_metadata  # noqa: E402
from temseg.synth import write_dataset  # noqa: E402


def small_model(seed: int = 0) -> SegmentationModel:
    """A narrow random ResUNet whose head is scaled so that its labels vary over a tile."""
    torch.manual_seed(seed)
    model = SegmentationModel(build_model(UNetConfig(width=8, heads=2)),
                              Normalization(1.0, 99.0), patch_size=64, pixel_size_um=None)
    with torch.no_grad():
        model.net.head.weight.mul_(40.0)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    return small_model()


@pytest.fixture(scope="module")
def exported(model: SegmentationModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("ov") / "model.onnx", softmax=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("calib") / "synth"
    write_dataset(root, n_images=2, height=96, width=96, seed=5)
    return root


@pytest.fixture(scope="module")
def int8(exported: Path, model: SegmentationModel, data: Path) -> Path:
    tiles = calibration_tiles(data, ModelSpec.from_model(model), count=8)
    return quantize_onnx(exported, exported.with_name("model.int8.onnx"), tiles)


def _tiles(n: int = 3, side: int = 64) -> torch.Tensor:
    return torch.randn(n, 1, side, side, generator=torch.Generator().manual_seed(1))


def test_openvino_fp32_matches_torch(exported: Path, model: SegmentationModel):
    backend = OpenVinoBackend(exported, "fp32")
    x = _tiles()
    with torch.no_grad():
        ref = model(x).softmax(1)
    got = backend(x)
    assert (backend.name, backend.precision) == ("openvino-fp32", "fp32")
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert (got - ref).abs().max() < 1e-4
    # another batch shape compiles its own model; the first one is reused
    assert backend(x[:2]).shape == (2, 5, 64, 64)
    assert len(backend._compiled) == 2


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="no native bf16 units on this CPU")
def test_openvino_bf16_is_close_and_deterministic(exported: Path, model: SegmentationModel):
    backend = OpenVinoBackend(exported, "bf16")
    x = _tiles()
    with torch.no_grad():
        ref = model(x).softmax(1)
    a, b = backend(x), backend(x)
    assert torch.equal(a, b)  # same input, same machine: same output
    assert (a.argmax(1) == ref.argmax(1)).float().mean() > 0.97
    assert (a - ref).abs().max() < 0.1


def test_calibration_tiles_are_normalised_training_patches(data: Path,
                                                         model: SegmentationModel):
    tiles = calibration_tiles(data, ModelSpec.from_model(model), count=6)
    assert tiles.shape == (6, 1, 64, 64) and tiles.dtype == np.float32
    # the percentile normalisation maps the 1st / 99th percentiles to -1 / +1
    assert -1.6 < float(tiles.min()) < -0.8 and 0.8 < float(tiles.max()) < 1.6
    assert not np.array_equal(tiles[0], tiles[2])  # different positions / images
    with pytest.raises(ValueError, match="images/images: folder not found"):
        calibration_tiles(data / "images", ModelSpec.from_model(model))


def test_int8_export_quantises_the_convolutions_only(int8: Path, exported: Path):
    import onnx

    spec = read_onnx_metadata(int8)
    assert spec.extra["dtype"] == "int8"
    assert spec.extra["quantization"]["calibration_tiles"] == 8
    assert spec.normalization == read_onnx_metadata(exported).normalization
    graph = onnx.load(str(int8)).graph
    producers = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    dequantised = [all(producers.get(i) is not None
                       and producers[i].op_type == "DequantizeLinear" for i in n.input[:2])
                   for n in convs]
    assert all(dequantised), "every convolution reads dequantised int8 input and weights"
    weights = {i.name for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "QuantizeLinear":  # no attention output is quantised ...
            source = producers.get(n.input[0])
            assert source is None or source.op_type not in ("MatMul", "Softmax")
        if n.op_type == "MatMul":  # ... and no attention weight
            for i in n.input:
                p = producers.get(i)
                assert p is None or p.op_type != "DequantizeLinear" or p.input[0] not in weights
    with pytest.raises(ValueError, match="float32 export"):
        quantize_onnx(int8, int8.with_name("twice.onnx"), np.zeros((1, 1, 64, 64), np.float32))


@pytest.mark.parametrize("backend_cls", [OnnxRuntimeBackend, OpenVinoBackend])
def test_int8_backends_agree_with_fp32(int8: Path, model: SegmentationModel, data: Path,
                                       backend_cls):
    """On patches of the kind it was calibrated on (other positions)."""
    backend = backend_cls(int8)
    assert backend.precision == "int8" and backend.name.endswith("-int8")
    x = torch.from_numpy(calibration_tiles(data, ModelSpec.from_model(model), 4, seed=1))
    with torch.no_grad():
        ref = model(x).argmax(1)
    got = backend(x)
    assert torch.equal(got, backend(x))
    assert (got.argmax(1) == ref).float().mean() > 0.9


def test_export_int8_and_predict_through_the_tiler(model: SegmentationModel, data: Path,
                                                   tmp_path: Path):
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, model)
    out = tmp_path / "m.int8.onnx"
    assert main(["export", str(ckpt), "--precision", "int8", "--calibration-data", str(data),
                 "--softmax", "--out", str(out)]) == 0
    image = sorted((data / "images").glob("*.tif"))[0]
    for backend in ("onnxruntime", "openvino"):
        dst = tmp_path / backend
        assert main(["predict", str(out), str(image), "--out", str(dst), "--backend", backend,
                     "--roi-size", "64", "--no-progress"]) == 0
        mask = tifffile.imread(dst / f"{image.stem}_mask.tif")
        assert mask.shape == (96, 96) and set(np.unique(mask)) <= {0, 50, 100, 150, 200}
        with tifffile.TiffFile(dst / f"{image.stem}_mask.tif") as tif:
            desc = json.loads(tif.pages[0].description)
        assert desc["temseg"]["precision"] == "int8"


@pytest.mark.parametrize("argv,problem", [
    (["--precision", "int8"], "needs --calibration-data"),
    (["--precision", "int8", "--calibration-data", "X", "--format", "aoti"], "--format onnx"),
    (["--precision", "bf16"], "fp32 or int8"),
    (["--calibration-data", "X"], "only used with --precision int8"),
    (["--precision", "int8", "--calibration-data", "missing-folder"], "not found"),
])
def test_export_precision_errors(model: SegmentationModel, tmp_path: Path, capsys, argv,
                                 problem):
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, model)
    argv = [a if a != "X" else str(tmp_path) for a in argv]
    assert main(["export", str(ckpt), "--out", str(tmp_path / "m.onnx"), *argv]) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_open_backend_runs_an_onnx_file_with_either_runtime(exported: Path):
    assert open_backend(exported, "onnxruntime").name == "onnxruntime"
    assert open_backend(exported, "openvino", amp="off").name == "openvino-fp32"
    with pytest.raises(ValueError, match="onnxruntime or openvino"):
        open_backend(exported, "torch")


@pytest.mark.parametrize("flags,amp,expect", [
    ({"avx2", "fma"}, "auto", "openvino-fp32"),  # no bf16 units: the exact fp32 path
    ({"avx2", "avx512f", "avx512_vnni"}, "auto", "openvino-fp32"),  # VNNI alone: fp32
    ({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}, "auto", "openvino-bf16"),
    ({"avx2", "amx_bf16", "amx_int8"}, "auto", "openvino-bf16"),
    ({"avx2", "amx_bf16", "amx_int8"}, "off", "openvino-fp32"),
])
def test_the_automatic_precision_follows_the_cpu_features(exported: Path, monkeypatch, flags,
                                                           amp, expect):
    """The rule with the CPU's features mocked: bf16 only on CPUs with bf16 units, else
    fp32; never a timing."""
    from temseg import policy

    monkeypatch.setattr(policy, "cpu_flags", lambda: frozenset(flags))
    assert open_backend(exported, "auto", amp=amp).name == expect


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("flags,amp,calibrated,expect", [
    ({"avx2", "amx_bf16", "amx_int8"}, "auto", True, "openvino-int8"),
    ({"avx2", "avx512f", "avx512_vnni"}, "auto", True, "openvino-int8"),  # VNNI, no bf16
    ({"avx2", "amx_bf16", "amx_int8"}, "auto", False, "openvino-bf16"),  # nothing to calibrate
    ({"avx2", "amx_bf16", "amx_int8"}, "off", True, "openvino-fp32"),  # exact, as asked
    ({"avx2", "fma"}, "auto", True, "openvino-fp32"),  # no VNNI, no bf16: the exact path
])
def test_a_checkpoints_automatic_path_follows_the_cpu_features(
        model: SegmentationModel, data: Path, cache: Path, monkeypatch, flags, amp,
        calibrated, expect):
    """``temseg predict CHECKPOINT`` with no options, the CPU's features mocked: int8 where
    the CPU has VNNI and the checkpoint carries calibration patches, else bf16 / fp32."""
    import copy

    from temseg import policy
    from temseg.inference.backends import make_backend

    monkeypatch.setenv("TEMSEG_CACHE_DIR", str(cache))  # one export for every case
    monkeypatch.setattr(policy, "cpu_flags", lambda: frozenset(flags))
    m = copy.deepcopy(model)
    m.calibration = (torch.from_numpy(calibration_tiles(data, ModelSpec.from_model(m), 8))
                     if calibrated else None)
    backend = make_backend("auto", m, amp=amp)
    assert backend.name == expect
    if expect.endswith("int8"):
        assert read_onnx_metadata(backend.path).extra["quantization"]["calibration_tiles"] == 8
        again = make_backend("auto", m, amp=amp)  # quantised once: the cached file is reused
        assert again.path == backend.path
