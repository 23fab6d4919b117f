"""Peak memory of a command in a fresh process (``/usr/bin/time -v``), shared by the
memory scripts (``slide_memory.py``, ``morphometrics_memory.py``)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path


def time_v(cmd: list[str]) -> dict:
    """Run ``/usr/bin/time -v cmd``: {"command", "max_rss_kb", "wall_s", "exit_code"};
    RuntimeError with the end of its stderr when it fails."""
    full = ["/usr/bin/time", "-v", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode != 0 or rss is None:
        raise RuntimeError(f"{' '.join(full)} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return {"command": " ".join(cmd), "max_rss_kb": int(rss.group(1)), "wall_s": wall,
            "exit_code": proc.returncode}


def sized(res: dict, n: int) -> dict:
    """``res`` of an n x n input with its size, MPix, MPix/s (wall) and peak RSS in MB."""
    res.update(size=n, mpix=n * n / 1e6, mpix_per_s=n * n / 1e6 / res["wall_s"],
               max_rss_mb=res["max_rss_kb"] / 1024)
    return res


def write_report(out: str | Path, report: dict) -> dict:
    """Add the peak ratio (largest / smallest) of ``report["runs"]`` and write the JSON."""
    peaks = [r["max_rss_kb"] for r in report["runs"]]
    if len(peaks) >= 2:
        report["peak_ratio_max_over_min"] = max(peaks) / min(peaks)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report
