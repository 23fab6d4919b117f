"""Autotune configurations of the attention kernels (plain data: importable without Triton).

These are the real GPU search spaces. The autotuner gets the union of all of them, keyed on the
token count ``N`` and the head dimension (plus, implicitly, the input dtype), and a pruning hook
keeps the entries of :data:`TABLE` for the head-dim bucket, input precision and GPU generation
of the call. Every entry was checked with ``python -m temseg.kernels.aot_report``: no register
spills, shared memory within the limit, and ``mma`` (sm_80) / ``wgmma`` (sm_90) tensor-core
instructions; tiles whose MMA dimension is 64 or more so that Hopper gets ``wgmma``.
Under ``TRITON_INTERPRET=1`` the autotuner gets a single small config instead (the
interpreter cannot benchmark several), see ``INTERPRET_*``.
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


KINDS = ("fwd", "bwd_kv", "bwd_q")
ARCHS = (80, 90)
HEAD_DIM_BUCKETS = (32, 64, 128)


def _c(*rows: tuple[int, int, int, int]) -> tuple[KernelConfig, ...]:
    return tuple(KernelConfig(*r) for r in rows)


# (kind, precision, head-dim bucket) -> configs for both archs, or {arch: configs}.
# kind: "fwd" (program = BLOCK_M queries, K/V streamed in BLOCK_N tiles), "bwd_kv" (program =
# BLOCK_N keys, Q/dO streamed in BLOCK_M tiles), "bwd_q" (program = BLOCK_M queries, K/V
# streamed in BLOCK_N tiles). precision: "16" (fp16/bf16 inputs) or "32" (fp32, tf32 dots).
TABLE: dict[tuple[str, str, int], tuple[KernelConfig, ...] | dict[int, tuple[KernelConfig, ...]]]
TABLE = {
    ("fwd", "16", 32): _c((128, 64, 4, 3), (64, 64, 4, 3)),
    ("fwd", "16", 64): _c((128, 64, 8, 3), (64, 64, 4, 3)),
    ("fwd", "16", 128): _c((128, 64, 8, 3), (64, 64, 8, 3)),
    ("fwd", "32", 32): _c((128, 64, 8, 3), (64, 64, 4, 3)),
    ("fwd", "32", 64): _c((128, 64, 8, 3), (64, 32, 4, 3)),
    ("fwd", "32", 128): _c((128, 32, 8, 2)),
    ("bwd_kv", "16", 32): _c((32, 128, 8, 2), (64, 64, 4, 2)),
    ("bwd_kv", "16", 64): _c((32, 128, 8, 2), (32, 64, 4, 3)),
    ("bwd_kv", "16", 128): _c((64, 64, 8, 2), (16, 64, 4, 3)),
    ("bwd_kv", "32", 32): _c((32, 128, 8, 2)),
    ("bwd_kv", "32", 64): _c((16, 128, 8, 2)),
    ("bwd_kv", "32", 128): {80: _c((16, 64, 8, 2)), 90: _c((16, 128, 8, 1))},
    ("bwd_q", "16", 32): _c((128, 32, 8, 2), (64, 32, 4, 3)),
    ("bwd_q", "16", 64): _c((128, 32, 8, 2), (64, 32, 4, 3)),
    ("bwd_q", "16", 128): _c((128, 32, 8, 2), (64, 32, 4, 3)),
    ("bwd_q", "32", 32): _c((128, 32, 8, 2)),
    ("bwd_q", "32", 64): _c((128, 32, 8, 2)),
    ("bwd_q", "32", 128): _c((64, 16, 4, 3)),
}

# Preprocess delta = rowsum(dO * O): purely memory bound, one config.
PREPROCESS_BLOCK_M = 64
PREPROCESS_WARPS = 4

# The single configs used by the interpreter: small tiles keep the CPU emulation fast and put
# ragged tails in the small test sizes (N = 17, 97, ...).
INTERPRET = {
    "fwd": KernelConfig(32, 16, 4, 1),
    "bwd_kv": KernelConfig(16, 32, 4, 1),
    "bwd_q": KernelConfig(32, 16, 4, 1),
}


def head_dim_bucket(head_dim: int) -> int:
    """The tuned head dim a head dim is padded to (32, 64 or 128)."""
    for bucket in HEAD_DIM_BUCKETS:
        if head_dim <= bucket:
            return bucket
    raise ValueError(f"head_dim {head_dim} > {HEAD_DIM_BUCKETS[-1]}")


def arch_of(capability: tuple[int, int]) -> int:
    """Config table of a CUDA capability: Hopper and newer use sm_90's, the rest sm_80's."""
    return 90 if capability[0] >= 9 else 80


def configs_for(kind: str, head_dim: int, elem_bytes: int, arch: int) -> tuple[KernelConfig, ...]:
    """GPU configs of ``kind`` for a head dim, input element size (2 or 4) and arch (80/90)."""
    entry = TABLE[(kind, "32" if elem_bytes == 4 else "16", head_dim_bucket(head_dim))]
    return entry[arch] if isinstance(entry, dict) else entry


def all_configs(kind: str) -> list[KernelConfig]:
    """Union of the GPU configs of ``kind`` (the autotuner's list before pruning)."""
    seen: dict[KernelConfig, None] = {}
    for (k, _, _), entry in TABLE.items():
        if k != kind:
            continue
        for cfgs in entry.values() if isinstance(entry, dict) else (entry,):
            seen.update(dict.fromkeys(cfgs))
    return list(seen)
