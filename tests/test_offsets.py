from __future__ import annotations

from pathlib import Path

import pytest
import torch

from temseg.checkpoint import read_checkpoint
from temseg.models import UNetConfig, build_model
from temseg.train import TrainConfig, train
from temseg.train.offsets import add_to_head, logit_offsets


def _dice(pred: torch.Tensor, labels: torch.Tensor, classes) -> float:
    return sum(2 * float(((pred == c) & (labels == c)).sum())
               / float((pred == c).sum() + (labels == c).sum()) for c in classes) / len(classes)


def test_offsets_undo_a_known_class_prior_shift():
    """Logits of noisy evidence for three classes, with background (0) shifted up by 1.2:
    the search finds about -1.2 for it, leaves the absent classes at 0 and raises the Dice."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (20_000,), generator=gen)
    labels[labels == 1] = 3  # classes 0, 2, 3 present; 1 and 4 absent
    logits = torch.randn(20_000, 5, generator=gen)
    logits[torch.arange(20_000), labels] += 1.5
    logits[:, [1, 4]] -= 5.0
    shifted = logits.clone()
    shifted[:, 0] += 1.2
    offsets = logit_offsets(shifted, labels)
    assert offsets[0] - offsets[2:4].mean() == pytest.approx(-1.2, abs=0.25)
    assert offsets[1] == 0 and offsets[4] == 0
    present = (0, 2, 3)
    assert _dice((shifted + offsets).argmax(1), labels, present) > \
        _dice(shifted.argmax(1), labels, present) + 0.01
    # unshifted logits need (nearly) nothing
    assert logit_offsets(logits, labels).abs().max() <= 0.3


@pytest.mark.parametrize("subpixel", [1, 2])
def test_add_to_head_adds_the_offsets_to_every_pixels_logits(subpixel: int):
    torch.manual_seed(0)
    net = build_model(UNetConfig(width=8, heads=2, subpixel=subpixel)).eval()
    x = torch.randn(1, 1, 32, 48)
    offsets = torch.tensor([-1.0, 0.0, 0.5, 0.25, 2.0])
    with torch.no_grad():
        before = net(x)
        add_to_head(net, offsets)
        after = net(x)
    torch.testing.assert_close(after - before, offsets[None, :, None, None].expand_as(after),
                               atol=1e-5, rtol=0)


TINY = UNetConfig(width=8, depth=2, heads=2)


@pytest.mark.parametrize("on", [True, False])
def test_best_checkpoint_carries_the_offsets_and_training_weights_do_not(
        blocks: Path, tmp_path: Path, on: bool):
    """One epoch: best.pt and last.pt hold the same weights but for the head bias, which
    differs by the offsets in summary.json (none without --logit-offsets)."""
    config = TrainConfig(data=str(blocks), out=str(tmp_path / "run"), model=TINY, epochs=1,
                         batch_size=4, patch_size=64, patches_per_image=4, val_crop=96,
                         val_fraction=0.34, progress=False, seed=1, logit_offsets=on)
    summary = train(config)
    best, last = (read_checkpoint(tmp_path / "run" / n)["state_dict"]
                  for n in ("best.pt", "last.pt"))
    for k in best:
        if k != "head.bias":
            assert torch.equal(best[k], last[k]), k
    diff = best["head.bias"] - last["head.bias"]
    if on:
        assert summary["logit_offsets"] is not None and len(summary["logit_offsets"]) == 5
        torch.testing.assert_close(diff, torch.tensor(summary["logit_offsets"]), atol=1e-4,
                                   rtol=0)
    else:
        assert summary["logit_offsets"] is None and not diff.any()
