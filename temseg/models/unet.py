"""The residual U-Net with a self-attention bottleneck."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ResidualBlock, SelfAttention2d, conv_bn_act


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of :class:`ResUNet`. Channels at level ``i`` are ``width * 2**i``."""

    in_channels: int = 1
    num_classes: int = 5
    width: int = 32
    depth: int = 3
    blocks_per_stage: int = 2
    bottleneck_blocks: int = 2
    heads: int = 8
    attention: bool = True
    # auxiliary 1x1 heads on the decoder's outputs at 1/2 ... 1/2**n resolution, for deep
    # supervision in training (MONAI DynUNet's ``deep_supr_num``; 0: none). Inference and
    # export use the full-resolution head only.
    deep_supr_num: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class ResUNet(nn.Module):
    """Residual U-Net: stem conv; ``depth`` downsampling stages of residual blocks; bottleneck
    of residual blocks + multi-head self-attention; nearest upsampling, skip connections and conv
    refinement; 1x1 conv to the classes.

    Any input size works: the input is reflect-padded to a multiple of ``2**depth`` and the
    logits are cropped back.

    Input (B, in_channels, H, W) float; output (B, num_classes, H, W) logits. With
    ``deep_supervision=True`` a list: those logits, then the auxiliary heads'
    (B, num_classes, ceil(H / 2**k), ceil(W / 2**k)) for k = 1 .. ``config.deep_supr_num``.
    """

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = config
        ch = [config.width * 2**i for i in range(config.depth + 1)]
        self.stem = conv_bn_act(config.in_channels, ch[0])
        self.down = nn.ModuleList(
            nn.Sequential(ResidualBlock(ch[i], ch[i + 1], stride=2),
                          *[ResidualBlock(ch[i + 1], ch[i + 1])
                            for _ in range(config.blocks_per_stage - 1)])
            for i in range(config.depth)
        )
        bottleneck: list[nn.Module] = [ResidualBlock(ch[-1], ch[-1])
                                       for _ in range(config.bottleneck_blocks)]
        if config.attention:
            bottleneck.append(SelfAttention2d(ch[-1], config.heads))
        self.bottleneck = nn.Sequential(*bottleneck)
        self.up = nn.ModuleList(
            nn.Sequential(conv_bn_act(ch[i + 1] + ch[i], ch[i]), conv_bn_act(ch[i], ch[i]))
            for i in reversed(range(config.depth))
        )
        self.head = nn.Conv2d(ch[0], config.num_classes, 1)
        self.aux_heads = nn.ModuleList(nn.Conv2d(ch[k], config.num_classes, 1)
                                       for k in range(1, config.deep_supr_num + 1))

    @property
    def multiple(self) -> int:
        """Input sizes that are multiples of this need no padding."""
        return 2**self.config.depth

    def forward(self, x: torch.Tensor,
                deep_supervision: bool = False) -> torch.Tensor | list[torch.Tensor]:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = [self.stem(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        y = self.bottleneck(skips.pop())
        aux = []
        for level, refine in zip(reversed(range(self.config.depth)), self.up, strict=True):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            y = refine(torch.cat([y, skips.pop()], dim=1))
            if deep_supervision and 0 < level <= len(self.aux_heads):
                s = 2**level
                aux.insert(0, self.aux_heads[level - 1](y)[..., :-(-h // s), :-(-w // s)])
        logits = self.head(y)
        logits = logits[..., :h, :w] if (ph or pw) else logits
        return [logits, *aux] if deep_supervision else logits
