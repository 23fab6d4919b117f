"""temseg.inference.sliding_window_inference: stitching exactness and MONAI equivalence."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference as monai_swi

from temseg.inference import sliding_window_inference


def plus_one(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def mixed(x: torch.Tensor) -> torch.Tensor:
    """Position-dependent predictor (B, C, h, w) -> (B, 3C, h, w): blending matters."""
    return torch.cat([x.sin(), x.flip(-1) * 2, x.roll(3, -2)], 1)


SIZES = [(1, 50), (50, 1), (1, 1), (5, 9), (16, 16), (37, 81), (100, 77)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", ["gaussian", "constant", "cosine"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.8])
def test_plus_one_stitches_back(size: tuple[int, int], mode: str, overlap: float) -> None:
    x = torch.randn(2, 2, *size, generator=torch.Generator().manual_seed(0))
    out = sliding_window_inference(x, (16, 12), 3, plus_one, overlap=overlap, mode=mode)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, x + 1, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("padding_mode", ["constant", "reflect", "replicate", "circular"])
def test_smaller_than_roi_is_padded_then_cropped(padding_mode: str) -> None:
    x = torch.randn(1, 1, 3, 7, generator=torch.Generator().manual_seed(1))
    out = sliding_window_inference(x, 32, 2, plus_one, padding_mode=padding_mode, cval=5.0)
    torch.testing.assert_close(out, x + 1, rtol=1e-6, atol=1e-6)
    # MONAI (torch F.pad) can pad 3x7 up to 32 only in these modes (cval: constant only).
    if padding_mode in ("constant", "replicate"):
        kw = {"cval": 5.0} if padding_mode == "constant" else {}
        ref = monai_swi(x, 32, 2, mixed, padding_mode=padding_mode, mode="gaussian", **kw)
        got = sliding_window_inference(x, 32, 2, mixed, padding_mode=padding_mode, **kw)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_constant_predictor_gives_constant_output() -> None:
    x = torch.randn(1, 1, 70, 45)
    out = sliding_window_inference(x, 16, 4, lambda t: torch.full_like(t, 3.25).repeat(1, 5, 1, 1),
                                   overlap=0.5)
    assert out.shape == (1, 5, 70, 45)
    torch.testing.assert_close(out, torch.full_like(out, 3.25), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.25, 0.5])
@pytest.mark.parametrize(("shape", "roi"), [((2, 2, 100, 77), (32, 24)), ((1, 1, 64, 64), 64),
                                            ((3, 1, 130, 200), (48, 48)), ((1, 1, 1, 50), (1, 8)),
                                            ((1, 3, 5, 9), (8, 8))])
def test_matches_monai(shape: tuple[int, ...], roi: int | tuple[int, int], mode: str,
                       overlap: float) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    ref = monai_swi(x, roi, 3, mixed, overlap=overlap, mode=mode)
    got = sliding_window_inference(x, roi, 3, mixed, overlap=overlap, mode=mode)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_monai_sigma_scale_roi_fallback_and_kwargs() -> None:
    x = torch.randn(1, 2, 60, 45, generator=torch.Generator().manual_seed(3))

    def pred(t: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        return mixed(t) * gain

    ref = monai_swi(x, (20, -1), 2, pred, overlap=(0.5, 0.25), mode="gaussian",
                    sigma_scale=(0.2, 0.1), gain=3.0)
    got = sliding_window_inference(x, (20, -1), 2, pred, overlap=(0.5, 0.25),
                                   sigma_scale=(0.2, 0.1), gain=3.0)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_dtypes_and_device() -> None:
    x = torch.randint(0, 255, (1, 1, 40, 30), dtype=torch.uint8)
    out = sliding_window_inference(x, 16, 2, lambda t: t.float() * 2, device="cpu")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x.float() * 2)
    x64 = torch.randn(1, 1, 20, 20, dtype=torch.float64)
    assert sliding_window_inference(x64, 8, 2, plus_one).dtype == torch.float64


def test_errors() -> None:
    x = torch.zeros(1, 1, 20, 20)
    with pytest.raises(ValueError, match="inputs must be a"):
        sliding_window_inference(torch.zeros(20, 20), 8, 1, plus_one)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inference(x, 8, 1, plus_one, overlap=1.0)
    with pytest.raises(ValueError, match="predictor must return"):
        sliding_window_inference(x, 8, 1, lambda t: t[..., :4, :4])
    with pytest.raises(ValueError, match="padding_mode"):
        sliding_window_inference(x, 32, 1, plus_one, padding_mode="wrap")
    with pytest.raises(ValueError, match="unknown window mode"):
        sliding_window_inference(x, 8, 1, plus_one, mode="box")


@pytest.mark.parametrize("padding_mode", ["reflect", "circular"])
def test_reflect_circular_padding_match_monai(padding_mode: str) -> None:
    x = torch.randn(1, 2, 20, 30, generator=torch.Generator().manual_seed(4))  # pads < size
    ref = monai_swi(x, 32, 2, mixed, padding_mode=padding_mode, mode="gaussian")
    got = sliding_window_inference(x, 32, 2, mixed, padding_mode=padding_mode)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_bfloat16_and_requires_grad_inputs() -> None:
    x = torch.randn(1, 1, 30, 20, requires_grad=True)
    out = sliding_window_inference(x, 16, 2, plus_one)
    torch.testing.assert_close(out, x.detach() + 1, rtol=1e-6, atol=1e-6)
    xb = torch.randn(1, 1, 30, 20).to(torch.bfloat16)
    outb = sliding_window_inference(xb, 16, 2, plus_one)
    assert outb.dtype == torch.bfloat16
    torch.testing.assert_close(outb, xb + 1)
