"""The device / precision policy is a fixed rule of the hardware's features."""

from __future__ import annotations

import platform

import pytest
import torch

from temseg import policy
from temseg.inference import backends

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512_bf16", "avx512_vnni"}
AMX = AVX2 | {"avx512f", "amx_bf16", "amx_int8", "amx_tile"}


@pytest.fixture
def cpu(monkeypatch):
    def set_flags(flags: frozenset[str]) -> None:
        monkeypatch.setattr(policy, "cpu_flags", lambda: flags)

    return set_flags


@pytest.mark.parametrize("flags,dtype", [(AVX2, None), (AVX512_BF16, torch.bfloat16),
                                         (AMX, torch.bfloat16)])
def test_amp_follows_the_cpu_features(cpu, flags, dtype):
    cpu(flags)
    p = policy.choose_precision(torch.device("cpu"))
    assert p.dtype is dtype
    assert p.name == ("fp32" if dtype is None else "bf16")


def test_amp_off_on_avx2_says_why(cpu):
    cpu(AVX2)
    assert "no native bf16" in policy.choose_precision(torch.device("cpu")).reason


def test_vnni_flag(cpu):
    cpu(AVX2)
    assert not policy.cpu_has_vnni()
    cpu(AVX512_BF16)
    assert policy.cpu_has_vnni()


def test_forced_and_disabled_amp(cpu):
    cpu(AVX2)
    assert policy.choose_precision(torch.device("cpu"), "bf16").dtype is torch.bfloat16
    cpu(AMX)
    assert policy.choose_precision(torch.device("cpu"), "off").dtype is None
    with pytest.raises(ValueError, match="amp must be"):
        policy.inference_precision("cpu", "fast")


def test_the_rule_does_not_time_anything(cpu, monkeypatch):
    """Same answer however slow the machine is: no clock is read."""
    import time

    def no_clock() -> float:
        raise AssertionError("the precision rule must not time anything")

    monkeypatch.setattr(time, "perf_counter", no_clock)
    monkeypatch.setattr(time, "time", no_clock)
    cpu(AVX512_BF16)
    assert policy.inference_precision("cpu", "auto").dtype is torch.bfloat16


@pytest.mark.parametrize("flags,expect", [(AVX2, "onnxruntime"), (AVX512_BF16, "torch")])
def test_default_backend_rule_without_openvino(cpu, monkeypatch, flags, expect):
    """Without OpenVINO: fp32 ONNX Runtime without bf16 units, torch-bf16 with them."""
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    cpu(flags)
    assert backends.default_backend("cpu", "auto") == expect
    assert backends.default_backend("cpu", "off") == "onnxruntime"


@pytest.mark.parametrize("flags", [AVX2, AVX512_BF16, AMX])
def test_default_backend_rule_with_openvino(cpu, monkeypatch, flags):
    """With OpenVINO: it runs every CPU (its precision: tests/test_openvino_int8.py)."""
    monkeypatch.setattr(backends, "openvino_available", lambda: True)
    cpu(flags)
    assert backends.default_backend("cpu", "auto") == "openvino"
    assert backends.default_backend("cuda", "auto") == "torch"


def test_compile_policy():
    assert policy.choose_compile(torch.device("cpu"))[0] is False
    assert policy.choose_compile(torch.device("cuda"))[0] is True
    assert policy.choose_compile(torch.device("cpu"), "on")[0] is True


def test_cpuinfo_fields_and_the_machine_record(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Fake Xeon @ 2.0GHz\nflags\t\t: fpu avx2 fma\n\n"
                    "processor\t: 1\nmodel name\t: Other\n")
    assert policy._cpuinfo("model name", info) == "Fake Xeon @ 2.0GHz"  # the first CPU's
    assert policy._cpuinfo("flags", info) == "fpu avx2 fma"
    assert policy._cpuinfo("bogomips", info) is None
    assert policy._cpuinfo("flags", tmp_path / "missing") is None
    monkeypatch.setattr(policy, "cpu_flags", lambda: AMX)
    monkeypatch.setattr(policy, "_cpuinfo", {"model name": "Fake Xeon"}.get)
    m = policy.machine()
    assert m["cpu_model"] == "Fake Xeon"
    assert m["cpu_flags"] == "amx_bf16 amx_int8 amx_tile avx2 avx512f fma"  # not sse4_2, avx
    assert m["torch_threads"] == torch.get_num_threads() and m["torch"] == torch.__version__
    monkeypatch.setattr(policy, "_cpuinfo", lambda field: None)  # no /proc/cpuinfo
    assert policy.machine()["cpu_model"] == (platform.processor() or platform.machine())
