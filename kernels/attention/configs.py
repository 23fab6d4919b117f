"""Autotune configurations of the attention kernels (plain data: importable without Triton).

The lists are the real GPU search spaces (Ampere sm_80 and Hopper sm_90); the autotuner keys them
on the token count ``N`` and the head dimension (and, implicitly, the input dtype), and a pruning
function drops the configs that do not fit a given head dimension / dtype (registers, shared
memory). ``python -m temseg.kernels.aot_report`` compiles every surviving config for both
architectures and fails if one spills or exceeds shared memory. Under ``TRITON_INTERPRET=1`` the
autotuner is given a single small config (the interpreter cannot benchmark several).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelConfig:
    """One autotune point: block sizes (kernel meta-parameters) and launch options."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int

    @property
    def name(self) -> str:
        return f"M{self.block_m}-N{self.block_n}-w{self.num_warps}-s{self.num_stages}"


# Forward: one program per (BLOCK_M queries, batch*head); K/V streamed in BLOCK_N tiles.
FWD_CONFIGS: tuple[KernelConfig, ...] = (
    KernelConfig(128, 64, 4, 3),
    KernelConfig(128, 64, 8, 3),
    KernelConfig(128, 128, 8, 3),
    KernelConfig(64, 64, 4, 3),
    KernelConfig(64, 32, 4, 4),
)

# Backward dK/dV: one program per BLOCK_N keys; Q/dO streamed in BLOCK_M tiles (the tile of the
# streamed operand is the small one, as in the FlashAttention-2 Triton tutorial).
BWD_KV_CONFIGS: tuple[KernelConfig, ...] = (
    KernelConfig(32, 128, 4, 3),
    KernelConfig(64, 128, 8, 2),
    KernelConfig(32, 64, 4, 3),
)

# Backward dQ: one program per BLOCK_M queries; K/V streamed in BLOCK_N tiles.
BWD_Q_CONFIGS: tuple[KernelConfig, ...] = (
    KernelConfig(128, 32, 4, 3),
    KernelConfig(128, 64, 8, 2),
    KernelConfig(64, 32, 4, 3),
)

# Preprocess delta = rowsum(dO * O): purely memory bound.
PREPROCESS_BLOCK_M = 64

# The single configs used by the interpreter (small tiles keep the CPU emulation fast and make
# the masked tails of small N visible).
INTERPRET_FWD = KernelConfig(32, 16, 4, 1)
INTERPRET_BWD_KV = KernelConfig(16, 32, 4, 1)
INTERPRET_BWD_Q = KernelConfig(32, 16, 4, 1)

# Shared memory per block (opt-in maximum) of the target architectures, in bytes.
SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}


def fits(cfg: KernelConfig, kind: str, head_dim: int, elem_bytes: int) -> bool:
    """Whether ``cfg`` is a sensible candidate for ``head_dim`` and the input element size.

    Register budget: each thread keeps fp32 accumulators of the resident tiles; beyond roughly
    128 fp32 values per thread the compiler spills. ``kind`` is ``"fwd"``, ``"bwd_kv"`` or
    ``"bwd_q"``.
    """
    threads = cfg.num_warps * 32
    if kind == "fwd":
        # q tile + fp32 acc + qk/p tile
        resident = cfg.block_m * head_dim * (1 + elem_bytes / 4) + cfg.block_m * cfg.block_n
    elif kind == "bwd_kv":
        # k, v tiles + dk, dv accumulators + two (n x m) score tiles
        resident = cfg.block_n * head_dim * (2 + 2 * elem_bytes / 4) + 2 * cfg.block_m * cfg.block_n
    elif kind == "bwd_q":
        # q, do tiles + dq accumulator + two (m x n) score tiles
        resident = cfg.block_m * head_dim * (1 + 2 * elem_bytes / 4) + 2 * cfg.block_m * cfg.block_n
    else:
        raise ValueError(kind)
    return resident / threads <= 128


def configs_for(kind: str, head_dim: int, elem_bytes: int) -> list[KernelConfig]:
    """The GPU configs of one kernel kind kept for ``head_dim`` / element size (never empty)."""
    table = {"fwd": FWD_CONFIGS, "bwd_kv": BWD_KV_CONFIGS, "bwd_q": BWD_Q_CONFIGS}[kind]
    kept = [c for c in table if fits(c, kind, head_dim, elem_bytes)]
    if not kept:  # fall back to the smallest tile
        kept = [min(table, key=lambda c: c.block_m * c.block_n)]
    return kept
