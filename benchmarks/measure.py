"""Measuring tools shared by the benchmark workers: a timed call, a matmul peak, step FLOPs.

Peak memory comes from the kit's own meter, ``simplepo_helpers.runtime.memory`` (re-exported here), the same one
that measures the step cost in notebook 04; its docstring explains the method and the glibc threshold fix.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch

from simplepo_helpers.runtime.memory import MB, PeakMemory, return_freed_memory_promptly

__all__ = [
    "MB",
    "PeakMemory",
    "return_freed_memory_promptly",
    "timed",
    "matmul_peak_tflops",
    "train_step_flops",
    "step_flops",
    "split_parameters",
]


def timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    """(fn(), wall seconds), synchronising the device before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}  # the square matmul whose best rate is the measured peak


def matmul_peak_tflops(
    device: torch.device, dtype: torch.dtype, *, size: int | None = None, reps: int = 5
) -> float:
    """Best achieved TFLOP/s of a square matmul on this device and dtype (same threads as the benchmark)."""
    size = size or MATMUL_SIZE["cuda" if device.type == "cuda" else "cpu"]
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)  # [n, n]
    b = torch.randn(size, size, generator=generator).to(device, dtype)  # [n, n]
    a @ b  # warm-up
    best = min(timed(lambda: a @ b, device)[1] for _ in range(reps))
    return 2 * size**3 / best / 1e12


def split_parameters(num_params: int, vocab_size: int, hidden_size: int, *, tied: bool) -> tuple[int, int]:
    """(body parameters, LM-head parameters) of a causal LM with ``num_params`` parameters (a tied embedding
    counted once). The embedding lookup costs no FLOPs: an untied input embedding is in neither part."""
    head = vocab_size * hidden_size
    return num_params - head - (0 if tied else head), head


def step_flops(
    body_params: int,
    head_params: int,
    num_layers: int,
    hidden_size: int,
    *,
    body_positions: int,
    head_positions: int,
    attention_products: int,
    reference_forwards: int = 0,
) -> float:
    """FLOPs of one training step as laid out (PaLM appendix B convention, ``shared/reference/performance-notes.md``).

    Forward + backward of the policy: ``6 N_body`` per position through the transformer, ``6 d V`` per position
    through the LM head, and attention ``12 L d`` per query-key product (``attention_products`` = the sum over
    attention calls of queries x keys, counted as the full rectangle even where a causal kernel skips the
    upper triangle); each no-grad reference forward adds a third of that.
    """
    policy = (
        6 * body_params * body_positions
        + 6 * head_params * head_positions
        + 12 * num_layers * hidden_size * attention_products
    )
    return policy * (1 + reference_forwards / 3)


def train_step_flops(
    num_params: int,
    sequence_lengths: list[int],
    num_layers: int,
    hidden_size: int,
    *,
    reference_forwards: int = 0,
) -> float:
    """Model FLOPs of one training step on the unpadded, unshared layout (every prompt counted with each of its
    responses, no padding, the LM head at every position): the same figure for every row of a comparison.

    ``6 N`` per token plus attention ``12 L d T`` per token of a length-T sequence; each no-grad reference
    forward adds a third of that. ``N`` counts a tied embedding once: it is the LM head's matmul (the embedding
    lookup itself is free).
    """
    return step_flops(
        num_params,
        0,
        num_layers,
        hidden_size,
        body_positions=sum(sequence_lengths),
        head_positions=0,
        attention_products=sum(length**2 for length in sequence_lengths),
        reference_forwards=reference_forwards,
    )


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
    return {
        "tflops": matmul_peak_tflops(torch.device(args.device), dtype),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "matrix_size": MATMUL_SIZE["cuda" if args.device.startswith("cuda") else "cpu"],
    }


if __name__ == "__main__":
    import json

    print("BENCH_RESULT " + json.dumps(work(sys.argv[1:])))
