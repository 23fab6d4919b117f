"""The benchmark baseline (benchmarks/baseline) computes what temseg computes: same logits
with temseg's weights, same loss where every class is present, a tile loop that covers the
image."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` without `python -m`: the repo root is not on the path
    sys.path.insert(0, str(ROOT))

from benchmarks.baseline import (  # noqa: E402
    BaselineResUNet,
    BaselineSelfAttention2d,
    BaselineTrainStep,
    baseline_dice_ce_loss,
    baseline_from,
    explicit_attention,
    tile_loop_inference,
    tile_loop_probabilities,
)
from benchmarks.summary import summarize  # noqa: E402
from temseg.kernels import attention_math, dice_ce_loss_reference  # noqa: E402
from temseg.losses import DiceCELoss  # noqa: E402
from temseg.models import UNetConfig, build_model  # noqa: E402

SMALL = UNetConfig(width=8, depth=2, blocks_per_stage=1, bottleneck_blocks=1, heads=2)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread avoids OpenMP barriers on a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_model(SMALL)
    for m in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_explicit_attention_is_temseg_math() -> None:
    q, k, v = torch.randn(3, 2, 4, 37, 16).unbind(0)
    torch.testing.assert_close(explicit_attention(q, k, v), attention_math(q, k, v))


def test_baseline_model_loads_temseg_weights_and_matches() -> None:
    net = _net()
    base = baseline_from(net)
    assert isinstance(base, BaselineResUNet) and not base.training
    assert any(isinstance(m, BaselineSelfAttention2d) for m in base.modules())
    assert set(base.state_dict()) == set(net.state_dict())
    x = torch.randn(2, 1, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(base(x), net(x), rtol=1e-4, atol=1e-4)
    fresh = BaselineResUNet(SMALL).eval()
    fresh.load_state_dict(net.state_dict())  # strict: same module tree
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), net(x), rtol=1e-4, atol=1e-4)


def test_baseline_loss_equals_temseg_reference_when_all_classes_present() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 20, 24, generator=gen, requires_grad=True)
    target = torch.randint(0, 5, (3, 20, 24), generator=gen)
    assert len(target.unique()) == 5
    ref = dice_ce_loss_reference(logits, target, batch=True, lambda_dice=0.5)
    got = baseline_dice_ce_loss(logits, target)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, DiceCELoss(batch=True, lambda_dice=0.5)(logits, target),
                               rtol=1e-5, atol=1e-6)
    (g_ref,) = torch.autograd.grad(ref, logits)
    (g_got,) = torch.autograd.grad(got, logits)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("shape", [(64, 64), (100, 70), (40, 130)])
def test_tile_loop_shape_and_labels(shape: tuple[int, int]) -> None:
    base = baseline_from(_net())
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    probs = tile_loop_probabilities(base, image, tile=32, batch_size=3)
    assert probs.shape == (5, *shape) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    labels = tile_loop_inference(base, image, tile=32, batch_size=3)
    assert labels.shape == shape and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, probs.argmax(0))


def test_tile_loop_matches_model_on_single_tile() -> None:
    net = _net()
    base = baseline_from(net)
    image = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    probs = tile_loop_probabilities(base, image, tile=64)
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(image)[None, None]), 1)[0].numpy()
    np.testing.assert_allclose(probs, ref, rtol=1e-4, atol=1e-5)


def test_baseline_train_step_reduces_loss() -> None:
    torch.manual_seed(0)
    step = BaselineTrainStep(BaselineResUNet(SMALL), lr=1e-2)
    x = torch.randn(2, 1, 32, 32)
    y = (x[:, 0] > 0).long() * 2
    losses = [step(x, y) for _ in range(5)]
    assert step.model.training and losses[-1] < losses[0]


def _bench(name: str, seconds: float, **extra: object) -> dict:
    return {"name": name, "group": extra.pop("group", None), "extra_info": extra,
            "stats": {"min": seconds, "median": seconds, "rounds": 1}}


def test_summary_ratios_memory_and_unannotated_rows() -> None:
    data = {"machine_info": {"cpu_model": "Test CPU", "torch": "x"}, "datetime": "now",
            "benchmarks": [
                _bench("t[base]", 2.0, measure="train", contender="base", unit="patches/s",
                       work=8, role="baseline", peak_rss_mb=1000.0),
                _bench("t[fast]", 1.0, measure="train", contender="fast", unit="patches/s",
                       work=8, role="contender", peak_rss_mb=500.0),
                _bench("test_other[numpy_baseline]", 0.004, group="other group"),
                _bench("test_other[cpp]", 0.001, group="other group"),
            ],
            "temseg": {"skipped": [{"name": "test_k[x]", "reason": "CUDA not available"}]}}
    text = summarize(data)
    lines = {ln.split()[0] if ln.strip() else "": ln for ln in text.splitlines()}
    assert "4" in lines["train"] and "1.00x" in lines["train"]  # baseline: 8 / 2 s
    fast = next(ln for ln in text.splitlines() if " fast " in ln)
    assert "8" in fast and "2.00x" in fast and "0.50" in fast
    cpp = next(ln for ln in text.splitlines() if " cpp " in ln)
    assert "4.00x" in cpp  # ms rows: speed-up = baseline time / time
    assert "skipped (1 rows: test_k): CUDA not available" in text
    assert "Test CPU" in text and "no GEMM row" in text
    assert "| train |" in summarize(data, markdown=True)


def test_summary_roofs_per_precision_and_the_agreement_column() -> None:
    """Each whole-slide row is set against the roof of its own precision, measured in the
    same run, with its own FLOPs per pixel; the agreement column shows the label match."""
    gemm = dict(unit="GFLOP/s", work=100.0)
    slide = dict(measure="slide", unit="MPix/s", work=4.0, roofline=True,
                 tile_pixels_per_slide_pixel=1.5, flops_per_pixel=500_000)
    data = {"machine_info": {}, "benchmarks": [
        _bench("g32", 0.5, measure="roofline: fp32 GEMM 2048", contender="mm", **gemm,
               flops_per_pixel=100_000, model_width=16, tile=256),
        _bench("g16", 0.1, measure="roofline: bf16 GEMM 2048", contender="mm", **gemm),
        _bench("g8", 0.05, measure="roofline: int8 GEMM 2048", contender="int_mm", **gemm),
        _bench("s1", 4.0, contender="peer", role="baseline", precision="bf16", **slide),
        _bench("s2", 1.0, contender="ours", precision="int8",
               agreement_with_temseg_fp32=0.99512, **slide),
        _bench("s3", 2.0, contender="temseg (openvino-int8 + tiler)",
               **{**slide, "measure": "memory"}),  # no precision field: read from the name
    ]}
    text = summarize(data)
    assert "fp32 200 (mm); bf16 1,000 (mm); int8 2,000 (int_mm)" in text
    # 1 MPix/s x 500 kFLOP/px = 500 GFLOP/s useful: 50 % of bf16, 750 executed = 75 %
    assert "peer: 1 MPix/s x 500 kFLOP/px = 500.0 GFLOP/s useful (50% of the bf16 roof)" in text
    assert "2000.0 GFLOP/s useful (100% of the int8 roof), 3000.0 executed" in text
    assert "memory | temseg (openvino-int8 + tiler): 2 MPix/s x 500 kFLOP/px = 1000.0 GFLOP/s " \
        "useful (50% of the int8 roof)" in text
    ours = next(ln for ln in text.splitlines() if " ours " in ln)
    assert "4.00x" in ours and ours.rstrip().endswith("99.51%")


def test_summary_sets_temseg_against_monai_at_its_best() -> None:
    row = dict(measure="whole-slide inference vs MONAI, width 32", unit="MPix/s", work=4.0)
    data = {"machine_info": {}, "benchmarks": [
        _bench("a", 4.0, contender="MONAI fp32 NCHW", **row),
        _bench("b", 2.0, contender="MONAI bf16 (at its best)", role="baseline", **row),
        _bench("c", 0.8, contender="temseg bf16 (default path)",
               agreement_with_temseg_fp32=0.9991, **row),
    ]}
    text = summarize(data)
    assert ("temseg bf16 (default path) = 2.50x MONAI at its best, labels 99.91% = temseg "
            "fp32") in text
    assert "MONAI fp32 NCHW = " not in text  # peers are not set against themselves
