"""Peak memory of one contender, measured in a fresh Python process.

:func:`measure` runs ``python -m benchmarks.peak_memory SPEC`` (``SPEC`` a JSON object naming
the measure, the contender and the sizes) and returns what the child reports:

* ``peak_rss_mb``: the child's peak resident set size over its whole life (``VmHWM``:
  interpreter, torch, model, inputs and the work). Not ``getrusage().ru_maxrss``: on Linux a
  child started by fork + exec inherits its parent's high-water mark there, so a large pytest
  process would show through;
* ``setup_rss_mb``: its resident set size once everything but the measured work is ready
  (imports, model, inputs; a warm-up call for the loss);
* ``work_peak_mb``: the peak resident set size during the measured work alone, above
  ``setup_rss_mb`` (the high-water mark is reset through ``/proc/self/clear_refs`` just
  before the work; where that is not possible, ``peak_rss_mb - setup_rss_mb``);
* ``work_seconds``: wall time of the measured work.

A fresh process per contender is the honest measure on the CPU: torch's CPU allocator has no
peak statistics, and freed memory kept by malloc in a shared process would hide or inflate the
next contender's needs.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` field in kB (VmRSS, VmHWM), None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _maxrss_mb() -> float:
    """Peak RSS of this process: ``VmHWM`` (Linux), else ``ru_maxrss``."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else _maxrss_mb()


def _prepare(spec: dict[str, Any]) -> Callable[[], Any]:
    """Build everything for ``spec`` and return the work to measure."""
    import torch

    from . import contenders as C

    cfg = C.BenchConfig(**{**C.BenchConfig().to_dict(), **spec.get("config", {})})
    torch.set_num_threads(cfg.threads)
    measure, who = spec["measure"], spec["contender"]
    if measure == "attention":
        f = C.attention_impls()[who]
        q, k, v, g = C.attention_inputs(spec["batch"], spec["tokens"], cfg.attn_heads,
                                        cfg.attn_head_dim, requires_grad=True)

        # no warm-up: a second call of the baseline at N = 4096 costs seconds
        return lambda: f(q, k, v).backward(g)

    elif measure == "loss":
        f = C.loss_impls()[who]
        logits, target = C.loss_inputs(cfg.loss_batch, cfg.loss_size)

        def work() -> None:
            f(logits, target).backward()

    elif measure == "train":
        step = C.make_train_step(who, spec["width"], amp=spec.get("amp", "auto"))
        x, y = C.train_batch(cfg.train_batch, cfg.tile)
        # no warm-up: the first step (optimiser state, oneDNN primitives) is part of training's
        # peak, and a second step would double the cost of this measure
        return lambda: step(x, y)

    elif measure == "slide":
        net = C.load_net(spec["checkpoint"])
        src, dst = spec["src"], spec["dst"]
        if who == "baseline":
            base = C.baseline_from(net)
            return lambda: C.slide_baseline(base, src, dst, cfg)
        if who == "monai":
            return lambda: C.slide_monai(net, src, dst, cfg)
        backend = C.make_backend(spec["backend"], net, spec.get("onnx"))
        return lambda: C.slide_temseg(backend, src, dst, cfg)
    else:
        raise ValueError(f"unknown measure {measure!r}")
    work()  # warm-up: lazy initialisation and optimiser state belong to the setup
    return work


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure ``spec`` in this process (meant for a fresh one)."""
    work = _prepare(spec)
    setup_peak = _maxrss_mb()
    setup = _rss_mb()
    reset = _reset_peak()
    t0 = time.perf_counter()
    work()
    seconds = time.perf_counter() - t0
    hwm = _maxrss_mb()
    peak = max(setup_peak, hwm)
    work_peak = hwm - setup if reset else peak - setup
    return {"peak_rss_mb": round(peak, 1), "setup_rss_mb": round(setup, 1),
            "work_peak_mb": round(max(work_peak, 0.0), 1), "work_seconds": round(seconds, 3),
            "hwm_reset": reset}


def measure(spec: dict[str, Any], timeout: float = 1800.0) -> dict[str, Any]:
    """Run ``spec`` in a fresh ``python -m benchmarks.peak_memory`` process; its JSON result.

    Raises RuntimeError with the child's stderr when it fails.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.peak_memory", json.dumps(spec)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"peak-memory run {spec} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m benchmarks.peak_memory '{\"measure\": ..., ...}'",
              file=sys.stderr)
        return 2
    print(json.dumps(run(json.loads(args[0]))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
