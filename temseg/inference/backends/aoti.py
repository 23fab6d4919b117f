"""The AOTInductor backend: a package from ``temseg export --format aoti`` (softmax
embedded), the same artefact the C++ runtime loads, run through
``torch._inductor.aoti_load_package``; metadata from ``<package>.json``."""

from __future__ import annotations

from pathlib import Path

import torch

from ...spec import read_sidecar

__all__ = ["AotiBackend"]


class AotiBackend:
    """(B, 1, th, tw) float32 normalised tiles -> (B, C, th, tw) float32 CPU probabilities."""

    name = "aoti"
    precision = "fp32"

    def __init__(self, path: str | Path) -> None:
        from torch._inductor import aoti_load_package

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: AOTInductor package not found")
        self.spec = read_sidecar(self.path)
        self.num_classes = self.spec.num_classes
        self.run = aoti_load_package(str(self.path))

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.run(batch.to("cpu", torch.float32).contiguous())
        out = out if self.spec.softmax else torch.softmax(out.float(), dim=1)
        return out.to("cpu", torch.float32)
