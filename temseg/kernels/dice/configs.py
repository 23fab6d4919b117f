"""Autotune configurations of the fused soft-Dice + CE kernels (plain data, no Triton import).

Each program handles tiles of BLOCK_P pixels x C_PAD classes (classes padded to a power of two
and masked). The autotuner keys on H*W and C and gets the union of the configs below; a pruning
hook keeps the entries for the call's padded class count, chosen so that one C_PAD x BLOCK_P
fp32 tile is at most 32 values per thread (no spills on sm_80 / sm_90, checked by
``python -m temseg.kernels.aot_report``). Both kernels are memory bound: the tile only has to
be large enough to keep enough bytes in flight per SM. Under ``TRITON_INTERPRET=1`` a single
config is used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiceConfig:
    """One autotune point: pixels per tile and launch options."""

    block_p: int
    num_warps: int
    num_stages: int

    @property
    def name(self) -> str:
        return f"P{self.block_p}-w{self.num_warps}-s{self.num_stages}"


def _c(*rows: tuple[int, int, int]) -> tuple[DiceConfig, ...]:
    return tuple(DiceConfig(*r) for r in rows)


# (kind, C_PAD bucket) -> configs. kind "fwd": reduction, each program loops over tiles (the
# stages pipeline the loads of the next tile); "bwd": elementwise, one tile per program.
TABLE: dict[tuple[str, int], tuple[DiceConfig, ...]] = {
    ("fwd", 8): _c((512, 4, 3), (1024, 8, 3), (256, 4, 3)),
    ("fwd", 16): _c((256, 8, 3)),
    ("fwd", 32): _c((128, 4, 3)),
    ("bwd", 8): _c((512, 4, 1), (1024, 8, 1)),
    ("bwd", 16): _c((256, 4, 1)),
    ("bwd", 32): _c((128, 4, 1)),
}
C_PAD_BUCKETS = (8, 16, 32)
MAX_CLASSES = 32

INTERPRET = {"fwd": DiceConfig(256, 4, 1), "bwd": DiceConfig(256, 4, 1)}


def c_pad(num_classes: int) -> int:
    """Padded class count: next power of two, at least 2."""
    p = 2
    while p < num_classes:
        p *= 2
    return p


def configs_for(kind: str, padded_classes: int) -> tuple[DiceConfig, ...]:
    """GPU configs of ``kind`` (``"fwd"`` / ``"bwd"``) for a padded class count <= 32."""
    for bucket in C_PAD_BUCKETS:
        if padded_classes <= bucket:
            return TABLE[(kind, bucket)]
    raise ValueError(f"at most {MAX_CLASSES} classes, got C_PAD = {padded_classes}")


def all_configs(kind: str) -> list[DiceConfig]:
    """Union of the GPU configs of ``kind`` (the autotuner's list before pruning)."""
    seen: dict[DiceConfig, None] = {}
    for (k, _), cfgs in TABLE.items():
        if k == kind:
            seen.update(dict.fromkeys(cfgs))
    return list(seen)
