"""TensorRT path: type-checked against tensorrt-stubs, profile/operator logic, the clear
no-CUDA error of ``temseg export --format tensorrt``, the reduced-precision ONNX a strongly
typed build consumes, and (GPU hosts with TensorRT only) engine build + runner vs ONNX
Runtime."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from temseg.checkpoint import SegmentationModel, save_checkpoint
from temseg.cli import main
from temseg.export import tensorrt as trt_export
from temseg.export.tensorrt import (
    ShapeProfile,
    TensorRTUnavailable,
    default_profiles,
    prefers_strongly_typed,
    tensorrt_unavailable_reason,
    unsupported_ops,
)
from temseg.models import UNetConfig, build_model

REPO = Path(__file__).resolve().parents[1]
REASON = tensorrt_unavailable_reason()
needs_tensorrt = pytest.mark.skipif(REASON is not None, reason=f"TensorRT cannot run: {REASON}")


def _small_model() -> SegmentationModel:
    """A narrow random ResUNet (head scaled up so its labels vary), as in test_export_onnx."""
    torch.manual_seed(0)
    model = SegmentationModel(build_model(UNetConfig(width=8, heads=2)), patch_size=64)
    with torch.no_grad():
        model.net.head.weight.mul_(40.0)
    return model.eval()


# ----------------------------------------------------------------------------- mypy
def _stub_tree(dest: Path) -> Path:
    """Copy tensorrt-stubs' .pyi files into ``dest`` and fix two syntax errors of the
    generated stubs (a parameter named ``in``; a non-default after a default parameter).

    The package installs ``tensorrt/__init__.pyi`` without a ``py.typed`` marker, so mypy
    ignores it in site-packages; on MYPYPATH it is used.
    """
    dist = importlib.metadata.distribution("tensorrt-stubs")
    for f in dist.files or []:
        if str(f).endswith(".pyi"):
            text = Path(dist.locate_file(f)).read_text()
            text = re.sub(r"\bin: list", "in_: list", text)
            text = text.replace("channel_axis: int) -> IScaleLayer",
                                "channel_axis: int = ...) -> IScaleLayer")
            out = dest / str(f)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
    return dest


def test_tensorrt_module_type_checks_against_tensorrt_stubs(tmp_path: Path):
    pytest.importorskip("mypy", reason="mypy not installed (pip install -e '.[test]')")
    try:
        importlib.metadata.distribution("tensorrt-stubs")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs not installed (pip install --no-deps tensorrt-stubs; its "
                    "tensorrt dependency only installs from NVIDIA's index)")
    stubs = _stub_tree(tmp_path / "stubs")
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\nignore_missing_imports = True\nfollow_imports = silent\n"
        "disallow_untyped_defs = True\ncheck_untyped_defs = True\nwarn_return_any = True\n"
        "strict_equality = True\n"
        "[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]\n"
        "ignore_errors = True\n")
    env = {"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
           str(tmp_path / "cache"), "temseg/export/tensorrt.py",
           "temseg/inference/backends/tensorrt.py"]
    # The stubs are really used: a wrong call into them must be an error.
    bad = tmp_path / "bad.py"
    bad.write_text("import tensorrt as trt\n"
                   "trt.Builder(trt.Logger(trt.Logger.WARNING)).create_network('x')\n")
    res = subprocess.run(cmd[:-1] + [str(bad)], cwd=REPO, env=env, capture_output=True,
                         text=True)
    assert res.returncode == 1 and "create_network" in res.stdout, res.stdout
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# ----------------------------------------------------------------------------- pure Python
def test_profiles_and_precision_policy():
    profiles = default_profiles([256, 512, 256], batch=(1, 4, 8))
    assert [p.tile for p in profiles] == [256, 512]
    assert profiles[1].shapes() == ((1, 1, 512, 512), (4, 1, 512, 512), (8, 1, 512, 512))
    with pytest.raises(ValueError, match="multiples of 8"):
        default_profiles([250])
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile(256, 4, 2, 8)
    assert not prefers_strongly_typed("10.8.0.43")
    assert prefers_strongly_typed("10.12.0.36") and prefers_strongly_typed("11.0.1")


def test_unsupported_ops_are_reported():
    onnx = pytest.importorskip("onnx")
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    nodes = [h.make_node("Relu", ["x"], ["a"]),
             h.make_node("Hardmax", ["a"], ["b"]),
             h.make_node("MyOp", ["b"], ["c"], domain="com.example"),
             h.make_node("Pad", ["c", "p"], ["y"], mode="wrap")]
    graph = h.make_graph(nodes, "g", [x], [y], initializer=[
        h.make_tensor("p", onnx.TensorProto.INT64, [8], [0] * 8)])
    problems = unsupported_ops(h.make_model(graph))
    assert any("Hardmax" in p for p in problems)
    assert any("MyOp" in p and "com.example" in p for p in problems)
    assert any("Pad" in p and "wrap" in p for p in problems)
    assert not any("Relu" in p for p in problems)


# ----------------------------------------------------------------------------- no CUDA here
@pytest.mark.skipif(REASON is None, reason="TensorRT and CUDA are available on this host")
def test_export_tensorrt_without_cuda_says_so_and_fails(tmp_path: Path, capsys):
    save_checkpoint(tmp_path / "m.pt", _small_model())
    code = main(["export", str(tmp_path / "m.pt"), "--format", "tensorrt", "--out",
                 str(tmp_path / "m.engine")])
    assert code != 0
    err = capsys.readouterr().err
    assert "TensorRT" in err and ("CUDA" in err or "tensorrt" in err)
    assert not (tmp_path / "m.engine").exists()
    with pytest.raises(TensorRTUnavailable, match="m.engine"):
        trt_export.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine", default_profiles([64]))
    with pytest.raises(TensorRTUnavailable):
        trt_export.TensorRTRunner(tmp_path / "m.engine")


def test_evaluate_with_an_engine_reaches_the_tensorrt_runtime(tmp_path: Path, monkeypatch):
    """`temseg evaluate m.engine DATA --backend tensorrt` opens the engine through the
    TensorRT backend (here: TensorRTUnavailable without CUDA, raised by the runtime)."""
    from temseg.inference.backends import tensorrt as trt_backend
    from temseg.spec import ModelSpec, write_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    write_sidecar(engine, ModelSpec.from_model(SegmentationModel(build_model(
        UNetConfig(width=4, heads=1)), patch_size=32)))
    reached = []
    real = trt_backend.TensorRTRunner.__init__

    def spy(self, path, device="cuda"):
        reached.append(Path(path))
        real(self, path, device)

    monkeypatch.setattr(trt_backend.TensorRTRunner, "__init__", spy)
    if REASON is None:
        pytest.skip("a GPU host runs the real engine tests below")
    code = main(["evaluate", str(engine), str(tmp_path), "--backend", "tensorrt"])
    assert code != 0 and reached == [engine]


def test_stub_only_tensorrt_counts_as_missing():
    if shutil.which("nvidia-smi") or torch.cuda.is_available():
        pytest.skip("GPU host")
    assert REASON is not None and "CUDA" in REASON


# ----------------------------------------------------------------------------- strongly typed
def test_fp16_onnx_for_strongly_typed_builds(tmp_path: Path):
    """The float16 graph a strongly typed TensorRT build consumes: float32 I/O, float16
    weights, only TensorRT-supported ops; close to the fp32 model where ONNX Runtime's CPU
    provider can run it."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from temseg.export import export_onnx

    model = _small_model()
    path = export_onnx(model, tmp_path / "m.fp16.onnx", dtype=torch.float16, softmax=True)
    proto = onnx.load(str(path))
    assert unsupported_ops(proto) == []
    elem = proto.graph.input[0].type.tensor_type.elem_type
    assert elem == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [i for i in proto.graph.initializer if len(i.dims) == 4]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    x = np.random.default_rng(0).standard_normal((2, 1, 64, 64), dtype=np.float32)
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, {"image": x})
    except Exception as exc:  # no fp16 kernel for some op on this CPU build
        pytest.skip(f"ONNX Runtime CPU cannot run the float16 graph: {exc}")
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).softmax(1).numpy()
    assert np.abs(got - ref).max() < 0.05
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.98


# ----------------------------------------------------------------------------- GPU hosts
@needs_tensorrt
def test_build_engine_and_compare_with_onnxruntime(tmp_path: Path):
    from temseg.inference.backends import open_backend

    model = _small_model()
    cache = tmp_path / "timing.cache"
    report = trt_export.export_tensorrt(model, tmp_path / "m.engine", tile_sizes=[64, 128],
                                        batch=(1, 2, 4), precision="fp16",
                                        timing_cache=cache)
    assert cache.is_file() and (tmp_path / "m.engine.json").is_file()
    assert report["vs_onnxruntime"]["label_mismatch"] < 0.01
    fp32 = trt_export.export_tensorrt(model, tmp_path / "f.engine", tile_sizes=[64],
                                      batch=(1, 2, 4), precision="fp32", timing_cache=cache)
    assert fp32["vs_onnxruntime"]["max_abs_prob"] < 1e-3
    backend = open_backend(tmp_path / "m.engine", "tensorrt", "cuda")
    out = backend(torch.randn(3, 1, 128, 128))
    assert out.shape == (3, 5, 128, 128) and out.device.type == "cpu"
    with pytest.raises(ValueError, match="optimisation profile"):
        backend(torch.randn(8, 1, 64, 64))
