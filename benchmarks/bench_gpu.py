"""The prepared GPU benchmark (``make bench-gpu``): one JSON file saying what it measured, on one GPU, offline.

Two parts, both on stand-in weights of SmolLM2-135M's shape (``simplepo_helpers/world/standins.py``; nothing is
downloaded, the weights are random, which does not change a step's cost):

1. **Notebook 03's gpu profile for a few steps**: ``load_profile("gpu", standins="smollm2")`` (the gpu
   profile's loaders, device and precision policy: bf16 autocast on compute capability >= 8) and ``train()``
   with the profile's settings (4 pairs x 4 accumulation steps); the stand-in pairs are short, so this part
   checks that the learner's path runs on the GPU, it is not a throughput figure. Without ``datasets`` the
   same stand-in rows are built directly (``ultrafeedback_to_preference``) and the JSON says so.
2. **The benchmark's SmolLM2-shaped rows in bf16** (``bench_step.run_rows``, the CPU benchmark's own row code):
   ``smollm2`` (2 pairs of 24-40 + 128-160 tokens), and UltraFeedback-like lengths at full length (medians
   121 / 288 tokens, cut at 512 / 1024) with 2 and 8 pairs per step (``uf2_full``, ``uf8_full``). Kit rows
   always; TRL rows only where ``trl`` and ``datasets`` import (otherwise listed under ``skipped`` with the
   reason). Per row: pairs/s, median step seconds, peak GPU memory (``torch.cuda.max_memory_allocated``)
   and MFU = model FLOPs of the unpadded, unshared layout (``measure.train_step_flops``) / step time /
   the datasheet's dense bf16 peak of the detected GPU (``DATASHEET_BF16_TFLOPS``; H100 SXM 989 TFLOP/s).
   A measured bf16 matmul peak is recorded beside it.

Runs with the machine's own torch and transformers (no ``make venv``): ``PYTHONPATH=. python -m
benchmarks.bench_gpu --out build/bench_gpu.json``. ``--smoke`` runs the same code on a tiny shape on any
device (CPU included) in seconds; ``tests/test_bench_gpu.py`` runs it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

# dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s; matched on the device name
DATASHEET_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("GH200", 989.0),
    ("A100", 312.0),
    ("A10G", 125.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("T4", 65.0),  # fp16: a T4 has no bf16 tensor cores
)
SHAPES_GPU = ("smollm2", "uf2_full", "uf8_full")
KIT_ROWS = ("kit_simpo", "kit_dpo", "kit_dpo_precomputed_ref")
TRL_ROWS = ("trl_cpo_simpo", "trl_dpo", "trl_dpo_precomputed_ref")
COMPARISONS = [
    ["kit_simpo", "trl_cpo_simpo"],
    ["kit_dpo", "trl_dpo"],
    ["kit_dpo_precomputed_ref", "trl_dpo_precomputed_ref"],
]


def datasheet_peak(device_name: str) -> tuple[float | None, str]:
    """(dense bf16 TFLOP/s, which entry matched) for a CUDA device name; (None, why) when unknown."""
    for key, tflops in DATASHEET_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops, f"datasheet dense bf16, {key}"
    return None, f"no datasheet entry for {device_name!r}: MFU not computed"


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "trl", "datasets", "accelerate"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # missing or broken: recorded as absent
            versions[name] = None
    return versions


def trl_problem() -> str | None:
    """None when the TRL rows can run here, else why not."""
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
        import trl.experimental.cpo  # noqa: F401
    except Exception as error:
        return f"TRL rows skipped: {type(error).__name__}: {error}"
    return None


def notebook03(kind: str, policy: Any, steps: int, smoke: bool) -> dict[str, Any]:
    """Notebook 03's gpu profile on stand-ins for ``steps`` optimizer steps: the load, then ``train()``."""
    from simplepo_helpers import TrainConfig, train
    from simplepo_helpers.lessons.profiles import PROFILE_DEFAULTS, STANDIN_HUB
    from simplepo_helpers.training import LossConfig

    started = time.perf_counter()
    defaults = dict(PROFILE_DEFAULTS["gpu"])
    try:
        import datasets  # noqa: F401

        from simplepo_helpers.lessons.profiles import load_standin_profile

        setup = load_standin_profile(kind, device_policy=policy, reason="bench_gpu")
        model, tokenizer, rows = setup.model, setup.tokenizer, setup.train_rows
        limits = {"max_length": setup.max_length, "max_prompt_length": setup.max_prompt_length}
        how = "load_profile('gpu') on stand-ins (the gpu profile's loaders)"
    except ImportError as error:  # no datasets here: the same stand-in rows, built directly
        from simplepo_helpers.scale.hub import load_hub_model, ultrafeedback_to_preference
        from simplepo_helpers.world.standins import N_ROWS, ensure_standins, ultrafeedback_rows

        paths = ensure_standins(kind)
        model, tokenizer = load_hub_model(str(paths.model), policy)
        rows = [
            ultrafeedback_to_preference(r, i)
            for i, r in enumerate(ultrafeedback_rows("train", N_ROWS["train"]))
        ]
        limits = {k: STANDIN_HUB[k] for k in ("max_length", "max_prompt_length")}
        how = f"stand-in rows built directly ({type(error).__name__}: {error})"
    if smoke:
        defaults.update(batch_size=2, grad_accum_steps=1)
    loaded = time.perf_counter() - started
    config = TrainConfig(
        loss=LossConfig("simpo", beta=defaults["beta"], gamma=defaults["gamma"]),
        learning_rate=defaults["learning_rate"],
        max_steps=steps,
        batch_size=defaults["batch_size"],
        grad_accum_steps=defaults["grad_accum_steps"],
        warmup_ratio=defaults["warmup_ratio"],
        **limits,
    )
    result = train(model, tokenizer, rows, config, device_policy=policy, progress=False)
    return {
        "how": how,
        "policy": policy.describe(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "pairs_per_step": config.batch_size * config.grad_accum_steps,
        "load_seconds": round(loaded, 2),
        "train_seconds": round(time.perf_counter() - started - loaded, 2),
        "losses": [round(float(row["loss"]), 5) for row in result.history],
    }


def gpu_workload(shape: str, smoke: bool):
    """The rows' workload: SmolLM2-135M's shape (a micro one for ``--smoke``) and the shape's lengths."""
    from transformers import LlamaConfig

    from .workloads import SMOLLM2_135M, DataSize, synthetic_workload

    lengths = {
        "smollm2": DataSize(2, 4),
        "uf2_full": DataSize(
            2, 4, prompt_tokens=(4, 512), response_tokens=(4, 1024), lengths="ultrafeedback"
        ),
        "uf8_full": DataSize(
            8, 4, prompt_tokens=(4, 512), response_tokens=(4, 1024), lengths="ultrafeedback"
        ),
    }[shape]
    config = dict(SMOLLM2_135M)
    if smoke:  # SmolLM2's pattern (tied, 3 query heads per KV head), tiny, short
        config.update(vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2)  # fmt: skip
        lengths = DataSize(lengths.pairs_per_step, 3, prompt_tokens=(3, 12), response_tokens=(2, 16))
    model_config = LlamaConfig(**config, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return synthetic_workload(shape, model_config, lengths, seed=0)


def summarise(shape: str, name: str, record: dict, peak_tflops: float | None) -> dict[str, Any]:
    seconds = record["step_seconds"]
    median = statistics.median(seconds)
    flops = statistics.median(f / s for f, s in zip(record["flops"], seconds, strict=True))
    return {
        "shape": shape,
        "row": name,
        "layout": record.get("layout"),
        "timed_steps": len(seconds),
        "pairs_per_step": record["pairs"][0],
        "median_step_s": round(median, 5),
        "pairs_per_s": round(
            statistics.median(p / s for p, s in zip(record["pairs"], seconds, strict=True)), 3
        ),
        "peak_mem_mb": round(max(record["peak_mem_mb"]), 1),
        "model_tflops_per_s": round(flops / 1e12, 4),
        "mfu": None if peak_tflops is None else round(flops / 1e12 / peak_tflops, 5),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_gpu", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="build/bench_gpu.json")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--smoke", action="store_true", help="a tiny shape, few steps: checks the script")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES_GPU, default=list(SHAPES_GPU))
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed steps per row, rounded up to whole passes over the batches (default 6; smoke 2)",
    )
    parser.add_argument("--notebook-steps", type=int, default=None, help="default 5; smoke 2")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rounds = args.rounds or (2 if args.smoke else 6)
    from simplepo_helpers.runtime.device import select_device

    from .bench_step import Settings, run_rows
    from .measure import PeakMemory, matmul_peak_tflops

    policy = select_device(device.type)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    peak, peak_source = datasheet_peak(name) if cuda else (None, "CPU: no datasheet peak; MFU not computed")
    dtype = "fp32" if args.smoke and not cuda else "bf16"  # bf16 autocast, float32 weights, on every row
    report: dict[str, Any] = {
        "smoke": args.smoke,
        "device": str(device),
        "device_name": name,
        "policy": policy.describe(),
        "dtype": dtype,
        "versions": _versions(),
        "datasheet_peak_tflops": peak,
        "peak_source": peak_source,
        "matmul_peak_tflops": round(
            matmul_peak_tflops(
                device, torch.bfloat16 if dtype == "bf16" else torch.float32, size=256 if args.smoke else None
            ),
            3,
        ),
        "notebook03": None,
        "rows": [],
        "skipped": [],
        "errors": [],
    }
    kind = "tiny" if args.smoke else "smollm2"
    try:
        report["notebook03"] = notebook03(
            kind, policy, args.notebook_steps or (2 if args.smoke else 5), args.smoke
        )
    except Exception as error:  # recorded, and the rows still run
        report["errors"].append({"part": "notebook03", "error": f"{type(error).__name__}: {error}",
                                 "traceback": traceback.format_exc()[-4000:]})  # fmt: skip
    problem = trl_problem()
    rows = list(KIT_ROWS) + ([] if problem else list(TRL_ROWS))
    if problem:
        report["skipped"] += [{"row": row, "reason": problem} for row in TRL_ROWS]
    settings = Settings(device=str(device), dtype=dtype, threads=torch.get_num_threads(), total_steps=100)
    for shape in args.shapes:
        workload = gpu_workload(shape, args.smoke)
        names = rows if shape != "uf8_full" else [r for r in rows if "simpo" in r]  # 8 pairs: SimPO's target
        for group in COMPARISONS:
            group = [r for r in group if r in names]
            if not group:
                continue
            try:
                # a run_rows round steps through every batch of the workload: about `rounds` steps per row
                passes = -(-rounds // len(workload.batches))
                result = run_rows(
                    group, workload, settings, warmup=2, rounds=passes, memory=PeakMemory(device)
                )
            except Exception as error:
                report["errors"].append({"part": f"{shape}/{'+'.join(group)}", "error": f"{type(error).__name__}: {error}",
                                         "traceback": traceback.format_exc()[-4000:]})  # fmt: skip
                continue
            for row_name in group:
                report["rows"].append(summarise(shape, row_name, result["rows"][row_name], peak))
    by_key = {(r["shape"], r["row"]): r for r in report["rows"]}
    report["kit_vs_trl_pairs_per_s"] = {
        f"{shape}/{kit}": round(by_key[(shape, kit)]["pairs_per_s"] / by_key[(shape, trl)]["pairs_per_s"], 3)
        for (shape, kit), row in by_key.items()
        for trl in [dict(zip(KIT_ROWS, TRL_ROWS, strict=True)).get(kit)]
        if trl and (shape, trl) in by_key
    }
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    for row in report["rows"]:
        mfu = "-" if row["mfu"] is None else f"{row['mfu']:.1%}"
        print(
            f"{row['shape']:>9} {row['row']:<24} {row['pairs_per_s']:8.2f} pairs/s  {row['peak_mem_mb']:9.1f} MB  MFU {mfu}"
        )
    for skipped in report["skipped"]:
        print(f"skipped {skipped['row']}: {skipped['reason']}")
    for error in report["errors"]:
        print(f"ERROR in {error['part']}: {error['error']}")
    print(f"wrote {out} ({report['wall_seconds']} s)")
    return report


if __name__ == "__main__":
    main()
