"""Device policy: each branch with a monkeypatched torch.cuda / MPS backend (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from simplepo_helpers.runtime import device as device_module
from simplepo_helpers.runtime.device import DevicePolicy, select_device


def fake_cuda(monkeypatch, capability, name="Fake GPU", bf16_supported=True):
    queried = []

    def get_capability(index=None):
        queried.append(index)
        return capability

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", get_capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    # a T4 answers True here although its bf16 is emulated: the policy must not ask this
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    return queried


def no_accelerator(monkeypatch, mps=False):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.fixture(autouse=True)
def quiet_announcement(monkeypatch):
    monkeypatch.setattr(device_module, "_announced", True)


def test_cpu_when_no_accelerator(monkeypatch):
    no_accelerator(monkeypatch)
    policy = select_device()
    assert policy.device == torch.device("cpu")
    assert (policy.param_dtype, policy.autocast_dtype, policy.use_grad_scaler) == (torch.float32, None, False)
    assert policy.make_grad_scaler() is None
    assert "CPU" in policy.reason


@pytest.mark.parametrize("capability", [(8, 0), (9, 0), (12, 0)])
def test_ampere_and_newer_get_bf16_autocast(monkeypatch, capability):
    fake_cuda(monkeypatch, capability, name="NVIDIA A100")
    policy = select_device()
    assert policy.device == torch.device("cuda", 0)
    assert (policy.param_dtype, policy.autocast_dtype, policy.use_grad_scaler) == (
        torch.float32,
        torch.bfloat16,
        False,
    )
    assert "NVIDIA A100" in policy.reason and f"{capability[0]}.{capability[1]}" in policy.reason


@pytest.mark.parametrize("capability", [(7, 5), (7, 0), (6, 0)])
def test_older_gpus_get_fp16_and_a_grad_scaler_even_if_bf16_is_claimed(monkeypatch, capability):
    fake_cuda(monkeypatch, capability, name="Tesla T4", bf16_supported=True)
    policy = select_device()
    assert (policy.autocast_dtype, policy.use_grad_scaler) == (torch.float16, True)
    assert policy.param_dtype == torch.float32  # GradScaler cannot unscale fp16 gradients
    assert "Tesla T4" in policy.reason and "fp16" in policy.reason
    assert "GradScaler" in policy.describe() and "float16" in policy.describe()


def test_prefer_cuda_index_queries_that_gpu(monkeypatch):
    queried = fake_cuda(monkeypatch, (8, 6))
    assert select_device("cuda:1").device == torch.device("cuda", 1)
    assert queried == [1]


def test_prefer_cpu_wins_over_cuda(monkeypatch):
    fake_cuda(monkeypatch, (8, 0))
    assert select_device("cpu").device == torch.device("cpu")


@pytest.mark.parametrize("prefer", ["cuda", "mps"])
def test_unavailable_preference_raises(monkeypatch, prefer):
    no_accelerator(monkeypatch)
    with pytest.raises(RuntimeError, match=f"prefer='{prefer}'.*is False"):
        select_device(prefer)


def test_unknown_preference_raises(monkeypatch):
    no_accelerator(monkeypatch)
    with pytest.raises(ValueError, match="prefer must be"):
        select_device("meta")


def test_mps_used_only_when_its_numeric_check_passes(monkeypatch):
    no_accelerator(monkeypatch, mps=True)
    monkeypatch.setattr(device_module, "mps_matches_cpu", lambda device="mps": (True, "max diff 1e-7"))
    policy = select_device()
    assert policy.device == torch.device("mps")
    assert (policy.autocast_dtype, policy.use_grad_scaler) == (None, False)

    monkeypatch.setattr(device_module, "mps_matches_cpu", lambda device="mps": (False, "max diff 3e+00"))
    policy = select_device()
    assert policy.device == torch.device("cpu")
    assert "MPS found but rejected" in policy.reason and "3e+00" in policy.reason
    with pytest.raises(RuntimeError, match="MPS disagrees with the CPU"):
        select_device("mps")


def test_cuda_is_preferred_over_mps(monkeypatch):
    fake_cuda(monkeypatch, (8, 0))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device().device.type == "cuda"


def test_numeric_check_passes_on_cpu_and_fails_on_mismatch_or_error(monkeypatch):
    ok, detail = device_module.mps_matches_cpu("cpu")
    assert ok and "max |cpu - cpu| = 0.0e+00" in detail
    with monkeypatch.context() as patch:  # a device whose results come back off by 0.01
        patch.setattr(torch.Tensor, "cpu", lambda self: self + 0.01)
        ok, detail = device_module.mps_matches_cpu("cpu")
    assert not ok and "1.0e-02" in detail
    ok, detail = device_module.mps_matches_cpu("meta")  # results cannot be read back: counts as failure
    assert not ok and "failed to run" in detail


def test_policy_is_printed_once_per_process(monkeypatch, capsys):
    no_accelerator(monkeypatch)
    monkeypatch.setattr(device_module, "_announced", False)
    select_device(verbose=False)
    assert capsys.readouterr().out == ""
    select_device()
    select_device()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "device cpu" in lines[0] and "no CUDA or MPS" in lines[0]


def test_autocast_context_follows_the_policy():
    weight = torch.randn(4, 4)
    cpu = DevicePolicy(torch.device("cpu"), torch.float32, None, False, "test")
    with cpu.autocast():
        assert (weight @ weight).dtype == torch.float32
    bf16 = DevicePolicy(torch.device("cpu"), torch.float32, torch.bfloat16, False, "test")
    with bf16.autocast():
        assert (weight @ weight).dtype == torch.bfloat16
    fp16 = DevicePolicy(torch.device("cpu"), torch.float32, torch.float16, True, "test")
    assert isinstance(fp16.make_grad_scaler(), torch.amp.GradScaler)
