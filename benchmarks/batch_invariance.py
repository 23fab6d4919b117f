"""Do tile batches or threads change temseg's labels? (docs/scaling.md)

Segments phantoms with several column-panel widths (which change the tile batches), batch
sizes and torch thread counts, with and without the flush of pending tiles at a panel change
(``predict_rows(split_keys=...)``), for two untrained architectures and two precisions of
the torch backend, and counts the pixels whose label differs from one reference run (one
panel, batches of 4, 2 threads, no flush: temseg before the flush existed).

    python -m benchmarks.batch_invariance
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

import temseg.inference.slide as slide_module
from temseg.checkpoint import SegmentationModel
from temseg.inference.backends import make_backend
from temseg.inference.tiles import predict_rows
from temseg.models import UNetConfig, build_model
from temseg.synth import render

MODELS = {"tiny": (UNetConfig(width=4, depth=2, blocks_per_stage=1, bottleneck_blocks=1,
                              heads=1, attention=False), 32),
          "default": (UNetConfig(), 64)}
# (panel width, flush at a panel change, torch threads, batch)
RUNS = [(128, False, 2, 4), (128, True, 2, 4), (256, True, 1, 4), (128, True, 1, 3),
        (8192, True, 1, 4)]


def labels(model: SegmentationModel, image: np.ndarray, amp: str, panel: int, flush: bool,
           threads: int, batch: int) -> np.ndarray:
    """(H, W) uint8 labels of ``image`` with these settings."""
    torch.set_num_threads(threads)

    def rows(*args: Any, split_keys: bool = True, **kw: Any) -> Any:
        return predict_rows(*args, split_keys=flush, **kw)

    slide_module.predict_rows = rows
    backend = make_backend("torch", model, "cpu", amp=amp)
    res = slide_module.segment_slide(model, image, None, backend=backend,
                                     sw_batch_size=batch, panel_width=panel, out_tile=64,
                                     return_arrays=True, progress=False)
    assert res.labels is not None
    return res.labels


def main() -> None:
    results = []
    for name, (config, patch) in MODELS.items():
        torch.manual_seed(0)
        model = SegmentationModel(build_model(config), patch_size=patch).eval()
        with torch.no_grad():
            model.net.head.bias.zero_()
        for amp in ("off", "bf16"):
            for seed, shape in ((1, (384, 1024)), (2, (512, 768))):
                image = render(*shape, seed=seed)[0]
                ref = labels(model, image, amp, 8192, False, 2, 4)
                for run in RUNS:
                    differ = int((labels(model, image, amp, *run) != ref).sum())
                    results.append({"model": name, "amp": amp, "seed": seed,
                                    "panel": run[0], "flush": run[1], "threads": run[2],
                                    "batch": run[3], "differ": differ, "pixels": ref.size})
                    print(json.dumps(results[-1]), flush=True)
    total = sum(r["differ"] for r in results)
    print(f"{total} differing pixels over {len(results)} runs")


if __name__ == "__main__":
    main()
