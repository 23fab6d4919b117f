"""ONNX export: graph contract, metadata, ONNX Runtime vs PyTorch parity, TensorRT operator
coverage, polygraphy sanitising, and the onnxruntime backend of ``temseg predict``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript")

from temseg.checkpoint import SegmentationModel, save_checkpoint  # noqa: E402
from temseg.cli import main  # noqa: E402
from temseg.data.normalize import Normalization  # noqa: E402
from temseg.export import export_onnx, onnx_op_types  # noqa: E402
from temseg.export.tensorrt import TENSORRT_10_ONNX_OPS, unsupported_ops  # noqa: E402
from temseg.inference import Predictor  # noqa: E402
from temseg.inference.backends import (  # noqa: E402
    OnnxRuntimeBackend,
    default_backend,
    make_backend,
    open_backend,
)
from temseg.models import UNetConfig, build_model  # noqa: E402
from temseg.policy import choose_precision  # noqa: E402
from temseg.spec import ModelSpec, read_onnx_metadata  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TEM_IMAGES = sorted((REPO.parent / "shared" / "data" / "tem-mouse-cc" / "images").glob("*.tif"))
TOL = 1e-4  # fp32 ONNX Runtime vs PyTorch eager, max abs difference of the logits


def small_model(patch_size: int = 64, seed: int = 0) -> SegmentationModel:
    """A narrow random ResUNet whose head is scaled up so that its labels vary over an image
    (random weights give near-constant logits otherwise). Fine for parity tests."""
    torch.manual_seed(seed)
    model = SegmentationModel(build_model(UNetConfig(width=8, heads=2)),
                              Normalization(1.0, 99.0), patch_size=patch_size,
                              pixel_size_um=0.0125)
    with torch.no_grad():
        model.net.head.weight.mul_(40.0)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> SegmentationModel:
    return small_model()


@pytest.fixture(scope="module")
def exported(model: SegmentationModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logits export through the Python API."""
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def checkpoint(model: SegmentationModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model)
    return path


