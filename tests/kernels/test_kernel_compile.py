"""The custom ops under torch.compile(fullgraph=True) and torch.library.opcheck, with the
Triton backend forced (the kernels run through the interpreter on CPU tensors; inductor
compiles the surrounding graph for the CPU and calls the ops as opaque extern kernels)."""

from __future__ import annotations

import pytest
import torch
from _kernel_checks import assert_close_to_ref

from temseg.kernels import attention, dice_ce_loss

pytestmark = [
    pytest.mark.usefixtures("interpreter"),
    pytest.mark.filterwarnings("ignore:.*jit.script_method.*:DeprecationWarning"),
]


def _model_step(q, k, v, proj, target):
    """A miniature bottleneck + loss: attention -> projection to 5 classes -> Dice+CE."""
    bsz, heads, n_tok, head_dim = q.shape
    o = attention(q, k, v, backend="triton")
    feats = o.transpose(1, 2).reshape(bsz, n_tok, heads * head_dim)
    logits = (feats @ proj).transpose(1, 2).reshape(bsz, 5, *target.shape[1:])
    return dice_ce_loss(logits, target, batch=True, backend="triton")


def _inputs():
    q, k, v = (torch.randn(2, 2, 15, 32, requires_grad=True) for _ in range(3))
    proj = torch.randn(64, 5, requires_grad=True)
    target = torch.randint(0, 5, (2, 3, 5))
    return q, k, v, proj, target


def test_no_graph_breaks():
    q, k, v, proj, target = _inputs()
    explain = torch._dynamo.explain(_model_step)(q, k, v, proj, target)
    assert explain.graph_break_count == 0, explain.break_reasons
    assert explain.graph_count == 1


def test_compile_fullgraph_inductor_matches_eager():
    torch._dynamo.reset()
    q, k, v, proj, target = _inputs()
    leaves = (q, k, v, proj)
    loss = _model_step(q, k, v, proj, target)
    grads = torch.autograd.grad(loss * 0.37, leaves)
    compiled = torch.compile(_model_step, fullgraph=True)  # inductor, CPU codegen
    loss_c = compiled(q, k, v, proj, target)
    grads_c = torch.autograd.grad(loss_c * 0.37, leaves)
    assert_close_to_ref(loss_c, loss, 1e-5, "loss")
    for name, g, g_ref in zip(("q", "k", "v", "proj"), grads_c, grads, strict=True):
        assert_close_to_ref(g, g_ref, 1e-5, f"d{name}")


def test_opcheck():
    """Schema, fake tensor, autograd registration and AOT dispatch checks of all four ops."""
    q, k, v = (torch.randn(1, 2, 9, 32, requires_grad=True) for _ in range(3))
    torch.library.opcheck(torch.ops.temseg.flash_attn_fwd.default, (q, k, v, 0.2))
    o, lse = torch.ops.temseg.flash_attn_fwd(q.detach(), k.detach(), v.detach(), 0.2)
    torch.library.opcheck(torch.ops.temseg.flash_attn_bwd.default,
                          (torch.randn_like(o), q.detach(), k.detach(), v.detach(), o, lse, 0.2))
    logits = torch.randn(2, 5, 7, 6, requires_grad=True)
    target = torch.randint(0, 5, (2, 7, 6))
    torch.library.opcheck(torch.ops.temseg.dice_ce_stats.default, (logits, target))
    torch.library.opcheck(torch.ops.temseg.dice_ce_stats_bwd.default,
                          (logits.detach(), target, torch.randn(2, 5), torch.randn(2, 5),
                           torch.randn(2)))
