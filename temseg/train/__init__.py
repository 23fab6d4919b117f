"""Training: the loop and its configuration (the AMP/compile policy is :mod:`temseg.policy`)."""

from .config import TrainConfig
from .loop import Trainer, TrainingError, lr_factor, train, validate

__all__ = ["TrainConfig", "Trainer", "TrainingError", "lr_factor", "train", "validate"]
