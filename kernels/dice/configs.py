"""Autotune configurations of the fused soft-Dice + CE kernels (plain data, no Triton import).

Each program handles tiles of BLOCK_P pixels x C_PAD classes (classes padded to a power of two
and masked). The autotuner keys on H*W and C; a pruning function keeps the configs whose tile
fits the register budget for the padded class count (``C_PAD * BLOCK_P`` fp32 values spread over
``32 * num_warps`` threads). Under ``TRITON_INTERPRET=1`` a single small config is used.
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


# Forward (reduction): streams tiles, accumulates per-class sums in registers.
FWD_CONFIGS: tuple[DiceConfig, ...] = (
    DiceConfig(256, 4, 3),
    DiceConfig(512, 4, 3),
    DiceConfig(1024, 8, 3),
    DiceConfig(2048, 8, 3),
    DiceConfig(128, 4, 3),
)

# Backward (elementwise per pixel): one tile per program.
BWD_CONFIGS: tuple[DiceConfig, ...] = (
    DiceConfig(256, 4, 1),
    DiceConfig(512, 4, 1),
    DiceConfig(1024, 8, 1),
    DiceConfig(2048, 8, 1),
    DiceConfig(128, 4, 1),
)

INTERPRET_FWD = DiceConfig(256, 4, 1)
INTERPRET_BWD = DiceConfig(256, 4, 1)

# Per-thread budget of fp32 tile values (one C_PAD x BLOCK_P tile) before spilling risks.
VALUES_PER_THREAD = 32


def c_pad(num_classes: int) -> int:
    """Padded class count: next power of two, at least 2."""
    p = 2
    while p < num_classes:
        p *= 2
    return p


def fits(cfg: DiceConfig, padded_classes: int) -> bool:
    """Whether one C_PAD x BLOCK_P fp32 tile fits the per-thread register budget."""
    return padded_classes * cfg.block_p <= VALUES_PER_THREAD * 32 * cfg.num_warps


def configs_for(kind: str, padded_classes: int) -> list[DiceConfig]:
    """GPU configs of ``kind`` (``"fwd"`` / ``"bwd"``) kept for C_PAD (never empty)."""
    table = FWD_CONFIGS if kind == "fwd" else BWD_CONFIGS
    kept = [c for c in table if fits(c, padded_classes)]
    return kept or [min(table, key=lambda c: c.block_p)]
