"""Public attention function with backend dispatch."""

from __future__ import annotations

import math

import torch

from .._backend import Backend, use_triton
from .op import flash_attn
from .reference import attention_reference

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128


def _kernel_unsupported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """Why the Triton kernel cannot take these inputs (None when it can)."""
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        return f"q, k, v must share one (B, H, N, D) shape, got {q.shape}, {k.shape}, {v.shape}"
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _KERNEL_DTYPES:
        return f"q, k, v must share a dtype in fp32/fp16/bf16, got {q.dtype}, {k.dtype}, {v.dtype}"
    if not (q.device == k.device == v.device):
        return "q, k, v must be on the same device"
    if q.shape[-1] > MAX_HEAD_DIM:
        return f"head_dim must be <= {MAX_HEAD_DIM}, got {q.shape[-1]}"
    return None


def _tf32_allowed() -> bool:
    """Whether torch lets fp32 matmuls use tf32 (``torch.set_float32_matmul_precision("high")``
    or ``torch.backends.cuda.matmul.allow_tf32 = True``)."""
    return bool(torch.backends.cuda.matmul.allow_tf32)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Non-causal multi-head self-attention ``softmax(q k^T * scale) v``.

    Args:
        q, k, v: (batch, heads, tokens, head_dim); fp32, fp16 or bf16 (fp64 on the torch path).
            The kernel takes any token count and head_dim <= 128 (32, 64, 128 are the tuned
            ones), any strides.
        scale: softmax scale, default ``1 / sqrt(head_dim)``.
        backend: ``"auto"`` runs the Triton kernel on CUDA tensors and the PyTorch reference
            otherwise (and for inputs the kernel does not take, e.g. fp64); ``"triton"`` /
            ``"torch"`` force a path (``"triton"`` on CPU tensors needs ``TRITON_INTERPRET=1``).
            ONNX export and ``torch.jit.trace`` always use the reference. On GPU the kernel's
            fp32 dots are tf32 tensor-core products, so ``"auto"`` sends fp32 CUDA inputs to the
            kernel only when torch allows tf32 matmuls (``torch.set_float32_matmul_precision(
            "high")``) and to the reference (SDPA, true fp32) otherwise.

    Returns:
        (batch, heads, tokens, head_dim) in the dtype of ``q`` (contiguous on the Triton path).
        Differentiable w.r.t. q, k, v on both paths.
    """
    if use_triton(backend, q):
        why = _kernel_unsupported(q, k, v)
        if why is None and backend == "auto" and q.dtype == torch.float32 and not _tf32_allowed():
            why = "fp32 without tf32"
        if why is None:
            if scale is None:
                scale = 1.0 / math.sqrt(q.shape[-1])
            return flash_attn(q, k, v, float(scale))
        if backend == "triton":
            raise ValueError(f"attention(backend='triton'): {why}")
    return attention_reference(q, k, v, scale)
