"""Fused soft-Dice + CE under TRITON_INTERPRET=1: statistics, loss and logits gradient against
a float64 PyTorch reference; ragged H x W, batch 1 and 3, C = 5 and general C, absent classes."""

from __future__ import annotations

import pytest
import torch
from _kernel_checks import assert_close_to_ref, assert_low_precision_ok

from temseg.kernels import (
    dice_ce_loss,
    dice_ce_loss_reference,
    dice_ce_stats_reference,
    soft_dice_loss,
)
from temseg.kernels.dice.op import dice_ce_stats

pytestmark = pytest.mark.usefixtures("interpreter")


def _inputs(b, c, h, w, dtype=torch.float32):
    logits = (3 * torch.randn(b, c, h, w)).to(dtype).requires_grad_()
    target = torch.randint(0, c, (b, h, w))
    return logits, target


def _weighted_stats_grad(stats_fn, logits, target, wi, wp, wc):
    """Stats and the gradient of a random linear function of inter, psum and ce."""
    inter, psum, gsum, ce = stats_fn(logits, target)
    out = (inter * wi).sum() + (psum * wp).sum() + (ce * wc).sum()
    (grad,) = torch.autograd.grad(out, logits)
    return (inter, psum, gsum, ce), grad


# (B, C, H, W): a single pixel, H x W not multiples of the tile, C = 5 (the model), C = 3, 7
# (padded to 8), 32 (C up to 32).
STATS_CASES = [(1, 5, 1, 1), (3, 5, 37, 53), (1, 5, 64, 72), (2, 3, 9, 31), (1, 7, 13, 11),
               (2, 32, 17, 19)]


@pytest.mark.parametrize("shape", STATS_CASES, ids=lambda s: "x".join(map(str, s)))
def test_stats_and_grad_fp32(shape):
    b, c = shape[:2]
    logits, target = _inputs(*shape)
    wi, wp, wc = torch.randn(b, c), torch.randn(b, c), torch.randn(b)
    stats, grad = _weighted_stats_grad(dice_ce_stats, logits, target, wi, wp, wc)
    x64 = logits.detach().double().requires_grad_()
    stats_ref, grad_ref = _weighted_stats_grad(dice_ce_stats_reference, x64, target,
                                               wi.double(), wp.double(), wc.double())
    for name, s, r in zip(("inter", "psum", "gsum", "ce"), stats, stats_ref, strict=True):
        assert s.dtype == torch.float32 and s.shape == r.shape
        assert_close_to_ref(s, r, 1e-5, name)
    assert grad.dtype == torch.float32
    assert_close_to_ref(grad, grad_ref, 1e-5, "dlogits")


@pytest.mark.parametrize("batch", [True, False])
def test_loss_matches_float64_with_upstream_weight(batch):
    """Whole loss (shared loss_from_stats) and its gradient when the loss is scaled by a random
    weight and added to another term (the loss is not the last operation)."""
    logits, target = _inputs(3, 5, 21, 30)
    weight = torch.rand(())
    kw = dict(batch=batch, lambda_dice=0.7, lambda_ce=1.3)

    def total(loss, x):
        return weight * loss + 0.1 * x.double().square().mean()

    loss = dice_ce_loss(logits, target, backend="triton", **kw)
    (grad,) = torch.autograd.grad(total(loss, logits), logits)
    x64 = logits.detach().double().requires_grad_()
    loss_ref = dice_ce_loss_reference(x64, target, **kw)
    (grad_ref,) = torch.autograd.grad(total(loss_ref, x64), x64)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert_close_to_ref(loss, loss_ref, 1e-5, "loss")
    assert_close_to_ref(grad, grad_ref, 1e-5, "dlogits")


def test_pixel_weights_on_the_kernel_path_match_the_reference():
    """``weight`` (the border weight's map): the kernel's CE plus the separate weighted share
    equals the reference's weighted CE, loss and gradient, against float64."""
    logits, target = _inputs(2, 5, 17, 24)
    pixel_w = 1 + 4 * (torch.rand(2, 17, 24) < 0.2).float()
    loss = dice_ce_loss(logits, target, batch=True, weight=pixel_w, backend="triton")
    (grad,) = torch.autograd.grad(loss, logits)
    x64 = logits.detach().double().requires_grad_()
    ref = dice_ce_loss_reference(x64, target, batch=True, weight=pixel_w)
    (grad_ref,) = torch.autograd.grad(ref, x64)
    assert_close_to_ref(loss, ref, 1e-5, "loss")
    assert_close_to_ref(grad, grad_ref, 1e-5, "dlogits")
    ce = torch.nn.functional.cross_entropy(x64.detach(), target, reduction="none")
    plain = dice_ce_loss_reference(x64.detach(), target, batch=True, lambda_ce=0.0)
    assert float(ref) == pytest.approx(float((ce * pixel_w).mean() + plain), rel=1e-10)


