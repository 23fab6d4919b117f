"""Inference utilities: MONAI-compatible sliding-window inference on the C++ tiler, and
whole-slide streaming segmentation (:func:`segment_slide`, imported on first use)."""

from typing import Any

from .sliding_window import pad_like_monai, sliding_window_inference

__all__ = ["SlideResult", "pad_like_monai", "segment_slide", "sliding_window_inference"]


def __getattr__(name: str) -> Any:
    if name in ("SlideResult", "segment_slide"):
        from . import slide

        return getattr(slide, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
