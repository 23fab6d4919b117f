"""Training: the loop and its configuration (the AMP/compile policy is :mod:`temseg.policy`)."""

from .config import TrainConfig
from .loop import lr_factor, train, validate

__all__ = ["TrainConfig", "lr_factor", "train", "validate"]
