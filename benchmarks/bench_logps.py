"""Peak memory of the fast path's chunked log-probs (``fast.chunked_token_logps``) against a naive full
``log_softmax`` at a large vocabulary.

Each variant runs in its own process (``python -m benchmarks.bench_logps --variant kit_train``): the logits
``[rows, T, V]`` and labels are allocated first, then the peak memory *above them* is measured while the
variant runs. ``*_train`` variants also run the backward pass, so their peak includes the logits' gradient
(one more logits-sized tensor that any method needs).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from .measure import MB, PeakMemory, return_freed_memory_promptly

VARIANTS = ("naive_forward", "kit_forward", "naive_train", "kit_train")


def naive_sequence_logps(logits: torch.Tensor, labels: torch.Tensor, *, average: bool) -> torch.Tensor:
    """The textbook version: a full log_softmax copy of the logits, then gather. [B, T, V], [B, T] -> [B]."""
    logps = torch.log_softmax(logits.float(), dim=-1)[:, :-1]  # [B, T-1, V]
    targets = labels[:, 1:]  # [B, T-1]
    mask = targets != -100  # [B, T-1]
    picked = logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask  # [B, T-1]
    return picked.sum(-1) / mask.sum(-1) if average else picked.sum(-1)


def make_inputs(rows: int, length: int, vocab: int, prompt: int, device, dtype, *, seed: int = 0):
    """Random logits [rows, length, vocab] and labels with ``prompt`` ignored positions at the front."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, length, vocab, generator=generator).to(device, dtype)  # [R, T, V]
    labels = torch.randint(0, vocab, (rows, length), generator=generator).to(device)  # [R, T]
    labels[:, :prompt] = -100
    return logits, labels


def run_variant(variant: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    from simplepo_helpers.fast import chunked_token_logps

    train = variant.endswith("_train")
    logits = logits.requires_grad_(train)
    with torch.set_grad_enabled(train):
        if variant.startswith("naive"):
            logps = naive_sequence_logps(logits, labels, average=True)
        else:
            per_token, mask = chunked_token_logps(logits, labels)  # default chunks
            logps = per_token.sum(-1) / mask.sum(-1)
        if train:
            logps.sum().backward()
    return logps.detach()


def work(argv: list[str]) -> dict:
    """Parse a worker's arguments, run one variant and return its peak memory."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_logps", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import simplepo_helpers.fast  # noqa: F401  (imported before the baseline)

    prompt_release = return_freed_memory_promptly()  # the peak follows the live tensors (see measure.py)

    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), torch.bfloat16 if args.dtype == "bf16" else torch.float32
    logits, labels = make_inputs(args.rows, args.length, args.vocab, args.prompt, device, dtype)
    memory = PeakMemory(device)  # baseline: the logits and labels already exist
    memory.reset()
    logps = run_variant(args.variant, logits, labels)
    peak = memory.peak_mb()
    reference = naive_sequence_logps(logits.detach(), labels, average=True)
    return {
        "variant": args.variant,
        "peak_mem_mb": peak,
        "logits_mb": logits.numel() * logits.element_size() / MB,
        "shape": [args.rows, args.length, args.vocab],
        "dtype": args.dtype,
        "mem_method": memory.method,
        "malloc_mmap_threshold_fixed": prompt_release,
        "max_abs_diff_vs_naive": float((logps.float() - reference.float()).abs().max()),
    }


def main(argv: list[str] | None = None) -> None:
    print("BENCH_RESULT " + json.dumps(work(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
