"""Training: the loop and its configuration (the AMP/compile policy is :mod:`temseg.policy`)."""

from .config import DEFAULT_MODEL, TrainConfig
from .loop import Trainer, TrainingError, lr_factor, train, validate

__all__ = ["DEFAULT_MODEL", "TrainConfig", "Trainer", "TrainingError", "lr_factor", "train",
           "validate"]
