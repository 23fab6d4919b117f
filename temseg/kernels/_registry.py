"""Helpers for registering ``torch.library`` custom ops once per process."""

from __future__ import annotations

import torch

NAMESPACE = "temseg"


def registered(name: str) -> bool:
    """True when ``temseg::<name>`` already exists (e.g. the package was imported twice under
    different module names); the second import then reuses the first registration."""
    try:
        getattr(getattr(torch.ops, NAMESPACE), name)
    except (AttributeError, RuntimeError):
        return False
    return True
