"""GPU check (issue 15): temseg's Triton kernels, CUDA training step and whole-slide inference
on one CUDA device, in one command sized for a short GPU session (docs/gpu.md).

Sections, run in this order, each a list of cases with one result row per case
(``section, name, status, value, unit, reference, note``; status ``pass`` / ``fail`` /
``skip``; for timing rows ``pass`` means "measured"):

* ``env``: device and versions, the C++ extension, the output poisoning, the card's measured
  bf16 matmul and copy ceilings;
* ``attention``: ``temseg.kernels.attention`` forward and backward against float64, judged
  against PyTorch's own error at the same precision (bf16, fp16; fp32 with tf32 allowed and
  not), on the model's strided q/k/v views and on contiguous tensors;
* ``loss``: the fused Dice/CE statistics, their gradient and the whole loss, likewise;
* ``attention_speed`` / ``loss_speed``: ``triton.testing.do_bench`` medians against SDPA
  (flash), the baseline and MONAI, with the FLOP/byte/exp floor of this card;
* ``train``: the default model's eager training step (bf16 autocast, Triton kernels vs the
  torch reference ops): steps/s and peak memory, then a short fit on phantoms whose weights the
  slide section uses;
* ``slide``: ``segment_slide`` through the C++ tiler on CUDA: MPix/s on a whole slide, labels
  against the CPU fp32 path on a crop;
* ``train_compile``: the same training step under ``torch.compile`` (last: compiling is slow);
* ``deploy``: what this check cannot run, named as skipped with the reason.

Outputs are poisoned: while a kernel under test runs, every uninitialised tensor is filled
with NaN, so an output element the kernel fails to write shows up as an error.

``--dry-run`` runs the same code on the CPU with tiny sizes (kernels through the Triton
interpreter, ``torch.compile`` with the "eager" backend, fp32 where the GPU runs bf16); rows that
only a GPU can produce are ``skip`` with the reason. The JSON (``--out``) is rewritten after
every row, so a run stopped by a timeout still leaves what it measured. Exit status 1 when any
row failed, 2 when there is no CUDA device (without ``--dry-run``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import importlib.util
import json
import math
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__" and "--dry-run" in sys.argv[1:]:
    # One BLAS / OpenMP thread in the dry run: on a small shared CPU, spinning thread pools
    # (numpy's OpenBLAS under the Triton interpreter, torch's OpenMP) made it ~10x slower.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repo root (temseg, benchmarks) first
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.utils.deterministic  # noqa: E402

Case = tuple[str, Callable[[], dict[str, Any]]]

# Datasheet peaks (dense bf16 tensor core, HBM, exp2 on the special-function units: 16 per
# clock per SM, docs/kernels.md); the env section measures the practical ceilings beside them.
PEAKS: dict[str, dict[str, float]] = {
    "H200": {"flops": 990e12, "bw": 4.8e12, "exp2": 3.9e12},
    "H100": {"flops": 990e12, "bw": 3.35e12, "exp2": 3.9e12},
}


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of every section (GPU defaults; :data:`DRY` for ``--dry-run``)."""

    attn_tokens: tuple[int, ...] = (1, 97, 1024, 4096, 16384)
    attn_head_dims: tuple[int, ...] = (32, 64)
    attn_fp32_tokens: tuple[int, ...] = (97, 4096)
    loss_shapes: tuple[tuple[int, int, int, int], ...] = (
        (1, 5, 512, 512), (16, 5, 512, 512), (3, 5, 509, 511))
    # (B, H, N, D): docs/kernels.md's 1024^2-tile bottleneck, the 512^2 inference tile's, the
    # 256^2 training patch's
    speed_attn: tuple[tuple[int, int, int, int], ...] = (
        (8, 8, 16384, 32), (16, 8, 4096, 32), (16, 8, 1024, 32))
    speed_loss: tuple[tuple[int, int, int, int], ...] = ((16, 5, 256, 256), (16, 5, 512, 512))
    width: int = 32  # UNetConfig's defaults
    heads: int = 8
    train_batch: int = 16
    train_size: int = 256
    train_steps: int = 20
    fit_s: float = 25.0
    fit_steps: int = 600
    pool: int = 1024  # side of the two phantoms the training crops come from
    slide: int = 8192
    slide_tile: int = 2048  # the slide is one phantom of this side, tiled
    crop: int = 2048  # CPU fp32 reference labels on a crop of this side
    roi: int = 512
    sw_batch: int = 16


DRY = Sizes(attn_tokens=(1, 17), attn_head_dims=(32,), attn_fp32_tokens=(17,),
            loss_shapes=((1, 5, 7, 9), (2, 5, 17, 19)), speed_attn=((1, 2, 32, 32),),
            speed_loss=((2, 5, 32, 32),), width=8, heads=2, train_batch=2, train_size=32,
            train_steps=1, fit_s=2.0, fit_steps=1, pool=96, slide=320, slide_tile=192,
            crop=192, roi=96, sw_batch=4)


# --------------------------------------------------------------------------------------------
# rows, report, context


def row(status: str, value: float | None = None, unit: str = "", reference: Any = None,
        note: str = "", gpu_only: bool = False, **detail: Any) -> dict[str, Any]:
    """The fields of one result row (the runner adds section, name and seconds)."""
    out = {"status": status, "value": value, "unit": unit, "reference": reference,
           "note": note, "gpu_only": gpu_only}
    if detail:
        out["detail"] = detail
    return out


def grouped(fn: Callable[[], dict[str, Any]], group: str, label: str | None = None
            ) -> Callable[[], dict[str, Any]]:
    """``fn`` whose row joins ``group`` in the printed table (``label``: its contender)."""

    def run() -> dict[str, Any]:
        return {**fn(), "group": group, "label": label}

    return run


def gpu_skip(reason: str) -> dict[str, Any]:
    """A row that only a CUDA device can produce, skipped on the CPU."""
    return row("skip", note=reason, gpu_only=True)


