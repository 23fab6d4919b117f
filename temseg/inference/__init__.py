"""Inference utilities: MONAI-compatible sliding-window inference on the C++ tiler."""

from .sliding_window import pad_like_monai, sliding_window_inference

__all__ = ["pad_like_monai", "sliding_window_inference"]
