"""Error measures shared by the kernel tests (imported by name: pytest puts this directory on
sys.path)."""

from __future__ import annotations

import torch


def max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max |x - ref| in float64."""
    return (x.detach().double() - ref.detach().double()).abs().max().item()


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max |x - ref| / max |ref| (infinity norm); an all-zero ref returns the absolute error."""
    scale = ref.detach().double().abs().max().item()
    err = max_err(x, ref)
    return err / scale if scale > 0 else err


def assert_close_to_ref(x: torch.Tensor, ref: torch.Tensor, tol: float, what: str) -> float:
    """Assert rel_err(x, ref) < tol and return it."""
    err = rel_err(x, ref)
    assert err < tol, f"{what}: relative error {err:.3g} >= {tol:g}"
    return err


def assert_low_precision_ok(x: torch.Tensor, torch_lp: torch.Tensor, ref: torch.Tensor,
                            what: str, factor: float = 2.0, slack: float = 1e-4) -> tuple[float,
                                                                                          float]:
    """The kernel's low-precision error is within ``factor`` x PyTorch's own error at the same
    precision, plus ``slack * max|ref|`` (absolute slack for errors that are both tiny)."""
    ours, theirs = max_err(x, ref), max_err(torch_lp, ref)
    scale = ref.detach().double().abs().max().item()
    assert ours <= factor * theirs + slack * scale, (
        f"{what}: kernel error {ours:.3g} > {factor} x torch error {theirs:.3g} "
        f"+ {slack:g} * {scale:.3g}")
    return ours, theirs