class Report:
    """Rows and run metadata; the JSON is rewritten after every row."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = path, meta
        self.rows: list[dict[str, Any]] = []
        self.sections: dict[str, dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, section: str, name: str, fields: dict[str, Any], seconds: float) -> None:
        self.rows.append({"section": section, "name": name, **fields,
                          "seconds": round(seconds, 2)})
        print(f"[{section}] {fields['status']:<4} {name}: {_fmt(fields['value'])} "
              f"{fields['unit']} {fields['note']}", flush=True)
        self.write()

    def reload(self) -> None:
        """Take the rows and section states a worker process added to the file."""
        data = json.loads(self.path.read_text())
        self.rows, self.sections = data["rows"], data["sections"]
        self.meta.update(data["meta"])

    def counts(self) -> dict[str, int]:
        return {s: sum(r["status"] == s for r in self.rows) for s in ("pass", "fail", "skip")}

    def write(self, complete: bool = False) -> None:
        data = {"meta": self.meta, "sections": self.sections, "rows": self.rows,
                "summary": self.counts(), "complete": complete}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(_jsonable(data), indent=1, default=str, allow_nan=False))
        os.replace(tmp, self.path)

    def table(self) -> str:
        """The short table: one line per row, or per group of rows (a case family: worst
        value and counts; contenders: each one's value), then the failed rows."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in self.rows:
            groups.setdefault((r["section"], r.get("group") or r["name"]), []).append(r)
        lines = [f"{'section':<15} {'check':<48} result"]
        for (section, name), rs in groups.items():
            lines.append(f"{section:<15} {name:<48.48} {_group_result(rs)}")
        lines += [f"FAILED {r['section']} / {r['name']}: {r['note'][:150]}"
                  for r in self.rows if r["status"] == "fail"]
        return "\n".join(lines)


def _group_result(rows: list[dict[str, Any]]) -> str:
    """The table's result column for one row or a group of rows."""
    if len(rows) == 1 and not rows[0].get("group"):
        r = rows[0]
        return f"{r['status']:<4} {_fmt(r['value'])} {r['unit']}  {r['note'][:70]}".rstrip()
    if all(r.get("label") for r in rows):  # contenders: value (and fraction of the floor)
        parts = []
        for r in rows:
            if r["value"] is None:
                parts.append(f"{r['label']} {r['status']}")
                continue
            frac = (f" {r['reference'] / r['value']:.0%}" if isinstance(r["reference"], float)
                    and r["unit"] == "ms" else "")
            parts.append(f"{r['label']} {_fmt(r['value'])}{frac}")
        return f"{rows[0]['unit']}: " + " | ".join(parts)
    counts = {st: sum(r["status"] == st for r in rows) for st in ("pass", "fail", "skip")}
    text = ", ".join(f"{n} {st}" for st, n in counts.items() if n)
    valued = [r for r in rows if isinstance(r["value"], float)]
    if valued:
        worst = max(valued, key=lambda r: r["value"])
        text += f"; worst {worst['value']:.3g} {worst['unit']} ({worst['name']})"
    return text


def _jsonable(obj: Any) -> Any:
    """``obj`` with non-finite floats as strings ("nan", "inf"): strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


@dataclass
class Ctx:
    """What every section gets: options, sizes, device, the report and the time guard."""

    sizes: Sizes
    device: torch.device
    report: Report
    seed: int
    t_end: float  # time.time() at which the whole run's budget ends
    state: dict[str, Any] = field(default_factory=dict)
    deadline: float = math.inf  # time.time() at which the current section's guard trips
    section: str = ""
    _cases: int = 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def kernel_backend(self) -> str:
        """``"auto"`` on CUDA (the model's own dispatch), ``"triton"`` (interpreter) on CPU."""
        return "auto" if self.cuda else "triton"

    @property
    def peaks(self) -> dict[str, float] | None:
        if not self.cuda:
            return None
        name = torch.cuda.get_device_name(self.device)
        return next((p for key, p in PEAKS.items() if key in name), None)

    def fresh_seed(self) -> int:
        """Seed the generators with a new seed for each case (fresh random inputs)."""
        self._cases += 1
        s = (self.seed + 7919 * self._cases + zlib.crc32(self.section.encode())) % 2**31
        torch.manual_seed(s)
        return s

    def over(self) -> bool:
        return time.time() > self.deadline

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def measured(ctx: Ctx, value: float, unit: str, reference: Any = None, note: str = "",
             ok: bool = True) -> dict[str, Any]:
    """A timing / throughput row: ``pass`` (measured) on CUDA; on the CPU the code path ran
    but the number is no GPU measurement, so the row is ``skip`` with the number in the note."""
    if not ok:
        return row("fail", value, unit, reference, note)
    if ctx.cuda:
        return row("pass", value, unit, reference, note, gpu_only=True)
    return row("skip", None, unit, reference,
               f"dry run (CPU): code path ran ({value:.4g} {unit}), no GPU measurement; {note}",
               gpu_only=True)


# --------------------------------------------------------------------------------------------
# shared helpers


@contextlib.contextmanager
def poisoned() -> Iterator[None]:
    """While active, every uninitialised tensor (``torch.empty`` and friends, also inside the
    kernels' launchers) is filled with NaN (integers: their maximum), so outputs a kernel
    leaves unwritten are NaN instead of stale correct values (torch's deterministic mode with
    ``fill_uninitialized_memory``, warnings only)."""
    det = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn)
        torch.utils.deterministic.fill_uninitialized_memory = fill


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) tf32 for fp32 matmuls and convolutions, restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@functools.cache
def _checks() -> Any:
    """tests/kernels/_kernel_checks.py (the error measures of the interpreter tests), loaded
    by path: the GPU image may hold an unrelated top-level ``tests`` package."""
    path = ROOT / "tests" / "kernels" / "_kernel_checks.py"
    spec = importlib.util.spec_from_file_location("temseg_kernel_checks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def judge(pairs: Iterable[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]],
          factor: float = 2.0, slack: float = 1e-4) -> dict[str, Any]:
    """Row for outputs ``(name, ours, torch at the same precision, float64 reference)``.

    The rule of tests/kernels (``assert_low_precision_ok``): pass when every
    ``max|ours - ref| <= factor * max|torch - ref| + slack * max|ref|``, where an all-zero
    reference (dq, dk for a single token) takes the largest ``max|ref|`` of the case instead.
    Value: the largest fraction of its allowed error that an output uses (pass: <= 1); the note
    gives each output's error as a multiple of PyTorch's.
    """
    max_err = _checks().max_err
    pairs = list(pairs)
    scales = [float(ref.detach().double().abs().max()) if ref.numel() else 0.0
              for *_, ref in pairs]
    case_scale = max(scales, default=0.0)
    used, ratios, errors = {}, {}, {}
    for (name, ours, theirs, ref), scale in zip(pairs, scales, strict=True):
        e_ours, e_torch = max_err(ours, ref), max_err(theirs, ref)
        allowed = factor * e_torch + slack * (scale or case_scale)
        used[name], ratios[name] = _ratio(e_ours, allowed), _ratio(e_ours, e_torch)
        errors[name] = [float(f"{e_ours:.3g}"), float(f"{e_torch:.3g}")]
    failed = [n for n, u in used.items() if not u <= 1.0]  # NaN fails too
    worst = max(used.values(), default=math.nan)
    note = " ".join(f"{n} {r:.2f}x" for n, r in ratios.items())
    if failed:
        note = f"FAILED {','.join(failed)}; {note}"
    return row("fail" if failed else "pass", worst if math.isfinite(worst) else float("nan"),
               "of allowed", f"<=1: {factor:g}x torch+{slack:g}|ref|", note, errors=errors)


def _ratio(a: float, b: float) -> float:
    """a / b, with 0 / 0 = 0 and a / 0 = inf."""
    return a / b if b > 0 else (0.0 if a == 0 else math.inf)


