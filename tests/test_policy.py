from __future__ import annotations

import pytest
import torch

from temseg.train import policy


def test_amp_off_on_cpus_without_bf16(monkeypatch):
    monkeypatch.setattr(policy, "cpu_has_native_bf16", lambda: False)
    p = policy.choose_precision(torch.device("cpu"))
    assert p.dtype is None and "AVX2" in p.reason


@pytest.mark.parametrize("speedup,expect", [(0.2, None), (1.0, None), (1.8, torch.bfloat16)])
def test_amp_follows_measured_bf16_speed(monkeypatch, speedup, expect):
    monkeypatch.setattr(policy, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(policy, "cpu_bf16_speedup", lambda: speedup)
    assert policy.choose_precision(torch.device("cpu")).dtype is expect


def test_forced_and_disabled_amp():
    assert policy.choose_precision(torch.device("cpu"), "bf16").dtype is torch.bfloat16
    assert policy.choose_precision(torch.device("cpu"), "off").dtype is None


def test_compile_policy():
    assert policy.choose_compile(torch.device("cpu"))[0] is False
    assert policy.choose_compile(torch.device("cuda"))[0] is True
    assert policy.choose_compile(torch.device("cpu"), "on")[0] is True


def test_bf16_speed_probe_returns_a_ratio():
    r = policy.cpu_bf16_speedup()
    assert 0.01 < r < 100
