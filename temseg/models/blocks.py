"""Building blocks of the residual U-Net."""

from __future__ import annotations

import torch
from torch import nn

from ..kernels import attention


def conv_bn_act(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv + BatchNorm + ReLU: (B, cin, H, W) -> (B, cout, H/stride, W/stride)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Basic residual block (two 3x3 convs, the first strided); an average-pool + 1x1
    projection on the shortcut when the shape changes.
    (B, cin, H, W) -> (B, cout, H/stride, W/stride)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_act(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            # ResNet-D shortcut: average-pool then 1x1 conv keeps all pixels (a strided 1x1
            # conv drops 3/4 of them; its channels-last CPU backward also crashed oneDNN in
            # torch 2.13 for <= 8 input channels).
            pool: nn.Module = nn.AvgPool2d(stride) if stride != 1 else nn.Identity()
            self.shortcut = nn.Sequential(pool, nn.Conv2d(cin, cout, 1, bias=False),
                                          nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over all positions of a feature map, with a residual:
    ``x + proj(attention(norm(x)))``. (B, C, H, W) -> (B, C, H, W), N = H * W tokens.

    The attention itself is :func:`temseg.kernels.attention` (Triton on CUDA, PyTorch on CPU and
    in ONNX export).
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        qkv = self.qkv(self.norm(tokens)).reshape(b, h * w, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        out = attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return x + self.proj(out).transpose(1, 2).reshape(b, c, h, w)
