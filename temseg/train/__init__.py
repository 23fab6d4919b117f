"""Training: the loop and its configuration (the AMP/compile policy is :mod:`temseg.policy`)."""

from .config import DEFAULT_MODEL, DEFAULT_PIXEL_SIZE, TrainConfig
from .loop import Trainer, TrainingError, lr_factor, train, validate

__all__ = ["DEFAULT_MODEL", "DEFAULT_PIXEL_SIZE", "TrainConfig", "Trainer", "TrainingError",
           "lr_factor", "train", "validate"]