@pytest.mark.parametrize("batch", [True, False])
def test_absent_class_rule(batch):
    """Class 3 missing from the whole target and class 1 missing from sample 0: the empty
    Dice terms are left out of the mean (ignore_empty) and the kernel agrees with the
    reference; with ignore_empty=False they count (and the two results differ)."""
    logits, target = _inputs(2, 5, 19, 23)
    target[target == 3] = 0
    target[0][target[0] == 1] = 2
    loss = dice_ce_loss(logits, target, batch=batch, backend="triton")
    (grad,) = torch.autograd.grad(loss, logits)
    x64 = logits.detach().double().requires_grad_()
    loss_ref = dice_ce_loss_reference(x64, target, batch=batch)
    (grad_ref,) = torch.autograd.grad(loss_ref, x64)
    assert_close_to_ref(loss, loss_ref, 1e-5, "loss")
    assert_close_to_ref(grad, grad_ref, 1e-5, "dlogits")

    # Spelled out: mean over the non-empty terms only.
    _, _, gsum, _ = dice_ce_stats(logits.detach(), target)
    assert gsum[:, 3].sum() == 0 and gsum[0, 1] == 0
    dice_only = soft_dice_loss(logits.detach(), target, batch=batch, backend="triton")
    p = torch.softmax(logits.detach().double(), 1)
    onehot = torch.nn.functional.one_hot(target, 5).permute(0, 3, 1, 2).double()
    dims = (0, 2, 3) if batch else (2, 3)
    inter, psum, g = (p * onehot).sum(dims), p.sum(dims), onehot.sum(dims)
    dice = (2 * inter + 1e-5) / (psum + g + 1e-5)
    keep = g > 0
    assert_close_to_ref(dice_only, (1 - dice)[keep].mean(), 1e-5, "dice over present classes")
    kept_all = soft_dice_loss(logits.detach(), target, batch=batch, ignore_empty=False,
                              backend="triton")
    assert_close_to_ref(kept_all, (1 - dice).mean(), 1e-5, "dice over all classes")
    assert abs(kept_all.item() - dice_only.item()) > 1e-3


def test_all_classes_empty_but_background_excluded():
    """Only background present and include_background=False: every Dice term is empty, the Dice
    loss is 0 and only CE remains."""
    logits, _ = _inputs(1, 5, 8, 9)
    target = torch.zeros(1, 8, 9, dtype=torch.long)
    loss = dice_ce_loss(logits, target, include_background=False, backend="triton")
    ref = dice_ce_loss_reference(logits.detach().double(), target, include_background=False)
    ce = torch.nn.functional.cross_entropy(logits.detach().double(), target)
    assert_close_to_ref(loss, ref, 1e-5, "loss")
    assert_close_to_ref(loss, ce, 1e-5, "loss == CE")


def test_fp16_logits_within_2x_of_torch():
    """fp16 logits: statistics (fp32 out) and the fp16 logits gradient compared with the PyTorch
    reference run on the same fp16 tensor."""
    logits, target = _inputs(3, 5, 33, 47, torch.float16)
    wi, wp, wc = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3)
    stats, grad = _weighted_stats_grad(dice_ce_stats, logits, target, wi, wp, wc)
    stats_t, grad_t = _weighted_stats_grad(dice_ce_stats_reference, logits, target, wi, wp, wc)
    x64 = logits.detach().double().requires_grad_()
    stats_ref, grad_ref = _weighted_stats_grad(dice_ce_stats_reference, x64, target,
                                               wi.double(), wp.double(), wc.double())
    names = ("inter", "psum", "gsum", "ce")
    for name, s, st, r in zip(names, stats, stats_t, stats_ref, strict=True):
        assert_low_precision_ok(s, st, r, name)
    assert grad.dtype == torch.float16
    assert_low_precision_ok(grad, grad_t, grad_ref, "dlogits")


def test_channels_last_and_label_dtypes():
    """channels_last logits are read in place (pixel stride C); uint8 / int32 labels."""
    logits, target = _inputs(2, 5, 12, 17)
    x_cl = logits.detach().to(memory_format=torch.channels_last).requires_grad_()
    ref = dice_ce_loss_reference(logits.detach().double(), target, batch=True)
    for t in (target, target.to(torch.uint8), target.to(torch.int32)):
        loss = dice_ce_loss(x_cl, t, batch=True, backend="triton")
        assert_close_to_ref(loss, ref, 1e-5, f"loss, {t.dtype} labels")
    (grad,) = torch.autograd.grad(dice_ce_loss(x_cl, target, batch=True, backend="triton"), x_cl)
    x64 = logits.detach().double().requires_grad_()
    (grad_ref,) = torch.autograd.grad(dice_ce_loss_reference(x64, target, batch=True), x64)
    assert_close_to_ref(grad, grad_ref, 1e-5, "dlogits")
