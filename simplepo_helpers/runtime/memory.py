"""Peak memory of a region of code: one meter for the benchmark, the notebooks' step cost and the tests.

Memory is the peak *above a baseline*:
- CPU (Linux): the kernel's peak resident set (``VmHWM``), reset by writing ``5`` to ``/proc/self/clear_refs``
  before each measured region, minus the resident set at the baseline. Where the reset is not allowed the
  lifetime peak (``ru_maxrss``) is used instead and ``method`` says so.
- CUDA: ``torch.cuda.max_memory_allocated`` (reset before each region) minus the allocation at the baseline.

A resident set also counts memory the C allocator keeps after a tensor is freed. glibc serves blocks below a
threshold that it raises on the fly (up to 32 MB) from its heap and keeps some of them, so the same step peaked
anywhere in 3250-3500 MB across runs. :func:`return_freed_memory_promptly` maps every block of 1 MiB or more on
its own and returns it when freed, so the peak follows the tensors alive at once (two rounds then agree within
1%); it costs page faults (about 15% slower steps), so timed code keeps the default allocator.

Two ways to use it: ``meter = PeakMemory(device)`` takes the baseline now, then ``meter.reset()`` /
``meter.peak_mb()`` around each region; or ``with PeakMemory(device) as peak: ...`` measures the block above
the level at entry (``peak.peak_bytes`` afterwards).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
MB = 2**20
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 2**20


def return_freed_memory_promptly() -> bool:
    """Fix glibc's mmap threshold at 1 MiB (see the module docstring); False where libc is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in {_STATUS}")


def _maxrss_bytes() -> int:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # Linux reports KiB, macOS bytes


class PeakMemory:
    """Peak memory of a region above the baseline taken at construction (see the module docstring)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated"
        elif _STATUS.exists() and self._can_reset_rss():
            self.method = "VmHWM after /proc/self/clear_refs"
        else:
            self.method = "ru_maxrss (lifetime peak, cannot be reset here)"
        self.peak_bytes: int | None = None
        gc.collect()
        self.baseline_mb = self.current_mb()

    @staticmethod
    def _can_reset_rss() -> bool:
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            return False
        return True

    def current_mb(self) -> float:
        """Memory in use now (resident set, or CUDA allocation)."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / MB
        if _STATUS.exists():
            return _status_kb("VmRSS") / 1024
        return _maxrss_bytes() / MB

    def reset(self) -> None:
        """Start a new region: the next ``peak_mb`` covers only what happens from here on."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.method.startswith("VmHWM"):
            _CLEAR_REFS.write_text("5")

    def peak_mb(self) -> float:
        """Peak of the current region above the baseline."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / MB
        elif self.method.startswith("VmHWM"):
            peak = _status_kb("VmHWM") / 1024
        else:
            peak = _maxrss_bytes() / MB
        return peak - self.baseline_mb

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self.baseline_mb = self.current_mb()
        self.reset()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.peak_bytes = max(0, round(self.peak_mb() * MB))


def parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the model's parameters."""
    return sum(p.numel() * p.element_size() for p in model.parameters())
