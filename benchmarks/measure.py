"""Measuring tools shared by the benchmark workers: peak memory, a timed call, a matmul peak, step FLOPs.

Memory is the peak *above a baseline* taken before any model or data exists:
- CPU (Linux): the kernel's peak resident set (``VmHWM``), reset by writing ``5`` to ``/proc/self/clear_refs``
  before each measured region, minus the resident set at the baseline. Where the reset is not allowed the
  lifetime peak (``ru_maxrss``) is used instead and the method says so.
- CUDA: ``torch.cuda.max_memory_allocated`` (reset before each region) minus the allocation at the baseline.

A resident set also counts memory the C allocator keeps after a tensor is freed. glibc serves blocks below a
threshold that it raises on the fly (up to 32 MB) from its heap and keeps some of them, so the same step peaked
anywhere in 3250-3500 MB across runs. Memory workers call :func:`return_freed_memory_promptly` first (both
sides of a comparison alike): every block of 1 MiB or more is then mapped on its own and returned when freed,
and the peak follows the tensors alive at once (two rounds then agree within 1%). Timed workers keep the
default allocator; mapping each block costs page faults (about 15% slower steps).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys
import time
from collections.abc import Callable
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

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated"
        elif _STATUS.exists() and self._can_reset_rss():
            self.method = "VmHWM after /proc/self/clear_refs"
        else:
            self.method = "ru_maxrss (lifetime peak, cannot be reset here)"
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


def timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    """(fn(), wall seconds), synchronising the device before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, *, size: int | None = None, reps: int = 5) -> float:
    """Best achieved TFLOP/s of a square matmul on this device and dtype (same threads as the benchmark)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)  # [n, n]
    b = torch.randn(size, size, generator=generator).to(device, dtype)  # [n, n]
    a @ b  # warm-up
    best = min(timed(lambda: a @ b, device)[1] for _ in range(reps))
    return 2 * size**3 / best / 1e12


def train_step_flops(
    num_params: int, sequence_lengths: list[int], num_layers: int, hidden_size: int, *, reference_forwards: int = 0
) -> float:
    """Model FLOPs of one training step (PaLM appendix B convention, useful tokens only).

    Forward + backward of the policy: ``6 N`` per token plus attention ``12 L d T`` per token of a length-T
    sequence; each no-grad reference forward adds a third of that. ``N`` counts a tied embedding once: it is
    the LM head's matmul (the embedding lookup itself is free).
    """
    tokens = sum(sequence_lengths)
    attention = 12 * num_layers * hidden_size * sum(length**2 for length in sequence_lengths)
    policy = 6 * num_params * tokens + attention
    return policy * (1 + reference_forwards / 3)


def work(argv: list[str]) -> dict:
    """Worker entry: ``--device cpu --dtype fp32 [--threads 1]`` -> the matmul peak in TFLOP/s."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.measure", description="matmul peak")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    return {"tflops": matmul_peak_tflops(torch.device(args.device), dtype)}


if __name__ == "__main__":
    import json

    print("BENCH_RESULT " + json.dumps(work(sys.argv[1:])))
