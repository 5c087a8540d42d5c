"""Device and precision policy: CUDA, else a numerically sane MPS, else CPU; printed once per process.

Precision rules (parameters always stay float32, autocast does the low-precision compute):
- CUDA with compute capability >= 8 (A100, L4, H100, RTX 30xx+): bfloat16 autocast, no loss scaling.
- older CUDA GPUs (T4 is 7.5): float16 autocast + ``torch.amp.GradScaler``. ``torch.cuda.is_bf16_supported()``
  answers True on a T4, but there bf16 is emulated (slow), so the capability decides, not that call.
- MPS and CPU: float32, no autocast.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

_announced = False  # set after the first verbose select_device(): the policy is printed once per process
_BF16_MIN_CAPABILITY = 8


@dataclass(frozen=True)
class DevicePolicy:
    """Where to train and in which precision, with the reason for the choice."""

    device: torch.device
    param_dtype: torch.dtype
    autocast_dtype: torch.dtype | None
    use_grad_scaler: bool
    reason: str

    def describe(self) -> str:
        autocast = "off" if self.autocast_dtype is None else str(self.autocast_dtype).removeprefix("torch.")
        scaler = " + GradScaler" if self.use_grad_scaler else ""
        params = str(self.param_dtype).removeprefix("torch.")
        return f"device {self.device} | params {params} | autocast {autocast}{scaler} | {self.reason}"

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` for this policy, or a no-op context when autocast is off."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def make_grad_scaler(self) -> torch.amp.GradScaler | None:
        """A fresh GradScaler when this policy needs one (fp16), else None."""
        return torch.amp.GradScaler(self.device.type) if self.use_grad_scaler else None


def mps_matches_cpu(
    device: str | torch.device = "mps", *, rtol: float = 1e-4, atol: float = 1e-3
) -> tuple[bool, str]:
    """Run a small matmul + log_softmax on ``device`` and compare it with the CPU result."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(64, 64, generator=generator)
    b = torch.randn(64, 64, generator=generator)
    expected = torch.log_softmax(a @ b, dim=-1)  # [64, 64]
    try:
        got = torch.log_softmax(a.to(device) @ b.to(device), dim=-1).cpu()
    except Exception as exc:  # a broken backend may raise anything
        return False, f"the numeric check failed to run on {device}: {exc}"
    max_diff = (got - expected).abs().max().item()
    ok = torch.isfinite(got).all().item() and torch.allclose(got, expected, rtol=rtol, atol=atol)
    return bool(ok), f"max |{device} - cpu| = {max_diff:.1e} on a matmul + log_softmax check"


def _cuda_policy(device: torch.device) -> DevicePolicy:
    index = device.index if device.index is not None else torch.cuda.current_device()
    device = torch.device("cuda", index)
    major, minor = torch.cuda.get_device_capability(index)
    name = torch.cuda.get_device_name(index)
    if major >= _BF16_MIN_CAPABILITY:
        reason = f"CUDA {name} (compute capability {major}.{minor} >= 8: native bf16)"
        return DevicePolicy(device, torch.float32, torch.bfloat16, False, reason)
    reason = (
        f"CUDA {name} (compute capability {major}.{minor} < 8: bf16 would be emulated, "
        "so fp16 autocast with a GradScaler)"
    )
    return DevicePolicy(device, torch.float32, torch.float16, True, reason)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _cpu_policy(reason: str) -> DevicePolicy:
    return DevicePolicy(torch.device("cpu"), torch.float32, None, False, reason)


def _choose(prefer: str | torch.device | None) -> DevicePolicy:
    if prefer is not None:
        requested = torch.device(prefer)
        if requested.type == "cpu":
            return _cpu_policy("CPU requested (float32)")
        if requested.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(f"prefer={str(prefer)!r} but torch.cuda.is_available() is False")
            return _cuda_policy(requested)
        if requested.type == "mps":
            if not _mps_available():
                raise RuntimeError(f"prefer={str(prefer)!r} but torch.backends.mps.is_available() is False")
            ok, detail = mps_matches_cpu(requested)
            if not ok:
                raise RuntimeError(f"prefer={str(prefer)!r} but MPS disagrees with the CPU: {detail}")
            return DevicePolicy(requested, torch.float32, None, False, f"MPS requested, float32 ({detail})")
        raise ValueError(
            f"prefer must be None, 'cuda', 'mps' or 'cpu' (optionally with an index), got {prefer!r}"
        )
    if torch.cuda.is_available():
        return _cuda_policy(torch.device("cuda"))
    if _mps_available():
        ok, detail = mps_matches_cpu("mps")
        if ok:
            return DevicePolicy(
                torch.device("mps"), torch.float32, None, False, f"Apple MPS, float32 ({detail})"
            )
        return _cpu_policy(f"no CUDA; MPS found but rejected ({detail}); CPU float32")
    return _cpu_policy("no CUDA or MPS device found; CPU float32")


def select_device(prefer: str | torch.device | None = None, *, verbose: bool = True) -> DevicePolicy:
    """Pick the training device and precision (see the module docstring); print it once per process.

    ``prefer`` forces a device type ("cuda", "cuda:1", "mps", "cpu"); an unavailable choice raises.
    """
    global _announced
    policy = _choose(prefer)
    if verbose and not _announced:
        print(f"[simplepo] {policy.describe()}")
        _announced = True
    return policy