def bench_ms(ctx: Ctx, fn: Callable[[], Any], grads: list[torch.Tensor] | None = None) -> float:
    """Median milliseconds of ``fn`` after a warm-up call: ``triton.testing.do_bench`` on CUDA
    (``grads`` reset to None before each run), two timed runs on the CPU (dry run)."""
    fn()
    ctx.sync()
    if ctx.cuda:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, grad_to_none=grads, return_mode="median"))
    times = []
    for _ in range(2):
        for g in grads or []:
            g.grad = None
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def floor_ms(ctx: Ctx, flops: float = 0.0, nbytes: float = 0.0,
             exps: float = 0.0) -> tuple[float | None, str]:
    """(lower bound in ms on this card, what bounds it) from the work done."""
    peaks = ctx.peaks
    if peaks is None:
        return None, "no peak figures for this device"
    terms = {"tensor-core": flops / peaks["flops"], "HBM": nbytes / peaks["bw"],
             "exp": exps / peaks["exp2"]}
    bound = max(terms, key=lambda k: terms[k])
    return terms[bound] * 1e3, bound


def timing_row(ctx: Ctx, ms: float, floor: tuple[float | None, str], note: str = ""
               ) -> dict[str, Any]:
    """A do_bench row with the fraction of the floor reached."""
    f_ms, bound = floor
    frac = f"{f_ms / ms:.0%} of the {bound} floor" if f_ms else bound
    return measured(ctx, ms, "ms", None if f_ms is None else round(f_ms, 4),
                    f"{frac}; {note}".rstrip("; "))


def _free(ctx: Ctx) -> None:
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------
# env


def env_cases(ctx: Ctx) -> Iterator[Case]:
    yield "device", functools.partial(_device_row, ctx)
    yield "temseg._C (C++ tiler) built for this python", _extension_row
    yield "output poisoning (torch.empty -> NaN)", functools.partial(_poison_row, ctx)
    yield "bf16 matmul 8192^3 ceiling", functools.partial(_matmul_ceiling, ctx)
    yield "device copy bandwidth ceiling", functools.partial(_copy_ceiling, ctx)


def _device_row(ctx: Ctx) -> dict[str, Any]:
    import triton

    versions = (f"python {platform.python_version()}, torch {torch.__version__}, "
                f"triton {triton.__version__}")
    if not ctx.cuda:
        return gpu_skip(f"no CUDA device: dry run on the CPU ({versions})")
    p = torch.cuda.get_device_properties(ctx.device)
    peaks = "datasheet peaks known" if ctx.peaks else "no datasheet peaks for it: no floors"
    return row("pass", round(p.total_memory / 2**30, 1), "GiB",
               note=f"{p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs; "
                    f"{versions}, CUDA {torch.version.cuda}; {peaks}", gpu_only=True)


def _extension_row() -> dict[str, Any]:
    from temseg import _C

    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ""
    ok = Path(_C.__file__).name.endswith(suffix)
    tiles = len(_C.TileGrid(1000, 700, (256, 256), (0.25, 0.25)))
    where = Path(_C.__file__)
    where_s = str(where.relative_to(ROOT)) if ROOT in where.parents else str(where)
    return row("pass" if ok and tiles > 0 else "fail", tiles, "tiles",
               note=f"{where_s} (expects *{suffix}); a 1000x700 grid of 256^2 tiles")


def _poison_row(ctx: Ctx) -> dict[str, Any]:
    with poisoned():
        a = torch.empty(4096, device=ctx.device)
        b = torch.empty(4096, device=ctx.device, dtype=torch.bfloat16)
    ok = bool(a.isnan().all() and b.isnan().all())
    return row("pass" if ok else "fail", note="uninitialised fp32/bf16 memory reads NaN while "
               "a kernel under test runs" if ok else "poisoning does not work here")


def _matmul_ceiling(ctx: Ctx) -> dict[str, Any]:
    if not ctx.cuda:
        return gpu_skip("CUDA only: the card's bf16 matmul rate")
    a, b = (torch.randn(8192, 8192, device=ctx.device, dtype=torch.bfloat16) for _ in range(2))
    ms = bench_ms(ctx, lambda: a @ b)
    tflops = 2 * 8192**3 / ms / 1e9
    ctx.state["ceil_tflops"] = tflops
    peak = ctx.peaks["flops"] / 1e12 if ctx.peaks else None
    return measured(ctx, tflops, "TFLOP/s", peak, "random data; reference: datasheet peak")


