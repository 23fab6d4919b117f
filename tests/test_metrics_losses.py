from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from temseg.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss, thin_background
from temseg.metrics import confusion_matrix, dice_iou, summarize


def test_confusion_matrix_counts():
    t = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(p, t, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_dice_iou_from_known_matrix():
    cm = np.array([[50, 10, 0], [5, 30, 0], [0, 0, 0]])
    dice, iou = dice_iou(cm)
    assert dice[0] == pytest.approx(2 * 50 / (2 * 50 + 5 + 10))
    assert dice[1] == pytest.approx(2 * 30 / (2 * 30 + 10 + 5))
    assert iou[0] == pytest.approx(50 / 65)
    assert iou[1] == pytest.approx(30 / 45)
    assert math.isnan(dice[2]) and math.isnan(iou[2])  # absent from truth and prediction
    rep = summarize(cm, ["a", "b", "c"])
    assert rep["dice"]["c"] is None
    assert rep["mean_dice"] == pytest.approx((dice[0] + dice[1]) / 2)
    assert rep["classes_in_mean"] == ["a", "b"]


def test_class_predicted_but_absent_scores_zero():
    cm = np.array([[9, 1], [0, 0]])
    dice, _ = dice_iou(cm)
    assert dice[1] == 0.0


def test_loss_hand_computed():
    # uniform logits over 2 classes: p = 0.5 everywhere, CE = ln 2
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    # per class: I = 0.5, P = 1, G = 1 -> Dice = (1 + s) / (2 + s)
    s = 1e-5
    expect = math.log(2) + 0.5 * (1 - (1 + s) / (2 + s))
    assert float(DiceCELoss()(logits, target)) == pytest.approx(expect, rel=1e-6)


def test_loss_absent_class_rule():
    logits = torch.randn(2, 5, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))  # classes 3, 4 absent
    got = DiceLoss(batch=True)(logits, target)
    p = logits.softmax(1)
    oh = torch.nn.functional.one_hot(target, 5).permute(0, 3, 1, 2).float()
    inter, ps, gs = (p * oh).sum((0, 2, 3)), p.sum((0, 2, 3)), oh.sum((0, 2, 3))
    dice = (2 * inter + 1e-5) / (ps + gs + 1e-5)
    assert float(got) == pytest.approx(float(1 - dice[:3].mean()), rel=1e-5)


@pytest.mark.parametrize("batch", [True, False])
def test_matches_monai_dicece_when_all_classes_present(batch: bool):
    monai = pytest.importorskip("monai.losses")
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 16, 12, dtype=torch.float64)
    target = torch.arange(16 * 12).reshape(16, 12).remainder(5).expand(3, 16, 12).clone()
    ref = monai.DiceCELoss(to_onehot_y=True, softmax=True, batch=batch, lambda_dice=0.5,
                           lambda_ce=1.0)(logits, target[:, None])
    ours = DiceCELoss(batch=batch)(logits, target)
    assert float(ours) == pytest.approx(float(ref), rel=1e-6)


@pytest.mark.parametrize("mode", ["exp", "same", "two"])
def test_deep_supervision_loss_is_monais_normalised(mode: str):
    # MONAI sums the weighted levels; temseg divides by the weights' sum (nnU-Net's rule).
    # 4x4 blocks of the 5 classes: every class at every level (MONAI keeps empty ones)
    monai = pytest.importorskip("monai.losses")
    torch.manual_seed(0)
    blocks = torch.arange(12).reshape(4, 3).remainder(5)
    target = blocks.repeat_interleave(4, 0).repeat_interleave(4, 1).expand(2, 16, 12)
    outs = [torch.randn(2, 5, 16 // s, 12 // s) for s in (1, 2, 4)]
    base = DiceCELoss(border_weight=0.0)
    ref = monai.DeepSupervisionLoss(monai.DiceCELoss(to_onehot_y=True, softmax=True, batch=True,
                                                     lambda_dice=0.5), weight_mode=mode)(
        outs, target[:, None].float())  # MONAI interpolates the target: not a long one
    weights = {"exp": [1, 0.5, 0.25], "same": [1, 1, 1], "two": [1, 0.5, 0.5]}[mode]
    ours = DeepSupervisionLoss(base, weight_mode=mode)(outs, target)
    assert float(ours) == pytest.approx(float(ref) / sum(weights), rel=1e-5)
    assert float(DeepSupervisionLoss(base)(outs[0], target)) == float(base(outs[0], target))


def test_deep_supervision_loss_shrinks_the_target_nearest():
    # a 2x2-block target shrunk by 2 is its blocks' value: the coarse loss is the loss of that
    target = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]])[None]
    coarse = torch.randn(1, 5, 2, 2)
    full = torch.randn(1, 5, 4, 4)
    base = DiceCELoss()
    got = DeepSupervisionLoss(base, weights=[2.0, 1.0])([full, coarse], target)
    want = (2 * base(full, target) + base(coarse, torch.tensor([[[0, 1], [2, 0]]]))) / 3
    assert float(got) == pytest.approx(float(want), rel=1e-6)


def test_loss_gradient_flows():
    logits = torch.randn(2, 5, 8, 8, requires_grad=True)
    DiceCELoss()(logits, torch.randint(0, 5, (2, 8, 8))).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_thin_background_marks_lines_not_spaces():
    # axons (1) separated by lines of 1, 2 and 4 px; a 6 px background space at the right edge
    t = torch.ones(1, 12, 28, dtype=torch.int64)
    t[0, :, 5] = 0
    t[0, :, 9:11] = 0
    t[0, :, 14:18] = 0
    t[0, :, 22:] = 0
    thin = thin_background(t)[0]  # 3x3 opening: lines under 3 px
    assert thin[:, 5].all() and thin[:, 9:11].all()
    assert not thin[:, 14:18].any() and not thin[:, 22:].any() and not thin[t[0] > 0].any()
    wider = thin_background(t, 5)[0]  # lines under 5 px
    assert wider[:, 5].all() and wider[:, 9:11].all() and wider[:, 14:18].all()
    assert not wider[:, 22:].any()


def test_border_weight_is_a_weighted_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 16, 16, dtype=torch.float64)
    target = torch.randint(1, 3, (2, 16, 16))
    target[:, :, 7] = 0  # a line through every patch
    target[1, 10:, 10:] = 0
    w = 4.0
    weights = 1 + w * thin_background(target).double()
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    dice_only = DiceCELoss(lambda_ce=0.0)(logits, target)
    expect = (ce * weights).mean() + dice_only
    got = DiceCELoss(border_weight=w)(logits, target)
    assert float(got) == pytest.approx(float(expect), rel=1e-6)
    assert float(got) > float(DiceCELoss()(logits, target))


@pytest.mark.parametrize("size", [3, 5])
def test_thin_background_is_the_max_pool_opening(size: int):
    """The shifted-OR morphology equals the opening written with max-pools."""
    target = torch.randint(0, 3, (3, 23, 31))
    target[torch.rand(3, 23, 31) < 0.5] = 1
    bg = (target == 0).float()[:, None]
    r = size // 2
    eroded = 1.0 - torch.nn.functional.max_pool2d(1.0 - bg, size, 1, r)
    expect = (bg > torch.nn.functional.max_pool2d(eroded, size, 1, r))[:, 0]
    got = thin_background(target, size)
    assert torch.equal(got, expect) and got.any()
