"""Baseline training step: fp32 eager, contiguous NCHW tensors, no compile, no AMP."""

from __future__ import annotations

import torch
from torch import nn

from .loss import BaselineDiceCELoss


class BaselineTrainStep:
    """One optimisation step of the seed's training loop: forward, loss, backward, gradient
    clipping and an AdamW update (the same optimiser settings as temseg's loop).

    Call with x (B, 1, H, W) float32 and y (B, H, W) int64; returns the loss as a float.
    """

    def __init__(self, model: nn.Module, lr: float = 2e-3, weight_decay: float = 1e-4,
                 lambda_dice: float = 0.5, clip: float = 5.0) -> None:
        self.model = model.train()
        self.loss_fn = BaselineDiceCELoss(lambda_dice=lambda_dice)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr,
                                           weight_decay=weight_decay)
        self.clip = clip

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        logits = self.model(x)
        loss = self.loss_fn(logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        return float(loss.item())
