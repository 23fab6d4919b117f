"""Held-out Dice of every inference precision, on the folds of a ``temseg cv`` study.

For each fold of ``CV`` (``temseg cv DATA --out CV``), its model segments the fold's unseen
images (the groups in ``fold-K/cv_report.json``) with each backend / precision, and the
mean Dice over the classes present is set beside fp32's. The int8 model of a fold is
calibrated on patches of that fold's *training* images only (``temseg export --precision
int8`` does the same with ``--calibration-data``).

    python -m benchmarks.precision_dice CV ../shared/data/tem-mouse-cc --out build/prec.json

Prints a Markdown table (docs/benchmarks.md, "Dice of each precision").
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from temseg.atomic import write_json
from temseg.data import load_dataset
from temseg.inference import Predictor
from temseg.inference.backends import open_backend

CONTENDERS = ("torch-fp32", "torch-bf16", "onnxruntime-fp32", "openvino-fp32",
              "openvino-bf16", "openvino-int8", "auto")


def _backend(name: str, run: Path, train: list, folder: Path) -> Any:
    """The backend ``name`` for the fold model in ``run``."""
    if name in ("torch-fp32", "torch-bf16"):
        return open_backend(run, "torch", amp="off" if name.endswith("fp32") else "bf16")
    if name == "auto":
        return open_backend(run)
    from temseg.checkpoint import load_model
    from temseg.inference.backends import OnnxRuntimeBackend, OpenVinoBackend, cached_onnx

    model = load_model(run)
    path = cached_onnx(model)
    if name == "onnxruntime-fp32":
        return OnnxRuntimeBackend(path)
    if name == "openvino-int8":
        from temseg.export.quantize import calibration_tiles, quantize_onnx
        from temseg.policy import cpu_has_native_bf16

        tiles = calibration_tiles(train, model.spec)
        path = quantize_onnx(path, folder / "model.int8.onnx", tiles)
        return OpenVinoBackend(path, "bf16" if cpu_has_native_bf16() else "fp32")
    return OpenVinoBackend(path, name.removeprefix("openvino-"))


def fold_dice(run: Path, samples: list, contenders: tuple[str, ...]) -> dict[str, Any]:
    """{contender: {"mean_dice", "dice", "backend", "precision"}} for one fold."""
    report = json.loads((run / "cv_report.json").read_text())
    test = [s for s in samples if s.group in report["test_groups"]]
    train = [s for s in samples if s.group not in report["test_groups"]]
    out: dict[str, Any] = {"test_groups": report["test_groups"]}
    with tempfile.TemporaryDirectory(prefix="temseg-prec-") as tmp:
        for name in contenders:
            backend = _backend(name, run, train, Path(tmp))
            ev = Predictor(backend, progress=False).evaluate_samples(test)
            out[name] = {k: ev[k] for k in ("mean_dice", "dice", "backend", "precision")}
            logging.info("%s %s: mean Dice %.4f", run.name, backend.name, ev["mean_dice"])
    return out


def table(folds: dict[str, Any], contenders: tuple[str, ...]) -> str:
    names = sorted(folds)
    lines = ["| backend (precision) | " + " | ".join(names) + " | mean | vs fp32 |",
             "|---|" + "---:|" * (len(names) + 2)]
    ref = sum(folds[f]["torch-fp32"]["mean_dice"] for f in names) / len(names)
    for c in contenders:
        vals = [folds[f][c]["mean_dice"] for f in names]
        mean = sum(vals) / len(vals)
        first = folds[names[0]][c]
        lines.append(f"| {c} ({first['backend']}, {first['precision']}) | "
                     + " | ".join(f"{v:.4f}" for v in vals)
                     + f" | {mean:.4f} | {mean - ref:+.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv", type=Path, help="a temseg cv output folder")
    parser.add_argument("data", type=Path, help="the data folder it was run on")
    parser.add_argument("--out", type=Path, default=Path("build/precision_dice.json"))
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    samples = load_dataset(args.data)
    contenders = tuple(args.contenders)
    folds = {run.name: fold_dice(run, samples, contenders)
             for run in sorted(args.cv.glob("fold-*")) if (run / "cv_report.json").is_file()}
    write_json(args.out, {"folds": folds})
    print(table(folds, contenders))


if __name__ == "__main__":
    main()
