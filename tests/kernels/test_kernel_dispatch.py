"""Backend dispatch: CPU tensors take the PyTorch reference, export/tracing always does,
``backend="triton"`` errors are clear, and the package imports without Triton."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from temseg.kernels import (
    attention,
    attention_reference,
    dice_ce_loss,
    dice_ce_loss_reference,
)
from temseg.kernels._backend import use_triton


def _qkv(shape=(1, 2, 9, 32), dtype=torch.float32):
    return [torch.randn(shape, dtype=dtype) for _ in range(3)]


def test_cpu_auto_and_torch_use_the_reference():
    q, k, v = _qkv()
    ref = attention_reference(q, k, v)
    assert torch.equal(attention(q, k, v), ref)
    assert torch.equal(attention(q, k, v, backend="torch"), ref)
    logits, target = torch.randn(2, 5, 6, 7), torch.randint(0, 5, (2, 6, 7))
    ref = dice_ce_loss_reference(logits, target, batch=True)
    assert torch.equal(dice_ce_loss(logits, target, batch=True), ref)
    # fp64 stays on the reference path (the kernels take fp32/fp16/bf16)
    q64 = [t.double() for t in (q, k, v)]
    assert attention(*q64).dtype == torch.float64


def test_bad_backend_and_unsupported_inputs(interpreter):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="backend"):
        attention(q, k, v, backend="cuda")
    with pytest.raises(ValueError, match="dtype"):
        attention(q.double(), k.double(), v.double(), backend="triton")
    with pytest.raises(ValueError, match="head_dim"):
        attention(*_qkv((1, 1, 4, 256)), backend="triton")
    with pytest.raises(ValueError, match="logits"):
        dice_ce_loss(torch.randn(1, 5, 4, 4, dtype=torch.float64), torch.zeros(1, 4, 4).long(),
                     backend="triton")


def test_forced_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    pytest.importorskip("triton", reason="needs triton installed to reach the device check")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        use_triton("triton", torch.zeros(1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_tracing_and_onnx_export_use_the_reference(monkeypatch):
    """torch.jit.trace records the reference graph (no temseg:: custom op), even when the
    Triton backend is forced; so does anything run while ONNX export is active, including the
    dynamo-based exporter (whose flag dynamo reads while tracing)."""
    q, k, v = _qkv()
    traced = torch.jit.trace(lambda a, b, c: attention(a, b, c, backend="triton"), (q, k, v))
    graph = str(traced.graph)
    assert "temseg::" not in graph
    torch.testing.assert_close(traced(q, k, v), attention_reference(q, k, v))

    from torch.onnx._internal.exporter import _flags

    monkeypatch.setattr(_flags, "_is_onnx_exporting", True)
    explain = torch._dynamo.explain(lambda a, b, c: attention(a, b, c, backend="triton"))(q, k, v)
    assert "temseg" not in str(explain.graphs[0].graph)
    assert "scaled_dot_product_attention" in str(explain.graphs[0].graph)
    monkeypatch.setattr(_flags, "_is_onnx_exporting", False)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert not use_triton("triton", q)


def test_import_and_reference_path_without_triton():
    """With triton unimportable: import works, CPU calls work, backend='triton' raises a clear
    RuntimeError."""
    code = textwrap.dedent("""
        import sys
        sys.modules["triton"] = None  # import triton -> ImportError
        import torch
        import temseg.kernels as K
        q = torch.randn(1, 1, 5, 32)
        K.attention(q, q, q)
        K.dice_ce_loss(torch.randn(1, 5, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
        try:
            K.attention(q, q, q, backend="triton")
        except RuntimeError as exc:
            assert "triton" in str(exc), exc
            print("clear error:", exc)
        else:
            raise SystemExit("backend='triton' did not raise")
        assert "triton" not in {m.split(".")[0] for m in sys.modules if sys.modules[m]}
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "clear error" in res.stdout
