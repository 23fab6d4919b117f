from __future__ import annotations

import pytest
import torch

from temseg.models import ResUNet, UNetConfig, build_model


@pytest.mark.parametrize("size", [(64, 64), (37, 50), (8, 9), (1, 1)])
def test_any_input_size(size):
    model = build_model(UNetConfig(width=8, heads=2)).eval()
    out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 5, *size)
    assert torch.isfinite(out).all()


def test_padding_crops_back_consistently():
    # the padded/cropped path equals running the padded input and cropping by hand
    torch.manual_seed(0)
    model = build_model(UNetConfig(width=8, heads=2)).eval()
    x = torch.randn(1, 1, 30, 44)
    padded = torch.nn.functional.pad(x, (0, 4, 0, 2), mode="reflect")
    torch.testing.assert_close(model(x), model(padded)[..., :30, :44])


def test_config_round_trip_and_architecture():
    cfg = UNetConfig(width=16, depth=3, heads=4)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    model = ResUNet(cfg)
    assert model.stem[0].out_channels == 16
    assert len(model.down) == 3 and all(len(s) == 2 for s in model.down)
    assert model.bottleneck[-1].heads == 4
    assert model.head.out_channels == 5
    no_attn = ResUNet(UNetConfig(width=16, attention=False))
    assert len(no_attn.bottleneck) == 2


def test_attention_mixes_all_positions():
    # a change at one corner must reach the opposite corner through the bottleneck attention
    torch.manual_seed(0)
    model = build_model(UNetConfig(width=8, heads=2)).eval()
    x = torch.randn(1, 1, 128, 128)
    y = x.clone()
    y[..., :8, :8] += 5
    d = (model(x) - model(y))[..., -8:, -8:].abs().max()
    assert d > 0
    local = build_model(UNetConfig(width=8, heads=2, attention=False)).eval()
    assert (local(x) - local(y))[..., -8:, -8:].abs().max() == 0


@pytest.mark.parametrize("size", [(64, 64), (37, 50)])
def test_deep_supervision_outputs(size):
    # the main head is the plain forward's; the auxiliary heads sit at 1/2, 1/4 of the input
    torch.manual_seed(0)
    model = build_model(UNetConfig(width=8, heads=2, deep_supr_num=2)).eval()
    x = torch.randn(2, 1, *size)
    outs = model(x, deep_supervision=True)
    assert [o.shape[-2:] for o in outs] == [size, *[
        (-(-size[0] // s), -(-size[1] // s)) for s in (2, 4)]]
    torch.testing.assert_close(outs[0], model(x))
    assert not torch.equal(outs[1][..., :8, :8], outs[2][..., :8, :8])
    plain = build_model(UNetConfig(width=8, heads=2)).eval()
    assert len(plain.aux_heads) == 0 and len(plain(x, deep_supervision=True)) == 1
