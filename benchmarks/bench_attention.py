"""The packed row's two attention paths on one device: per segment (2 causal SDPA calls per pair per layer)
against one masked SDPA per layer (``simplepo_helpers/fast/attention.py``).

``python -m benchmarks.bench_attention --threads 1 --repeats 7`` prints one JSON line per case, each with the
median seconds of both paths and their ratio (masked / per segment: above 1, the masked call is slower).
The two paths alternate within one process, so a busy shared CPU slows both alike. Cases:

- ``attention``: the attention call alone (forward and backward) on a packed row of random queries, keys
  and values in SmolLM2-135M's head geometry (9 query heads over 3 key-value heads, head dim 64);
- ``step``: forward and backward of a SimPO loss on the packed layout (``preference_loss``, no optimizer), for
  the tiny world model's shape and a SmolLM2-135M-like shape cut to ``--layers`` layers.

Rows come from ``benchmarks.workloads`` (uniform lengths: the ``smollm2`` shape's; UltraFeedback-like at a
quarter of the length: ``uf2`` / ``uf8``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch

from .workloads import DEFAULT_SIZES, SMOLLM2_135M, build_workload, smollm2_workload

MODES = ("segments", "masked")


def _median_seconds(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each run, the runs alternating; one untimed call of each first."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _pairs_of(rows: list[dict[str, list[int]]]) -> tuple[tuple[int, int, int, int], ...]:
    pairs, start = [], 0
    for row in rows:
        p, c, r = (len(row[key]) for key in ("prompt_ids", "chosen_ids", "rejected_ids"))
        pairs.append((start, p, c, r))
        start += p + c + r
    return tuple(pairs)


def attention_case(data: str, repeats: int) -> dict:
    from simplepo_helpers.fast.attention import PackedRowMask, masked_attention, segment_attention

    rows = smollm2_workload(DEFAULT_SIZES[data], shape=data).batch_rows(0)
    pairs = _pairs_of(rows)
    length = pairs[-1][0] + sum(pairs[-1][1:])
    heads, kv_heads, dim = SMOLLM2_135M["num_attention_heads"], SMOLLM2_135M["num_key_value_heads"], 64
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, heads, length, dim, generator=generator, requires_grad=True)
    key, value = (
        torch.randn(1, kv_heads, length, dim, generator=generator, requires_grad=True) for _ in "kv"
    )
    grad = torch.randn(1, length, heads, dim, generator=generator)
    module = torch.nn.Module()

    def segments() -> None:
        out, _ = segment_attention(module, query, key, value, None, scaling=dim**-0.5, simplepo_pairs=pairs)
        out.backward(grad)

    def masked() -> None:  # the mask built once per row, as in packed_forward (here: once per call)
        mask = PackedRowMask(pairs, length)
        out, _ = masked_attention(module, query, key, value, None, scaling=dim**-0.5, simplepo_mask=mask)
        out.backward(grad)

    seconds = _median_seconds({"segments": segments, "masked": masked}, repeats)
    return {"case": "attention", "data": data, "positions": length, "pairs": len(pairs), **_ratio(seconds)}


def step_case(shape: str, data: str, layers: int, repeats: int) -> dict:
    from simplepo_helpers.batching import PreferenceCollator
    from simplepo_helpers.training import LossConfig, preference_loss

    if shape == "world":
        workload = build_workload("world")
    else:
        workload = build_workload(data)
        workload.model_config.num_hidden_layers = layers
    model = workload.build_model().train()
    batch = PreferenceCollator(workload.tokenizer)(workload.batch_rows(0))
    config = LossConfig("simpo", beta=2.0, gamma=1.0)

    def step(mode: str) -> Callable[[], None]:
        def run() -> None:
            os.environ["SIMPLEPO_PACKED_ATTENTION"] = mode
            model.zero_grad(set_to_none=True)
            loss, _ = preference_loss(model, batch, config, layout="packed")
            loss.backward()

        return run

    seconds = _median_seconds({mode: step(mode) for mode in MODES}, repeats)
    positions = sum(len(row[key]) for row in workload.batch_rows(0) for key in row)
    return {
        "case": "step",
        "shape": shape,
        "data": data if shape != "world" else "world",
        "layers": workload.model_config.num_hidden_layers,
        "positions": positions,
        "pairs": len(workload.batch_rows(0)),
        **_ratio(seconds),
    }


def _ratio(seconds: dict[str, float]) -> dict:
    return {
        "segments_s": round(seconds["segments"], 5),
        "masked_s": round(seconds["masked"], 5),
        "masked_over_segments": round(seconds["masked"] / seconds["segments"], 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--layers", type=int, default=4, help="layers of the SmolLM2-like step shape")
    parser.add_argument("--data", default="smollm2,uf2,uf8", help="row lengths of the SmolLM2-like cases")
    parser.add_argument("--cases", default="attention,step")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    before = os.environ.get("SIMPLEPO_PACKED_ATTENTION")
    try:
        for data in args.data.split(","):
            if "attention" in args.cases:
                print(json.dumps(attention_case(data, args.repeats)), flush=True)
        if "step" in args.cases:
            print(json.dumps(step_case("world", "world", 0, args.repeats)), flush=True)
            for data in args.data.split(","):
                print(json.dumps(step_case("smollm2", data, args.layers, args.repeats)), flush=True)
    finally:
        if before is None:
            os.environ.pop("SIMPLEPO_PACKED_ATTENTION", None)
        else:
            os.environ["SIMPLEPO_PACKED_ATTENTION"] = before


if __name__ == "__main__":
    main()
