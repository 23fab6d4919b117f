"""Fused attention under TRITON_INTERPRET=1: forward values and dQ/dK/dV against a float64
PyTorch reference, with random (not all-ones) upstream gradients and ragged token counts."""

from __future__ import annotations

import pytest
import torch
from _kernel_checks import assert_close_to_ref, assert_low_precision_ok

from temseg.kernels import attention, attention_math

pytestmark = pytest.mark.usefixtures("interpreter")


def _qkv(shape, dtype, requires_grad=True):
    return [torch.randn(shape, dtype=dtype).requires_grad_(requires_grad) for _ in range(3)]


def _ref64(q, k, v, w, scale=None):
    """Float64 reference output and gradients of sum(o * w) (o fed into a weighted sum)."""
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    o = attention_math(q64, k64, v64, scale)
    grads = torch.autograd.grad((o * w.double()).sum(), (q64, k64, v64))
    return o.detach(), grads


def _run(fn, q, k, v, w):
    o = fn(q, k, v)
    grads = torch.autograd.grad((o.float() * w).sum(), (q, k, v))
    return o.detach(), grads


# (batch, heads, tokens, head_dim): N = 1, ragged tails (17, 97: not multiples of the tiles),
# head dims 32 / 64 / 128, batch 1 and 3; N = 1025 once with head_dim 32.
FP32_CASES = [
    (1, 1, 1, 32),
    (3, 2, 17, 32),
    (1, 2, 97, 64),
    (1, 1, 33, 128),
    (1, 1, 1025, 32),
]


@pytest.mark.parametrize("shape", FP32_CASES, ids=lambda s: "x".join(map(str, s)))
def test_fp32_matches_float64(shape):
    q, k, v = _qkv(shape, torch.float32)
    w = torch.randn(shape)
    o, grads = _run(lambda *a: attention(*a, backend="triton"), q, k, v, w)
    o_ref, grads_ref = _ref64(q, k, v, w)
    assert o.dtype == torch.float32 and o.shape == shape
    assert_close_to_ref(o, o_ref, 1e-5, "o")
    for name, g, g_ref in zip("qkv", grads, grads_ref, strict=True):
        assert_close_to_ref(g, g_ref, 1e-5, f"d{name}")


FP16_CASES = [(1, 2, 17, 32), (3, 1, 97, 64), (1, 1, 40, 128)]


@pytest.mark.parametrize("shape", FP16_CASES, ids=lambda s: "x".join(map(str, s)))
def test_fp16_within_2x_of_torch_fp16(shape):
    q, k, v = _qkv(shape, torch.float16)
    w = torch.randn(shape)
    o, grads = _run(lambda *a: attention(*a, backend="triton"), q, k, v, w)
    # PyTorch's own fp16 error: the unfused graph (QK^T, softmax, PV) run on the fp16 tensors.
    o_t, grads_t = _run(attention_math, q, k, v, w)
    o_ref, grads_ref = _ref64(q, k, v, w)
    assert o.dtype == torch.float16
    assert_low_precision_ok(o, o_t, o_ref, "o")
    for name, g, g_t, g_ref in zip("qkv", grads, grads_t, grads_ref, strict=True):
        assert g.dtype == torch.float16
        assert_low_precision_ok(g, g_t, g_ref, f"d{name}")


def test_strided_inputs_odd_head_dim_and_scale():
    """Non-contiguous q/k/v (a (B, N, H, D) buffer transposed, as a model produces them), a head
    dim that is not a power of two (masked along D) and an explicit scale."""
    bsz, n_tok, heads, head_dim = 2, 23, 2, 40
    q, k, v = (torch.randn(bsz, n_tok, heads, head_dim).transpose(1, 2).requires_grad_()
               for _ in range(3))
    assert not q.is_contiguous()
    w = torch.randn(bsz, heads, n_tok, head_dim)
    o, grads = _run(lambda *a: attention(*a, scale=0.3, backend="triton"), q, k, v, w)
    o_ref, grads_ref = _ref64(q, k, v, w, scale=0.3)
    assert_close_to_ref(o, o_ref, 1e-5, "o")
    for name, g, g_ref in zip("qkv", grads, grads_ref, strict=True):
        assert_close_to_ref(g, g_ref, 1e-5, f"d{name}")


def test_loss_not_last_operation():
    """The attention output goes through further ops (projection, GELU) before the loss."""
    shape = (1, 2, 19, 32)
    q, k, v = _qkv(shape, torch.float32)
    proj = torch.randn(32, 8, dtype=torch.float64)

    def head(o):
        return torch.nn.functional.gelu(o.double() @ proj).pow(2).mean()

    loss = head(attention(q, k, v, backend="triton"))
    grads = torch.autograd.grad(loss, (q, k, v))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    loss_ref = head(attention_math(q64, k64, v64))
    grads_ref = torch.autograd.grad(loss_ref, (q64, k64, v64))
    assert_close_to_ref(loss, loss_ref, 1e-5, "loss")
    for name, g, g_ref in zip("qkv", grads, grads_ref, strict=True):
        assert_close_to_ref(g, g_ref, 1e-5, f"d{name}")
