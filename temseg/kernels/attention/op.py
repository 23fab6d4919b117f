"""``torch.library`` custom ops wrapping the Triton attention kernels.

``temseg::flash_attn_fwd(q, k, v, scale) -> (o, lse)`` and
``temseg::flash_attn_bwd(do, q, k, v, o, lse, scale) -> (dq, dk, dv)`` with fake (meta)
implementations so that ``torch.compile(fullgraph=True)`` traces them as opaque nodes, and an
autograd formula that saves only q, k, v, o and lse (the (N, N) probabilities are recomputed).

Registering the ops does not import Triton; their bodies import the kernel modules on first
call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._registry import registered


def _fwd_impl(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    from .triton_fwd import flash_attn_fwd_triton

    return flash_attn_fwd_triton(q, k, v, scale)


def _fwd_fake(q: Tensor, k: Tensor, v: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    bsz, heads, n_tok, head_dim = q.shape
    return (q.new_empty((bsz, heads, n_tok, head_dim)),
            q.new_empty((bsz, heads, n_tok), dtype=torch.float32))


def _bwd_impl(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor,
              scale: float) -> tuple[Tensor, Tensor, Tensor]:
    from .triton_bwd import flash_attn_bwd_triton

    return flash_attn_bwd_triton(do, q, k, v, o, lse, scale)


def _bwd_fake(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor,
              scale: float) -> tuple[Tensor, Tensor, Tensor]:
    return (torch.empty(q.shape, dtype=q.dtype, device=q.device),
            torch.empty(k.shape, dtype=k.dtype, device=k.device),
            torch.empty(v.shape, dtype=v.dtype, device=v.device))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_o: Tensor, grad_lse: Tensor | None):
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.temseg.flash_attn_bwd(grad_o, q, k, v, o, lse, ctx.scale)
    return dq, dk, dv, None


if not registered("flash_attn_fwd"):
    flash_attn_fwd = torch.library.custom_op("temseg::flash_attn_fwd", mutates_args=())(_fwd_impl)
    flash_attn_fwd.register_fake(_fwd_fake)
    flash_attn_bwd = torch.library.custom_op("temseg::flash_attn_bwd", mutates_args=())(_bwd_impl)
    flash_attn_bwd.register_fake(_bwd_fake)
    flash_attn_fwd.register_autograd(_backward, setup_context=_setup_context)


def flash_attn(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Differentiable fused attention through the custom op; returns o (B, H, N, D)."""
    return torch.ops.temseg.flash_attn_fwd(q, k, v, scale)[0]
