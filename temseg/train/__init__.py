"""Training: the loop, its configuration and the AMP/compile policy."""

from .config import TrainConfig
from .loop import Trainer, TrainingError, lr_factor, train, validate
from .policy import choose_compile, choose_precision, cpu_has_native_bf16

__all__ = ["TrainConfig", "Trainer", "TrainingError", "choose_compile", "choose_precision",
           "cpu_has_native_bf16", "lr_factor", "train", "validate"]
