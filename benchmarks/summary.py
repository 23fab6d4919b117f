"""Print the summary table of a pytest-benchmark JSON file written by ``make bench``.

    python -m benchmarks.summary build/bench.json [--markdown]

One row per benchmark: the measure (rows of one measure are compared), the contender, its
value in natural units (ms per call, patches/s, MPix/s, GFLOP/s), the speed-up over the
measure's baseline row (> 1: faster), its peak memory (resident set size of a fresh process
running it, and the part of it taken by the measured work) and that peak as a fraction of the
baseline's (< 1: less memory). Then the roofline line, what temseg's policy chose, rows that
were skipped and why, and the machine.

Times are the minimum over rounds (the least disturbed by other load on the machine); a row
carrying ``extra_info["seconds"]`` (a run in a fresh process) uses that instead, start-up
excluded. Rows are annotated by :func:`benchmarks.contenders.annotate`; rows from suites that
do not annotate (e.g. other files under ``benchmarks/``) are shown by group and test name, in
ms, compared with a row whose name says "baseline" when there is one.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

THROUGHPUT_UNITS = ("patches/s", "MPix/s", "GFLOP/s", "tiles/s")


@dataclass
class Row:
    """One benchmark, reduced to what the table shows."""

    measure: str
    contender: str
    unit: str
    value: float
    seconds: float
    baseline: bool
    peak_rss_mb: float | None
    work_peak_mb: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    fresh_process: bool = False


def _contender_from_name(name: str) -> str:
    m = re.search(r"\[(.*)\]$", name)
    return m.group(1) if m else name


def _first(extra: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        if isinstance(extra.get(k), (int, float)):
            return float(extra[k])
    return None


def to_row(bench: dict[str, Any]) -> Row:
    """A pytest-benchmark entry -> :class:`Row`."""
    extra = bench.get("extra_info") or {}
    stats = bench.get("stats") or {}
    fresh = isinstance(extra.get("seconds"), (int, float)) and extra["seconds"] > 0
    seconds = float(extra["seconds"]) if fresh else float(stats.get("min", math.nan))
    unit = extra.get("unit", "ms")
    if unit in THROUGHPUT_UNITS and extra.get("work"):
        value = float(extra["work"]) / seconds if seconds > 0 else math.nan
    else:
        unit, value = "ms", seconds * 1e3
    name = bench.get("name", "?")
    contender = extra.get("contender") or _contender_from_name(name)
    measure = extra.get("measure") or bench.get("group") or name.split("[")[0]
    role = extra.get("role")
    is_base = role == "baseline" if role else "baseline" in str(contender).lower()
    return Row(measure=str(measure), contender=str(contender), unit=unit, value=value,
               seconds=seconds, baseline=is_base,
               peak_rss_mb=_first(extra, "peak_rss_mb", "peak_mb", "peak_memory_mb"),
               work_peak_mb=_first(extra, "work_peak_mb"), extra=extra, fresh_process=fresh)


def _speedup(row: Row, base: Row | None) -> float | None:
    if base is None or not (row.value > 0 and base.value > 0):
        return None
    if row.unit == "ms":
        return base.value / row.value
    return row.value / base.value


def _fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:{spec}}{suffix}"


def _value(v: float) -> str:
    if math.isnan(v):
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def grouped(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """Rows by measure, in first-seen order; the baseline first within each measure."""
    order: dict[str, list[Row]] = {}
    for r in rows:
        order.setdefault(r.measure, []).append(r)
    return [(m, sorted(rs, key=lambda r: not r.baseline)) for m, rs in order.items()]


def table_rows(rows: list[Row]) -> list[list[str]]:
    """The table body: measure, contender, value, unit, speed-up, peak RSS, work peak, ratio."""
    out = []
    for measure, rs in grouped(rows):
        base = next((r for r in rs if r.baseline), None)
        for i, r in enumerate(rs):
            mem_ratio = None
            if base is not None and r.peak_rss_mb and base.peak_rss_mb:
                mem_ratio = r.peak_rss_mb / base.peak_rss_mb
            speed = _speedup(r, base)
            out.append([
                measure if i == 0 else "",
                r.contender + (" *" if r.baseline else ""),
                _value(r.value),
                r.unit,
                "1.00x" if r.baseline else _fmt(speed, ".2f", "x"),
                _fmt(r.peak_rss_mb, ",.0f"),
                _fmt(r.work_peak_mb, ",.0f"),
                "1.00" if r.baseline and r.peak_rss_mb else _fmt(mem_ratio, ".2f"),
                _fmt(r.extra.get("agreement_with_temseg_fp32"), ".2%"),
            ])
    return out


HEADER = ["measure", "contender", "value", "unit", "speed-up vs * row", "peak RSS MB",
          "work peak MB", "peak / * row", "labels = temseg fp32"]


def render_text(body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(HEADER)]
    numeric = {2, 4, 5, 6, 7, 8}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    sep = "  ".join("-" * w for w in widths)
    out = [line(HEADER), sep]
    prev = None
    for r in body:
        if r[0] and prev is not None:
            out.append("")
        out.append(line(r))
        prev = r
    return "\n".join(out)


def render_markdown(body: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEADER) + " |",
           "|" + "|".join("---:" if i in (2, 4, 5, 6, 7, 8) else "---" for i in range(len(HEADER)))
           + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
    return "\n".join(out)


def machine_line(data: dict[str, Any]) -> str:
    mi = data.get("machine_info") or {}
    cpu = mi.get("cpu_model") or (mi.get("cpu") or {}).get("brand_raw") or mi.get("processor")
    load0 = mi.get("load_average_start")
    load1 = (data.get("temseg") or {}).get("load_average_end")

    def la(x: Any) -> str:
        return "/".join(f"{v:.1f}" for v in x) if x else "?"

    parts = [f"CPU {cpu}", f"{mi.get('logical_cpus', '?')} logical CPUs",
             f"torch threads {mi.get('torch_threads', '?')}", f"torch {mi.get('torch', '?')}",
             f"MONAI {mi.get('monai', '?')}", f"onnxruntime {mi.get('onnxruntime', '?')}",
             f"python {mi.get('python_version', '?')}",
             f"load average (1/5/15 min) {la(load0)} at start, {la(load1)} at end"]
    if mi.get("cuda"):
        parts.insert(1, f"GPU {mi['cuda']}")
    if mi.get("cpu_flags"):
        parts.insert(1, f"[{mi['cpu_flags']}]")
    return "machine: " + ", ".join(parts) + f"; run {data.get('datetime', '?')}"


def _roofs(gemms: list[Row]) -> dict[str, Row]:
    """precision -> the fastest GEMM row measured for it ("fp32", "bf16", "int8")."""
    roofs: dict[str, Row] = {}
    for r in gemms:
        for precision in ("fp32", "bf16", "int8"):
            if f"{precision} GEMM" in r.measure and (
                    precision not in roofs or r.value > roofs[precision].value):
                roofs[precision] = r
    return roofs


def _precision_of(r: Row) -> str:
    precision = str(r.extra.get("precision") or "")
    if precision in ("fp32", "bf16", "int8"):
        return precision
    return next((p for p in ("int8", "bf16") if p in r.contender), "fp32")


def roofline_lines(rows: list[Row]) -> list[str]:
    """FLOPs/pixel, the fp32 / bf16 / int8 GEMM roofs measured in this run and, for each
    whole-slide contender, its useful and executed GFLOP/s against the roof of its precision
    (a row's own ``flops_per_pixel`` when it carries one, else the GEMM row's model)."""
    gemms = [r for r in rows if r.measure.startswith("roofline") and r.value > 0]
    model = next((r for r in gemms if r.extra.get("flops_per_pixel")), None)
    roofs = _roofs(gemms)
    if "fp32" not in roofs or model is None:
        return ["roofline: no GEMM row in this run"]
    fpp0 = float(model.extra["flops_per_pixel"])
    rates = "; ".join(f"{p} {r.value:,.0f} ({r.contender})" for p, r in roofs.items())
    lines = [f"roofline: roofs measured in this run, GEMM {model.measure.split('GEMM ')[-1]}, "
             f"GFLOP/s (GOP/s for int8): {rates}. Model forward {fpp0:,.0f} FLOPs/pixel at "
             f"width {model.extra.get('model_width')}, {model.extra.get('tile')} px tiles "
             "(FlopCounterMode; rows below use their own width and tile)"]
    for _, rs in grouped(rows):
        for r in rs:
            if not r.extra.get("roofline"):  # rows of a counted model only
                continue
            precision = _precision_of(r)
            roof = roofs.get(precision, roofs["fp32"])
            fpp = float(r.extra.get("flops_per_pixel") or fpp0)
            useful = r.value * fpp / 1e3  # MPix/s * FLOP/px -> GFLOP/s
            executed = useful * float(r.extra.get("tile_pixels_per_slide_pixel", 1.0))
            lines.append(f"  {r.measure} | {r.contender}: {r.value:.3g} MPix/s x {fpp / 1e3:,.0f}"
                         f" kFLOP/px = {useful:.1f} GFLOP/s useful ({useful / roof.value:.0%} of"
                         f" the {precision} roof), {executed:.1f} executed incl. tile overlap "
                         f"({executed / roof.value:.0%})")
    return lines


def peer_lines(rows: list[Row]) -> list[str]:
    """One headline per MONAI comparison: each temseg row against MONAI at its best."""
    out = []
    for measure, rs in grouped(rows):
        best = next((r for r in rs if r.baseline), None)
        if not measure.startswith("whole-slide inference vs MONAI") or best is None:
            continue
        for r in rs:
            if r.contender.startswith("temseg") and best.value > 0:
                agree = r.extra.get("agreement_with_temseg_fp32")
                out.append(f"{measure}: {r.contender} = {r.value / best.value:.2f}x MONAI at "
                           f"its best" + (f", labels {agree:.2%} = temseg fp32" if agree
                                          is not None else ""))
    return out


def notes(rows: list[Row], data: dict[str, Any]) -> list[str]:
    out = []
    for r in rows:
        if r.extra.get("policy"):
            out.append(f"{r.measure} | {r.contender}: policy chose {r.extra['policy']}")
        elif r.extra.get("setup"):
            out.append(f"{r.measure} | {r.contender}: {r.extra['setup']}")
        if r.extra.get("entry") and r.measure.startswith("whole-slide"):
            out.append(f"temseg default backend here (fixed rule of the CPU's features): "
                       f"{r.extra.get('backend')}; entry point: {r.extra.get('entry')}")
    fresh = sorted({r.measure for r in rows if r.fresh_process})
    for m in fresh:
        out.append(f"{m}: values from the work time inside each fresh process")
    skipped = (data.get("temseg") or {}).get("skipped") or []
    reasons: dict[str, list[str]] = {}
    for s in skipped:
        reasons.setdefault(s.get("reason", "?"), []).append(s.get("name", "?"))
    for reason, names in reasons.items():
        tests = ", ".join(sorted({n.split("[")[0] for n in names}))
        out.append(f"skipped ({len(names)} rows: {tests}): {reason}")
    return out


def slide_memory_lines(report: dict[str, Any] | None) -> list[str]:
    """The result of ``benchmarks/slide_memory.py`` (``temseg predict`` peak RSS against the
    slide size, narrow model), when it was run."""
    if not report or not report.get("runs"):
        return []
    out = ["temseg predict peak memory vs slide size (benchmarks/slide_memory.py, narrow model, "
           "torch backend, fresh process):"]
    for r in report["runs"]:
        crop = r.get("crop_check") or {}
        out.append(f"  {r['size']}x{r['size']} ({r['mpix']:.0f} MPix): peak RSS "
                   f"{r['max_rss_mb']:,.0f} MB, {r['mpix_per_s']:.2f} MPix/s, labels identical "
                   f"to the in-memory path on a crop: {crop.get('identical', '?')}")
    if "peak_ratio_max_over_min" in report:
        out.append(f"  peak RSS largest / smallest slide: {report['peak_ratio_max_over_min']:.3f}")
    return out


def summarize(data: dict[str, Any], markdown: bool = False,
              slide_memory: dict[str, Any] | None = None) -> str:
    """The whole printed summary for a loaded pytest-benchmark JSON document (and, optionally,
    the report of ``benchmarks/slide_memory.py``)."""
    rows = [to_row(b) for b in data.get("benchmarks", [])]
    body = table_rows(rows)
    table = render_markdown(body) if markdown else render_text(body)
    blocks = [["* = the reference row of its measure (the baseline; MONAI at its best in the "
               "MONAI comparison); speed-up > 1 is faster, peak / * row < 1 is less memory "
               "(peak RSS of a fresh process per contender); labels = temseg fp32: the "
               "fraction of the slide's pixels labelled as temseg fp32 labels them."],
              peer_lines(rows), roofline_lines(rows), notes(rows, data),
              slide_memory_lines(slide_memory),
              [machine_line(data)]]
    if markdown:  # the lines under the table as (nested) bullet lists
        blocks = [[("  - " + ln[2:]) if ln.startswith("  ") else "- " + ln.replace("*", "\\*", 1)
                   for ln in block] for block in blocks]
    parts = [table]
    for block in blocks:
        parts += ["", *block]
    text = "\n".join(parts)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="?", default="build/bench.json")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--slide-memory", default=None,
                        help="JSON report of benchmarks/slide_memory.py to add (if it exists)")
    args = parser.parse_args(argv)
    path = Path(args.json)
    if not path.is_file():
        print(f"{path}: no such file (run `make bench` first)", file=sys.stderr)
        return 1
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        print(f"{path}: not valid JSON: {exc}", file=sys.stderr)
        return 1
    if not isinstance(data, dict) or "benchmarks" not in data:
        print(f"{path}: not a pytest-benchmark JSON file", file=sys.stderr)
        return 1
    slide_memory = None
    if args.slide_memory and Path(args.slide_memory).is_file():
        try:
            slide_memory = json.loads(Path(args.slide_memory).read_text())
        except json.JSONDecodeError:
            print(f"{args.slide_memory}: not valid JSON, left out", file=sys.stderr)
    sys.stdout.write(summarize(data, args.markdown, slide_memory))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