def _copy_ceiling(ctx: Ctx) -> dict[str, Any]:
    if not ctx.cuda:
        return gpu_skip("CUDA only: the card's memory bandwidth")
    src = torch.empty(2**30, device=ctx.device, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    ms = bench_ms(ctx, lambda: dst.copy_(src))
    tbs = 2 * src.numel() / ms / 1e9
    ctx.state["ceil_tbs"] = tbs
    peak = ctx.peaks["bw"] / 1e12 if ctx.peaks else None
    return measured(ctx, tbs, "TB/s", peak, "bytes read + written; reference: datasheet peak")


# --------------------------------------------------------------------------------------------
# attention correctness


def attention_cases(ctx: Ctx) -> Iterator[Case]:
    s = ctx.sizes
    plans = [(dt, None, s.attn_tokens) for dt in (torch.bfloat16, torch.float16)]
    plans += [(torch.float32, tf32, s.attn_fp32_tokens) for tf32 in (True, False)]
    for dtype, tf32, tokens in plans:
        for d in s.attn_head_dims:
            for n in tokens:
                for strided in (True, False):
                    mode = "" if tf32 is None else (" tf32" if tf32 else " no-tf32")
                    kind = f"{str(dtype).removeprefix('torch.')}{mode}"
                    name = f"{kind} N={n} D={d} {'model views' if strided else 'contiguous'}"
                    fn = functools.partial(_attention_case, ctx, dtype, n, d, strided, tf32)
                    yield name, grouped(fn, f"{kind} D={d} ({2 * len(tokens)} cases)")


def _qkv(batch: int, heads: int, n: int, d: int, strided: bool, dtype: torch.dtype,
         device: torch.device) -> tuple[torch.Tensor, Callable[[torch.Tensor], tuple]]:
    """A leaf buffer holding q, k, v and the function that views them out of it (or out of a
    gradient of the same shape). ``strided``: the model's layout, a (B, N, 3, H, D) qkv
    projection permuted to three (B, H, N, D) views (temseg.models.blocks.SelfAttention2d)."""
    if strided:
        buf = torch.randn(batch, n, 3, heads, d, device=device)

        def split(t: torch.Tensor) -> tuple:
            return t.permute(2, 0, 3, 1, 4).unbind(0)
    else:
        buf = torch.randn(3, batch, heads, n, d, device=device)

        def split(t: torch.Tensor) -> tuple:
            return t.unbind(0)
    return buf.to(dtype).requires_grad_(), split


def _attention_case(ctx: Ctx, dtype: torch.dtype, n: int, d: int, strided: bool,
                    tf32: bool | None) -> dict[str, Any]:
    from temseg.kernels import attention, attention_math, attention_reference

    if dtype == torch.bfloat16 and not ctx.cuda:
        return gpu_skip("CUDA only: the Triton interpreter cannot run bf16 (docs/kernels.md)")
    ctx.fresh_seed()
    batch, heads = (1, 2) if n > 4096 else (2, 2) if n > 1024 else (2, 3)
    backend = "auto" if ctx.cuda or tf32 is False else "triton"
    buf, split = _qkv(batch, heads, n, d, strided, dtype, ctx.device)
    w = torch.randn(batch, heads, n, d, device=ctx.device)
    with tf32_mode(bool(tf32)):
        with poisoned():
            o = attention(*split(buf), backend=backend)
            (g,) = torch.autograd.grad((o.float() * w).sum(), buf)
        path = "kernel" if "temseg" in type(o.grad_fn).__name__ else "reference"
        o_t = attention_math(*split(buf))
        (g_t,) = torch.autograd.grad((o_t.float() * w).sum(), buf)
        o_s = attention_reference(*split(buf))  # SDPA: its error is recorded, not judged
        (g_s,) = torch.autograd.grad((o_s.float() * w).sum(), buf)
    buf64 = buf.detach().double().requires_grad_()
    o64 = attention_math(*split(buf64))
    (g64,) = torch.autograd.grad((o64 * w.double()).sum(), buf64)
    pairs = [("o", o, o_t, o64)] + [(f"d{c}", *t) for c, *t in
                                     zip("qkv", split(g), split(g_t), split(g64), strict=True)]
    out = judge(pairs)
    max_err = _checks().max_err
    sdpa_pairs = [(o_s, o64), *zip(split(g_s), split(g64), strict=True)]
    sdpa = [max_err(x, r) for x, r in sdpa_pairs]
    ours = [e for e, _ in out["detail"]["errors"].values()]
    vs_sdpa = max(_ratio(a, b) for a, b in zip(ours, sdpa, strict=True))
    out["detail"]["sdpa_errors"] = [float(f"{e:.3g}") for e in sdpa]
    out["note"] += f"; worst vs SDPA {vs_sdpa:.2f}x (not judged)"
    expect = "kernel" if backend == "triton" or (
        ctx.cuda and (dtype != torch.float32 or tf32)) else "reference"
    out["note"] = f"{path}; {out['note']}"
    if path != expect:
        out["status"] = "fail"
        out["note"] = f"dispatch took the {path}, expected the {expect}; " + out["note"]
    return out


# --------------------------------------------------------------------------------------------
# loss correctness


def loss_cases(ctx: Ctx) -> Iterator[Case]:
    s = ctx.sizes
    shapes = [(shape, False) for shape in s.loss_shapes] + [(s.loss_shapes[1], True)]
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        kind = str(dtype).removeprefix("torch.")
        for shape, cl in shapes:
            name = f"{kind} {'x'.join(map(str, shape))}{' channels_last' if cl else ''}"
            fn = functools.partial(_loss_case, ctx, dtype, shape, cl)
            yield name, grouped(fn, f"{kind} ({len(shapes)} cases)")


def _weighted_stats(fn: Callable, logits: torch.Tensor, target: torch.Tensor,
                    weights: tuple[torch.Tensor, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The four statistics and the logits gradient of a random linear function of inter,
    psum and ce (a non-trivial upstream gradient for every statistic)."""
    inter, psum, gsum, ce = fn(logits, target)
    wi, wp, wc = (w.to(inter.dtype) for w in weights)
    out = (inter * wi).sum() + (psum * wp).sum() + (ce * wc).sum()
    (grad,) = torch.autograd.grad(out, logits)
    return [inter, psum, gsum, ce], grad


def _loss_and_grad(fn: Callable, logits: torch.Tensor, target: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    loss = fn(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss, grad


def _loss_case(ctx: Ctx, dtype: torch.dtype, shape: tuple[int, int, int, int],
               channels_last: bool) -> dict[str, Any]:
    from temseg.kernels import dice_ce_loss, dice_ce_loss_reference, dice_ce_stats_reference
    from temseg.kernels.dice.op import dice_ce_stats

    if dtype == torch.bfloat16 and not ctx.cuda:
        return gpu_skip("CUDA only: the Triton interpreter cannot run bf16 (docs/kernels.md)")
    ctx.fresh_seed()
    b, c = shape[:2]
    logits = (3 * torch.randn(shape, device=ctx.device)).to(dtype)
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    logits.requires_grad_()
    target = torch.randint(0, c, (b, *shape[2:]), device=ctx.device)
    weights = (torch.randn(b, c, device=ctx.device), torch.randn(b, c, device=ctx.device),
               torch.randn(b, device=ctx.device))
    x64 = logits.detach().double().requires_grad_()

    def kernel_loss(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return dice_ce_loss(x, t, batch=True, backend=ctx.kernel_backend)

    def ref_loss(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return dice_ce_loss_reference(x, t, batch=True)

    with poisoned():
        stats, grad = _weighted_stats(dice_ce_stats, logits, target, weights)
        loss, dloss = _loss_and_grad(kernel_loss, logits, target)
    stats_t, grad_t = _weighted_stats(dice_ce_stats_reference, logits, target, weights)
    stats_64, grad_64 = _weighted_stats(dice_ce_stats_reference, x64, target, weights)
    loss_t, dloss_t = _loss_and_grad(ref_loss, logits, target)
    loss_64, dloss_64 = _loss_and_grad(ref_loss, x64, target)
    names = ("inter", "psum", "gsum", "ce")
    pairs = [(n, *t) for n, *t in zip(names, stats, stats_t, stats_64, strict=True)]
    pairs += [("dlogits", grad, grad_t, grad_64), ("loss", loss, loss_t, loss_64),
              ("dloss", dloss, dloss_t, dloss_64)]
    return judge(pairs)


# --------------------------------------------------------------------------------------------
# speed


def _speed_dtype(ctx: Ctx) -> torch.dtype:
    """bf16 (training's autocast dtype) on CUDA; fp32 in the dry run (no bf16 interpreter)."""
    return torch.bfloat16 if ctx.cuda else torch.float32


def attention_speed_cases(ctx: Ctx) -> Iterator[Case]:
    from benchmarks.baseline import explicit_attention
    from temseg.kernels import attention

    def triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return attention(q, k, v, backend=ctx.kernel_backend)

    def sdpa_flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        ctx_mgr = sdpa_kernel(SDPBackend.FLASH_ATTENTION) if q.is_cuda else contextlib.nullcontext()
        with ctx_mgr:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    impls = {"temseg Triton": triton_attention, "SDPA flash": sdpa_flash,
             "baseline explicit": explicit_attention}
    dt = str(_speed_dtype(ctx)).removeprefix("torch.")
    for shape in ctx.sizes.speed_attn:
        for name, fn in impls.items():
            for pass_ in ("fwd", "bwd"):
                group = f"{pass_} B{shape[0]} H{shape[1]} N{shape[2]} D{shape[3]} {dt}"
                yield f"{name} {group}", grouped(
                    functools.partial(_attention_speed, ctx, fn, shape, pass_), group, name)


def _attention_speed(ctx: Ctx, fn: Callable, shape: tuple[int, int, int, int],
                     pass_: str) -> dict[str, Any]:
    b, h, n, d = shape
    ctx.fresh_seed()
    dtype = _speed_dtype(ctx)
    q, k, v, g = (torch.randn(shape, device=ctx.device, dtype=dtype) for _ in range(4))
    try:
        if pass_ == "fwd":
            def run() -> None:
                with torch.no_grad():
                    fn(q, k, v)
            ms = bench_ms(ctx, run)
        else:
            for t in (q, k, v):
                t.requires_grad_()
            o = fn(q, k, v)
            ms = bench_ms(ctx, lambda: o.backward(g, retain_graph=True), [q, k, v])
    except torch.cuda.OutOfMemoryError as exc:
        return row("skip", note=f"out of memory at this size: {str(exc)[:120]}", gpu_only=True)
    e, bhn = q.element_size(), b * h * n
    if pass_ == "fwd":  # QK^T and PV; q, k, v, o + lse
        work = {"flops": 4 * bhn * n * d, "nbytes": 4 * bhn * d * e + 4 * bhn, "exps": bhn * n}
    else:  # the minimum: 5 matmuls (temseg's kernel does 7); q, k, v, o, dO, dq, dk, dv, lse, delta
        work = {"flops": 10 * bhn * n * d, "nbytes": 8 * bhn * d * e + 8 * bhn, "exps": bhn * n}
    return timing_row(ctx, ms, floor_ms(ctx, **work))


def loss_speed_cases(ctx: Ctx) -> Iterator[Case]:
    from benchmarks.baseline import BaselineDiceCELoss
    from temseg.kernels import dice_ce_loss, dice_ce_loss_reference

    kw = {"batch": True, "lambda_dice": 0.5}
    impls: dict[str, Callable | None] = {
        "temseg Triton": lambda x, t: dice_ce_loss(x, t, backend=ctx.kernel_backend, **kw),
        "PyTorch reference": lambda x, t: dice_ce_loss_reference(x, t, **kw),
        "MONAI DiceCELoss": _monai_loss(),
        "baseline one-hot": BaselineDiceCELoss(lambda_dice=0.5),
    }
    dt = str(_speed_dtype(ctx)).removeprefix("torch.")
    for shape in ctx.sizes.speed_loss:
        for name, fn in impls.items():
            for pass_ in ("fwd", "fwd+bwd"):
                group = f"{pass_} {'x'.join(map(str, shape))} {dt}"
                yield f"{name} {group}", grouped(
                    functools.partial(_loss_speed, ctx, fn, shape, pass_), group, name)


def _monai_loss() -> Callable | None:
    """MONAI's DiceCELoss with temseg's training settings (benchmarks.contenders), or None when
    MONAI is not installed (the GPU image lacks it: its wheel travels, docs/gpu.md)."""
    if importlib.util.find_spec("monai") is None:
        return None
    from benchmarks.contenders import loss_impls

    return loss_impls()["MONAI DiceCELoss"]


def _loss_speed(ctx: Ctx, fn: Callable | None, shape: tuple[int, int, int, int],
                pass_: str) -> dict[str, Any]:
    if fn is None:
        return row("skip", note="monai is not installed: carry its wheel (docs/gpu.md)")
    ctx.fresh_seed()
    b, c, h, w = shape
    x = torch.randn(shape, device=ctx.device, dtype=_speed_dtype(ctx)).requires_grad_()
    t = torch.randint(0, c, (b, h, w), device=ctx.device)
    if pass_ == "fwd":
        def run() -> None:
            with torch.no_grad():
                fn(x, t)
        ms = bench_ms(ctx, run)
    else:
        ms = bench_ms(ctx, lambda: fn(x, t).backward(), [x])
    logit_bytes, label_bytes = x.numel() * x.element_size(), t.numel() * t.element_size()
    nbytes = logit_bytes + label_bytes  # forward: logits and labels read once
    if pass_ == "fwd+bwd":  # backward: logits and labels read again, dlogits written
        nbytes += 2 * logit_bytes + label_bytes
    exps = x.numel() * (1 if pass_ == "fwd" else 2)
    return timing_row(ctx, ms, floor_ms(ctx, nbytes=nbytes, exps=exps))


# --------------------------------------------------------------------------------------------
# training step


_ATTENTION_BY_BACKEND: dict[str, Callable] = {}


def _attention_for(kernels: str) -> Callable:
    """temseg.kernels.attention with ``backend=kernels``: one object per backend, so that a
    compiled model's guard on the patched global holds from call to call."""
    if kernels not in _ATTENTION_BY_BACKEND:
        from temseg.kernels import attention

        _ATTENTION_BY_BACKEND[kernels] = functools.partial(attention, backend=kernels)
    return _ATTENTION_BY_BACKEND[kernels]


class TrainStep:
    """One step of temseg's training loop on ``device``: channels-last model and batches,
    autocast to ``amp``, optional ``torch.compile`` of the forward, temseg's Dice + CE loss with
    the loop's settings, AdamW with its parameter groups, gradient clipping.

    ``kernels`` is the backend of the model's attention and of the loss: ``"triton"`` (the
    fused kernels) or ``"torch"`` (their reference ops). Call with x (B, 1, H, W) float32 and
    y (B, H, W) int64; returns (loss, gradient norm before clipping).
    """

    def __init__(self, net: torch.nn.Module, device: torch.device, kernels: str,
                 compiled: bool, amp: torch.dtype | None, compile_backend: str) -> None:
        from temseg.losses import DiceCELoss

        self.device, self.kernels, self.amp = device, kernels, amp
        self.net = net.to(device).train().to(memory_format=torch.channels_last)
        decay = [p for p in self.net.parameters() if p.ndim > 1]
        no_decay = [p for p in self.net.parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
            lr=2e-3)
        self.loss_kwargs = DiceCELoss(batch=True, lambda_dice=0.5).kwargs
        self.forward = torch.compile(self.net, backend=compile_backend) if compiled else self.net

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        from unittest import mock

        from temseg.kernels import dice_ce_loss
        from temseg.models import blocks

        autocast = (torch.autocast(self.device.type, dtype=self.amp) if self.amp
                    else contextlib.nullcontext())
        with mock.patch.object(blocks, "attention", _attention_for(self.kernels)):
            with autocast:
                logits = self.forward(x)
            loss = dice_ce_loss(logits.float(), y, backend=self.kernels, **self.loss_kwargs)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), 5.0)
        self.optimizer.step()
        return float(loss.item()), float(norm)


def _train_batches(ctx: Ctx, count: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of random crops (with flips) of two phantoms, normalised, on the device."""
    from temseg.data.normalize import Normalization
    from temseg.synth import render

    s, gen = ctx.sizes, np.random.default_rng(ctx.seed)
    pool = [render(s.pool, s.pool, seed=ctx.seed % 10_000 + 101 + i) for i in range(2)]
    images = [Normalization()(img) for img, _ in pool]
    batches = []
    for _ in range(count if ctx.cuda else 2):
        xs, ys = [], []
        for _ in range(s.train_batch):
            i, (y0, x0) = gen.integers(2), gen.integers(0, s.pool - s.train_size + 1, 2)
            sl = np.s_[y0 : y0 + s.train_size, x0 : x0 + s.train_size]
            flip = gen.integers(2)
            xs.append(np.flip(images[i][sl], 1) if flip else images[i][sl])
            ys.append(np.flip(pool[i][1][sl], 1) if flip else pool[i][1][sl])
        x = torch.from_numpy(np.stack(xs)[:, None].copy()).to(ctx.device)
        y = torch.from_numpy(np.stack(ys).astype(np.int64)).to(ctx.device)
        batches.append((x.contiguous(memory_format=torch.channels_last), y))
    return batches


def _variant_case(ctx: Ctx, kernels: str, compiled: bool, results: dict[Any, Any]) -> Case:
    s = ctx.sizes
    if "batches" not in ctx.state:
        ctx.state["batches"] = _train_batches(ctx)
    mode = "compile" if compiled else "eager"
    label = f"{mode}+{'Triton' if kernels == 'triton' else 'torch'}"
    name = f"step {mode} + {'Triton kernels' if kernels == 'triton' else 'torch reference ops'}"
    group = (f"steps/s, batch {s.train_batch}x{s.train_size}^2, "
             f"{'bf16 autocast' if ctx.cuda else 'fp32'}")
    fn = functools.partial(_train_variant, ctx, ctx.state["batches"], kernels, compiled, results)
    return name, grouped(fn, group, label)


def train_cases(ctx: Ctx) -> Iterator[Case]:
    """Eager steps, their agreement, and the fit whose weights the slide section uses (the
    compiled steps come after the slide section: compiling is the slowest part)."""
    results: dict[Any, Any] = {}
    yield _variant_case(ctx, "torch", False, results)
    yield _variant_case(ctx, "triton", False, results)
    yield "first step: Triton vs torch ops (eager)", functools.partial(
        _train_agreement, results)
    yield "fit on phantoms (eager+Triton; slide weights)", functools.partial(
        _train_fit, ctx, ctx.state["batches"], results)


def train_compile_cases(ctx: Ctx) -> Iterator[Case]:
    results: dict[Any, Any] = {}
    yield _variant_case(ctx, "torch", True, results)
    yield _variant_case(ctx, "triton", True, results)


def _train_variant(ctx: Ctx, batches: list, kernels: str, compiled: bool,
                   results: dict[Any, Any]) -> dict[str, Any]:
    from temseg.models import UNetConfig, build_model

    s = ctx.sizes
    base = torch.cuda.memory_allocated(ctx.device) if ctx.cuda else 0  # batches, other models
    torch.manual_seed(ctx.seed)  # every variant starts from the same weights
    net = build_model(UNetConfig(width=s.width, heads=s.heads))
    amp = torch.bfloat16 if ctx.cuda else None
    step = TrainStep(net, ctx.device, kernels, compiled, amp,
                     "inductor" if ctx.cuda else "eager")
    t0 = time.perf_counter()
    first = step(*batches[0])
    first_s = time.perf_counter() - t0
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    t1 = time.perf_counter()
    losses = [step(*batches[(i + 1) % len(batches)])[0] for i in range(s.train_steps)]
    ctx.sync()
    rate = s.train_steps / (time.perf_counter() - t1)
    results[(kernels, compiled)] = first
    if kernels == "triton" and not compiled:
        results["fit"] = step  # continues in the fit
    peak = (f"peak {(torch.cuda.max_memory_allocated(ctx.device) - base) / 2**30:.2f} GiB "
            "(model, optimiser, activations)" if ctx.cuda else "peak memory: CUDA only")
    ok = all(math.isfinite(v) for v in (*first, *losses))
    dtype = "bf16 autocast" if amp else "fp32"
    note = (f"{peak}; first step {first_s:.1f} s{' (compile)' if compiled else ''}; "
            f"loss {first[0]:.3f} -> {losses[-1]:.3f}; {dtype}, batch {s.train_batch}x"
            f"{s.train_size}^2, width {s.width}")
    return measured(ctx, rate, "steps/s", note=note, ok=ok)


def _train_agreement(results: dict[Any, Any]) -> dict[str, Any]:
    """Same weights, same batch: the first step's loss and gradient norm with the kernels and
    with the reference ops agree (to bf16 autocast's rounding on CUDA)."""
    a, b = results.get(("triton", False)), results.get(("torch", False))
    if a is None or b is None:
        return row("skip", note="an eager variant did not run")
    d_loss, d_norm = (_ratio(abs(x - y), abs(y)) for x, y in zip(a, b, strict=True))
    ok = d_loss < 1e-2 and d_norm < 5e-2
    return row("pass" if ok else "fail", d_loss, "rel. loss diff", "<1e-2 (norm <5e-2)",
               f"loss {a[0]:.5f} vs {b[0]:.5f}; grad norm {a[1]:.4g} vs {b[1]:.4g} "
               f"({d_norm:.2e})")


def _train_fit(ctx: Ctx, batches: list, results: dict[Any, Any]) -> dict[str, Any]:
    step = results.pop("fit", None)
    if step is None:
        return row("skip", note="the eager Triton variant did not run: the slide section uses "
                   "an untrained model")
    s = ctx.sizes
    stop = min(time.time() + s.fit_s, ctx.deadline - 5)
    losses, t0 = [], time.perf_counter()
    while len(losses) < s.fit_steps and (not losses or time.time() < stop):
        losses.append(step(*batches[len(losses) % len(batches)])[0])
    ctx.state["net"] = step.net
    ctx.state["fit_steps"] = 1 + s.train_steps + len(losses)  # the variant's steps too
    ok = all(math.isfinite(v) for v in losses)
    return row("pass" if ok else "fail", losses[-1], "loss",
               note=f"{len(losses)} more steps in {time.perf_counter() - t0:.1f} s: "
                    f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")


# --------------------------------------------------------------------------------------------
# whole-slide inference


def _phantom_slide(side: int, tile: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A (side, side) phantom slide and its labels: one ``tile``-sided phantom, tiled (rendering
    a whole 8192^2 phantom would take half a minute of the CPU)."""
    from temseg.synth import render

    image, labels = render(tile, tile, seed=seed)
    reps = -(-side // tile)
    return (np.ascontiguousarray(np.tile(image, (reps, reps))[:side, :side]),
            np.ascontiguousarray(np.tile(labels, (reps, reps))[:side, :side]))


def _segment(ctx: Ctx, backend: Any, image: np.ndarray, out: Path | None = None,
             mask: np.ndarray | None = None) -> Any:
    from temseg.inference.slide import segment_slide

    return segment_slide(backend.model, image, out, backend=backend, roi_size=ctx.sizes.roi,
                         sw_batch_size=ctx.sizes.sw_batch, mask=mask, progress=False)


def _agreement(confusion: np.ndarray) -> tuple[float, int]:
    """(fraction of pixels on the diagonal, pixels off it) of a confusion matrix."""
    total = int(confusion.sum())
    same = int(np.trace(confusion))
    return same / max(total, 1), total - same


def slide_cases(ctx: Ctx) -> Iterator[Case]:
    from benchmarks.contenders import make_net
    from temseg.checkpoint import SegmentationModel

    s = ctx.sizes
    net = ctx.state.get("net")
    trained = (f"model fitted {ctx.state['fit_steps']} steps on phantoms" if net is not None
               else "untrained model: labels nearly constant, a weak check")
    net = make_net(s.width, ctx.seed) if net is None else net
    model = SegmentationModel(copy.deepcopy(net).cpu().eval())
    image, truth = _phantom_slide(s.slide, s.slide_tile, ctx.seed % 10_000 + 7)
    crop = np.ascontiguousarray(image[: s.crop, : s.crop])
    ref: dict[str, np.ndarray] = {}
    dev = "CUDA" if ctx.cuda else "CPU"
    yield (f"CPU fp32 labels, {s.crop}^2 crop (reference)",
           functools.partial(_slide_cpu, ctx, model, crop, ref, trained))
    yield (f"{dev} bf16 vs CPU fp32 labels, {s.crop}^2",
           functools.partial(_slide_agree, ctx, model, crop, ref, torch.bfloat16, 0.999))
    yield (f"{dev} fp32 no-tf32 vs CPU fp32 labels, {s.crop}^2",
           functools.partial(_slide_agree, ctx, model, crop, ref, None, 0.9999))
    yield (f"{dev} {'bf16' if ctx.cuda else 'fp32'} whole slide {s.slide}^2",
           functools.partial(_slide_speed, ctx, model, image, truth, trained))


def _slide_cpu(ctx: Ctx, model: Any, crop: np.ndarray, ref: dict[str, np.ndarray],
               trained: str) -> dict[str, Any]:
    """The CPU fp32 path's labels of the crop, read back from the TIFF it writes."""
    import tifffile

    from temseg.inference.backends import TorchBackend

    backend = TorchBackend(copy.deepcopy(model), "cpu")
    with tempfile.TemporaryDirectory(prefix="temseg-gpu-check-") as tmp:
        res = _segment(ctx, backend, crop, Path(tmp) / "cpu.tif")
        ref["labels"] = model.classes.encode(tifffile.imread(res.outputs["mask"]))
    counts = np.bincount(ref["labels"].ravel(), minlength=model.classes.num_classes)
    return row("pass", round(res.mpix_per_s, 3), "MPix/s (CPU)",
               note=f"{torch.get_num_threads()} threads, {res.tiles} tiles; classes "
                    f"{(counts / counts.sum()).round(3).tolist()}; {trained}")


def _slide_agree(ctx: Ctx, model: Any, crop: np.ndarray, ref: dict[str, np.ndarray],
                 amp: torch.dtype | None, threshold: float) -> dict[str, Any]:
    """The device path's labels of the crop against the CPU fp32 labels (the confusion matrix
    ``segment_slide`` takes with the CPU labels as its ``mask``)."""
    from temseg.inference.backends import TorchBackend

    if amp is not None and not ctx.cuda:
        return gpu_skip("CUDA only: bf16 autocast inference is the CUDA path")
    if "labels" not in ref:
        return row("skip", note="the CPU reference did not run")
    backend = TorchBackend(copy.deepcopy(model), ctx.device, amp=amp)
    with tf32_mode(False) if amp is None else contextlib.nullcontext():
        res = _segment(ctx, backend, crop, mask=ref["labels"])
    agree, off = _agreement(res.confusion)
    return row("pass" if agree >= threshold else "fail", round(100 * agree, 4), "% agree",
               f">={100 * threshold:g}%", f"{off} of {crop.size} pixels differ; "
               f"{res.mpix_per_s:.2f} MPix/s")


def _slide_speed(ctx: Ctx, model: Any, image: np.ndarray, truth: np.ndarray,
                 trained: str) -> dict[str, Any]:
    """MPix/s of the whole slide (labels written to a TIFF, confusion against the phantom's
    truth), after one warm-up batch (cuDNN plans, Triton autotuning)."""
    from temseg.inference.backends import TorchBackend

    s = ctx.sizes
    backend = TorchBackend(copy.deepcopy(model), ctx.device,
                           amp=torch.bfloat16 if ctx.cuda else None)
    backend(torch.zeros(s.sw_batch, 1, s.roi, s.roi))
    with tempfile.TemporaryDirectory(prefix="temseg-gpu-check-") as tmp:
        res = _segment(ctx, backend, image, Path(tmp) / "slide.tif", mask=truth)
    acc, _ = _agreement(res.confusion)
    busy = ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items() if v >= 0.05)
    return measured(ctx, round(res.mpix_per_s, 2), "MPix/s",
                    note=f"{res.tiles} tiles in {res.seconds:.1f} s (busy s: {busy}); phantom "
                         f"accuracy {acc:.1%} ({trained})")


# --------------------------------------------------------------------------------------------
# deployment paths this check does not run


def deploy_cases(ctx: Ctx) -> Iterator[Case]:
    yield "TensorRT engine", _tensorrt_row
    yield "ONNX Runtime CUDA provider", _onnxruntime_cuda_row
    yield "AOTInductor package on CUDA", lambda: row(
        "skip", note="not in this check: compiling the model ahead of time takes minutes of "
        "the 8-minute budget (temseg export --format aoti)", gpu_only=True)


def _tensorrt_row() -> dict[str, Any]:
    from temseg.export.tensorrt import tensorrt_unavailable_reason

    why = tensorrt_unavailable_reason()
    if why is None:
        why = "TensorRT is usable here, but building an engine takes minutes: not in this check"
    else:
        why = (f"{why}. Its registry packages fetch TensorRT's libraries from NVIDIA's own "
               "index at install time, which no machine here reaches")
    return row("skip", note=why, gpu_only=True)


def _onnxruntime_cuda_row() -> dict[str, Any]:
    if importlib.util.find_spec("onnxruntime") is None:
        return row("skip", note="onnxruntime is not installed", gpu_only=True)
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return row("skip", note="this onnxruntime has no CUDAExecutionProvider (a CPU build; "
                   "temseg's onnxruntime backend would run on the CPU)", gpu_only=True)
    return row("skip", note="onnxruntime has CUDA, but exporting and running the model is "
               "not in this check", gpu_only=True)


# --------------------------------------------------------------------------------------------
# runner


SECTIONS: tuple[tuple[str, Callable[[Ctx], Iterable[Case]], float], ...] = (
    ("env", env_cases, 30.0),
    ("attention", attention_cases, 150.0),
    ("loss", loss_cases, 45.0),
    ("attention_speed", attention_speed_cases, 60.0),
    ("loss_speed", loss_speed_cases, 25.0),
    ("train", train_cases, 75.0),
    ("slide", slide_cases, 90.0),
    ("train_compile", train_compile_cases, 130.0),
    ("deploy", deploy_cases, 10.0),
)
SECTION_NAMES = tuple(name for name, _, _ in SECTIONS)
LIMITS = {name: limit for name, _, limit in SECTIONS}
# Each group runs in its own worker process, so that a sticky CUDA error (an illegal address
# in a kernel that never ran on a GPU before) or a hang costs only the rest of its group: the
# rows written before it stay, and the next group starts on a fresh CUDA context. The dry run
# uses one worker for every section.
GROUPS = (("env", "attention"), ("loss",), ("attention_speed", "loss_speed"),
          ("train", "slide", "train_compile"), ("deploy",))
GRACE_S = 60.0  # past a group's limits before its worker is killed (a compile is not cut short)


def run_section(ctx: Ctx, name: str, cases_fn: Callable[[Ctx], Iterable[Case]],
                limit_s: float) -> None:
    """Run the cases of one section until done or its time guard (``limit_s`` or the whole
    run's budget, whichever ends first): one row per case, a ``fail`` row for a case that
    raises, one ``skip`` row for the cases left when the guard trips."""
    t0 = time.perf_counter()
    ctx.deadline, ctx.section, ctx._cases = min(time.time() + limit_s, ctx.t_end), name, 0
    info = ctx.report.sections[name] = {"limit_s": limit_s, "state": "running"}
    ctx.report.write()
    if ctx.over():
        ctx.report.add(name, "(whole section)", row("skip", note="time budget spent before "
                       "this section"), 0.0)
        info["state"] = "skipped"
        return
    cases = iter(cases_fn(ctx))
    while True:
        t = time.perf_counter()
        try:
            case_name, fn = next(cases)
        except StopIteration:
            break
        except Exception as exc:  # the section's own setup failed
            ctx.report.add(name, "(setup)", _failure(exc), time.perf_counter() - t)
            break
        if ctx.over():
            ctx.report.add(name, "(remaining cases)", row(
                "skip", note=f"time guard: the section's {limit_s:.0f} s (or the run's "
                f"budget) ran out before '{case_name}' and the cases after it"), 0.0)
            break
        try:
            fields = fn()
        except Exception as exc:
            fields = _failure(exc)
        ctx.report.add(name, case_name, fields, time.perf_counter() - t)
        _free(ctx)
    info.update(state="done", seconds=round(time.perf_counter() - t0, 1))
    ctx.report.write()


def run_group(report: Report, group: tuple[str, ...], args: argparse.Namespace,
              t_end: float) -> None:
    """Run ``group`` in a worker process (``--worker``), which appends its rows to the JSON;
    record its death (signal, exit status, kill at its time limit) as a ``fail`` row of the
    section it was in, and the sections it never started as ``skip``."""
    limit = min(sum(LIMITS[n] for n in group), max(t_end - time.time(), 0.0)) + GRACE_S
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", ",".join(group),
           "--out", str(args.out), "--seed", str(args.seed), "--t-end", repr(t_end)]
    cmd += ["--dry-run"] if args.dry_run else []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True)  # its compile workers die with it
    try:
        rc: int | str = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        rc = f"was killed after {limit:.0f} s (its sections' limits + {GRACE_S:.0f} s)"
    finally:  # also on SIGTERM: the worker and whatever it started go with the parent
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        report.reload()
    if rc in (0, 1):
        return
    why = rc if isinstance(rc, str) else (f"died of signal {-rc}" if rc < 0 else f"exit {rc}")
    running = [n for n in group if report.sections.get(n, {}).get("state") == "running"]
    for name in running:
        report.sections[name]["state"] = "died"
        report.add(name, "(worker process)", row("fail", note=f"the worker process of "
                   f"{', '.join(group)} {why} in this section; rows above are what it wrote"),
                   time.perf_counter() - t0)
    for name in (n for n in group if n not in report.sections):
        report.sections[name] = {"limit_s": LIMITS[name], "state": "not run"}
        report.add(name, "(whole section)", row("skip", note=f"not run: the worker process "
                   f"of {', '.join(group)} {why} before it"), 0.0)


def _failure(exc: BaseException) -> dict[str, Any]:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return row("fail", note=f"{type(exc).__name__}: {str(exc)[:200]}",
               traceback="".join(tb)[-3000:])


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "build" / "gpu_check.json",
                   help="JSON results, rewritten after every row (default build/gpu_check.json)")
    p.add_argument("--dry-run", action="store_true",
                   help="the same code paths on the CPU with tiny sizes (no GPU needed)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="time budget of the whole run; sections left when it is spent are "
                        "skipped (default 440 on CUDA, 150 for a dry run)")
    p.add_argument("--seed", type=int, default=None,
                   help="base seed (default: random on CUDA, recorded in the JSON; 0 dry run)")
    p.add_argument("--only", default="", help=f"comma-separated sections of {SECTION_NAMES}")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # sections of one worker
    p.add_argument("--t-end", type=float, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args: argparse.Namespace) -> int:
    """Worker process: run its sections, appending rows to the JSON the parent started."""
    if args.dry_run:
        torch.set_num_threads(1)
    report = Report(args.out, {})
    report.reload()
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda":  # the parent leaves CUDA alone: its workers own the device
        report.meta["device"] = torch.cuda.get_device_name(device)
    ctx = Ctx(DRY if args.dry_run else Sizes(), device, report, args.seed, t_end=args.t_end)
    for name, fn, limit in SECTIONS:
        if name in args.worker.split(","):
            run_section(ctx, name, fn, limit)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Read when the kernel modules are first imported (lazily, at the first launch). No
    # CUBLAS_WORKSPACE_CONFIG for the deterministic mode of the poisoning: it only warns
    # (silenced), and a smaller cuBLAS workspace would change the timings.
    os.environ["TRITON_INTERPRET"] = "1" if args.dry_run else "0"
    if args.worker is not None:
        return worker(args)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here, nothing measured; `--dry-run` checks the code "
              "paths on the CPU", file=sys.stderr)
        return 2
    only = [s for s in args.only.split(",") if s] or list(SECTION_NAMES)
    unknown = set(only) - set(SECTION_NAMES)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {SECTION_NAMES}")
    budget = args.budget_s if args.budget_s is not None else (150.0 if args.dry_run else 440.0)
    if args.seed is None:
        args.seed = 0 if args.dry_run else secrets.randbelow(2**31)
    t_start, t_end = time.perf_counter(), time.time() + budget - 5.0
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "dry_run": args.dry_run,
            "device": "cpu" if args.dry_run else "cuda",
            "python": platform.python_version(), "torch": torch.__version__,
            "commit": _git_commit(), "seed": args.seed, "budget_s": budget,
            "sizes": asdict(DRY if args.dry_run else Sizes()), "sections": only}
    report = Report(args.out, meta)
    report.write()
    groups = [tuple(only)] if args.dry_run else [g for g in (
        tuple(n for n in grp if n in only) for grp in GROUPS) if g]
    # `timeout` (SIGTERM) still gets the table and a consistent JSON
    signal.signal(signal.SIGTERM, _interrupt)
    interrupted = False
    try:
        for group in groups:
            run_group(report, group, args, t_end)
    except KeyboardInterrupt:
        interrupted = True
        running = [n for n, i in report.sections.items() if i.get("state") == "running"]
        report.add("runner", "(interrupted)", row("fail", note=f"stopped by a signal during "
                   f"{', '.join(running) or 'no section'}; later sections did not run"), 0.0)
    report.meta["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    report.write(complete=not interrupted)
    counts = report.counts()
    print(report.table())
    print(f"gpu_check: {counts['pass']} pass, {counts['fail']} fail, {counts['skip']} skip in "
          f"{report.meta['elapsed_s']} s on {report.meta['device']}"
          f"{' (dry run)' if args.dry_run else ''}; JSON: {args.out}")
    return 1 if counts["fail"] else 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
