"""Baseline model: temseg's ResUNet with the bottleneck attention written out explicitly.

The module tree (and so the ``state_dict``) is exactly temseg's, so temseg weights load with
``load_state_dict``; only :class:`~temseg.models.blocks.SelfAttention2d` is replaced by
:class:`BaselineSelfAttention2d`, whose forward materialises the (B, heads, N, N) score matrix.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from temseg.models import ResUNet, UNetConfig
from temseg.models.blocks import SelfAttention2d


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` with the scores materialised (the seed's attention).

    q, k, v: (B, heads, N, head_dim) -> (B, heads, N, head_dim).
    """
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights, v)


class BaselineSelfAttention2d(SelfAttention2d):
    """:class:`SelfAttention2d` (same parameters) with :func:`explicit_attention`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        qkv = self.qkv(self.norm(tokens)).reshape(b, h * w, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        out = explicit_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return x + self.proj(out).transpose(1, 2).reshape(b, c, h, w)


class BaselineResUNet(ResUNet):
    """temseg's :class:`~temseg.models.ResUNet` with :class:`BaselineSelfAttention2d`.

    Input (B, in_channels, H, W) float32; output (B, num_classes, H, W) logits.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__(config or UNetConfig())
        for module in self.modules():
            if type(module) is SelfAttention2d:
                module.__class__ = BaselineSelfAttention2d  # same parameters, new forward


def baseline_from(net: nn.Module) -> BaselineResUNet:
    """A :class:`BaselineResUNet` holding a copy of the weights of temseg's ``net`` (a
    ResUNet, a ``SegmentationModel`` or a compiled module), in the same train/eval mode."""
    net = getattr(net, "_orig_mod", net)
    net = getattr(net, "net", net)
    base = BaselineResUNet(net.config)
    base.load_state_dict(net.state_dict())
    return base.train(net.training)