@pytest.fixture(scope="module")
def exported_softmax(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Softmax-embedded export through the CLI (which also verifies it against PyTorch)."""
    out = tmp_path_factory.mktemp("onnx_cli") / "model_softmax.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--softmax", "--out",
                 str(out)]) == 0
    return out


def test_graph_contract(exported: Path, model: SegmentationModel):
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "height", "width"]
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert dims == ["batch", 5, "height", "width"]
    ops = Counter(op for _, op in onnx_op_types(proto))
    assert "Pad" not in ops, "tile padding must not be traced for multiples of 8"
    assert ops["Softmax"] == 1  # the attention's softmax only (logits export)
    assert not any(op.startswith("Triton") or dom not in ("", "ai.onnx")
                   for dom, op in onnx_op_types(proto))
    assert all(i.data_location != onnx.TensorProto.EXTERNAL for i in proto.graph.initializer)
    # constant folding left no foldable Constant nodes behind
    assert ops["Constant"] == 0


def test_metadata_round_trip(exported: Path, model: SegmentationModel):
    info = read_onnx_metadata(exported)
    assert info.normalization == model.normalization
    assert info.classes == model.classes
    assert info.patch_size == 64 and info.pixel_size_um == 0.0125
    assert info.softmax is False and info.tile_multiple == 8
    assert info.model_config == model.net.config.to_dict()
    flat = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert flat["temseg.class_values"] == "0,50,100,150,200"
    assert flat["temseg.norm.lower"] == "1.0" and flat["temseg.norm.upper"] == "99.0"
    assert flat["temseg.output"] == "logits"
    # the inference tile every runtime defaults to (C++ Segmenter, TensorRT profiles, predict)
    assert info.roi_size == model.roi_size == 128 and flat["temseg.roi_size"] == "128"
    assert ModelSpec.from_flat(flat) == info
    older = json.loads(flat["temseg.metadata"])
    del older["roi_size"]  # exports written before the key: same default
    assert ModelSpec.from_flat({**flat, "temseg.metadata": json.dumps(older)}) == info


def test_onnxruntime_matches_torch_on_random_tiles(exported: Path, model: SegmentationModel):
    """Two+ tile sizes and batch sizes through one session (dynamic axes), fp32 within 1e-4."""
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for batch, h, w in [(1, 64, 64), (3, 96, 96), (2, 128, 64), (5, 32, 32)]:
        x = torch.randn(batch, 1, h, w, generator=gen)
        with torch.no_grad():
            ref = model(x).numpy()
        (got,) = session.run(None, {"image": x.numpy()})
        assert got.shape == (batch, 5, h, w)
        worst = max(worst, float(np.abs(got - ref).max()))
    assert worst < TOL, f"max |ORT - torch| = {worst:.3g}"


@pytest.mark.skipif(not TEM_IMAGES, reason="real TEM images not found under "
                    "../shared/data/tem-mouse-cc/images (outside the repository)")
def test_onnxruntime_matches_torch_on_a_real_tem_tile(exported: Path, model: SegmentationModel):
    image = tifffile.imread(TEM_IMAGES[0])
    x = torch.from_numpy(model.normalization(image))
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    for batch, tile in [(2, 128), (1, 256)]:
        tiles = torch.stack([x[i * 64: i * 64 + tile, i * 32: i * 32 + tile]
                             for i in range(batch)])[:, None]
        with torch.no_grad():
            ref = model(tiles).numpy()
        (got,) = session.run(None, {"image": tiles.numpy()})
        assert np.abs(got - ref).max() < TOL
        assert len(np.unique(ref.argmax(1))) > 1  # the tile is not trivially one class


def test_softmax_option(exported_softmax: Path, model: SegmentationModel):
    info = read_onnx_metadata(exported_softmax)
    assert info.softmax
    session = ort.InferenceSession(str(exported_softmax), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 1, 64, 96)
    (got,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ref = model(x).softmax(1).numpy()
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert np.abs(got - ref).max() < TOL


def test_every_op_is_on_tensorrt_10s_onnx_operator_list(exported: Path, exported_softmax: Path):
    for path in (exported, exported_softmax):
        proto = onnx.load(str(path))
        ops = {op for _, op in onnx_op_types(proto)}
        assert ops <= TENSORRT_10_ONNX_OPS, sorted(ops - TENSORRT_10_ONNX_OPS)
        assert unsupported_ops(proto) == []


def test_polygraphy_sanitize_finds_nothing_left_to_fold(exported: Path, tmp_path: Path):
    """The export is already what ``polygraphy surgeon sanitize --fold-constants`` produces:
    folding it again removes no node and changes no output."""
    pytest.importorskip("onnx_graphsurgeon")
    polygraphy_onnx = pytest.importorskip("polygraphy.backend.onnx")
    proto = onnx.load(str(exported))
    folded = polygraphy_onnx.fold_constants(onnx.load(str(exported)), num_passes=3)
    assert len(folded.graph.node) == len(proto.graph.node)
    out = tmp_path / "folded.onnx"
    onnx.save(folded, str(out))
    x = np.random.default_rng(0).standard_normal((2, 1, 64, 64), dtype=np.float32)
    a = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(
        None, {"image": x})[0]
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"image": x})[0]
    np.testing.assert_array_equal(a, b)


def test_onnxruntime_backend_applies_softmax_to_logit_exports(exported: Path,
                                                             model: SegmentationModel):
    backend = OnnxRuntimeBackend(exported)
    x = torch.randn(3, 1, 64, 64)
    probs = backend(x)
    with torch.no_grad():
        ref = model(x).softmax(1)
    assert probs.shape == (3, 5, 64, 64) and probs.dtype == torch.float32
    assert (probs - ref).abs().max() < 1e-5
    assert open_backend(exported, "onnxruntime").num_classes == 5


def test_default_backend_rule(monkeypatch):
    from temseg.inference import backends

    assert default_backend("cuda") == "torch"
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    assert default_backend("cpu", amp="off") == "onnxruntime"  # fp32
    bf16 = choose_precision(torch.device("cpu"), "auto").dtype == torch.bfloat16
    assert default_backend("cpu", amp="auto") == ("torch" if bf16 else "onnxruntime")
    assert default_backend("cpu", amp="bf16") == "torch"


def test_bf16_torch_backend(model: SegmentationModel):
    fp32 = make_backend("torch", model, amp="off")
    bf16 = make_backend("torch", model, amp="bf16")
    assert (fp32.name, bf16.name) == ("torch", "torch-bf16")
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    a, b = fp32(x), bf16(x)
    assert b.dtype == torch.float32 and b.shape == a.shape
    # bf16 keeps 8 mantissa bits: probabilities within a few 1e-3, labels nearly all equal
    assert (a - b).abs().max() < 0.05
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.97


def test_predict_onnxruntime_backend_matches_torch(checkpoint: Path, exported_softmax: Path,
                                                  tmp_path: Path):
    """`temseg predict --backend onnxruntime` (the .onnx export) vs `--backend torch`
    (the checkpoint) on a synthetic slide: identical labels except pixels whose two best
    classes tie to within float32 rounding (ORT and PyTorch sum convolutions in different
    orders, ~1e-7 apart), which must stay under 0.01%."""
    from temseg.synth import write_dataset

    write_dataset(tmp_path / "synth", n_images=1, height=448, width=320, seed=3)
    (image,) = sorted((tmp_path / "synth" / "images").glob("*.tif"))
    common = [str(image), "--roi-size", "64", "--no-progress"]
    assert main(["predict", str(checkpoint), *common, "--out", str(tmp_path / "t"),
                 "--backend", "torch", "--amp", "off"]) == 0
    assert main(["predict", str(exported_softmax), *common, "--out", str(tmp_path / "o"),
                 "--backend", "onnxruntime"]) == 0
    a = tifffile.imread(tmp_path / "t" / f"{image.stem}_mask.tif")
    b = tifffile.imread(tmp_path / "o" / f"{image.stem}_mask.tif")
    assert a.shape == (448, 320)
    assert len(np.unique(a)) >= 2
    assert (a != b).mean() < 1e-4, f"{int((a != b).sum())} pixels differ"


def test_open_backend_checks_backend_and_file(exported: Path, tmp_path: Path):
    backend = open_backend(exported, "onnxruntime")
    assert isinstance(backend.spec, ModelSpec) and backend.name == "onnxruntime"
    with pytest.raises(ValueError, match="onnxruntime"):
        open_backend(exported, "torch")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        open_backend(tmp_path / "missing.onnx", "onnxruntime")


def test_evaluate_an_onnx_export_gives_the_checkpoints_dice(checkpoint: Path,
                                                           exported_softmax: Path,
                                                           tmp_path: Path):
    """`temseg evaluate model.onnx DATA` works, with the Dice of the checkpoint it came
    from (fp32 torch and ONNX Runtime differ only at float32 near-ties)."""
    from temseg.synth import write_dataset

    data = write_dataset(tmp_path / "synth", n_images=2, height=192, width=160, seed=4)
    assert data
    reports = {}
    for name, model, extra in (("torch", checkpoint, ["--backend", "torch", "--amp", "off"]),
                               ("onnx", exported_softmax, ["--backend", "onnxruntime"])):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", str(model), str(tmp_path / "synth"), "--roi-size", "64",
                     "--no-progress", "--out", str(out), *extra]) == 0
        reports[name] = json.loads(out.read_text())
    assert reports["onnx"]["backend"] == "onnxruntime"
    assert reports["torch"]["backend"] == "torch"
    assert reports["onnx"]["mean_dice"] == pytest.approx(reports["torch"]["mean_dice"], abs=1e-4)
    predictor = Predictor.open(exported_softmax, progress=False)
    assert predictor.spec == read_onnx_metadata(exported_softmax)


def test_export_rejects_old_opsets_and_bad_tiles(model: SegmentationModel, tmp_path: Path):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", opset=16)
    with pytest.raises(ValueError, match="multiple of 8"):
        export_onnx(model, tmp_path / "m.onnx", sample_tile=60)
