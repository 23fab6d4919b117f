"""Inference: the MONAI-compatible sliding window on the C++ tiler, the streaming whole-slide
pipeline (:func:`segment_slide`), and the :class:`Predictor` that opens a model once and
applies it to arrays, files, folders and labelled data (imported on first use)."""

from typing import Any

from .sliding_window import SlidingWindowInferer, pad_like_monai, sliding_window_inference

__all__ = ["Predictor", "SlideResult", "SlidingWindowInferer", "pad_like_monai",
           "segment_slide", "sliding_window_inference"]


def __getattr__(name: str) -> Any:
    if name in ("SlideResult", "segment_slide"):
        from . import slide

        return getattr(slide, name)
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
