"""Kernel tests run the Triton kernels on CPU tensors through Triton's interpreter.

``TRITON_INTERPRET`` is read by ``@triton.jit`` when the kernel modules are imported; those
modules are imported lazily (on the first Triton launch), so setting the variable here, at
collection time, is early enough even when torch or triton were imported by other test files.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

os.environ.setdefault("TRITON_INTERPRET", "1")

TRITON = importlib.util.find_spec("triton") is not None


def _interpreter_problem() -> str | None:
    if not TRITON:
        return "triton is not installed (pip install 'temseg[triton]')"
    if os.environ.get("TRITON_INTERPRET") != "1":
        return "TRITON_INTERPRET is set to something other than 1"
    for name in ("temseg.kernels.attention.triton_fwd", "temseg.kernels.dice.triton_kernel"):
        mod = sys.modules.get(name)
        if mod is not None and not mod.INTERPRETED:
            return f"{name} was imported without TRITON_INTERPRET=1 earlier in this process"
    return None


@pytest.fixture
def interpreter() -> None:
    """Skip (with the reason) unless the kernels will run under Triton's interpreter."""
    why = _interpreter_problem()
    if why is not None:
        pytest.skip(why)


@pytest.fixture(autouse=True)
def _seed() -> None:
    import torch

    torch.manual_seed(0)
