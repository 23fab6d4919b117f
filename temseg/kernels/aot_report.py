"""Ahead-of-time GPU compile report: ``python -m temseg.kernels.aot_report``.

Compiles every Triton kernel of the package in every GPU autotune config that survives the
config pruning, for Ampere (sm_80) and Hopper (sm_90), with no GPU present (Triton compiles for a
named ``GPUTarget``). For each compile it reads the register count, stack / local (spill) bytes
from the bundled ``cuobjdump -res-usage``, the dynamic shared memory Triton requests at launch,
and whether the PTX uses tensor-core instructions (``mma.sync`` on sm_80, ``wgmma`` on sm_90).

Prints one table and exits with status 1 if any config spills (LOCAL or STACK > 0), exceeds the
architecture's shared memory per block (sm_80: 163 KB, sm_90: 227 KB), misses the expected
tensor-core instruction in a kernel with dots (fp16/bf16, and fp32 as tf32), or fails to
compile; 2 if the NVIDIA backend is not usable here (no Triton, no ptxas/cuobjdump). Triton's
compile cache (~/.triton/cache) makes repeated runs take seconds.

The specialisation mirrors what the JIT would see for contiguous tensors of the model's shapes:
unit strides become constants, pointers and the other strides are 16-aligned, N is not.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
TC_INSTR = {80: "mma", 90: "wgmma"}
DTYPES = ("fp16", "bf16", "fp32")
ATTN_HEAD_DIMS = (32, 64, 128)
DICE_CLASSES = (5, 16, 32)


@dataclass
class Job:
    """One compile: kernel name, config label, dtype label, arch and the compile inputs."""

    kernel: str
    config: str
    dtype: str
    arch: int
    signature: dict[str, str]
    constexprs: dict[str, object]
    aligned: tuple[str, ...]
    num_warps: int
    num_stages: int
    has_dot: bool
    expect_tc: bool


@dataclass
class Row:
    job: Job
    regs: int = -1
    stack: int = -1
    local: int = -1
    smem: int = -1
    tc: str = "-"
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def _nvidia_bin(name: str) -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


def backend_usable() -> str | None:
    """None if the NVIDIA backend can compile here, else the reason."""
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the environment
        return f"triton not importable: {exc}"
    for tool in ("ptxas", "cuobjdump"):
        path = _nvidia_bin(tool)
        if not path.exists() and shutil.which(tool) is None:
            return f"{tool} not found under {path.parent}"
    return None


def _kernels():
    """Name -> unwrapped @triton.jit function (imported here, after TRITON_INTERPRET=0)."""
    from .attention import triton_bwd, triton_fwd
    from .dice import triton_kernel

    if triton_fwd.INTERPRETED or triton_kernel.INTERPRETED:
        raise RuntimeError("kernel modules were imported under TRITON_INTERPRET=1: run the report "
                           "in a fresh process (python -m temseg.kernels.aot_report)")
    return {
        "attn_fwd": triton_fwd.attn_fwd_kernel,
        "attn_bwd_preprocess": triton_bwd.attn_bwd_preprocess,
        "attn_bwd_dkdv": triton_bwd.attn_bwd_dkdv_kernel,
        "attn_bwd_dq": triton_bwd.attn_bwd_dq_kernel,
        "dice_ce_fwd": triton_kernel.dice_ce_fwd_kernel,
        "dice_ce_bwd": triton_kernel.dice_ce_bwd_kernel,
    }


def _attn_strides(prefixes: str) -> tuple[dict[str, str], dict[str, object], list[str]]:
    """(B, H, N, D) contiguous tensors: d-stride == 1 (constant), the others 16-aligned."""
    sig: dict[str, str] = {}
    const: dict[str, object] = {}
    aligned: list[str] = []
    for p in prefixes:
        for ax in "bhn":
            sig[f"stride_{p}{ax}"] = "i32"
            aligned.append(f"stride_{p}{ax}")
        sig[f"stride_{p}d"] = "constexpr"
        const[f"stride_{p}d"] = 1
    return sig, const, aligned


def attention_jobs(archs: tuple[int, ...], dtypes: tuple[str, ...],
                   head_dims: tuple[int, ...]) -> list[Job]:
    """Every attention kernel x config the autotuner may pick for these archs/dtypes/head dims."""
    from .attention import configs as acfg

    jobs: list[Job] = []
    for arch in archs:
        for dt in dtypes:
            elem = 4 if dt == "fp32" else 2
            ptr = f"*{dt}"
            # fp32 inputs run tf32 tensor-core dots on GPU (see triton_fwd.dot_precision).
            prec = "tf32" if dt == "fp32" else "ieee"
            label = f"{dt}-{prec}" if dt == "fp32" else dt
            for hd in head_dims:
                bd = max(16, 1 << (hd - 1).bit_length())
                for c in acfg.configs_for("fwd", hd, elem, arch):
                    s, k, a = _attn_strides("qkvo")
                    sig = {"Q": ptr, "K": ptr, "V": ptr, "Out": ptr, "LSE": "*fp32", **s,
                           "H": "i32", "N": "i32", "qk_scale": "fp32"}
                    const = {**k, "HEAD_DIM": hd, "BLOCK_D": bd, "PRECISION": prec,
                             "BLOCK_M": c.block_m, "BLOCK_N": c.block_n}
                    jobs.append(Job("attn_fwd", f"d{hd} {c.name}", label, arch,
                                    _full_sig(sig, const), const,
                                    ("Q", "K", "V", "Out", "LSE", *a), c.num_warps,
                                    c.num_stages, True, True))
                s, k, a = _attn_strides("od")
                sig = {"Out": ptr, "DO": ptr, "Delta": "*fp32", **s, "H": "i32", "N": "i32"}
                const = {**k, "HEAD_DIM": hd, "BLOCK_D": bd, "BLOCK_M": acfg.PREPROCESS_BLOCK_M}
                jobs.append(Job("attn_bwd_preprocess",
                                f"d{hd} M{acfg.PREPROCESS_BLOCK_M}-w{acfg.PREPROCESS_WARPS}",
                                dt, arch, _full_sig(sig, const), const,
                                ("Out", "DO", "Delta", *a), acfg.PREPROCESS_WARPS, 1, False,
                                False))
                for kind, name in (("bwd_kv", "attn_bwd_dkdv"), ("bwd_q", "attn_bwd_dq")):
                    for c in acfg.configs_for(kind, hd, elem, arch):
                        s, k, a = _attn_strides("qkvd")
                        outs = ("DK", "DV") if kind == "bwd_kv" else ("DQ",)
                        sig = {"Q": ptr, "K": ptr, "V": ptr, "DO": ptr, "LSE": "*fp32",
                               "Delta": "*fp32", **{o: ptr for o in outs}, **s,
                               "H": "i32", "N": "i32", "sm_scale": "fp32", "qk_scale": "fp32"}
                        const = {**k, "HEAD_DIM": hd, "BLOCK_D": bd, "PRECISION": prec,
                                 "BLOCK_M": c.block_m, "BLOCK_N": c.block_n}
                        jobs.append(Job(name, f"d{hd} {c.name}", label, arch,
                                        _full_sig(sig, const), const,
                                        ("Q", "K", "V", "DO", "LSE", "Delta", *outs, *a),
                                        c.num_warps, c.num_stages, True, True))
    return jobs


def dice_jobs(archs: tuple[int, ...], dtypes: tuple[str, ...],
              classes: tuple[int, ...]) -> list[Job]:
    from .dice import configs as dcfg

    jobs: list[Job] = []
    for arch in archs:
        for dt in dtypes:
            for n_cls in classes:
                cp = dcfg.c_pad(n_cls)
                for kind, name in (("fwd", "dice_ce_fwd"), ("bwd", "dice_ce_bwd")):
                    for c in dcfg.configs_for(kind, cp):
                        sig = {"X": f"*{dt}", "T": "*i64"}
                        if kind == "fwd":
                            sig["WS"] = "*fp32"
                            aligned = ["X", "T", "WS"]
                        else:
                            sig.update({"GI": "*fp32", "GP": "*fp32", "GCE": "*fp32",
                                        "DX": f"*{dt}"})
                            aligned = ["X", "T", "GI", "GP", "GCE", "DX"]
                        sig.update({"stride_xb": "i32", "stride_xc": "i32",
                                    "stride_xp": "constexpr", "stride_tb": "i32",
                                    "C": "i32", "HW": "i32"})
                        aligned += ["stride_xb", "stride_xc", "stride_tb", "HW"]
                        if kind == "fwd":
                            sig["SPLIT"] = "i32"
                        const = {"stride_xp": 1, "C_PAD": cp, "BLOCK_P": c.block_p}
                        jobs.append(Job(name, f"C{n_cls} {c.name}", dt, arch,
                                        _full_sig(sig, const), const, tuple(aligned),
                                        c.num_warps, c.num_stages, False, False))
    return jobs


def _full_sig(sig: dict[str, str], const: dict[str, object]) -> dict[str, str]:
    out = dict(sig)
    for k in const:
        out[k] = "constexpr"
    return out


def _res_usage(cubin: bytes) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        tool = _nvidia_bin("cuobjdump")
        exe = str(tool) if tool.exists() else "cuobjdump"
        out = subprocess.run([exe, "-res-usage", path], capture_output=True, text=True,
                             check=True).stdout
    finally:
        os.unlink(path)
    usage = {}
    for key in ("REG", "STACK", "SHARED", "LOCAL"):
        m = re.search(rf"\b{key}:(\d+)", out)
        usage[key] = int(m.group(1)) if m else -1
    return usage


def compile_one(job: Job) -> Row:
    """Compile one job and measure it (runs in a worker process)."""
    import triton
    from triton.backends.compiler import GPUTarget

    row = Row(job)
    t0 = time.perf_counter()
    try:
        fn = _kernels()[job.kernel]
        names = list(fn.arg_names)
        attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in job.aligned}
        src = triton.compiler.ASTSource(fn=fn, signature=job.signature,
                                        constexprs=job.constexprs, attrs=attrs)
        ck = triton.compile(src, target=GPUTarget("cuda", job.arch, 32),
                            options={"num_warps": job.num_warps, "num_stages": job.num_stages,
                                     "enable_fp_fusion": True})
        usage = _res_usage(ck.asm["cubin"])
        row.regs, row.stack, row.local = usage["REG"], usage["STACK"], usage["LOCAL"]
        row.smem = int(ck.metadata.shared)
        ptx = ck.asm["ptx"]
        if re.search(r"\bwgmma\.mma_async", ptx):
            row.tc = "wgmma"
        elif re.search(r"\bmma\.sync", ptx):
            row.tc = "mma"
    except Exception as exc:  # report, do not crash the whole table
        row.problems.append(f"compile failed: {type(exc).__name__}: {str(exc)[:200]}")
    row.seconds = time.perf_counter() - t0
    if not row.problems:
        if row.stack > 0 or row.local > 0:
            row.problems.append("spills")
        if row.smem > SMEM_LIMIT[job.arch]:
            row.problems.append(f"shared {row.smem} > {SMEM_LIMIT[job.arch]}")
        if job.expect_tc and row.tc != TC_INSTR[job.arch]:
            row.problems.append(f"expected {TC_INSTR[job.arch]}, got {row.tc}")
    return row


def format_table(rows: list[Row]) -> str:
    header = ("kernel", "config", "dtype", "arch", "regs", "stack", "local", "smem_B",
              "tensor_core", "status")
    lines = [header]
    for r in rows:
        j = r.job
        lines.append((j.kernel, j.config, j.dtype, f"sm_{j.arch}", str(r.regs), str(r.stack),
                      str(r.local), str(r.smem), r.tc if j.has_dot else "- (no dot)",
                      "ok" if not r.problems else "; ".join(r.problems)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [" ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
           for line in lines]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    parser.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--head-dim", type=int, nargs="+", default=list(ATTN_HEAD_DIMS))
    parser.add_argument("--classes", type=int, nargs="+", default=list(DICE_CLASSES))
    parser.add_argument("--kernels", nargs="+", default=None,
                        help="only these kernel names (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel compile processes")
    args = parser.parse_args(argv)

    # The report needs real JIT functions, not the interpreter's: decide before the kernel modules
    # (and their @triton.jit decorators) are imported.
    os.environ["TRITON_INTERPRET"] = "0"
    why = backend_usable()
    if why is not None:
        print(f"aot_report: NVIDIA backend not usable: {why}", file=sys.stderr)
        return 2

    archs, dtypes = tuple(args.arch), tuple(args.dtype)
    jobs = attention_jobs(archs, dtypes, tuple(args.head_dim))
    jobs += dice_jobs(archs, dtypes, tuple(args.classes))
    if args.kernels:
        jobs = [j for j in jobs if j.kernel in args.kernels]

    t0 = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            rows = list(pool.map(compile_one, jobs))
    else:
        rows = [compile_one(j) for j in jobs]
    print(format_table(rows))
    bad = [r for r in rows if r.problems]
    kernels = sorted({r.job.kernel for r in rows})
    per_kernel = ", ".join(
        f"{k} {sum(r.seconds for r in rows if r.job.kernel == k):.0f}s" for k in kernels)
    print(f"\n{len(rows)} compiles of {len(kernels)} kernels in {time.perf_counter() - t0:.1f} s "
          f"wall ({per_kernel} of compile time); {len(bad)} failing")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
