"""The baseline: a faithful port of the seed's straightforward PyTorch implementation.

Everything temseg's engine replaces, written the plain way, with the same weights as temseg's
model so that outputs can be compared:

* :mod:`.model`: the same ResUNet module tree with explicit ``softmax(Q K^T) V`` attention;
* :mod:`.loss`: cross-entropy + soft-Dice through a one-hot target and separate tensors;
* :mod:`.train_step`: one fp32 eager training step (contiguous NCHW, no compile, no AMP);
* :mod:`.infer`: whole-image inference by a simple non-blended tile loop in NumPy.
"""

from .infer import segment_file, tile_loop_inference, tile_loop_probabilities
from .loss import BaselineDiceCELoss, baseline_dice_ce_loss
from .model import BaselineResUNet, BaselineSelfAttention2d, baseline_from, explicit_attention
from .train_step import BaselineTrainStep

__all__ = [
    "BaselineDiceCELoss",
    "BaselineResUNet",
    "BaselineSelfAttention2d",
    "BaselineTrainStep",
    "baseline_dice_ce_loss",
    "baseline_from",
    "explicit_attention",
    "segment_file",
    "tile_loop_inference",
    "tile_loop_probabilities",
]
