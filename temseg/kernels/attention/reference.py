"""PyTorch reference for the fused bottleneck attention.

This is the path CPU tensors take, the path ONNX export traces, and the reference that the
Triton kernel's tests and benchmarks import.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """Non-causal multi-head attention ``softmax(q k^T * scale) v``.

    Args:
        q, k, v: (batch, heads, tokens, head_dim), same dtype and device.
        scale: softmax scale; ``1 / sqrt(head_dim)`` when None.

    Returns:
        (batch, heads, tokens, head_dim), dtype of ``q``.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def attention_math(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None
) -> torch.Tensor:
    """The same function written out (QK^T, softmax, PV): used where a plain graph is wanted
    (ONNX export for TensorRT) and as the seed's unfused baseline. Shapes as
    :func:`attention_reference`."""
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    return torch.matmul(torch.softmax(scores, dim=-1), v)
