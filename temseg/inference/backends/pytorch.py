"""The PyTorch backend: a checkpoint's model run eagerly (optionally ``torch.compile``d)."""

from __future__ import annotations

import torch

from ...checkpoint import SegmentationModel

__all__ = ["TorchBackend"]


class TorchBackend:
    """PyTorch eager (optionally ``torch.compile``d) on CPU or CUDA.

    On the CPU the model runs in channels-last memory format (3x faster convolutions with
    oneDNN here). ``amp``: autocast dtype (bf16 / fp16) or None for fp32
    (:func:`temseg.policy.inference_precision` chooses it). ``compile``: ``torch.compile``
    the model (static shapes: one graph per tile size).
    """

    name = "torch"

    def __init__(self, model: SegmentationModel, device: str | torch.device = "cpu",
                 compile: bool = False, amp: torch.dtype | None = None) -> None:
        self.precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp]
        if amp is not None:
            self.name = f"torch-{self.precision}"
        if compile:
            self.name += "+compile"
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.num_classes = model.classes.num_classes
        self.spec = model.spec
        self.amp = amp
        self.forward = torch.compile(self.model, dynamic=False) if compile else self.model

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        if self.amp is not None:
            with torch.autocast(self.device.type, dtype=self.amp):
                logits = self.forward(x)
        else:
            logits = self.forward(x)
        return torch.softmax(logits.float(), dim=1).to("cpu")
