"""One training step (forward, loss, backward, clipping, AdamW), in patches/s.

The baseline: fp32 eager, contiguous NCHW, explicit attention, one-hot Dice loss. temseg: its
training loop's step as its run-time policy sets it up on this machine (channels-last, AMP only
where :func:`temseg.policy.choose_precision` turns it on; the policy's choice is recorded
in the row), eager as the CPU default and with ``torch.compile`` (``--compile on``). All start
from the same weights and see the same batch. One more row runs temseg eager with the AMP
setting the policy did not choose (its run-time bf16 probe decides), so the table shows what that
choice is worth on this machine; it and the compiled row get no peak-memory figure.
"""

from __future__ import annotations

import time

import pytest
import torch

from .contenders import BenchConfig, TemsegTrainStep, annotate, make_train_step, train_batch
from .peak_memory import measure as peak_memory

CFG = BenchConfig.from_env()
CONTENDERS = (["baseline", "temseg"] + (["temseg+compile"] if CFG.compile else [])
              + ["temseg+other-amp"])
LABELS = {
    "baseline": "baseline (fp32 eager, NCHW)",
    "temseg": "temseg (policy: channels_last, eager)",
    "temseg+compile": "temseg + torch.compile (channels_last)",
}


def _label(contender: str, step: object) -> str:
    if contender != "temseg+other-amp":
        return LABELS[contender]
    amp = "off" if step.precision.dtype is None else "bf16"  # type: ignore[attr-defined]
    return f"temseg, --amp {amp} (what the policy did not choose)"


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("width", CFG.train_widths, ids=lambda w: f"width{w}")
def test_train_step(benchmark, bench_cfg: BenchConfig, width: int, contender: str) -> None:
    torch.manual_seed(0)
    x, y = train_batch(bench_cfg.train_batch, bench_cfg.tile, bench_cfg.seed)
    step = make_train_step(contender, width, bench_cfg.seed)
    t0 = time.perf_counter()
    step(x, y)  # first step: lazy initialisation, optimiser state, compilation
    first = time.perf_counter() - t0
    extra: dict = {"first_step_s": round(first, 2)}
    amp = "auto"
    if isinstance(step, TemsegTrainStep):
        extra["policy" if contender != "temseg+other-amp" else "setup"] = step.policy
        amp = "off" if step.precision.dtype is None else "bf16"  # the child uses the same
    if contender in ("baseline", "temseg"):  # compile: a fresh process would compile again
        extra.update(peak_memory({"measure": "train", "contender": contender, "width": width,
                                  "amp": amp, "config": bench_cfg.to_dict()}))
    measure = (f"training step, width {width}, batch {bench_cfg.train_batch}x"
               f"{bench_cfg.tile}x{bench_cfg.tile}")
    annotate(benchmark, measure, _label(contender, step), unit="patches/s",
             work=bench_cfg.train_batch, baseline=contender == "baseline", **extra)
    benchmark.pedantic(step, args=(x, y), rounds=bench_cfg.train_rounds, iterations=1,
                       warmup_rounds=0)
