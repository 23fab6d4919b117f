"""Fused bottleneck self-attention: public function and the PyTorch reference."""

from .api import attention
from .reference import attention_math, attention_reference

__all__ = ["attention", "attention_math", "attention_reference"]
