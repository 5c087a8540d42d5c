"""``make bench``: the kit's SimPO/DPO step against TRL, side by side, then a table and ``build/bench.json``.

For each model shape (``benchmarks.workloads``), every worker is a fresh process (``benchmarks.bench_step``)
that warms up on a short batch (``workloads.WARMUP_TOKENS``) before it measures full ones:
- memory, every shape first: one process per row (warm-up, then a measured step), so each peak is that
  row's own;
- then time: one process per *timing group* (a pair of rows that are compared), warmed up, then rounds in
  which each row takes one step on the same batch, the order alternating. Ratios are taken round by round
  (steps seconds apart) and their median and spread are reported. The budget (``--budget-s``) covers the
  whole run: what the memory processes leave is shared out among the groups, and each starts no round past
  its share (one round always runs).
Also: the peak memory of ``fast.chunked_token_logps`` against a naive ``log_softmax`` (``benchmarks.bench_logps``) and a
matmul peak, measured before and after, for the utilisation figure.

    python -m benchmarks.run                       # CPU, fp32, 1 thread: what `make bench` runs
    python -m benchmarks.run --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .bench_logps import VARIANTS as LOGPS_VARIANTS
from .bench_step import ROWS, TRL_COUNTERPART
from .workers import prepare_parent, run_workers
from .workloads import DEFAULT_SIZES, SHAPES, SMOLLM2_SHAPES

ROOT = Path(__file__).resolve().parents[1]
# per shape: memory process (warm-up, measured steps), timing process (warm-up, most rounds)
SCHEDULE = {"world": (2, 2, 3, 6), "smollm2": (1, 1, 1, 3), "uf2": (1, 1, 1, 4), "uf8": (1, 1, 1, 3)}
# the rows each shape runs (default: all); at 8 pairs only SimPO's comparison, the one with targets there
SHAPE_ROWS = {"uf8": ("kit_simpo", "trl_cpo_simpo")}
BUDGET_S = 840.0  # `make bench` within 15 minutes on 2 cores (the bound), with a minute to spare
# relative cost of one timed row of each shape: the time budget is shared out in proportion
SHAPE_COST = {"world": 0.5, "smollm2": 1.0, "uf2": 1.0, "uf8": 4.0}
# pairs, so that with the order alternating each round every row follows the other one equally often
TIMING_GROUPS = (
    ("kit_simpo", "trl_cpo_simpo"),
    ("kit_simpo", "kit_dpo"),
    ("kit_dpo", "trl_dpo"),
    ("kit_dpo_precomputed_ref", "trl_dpo_precomputed_ref"),
)
# SimPO / DPO step time is a property of the methods, not a target: timed on `world` and `uf2`, not again here
SKIPPED_GROUPS = {"smollm2": (("kit_simpo", "kit_dpo"),)}
NOMINAL_PEAK_TFLOPS = {
    "cuda": 790.0
}  # the H200 bf16 figure the issue quotes (extra column); CPU: measured only
# (shape, name): (kit row, what is compared, comparison, bound). "speed": TRL's step time / the kit's on the
# same batch (= the pairs/s ratio), median of round-by-round ratios; "memory": kit peak / TRL peak.
TARGETS = {
    ("uf2", "simpo_vs_trl_speed"): ("kit_simpo", "speed", ">=", 1.5),
    ("uf8", "simpo_vs_trl_speed"): ("kit_simpo", "speed", ">=", 2.0),
    ("uf2", "simpo_vs_trl_peak_mem"): ("kit_simpo", "memory", "<=", 0.75),
    ("uf8", "simpo_vs_trl_peak_mem"): ("kit_simpo", "memory", "<=", 0.6),
    ("uf2", "dpo_vs_trl_speed"): ("kit_dpo", "speed", ">=", 1.5),
    ("uf2", "dpo_precomputed_vs_trl_speed"): ("kit_dpo_precomputed_ref", "speed", ">=", 1.5),
    ("smollm2", "simpo_vs_trl_speed"): ("kit_simpo", "speed", ">=", 1.15),
    ("smollm2", "dpo_vs_trl_speed"): ("kit_dpo", "speed", ">=", 1.15),
    ("smollm2", "dpo_precomputed_vs_trl_speed"): ("kit_dpo_precomputed_ref", "speed", ">=", 1.15),
    ("smollm2", "simpo_vs_trl_peak_mem"): ("kit_simpo", "memory", "<=", 1.0),
}
LOGPS_TARGET = 0.5  # kit / naive log_softmax peak memory, forward and train
COMPARISONS = {">=": operator.ge, "<=": operator.le}


def target_holds(name: str, value: float) -> bool | None:
    """Whether ``value`` meets the target called ``name`` ("uf2/simpo_vs_trl_speed", "logps_vs_naive_peak_mem");
    None for a figure that is not a target (the SimPO / DPO time)."""
    if name == "logps_vs_naive_peak_mem":
        return value <= LOGPS_TARGET
    target = TARGETS.get(tuple(name.split("/", 1)))
    return None if target is None else bool(COMPARISONS[target[2]](value, target[3]))


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _ratios(numerators: list[float], denominators: list[float]) -> dict[str, float]:
    """Round-by-round ratios (each pair measured side by side), as median and spread."""
    return _spread([a / b for a, b in zip(numerators, denominators, strict=True)])


def _worker_args(
    shape: str, opts, rows: list[str], warmup: int, rounds: int, deadline: float | None = None
) -> list[str]:
    args = [
        "--shape",
        shape,
        "--rows",
        ",".join(rows),
        "--device",
        opts.device,
        "--dtype",
        opts.dtype,
        "--threads",
        str(opts.threads),
        "--warmup",
        str(warmup),
        "--rounds",
        str(rounds),
        "--size",
        json.dumps(asdict(opts.sizes[shape])),
    ]
    return args + (["--deadline", str(deadline)] if deadline is not None else [])


def memory_jobs(shape: str, opts) -> int:
    """How many one-row memory processes to run at once: one per core, as far as free memory allows."""
    from transformers import LlamaConfig

    from .bench_step import count_parameters
    from .workloads import SMOLLM2_135M

    if opts.device != "cpu":
        return 1
    params = count_parameters(LlamaConfig(**SMOLLM2_135M)) if shape in SMOLLM2_SHAPES else 10**6
    size = opts.sizes[shape]
    positions = 2 * size.pairs_per_step * (size.prompt_tokens[1] + size.response_tokens[1])  # padded, at most
    activations = positions * 2 * 2**20 if shape in SMOLLM2_SHAPES else 0  # about 1.4 MB a position there
    # weights, gradients, AdamW, a reference copy, activations and logits
    need_kb = (params * 4 * 6 + 2**30 + activations) / 1024
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        return 1
    available = next(
        int(line.split()[1]) for line in meminfo.read_text().splitlines() if line.startswith("MemAvailable")
    )
    return max(1, min(os.cpu_count() or 1, int(available // need_kb)))


def shape_rows(shape: str, rows: list[str]) -> list[str]:
    """The rows ``shape`` runs: those asked for, within ``SHAPE_ROWS[shape]`` where it is set."""
    return [row for row in rows if row in SHAPE_ROWS.get(shape, rows)]


def timing_groups(rows: list[str], shape: str | None = None) -> list[list[str]]:
    """The rows timed together in one process: each kit row with what it is compared to (a row compared with
    nothing that was asked for is timed alone, once), less the groups ``SKIPPED_GROUPS`` drops at ``shape``."""
    skipped = SKIPPED_GROUPS.get(shape, ())
    groups = [group for group in TIMING_GROUPS if group not in skipped and all(row in rows for row in group)]
    covered = {row for group in groups for row in group}
    return [list(group) for group in groups] + [[row] for row in rows if row not in covered]


def measure_memory(shape: str, rows: list[str], opts) -> dict:
    """Peak memory of each row, each in a process of its own (side by side where memory allows: untimed)."""
    memory_warmup, memory_steps, _, _ = opts.schedule[shape]
    jobs = [
        ("bench_step", [*_worker_args(shape, opts, [row], memory_warmup, memory_steps), "--memory-run"])
        for row in rows
    ]
    started = time.monotonic()
    memory = dict(zip(rows, run_workers(jobs, parallel=memory_jobs(shape, opts)), strict=True))
    print(f"  {shape} memory: {len(rows)} processes in {time.monotonic() - started:.0f} s", flush=True)
    for row, result in memory.items():
        print(
            f"  {shape} memory: {row:<24} peak {max(result['rows'][row]['peak_mem_mb']):8.0f} MB", flush=True
        )
    return memory


def measure_time(shape: str, rows: list[str], opts, budget_end: float, rows_after: float) -> list[dict]:
    """The timing groups of ``shape``, one process each (alternating steps on the same batches).

    ``rows_after`` counts the timed rows of the shapes still to come (weighted by ``SHAPE_COST``): the time
    left until ``budget_end`` is shared out by rows, and each group stops starting rounds at its share (one
    round always runs).
    """
    _, _, warmup, rounds = opts.schedule[shape]
    groups = timing_groups(rows, shape)
    results = []
    for index, group in enumerate(groups):
        cost = SHAPE_COST.get(shape, 1.0)
        left = cost * sum(len(g) for g in groups[index:]) + rows_after
        deadline = time.time() + max(budget_end - time.monotonic(), 0) * cost * len(group) / left
        result = run_workers([("bench_step", _worker_args(shape, opts, group, warmup, rounds, deadline))])[0]
        results.append(result)
        times = ", ".join(
            f"{row} {statistics.median(result['rows'][row]['step_seconds']):.3f} s" for row in group
        )
        print(
            f"  {shape} timing ({len(result['rows'][group[0]]['step_seconds'])} rounds): {times} "
            f"(build {result['build_seconds']:.0f} s, warm-up {result['warmup_seconds']:.0f} s)",
            flush=True,
        )
    return results


def _check_same_work(shape: str, runs: list[dict]) -> dict[int, tuple[str, int, int]]:
    """Every row of every run must have trained on exactly the same tokens at the same step (same batch).

    Returns ``{step: (first row seen, tokens, response tokens)}``.
    """
    seen: dict[int, tuple[str, int, int]] = {}
    for run in runs:
        for row, record in run["rows"].items():
            for step, tokens, responses in zip(
                record["step"], record["tokens"], record["response_tokens"], strict=True
            ):
                first = seen.setdefault(step, (row, tokens, responses))
                if (tokens, responses) != first[1:]:
                    raise AssertionError(
                        f"{shape}: at step {step} {row} processed {tokens} tokens ({responses} in "
                        f"responses), {first[0]} {first[1]} ({first[2]})"
                    )
    return seen


def summarise_shape(shape: str, rows: list[str], measured: dict, peak_tflops: float) -> list[dict]:
    """One summary per row: times from the timing groups (ratios round by round), memory from its own process."""
    memory, groups = measured["memory"], measured["groups"]
    steps = _check_same_work(shape, list(memory.values()) + groups)
    tokens_per_step = statistics.median(tokens for _, tokens, _ in steps.values())  # the same for every row
    responses_per_step = statistics.median(responses for _, _, responses in steps.values())

    def pooled(row: str, key: str) -> list[float]:
        return [value for group in groups if row in group["rows"] for value in group["rows"][row][key]]

    def side_by_side(numerator: str, denominator: str, key: str = "step_seconds") -> dict | None:
        """Round-by-round time ratio of two rows from the group that timed both, or None."""
        for group in groups:
            if numerator in group["rows"] and denominator in group["rows"]:
                if key not in group["rows"][numerator]:  # an older output without CPU times
                    return None
                return _ratios(group["rows"][numerator][key], group["rows"][denominator][key])
        return None

    def peak(row: str) -> float:
        return max(memory[row]["rows"][row]["peak_mem_mb"])

    summaries = []
    for row in rows:
        seconds, tokens, flops = pooled(row, "step_seconds"), pooled(row, "tokens"), pooled(row, "flops")
        speeds = [t / s for t, s in zip(tokens, seconds, strict=True)]
        pair_speeds = [n / s for n, s in zip(pooled(row, "pairs"), seconds, strict=True)]
        tflops = statistics.median(f / s / 1e12 for f, s in zip(flops, seconds, strict=True))
        summary = {
            "shape": shape,
            "row": row,
            "layout": memory[row]["rows"][row].get("layout", "padded [2B, T]"),
            "timed_steps": len(seconds),
            "pairs_per_step": statistics.median(pooled(row, "pairs")),
            "pairs_per_s": statistics.median(pair_speeds),
            "tokens_per_step": tokens_per_step,
            "response_tokens_per_step": responses_per_step,
            "step_seconds": _spread(seconds),
            "tokens_per_s": statistics.median(speeds),
            "tokens_per_s_spread": _spread(speeds),
            "peak_mem_mb": peak(row),
            "resident_before_step_mb": memory[row]["resident_before_step_mb"],
            "achieved_tflops": tflops,
            "utilisation": tflops / peak_tflops,
            "optimizer": memory[row]["rows"][row]["optimizer"],
            "num_params": memory[row]["num_params"],
            "mem_method": memory[row]["mem_method"],
            "threads": memory[row]["threads"],
        }
        counterpart = TRL_COUNTERPART.get(row)
        speed = side_by_side(counterpart, row) if counterpart in rows else None  # same tokens: t_trl / t_kit
        if speed is not None:
            summary["vs_trl"] = {
                "counterpart": counterpart,
                "speed_ratio": speed,
                # the same ratio from each step's CPU time (one thread: the step's own work, not the host's load)
                "speed_ratio_cpu_time": side_by_side(counterpart, row, "cpu_seconds"),
                "peak_mem_ratio": peak(row) / peak(counterpart),
            }
        if row == "kit_simpo" and "kit_dpo" in rows:
            time_ratio = side_by_side("kit_simpo", "kit_dpo")
            if time_ratio is not None:
                summary["vs_kit_dpo"] = {
                    "time_ratio": time_ratio,
                    "peak_mem_ratio": peak(row) / peak("kit_dpo"),
                }
        summaries.append(summary)
    return summaries


def run_logps(opts) -> dict:
    """Peak memory of every ``bench_logps`` variant at the SmolLM2 batch's shape, vocabulary 49152."""
    size = opts.sizes["smollm2"]
    rows, length = 2 * size.pairs_per_step, size.prompt_tokens[1] + size.response_tokens[1]
    args = [
        "--rows",
        str(rows),
        "--length",
        str(length),
        "--vocab",
        "49152",
        "--prompt",
        str(size.prompt_tokens[0]),
        "--device",
        opts.device,
        "--dtype",
        opts.dtype,
        "--threads",
        str(opts.threads),
    ]
    jobs = [("bench_logps", ["--variant", variant, *args]) for variant in LOGPS_VARIANTS]
    results = dict(zip(LOGPS_VARIANTS, run_workers(jobs, parallel=memory_jobs("world", opts)), strict=True))
    for name, result in results.items():
        print(
            f"  logps {name:<20} peak {result['peak_mem_mb']:8.1f} MB above the logits ({result['logits_mb']:.0f} MB)"
        )
    ratios = {
        mode: results[f"kit_{mode}"]["peak_mem_mb"] / results[f"naive_{mode}"]["peak_mem_mb"]
        for mode in ("forward", "train")
    }
    return {"variants": results, "kit_vs_naive_peak_mem": ratios}


def machine_info(opts) -> dict:
    import transformers
    import trl

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "cpu_count": os.cpu_count(),
        "threads": opts.threads,
        "device": opts.device,
        "dtype": opts.dtype,
    }
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        info["cpu"] = names[0] if names else platform.processor()
    if opts.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(opts.device))
    return info


def evaluate_targets(summaries: list[dict], logps: dict | None) -> dict:
    """Each target of ``TARGETS`` whose shape and rows were measured: its value (median over rounds) and
    whether it holds; plus the SimPO / DPO step-time ratio of each shape, a property of the methods."""
    by_row = {(s["shape"], s["row"]): s for s in summaries}
    results = {}
    for (shape, name), (row, what, comparison, bound) in TARGETS.items():
        vs = by_row.get((shape, row), {}).get("vs_trl")
        if vs is None:
            continue
        value = vs["speed_ratio"]["median"] if what == "speed" else vs["peak_mem_ratio"]
        results[f"{shape}/{name}"] = {
            "target": f"{comparison} {bound}",
            "value": round(value, 3),
            "holds": target_holds(f"{shape}/{name}", value),
        }
    for (shape, row), summary in by_row.items():
        if row == "kit_simpo" and "vs_kit_dpo" in summary:
            results[f"{shape}/simpo_vs_dpo_time"] = {
                "target": "property of the methods (not a target)",
                "value": round(summary["vs_kit_dpo"]["time_ratio"]["median"], 3),
                "holds": None,
            }
    if logps:
        worst = max(logps["kit_vs_naive_peak_mem"].values())
        results["logps_vs_naive_peak_mem"] = {
            "target": f"<= {LOGPS_TARGET} (forward and train)",
            "value": round(worst, 3),
            "holds": target_holds("logps_vs_naive_peak_mem", worst),
        }
    return results


def format_table(summaries: list[dict]) -> str:
    header = (
        "| shape | row | layout | pairs/step | tokens/step | step s (median, min-max) | pairs/s | tokens/s "
        "| peak MB | speed vs TRL (CPU time) | mem vs TRL | TFLOP/s | util |"
    )
    lines = [header, "|" + " --- |" * 13]
    for s in summaries:
        seconds = s["step_seconds"]
        vs = s.get("vs_trl")
        speed = f"{vs['speed_ratio']['median']:.2f}" if vs else ""
        if vs and vs.get("speed_ratio_cpu_time"):
            speed += f" ({vs['speed_ratio_cpu_time']['median']:.2f})"
        memory = f"{vs['peak_mem_ratio']:.2f}" if vs else ""
        lines.append(
            f"| {s['shape']} | {s['row']} | {s['layout'].split(' (')[0]} | {s['pairs_per_step']:.0f} "
            f"| {s['tokens_per_step']:.0f} | {seconds['median']:.3f} ({seconds['min']:.3f}-{seconds['max']:.3f}) "
            f"| {s['pairs_per_s']:.3f} | {s['tokens_per_s']:.0f} | {s['peak_mem_mb']:.0f} "
            f"| {speed} | {memory} | {s['achieved_tflops']:.3f} | {s['utilisation']:.0%} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        description="SimplePO benchmark: kit vs TRL, SimPO vs DPO (see benchmarks/README.md)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument(
        "--dtype", choices=("fp32", "bf16"), default=None, help="default: fp32 on CPU, bf16 on CUDA"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in every worker (default 1: see benchmarks/README.md, 'Threads')",
    )
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="most timing rounds per group (default: SCHEDULE, e.g. uf2 4; fewer when the budget runs out)",
    )
    parser.add_argument(
        "--smollm2-pairs", type=int, default=None, help="pairs per step of the SmolLM2-shape rows"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=BUDGET_S,
        help="time budget (s) of the whole run: after the memory processes, what is left is shared out among "
        "the timing groups, which start no round past their share (one round always runs)",
    )
    parser.add_argument("--skip-logps", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench.json")
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="summarise the raw measurements of an earlier output instead of measuring again",
    )
    opts = parser.parse_args(argv)
    opts.dtype = opts.dtype or ("bf16" if opts.device.startswith("cuda") else "fp32")
    opts.schedule = {shape: (mw, ms, w, opts.rounds or r) for shape, (mw, ms, w, r) in SCHEDULE.items()}
    opts.sizes = dict(DEFAULT_SIZES)
    if opts.smollm2_pairs:
        opts.sizes["smollm2"] = DEFAULT_SIZES["smollm2"].__class__(
            **{**asdict(DEFAULT_SIZES["smollm2"]), "pairs_per_step": opts.smollm2_pairs}
        )
    return opts


def main(argv: list[str] | None = None) -> dict:
    opts = parse_args(argv)
    started = time.monotonic()
    budget_end = started + opts.budget_s
    prepare_parent()
    device = torch.device(opts.device)
    rows = [row for row in ROWS if row in opts.rows]
    print(
        f"SimplePO benchmark on {opts.device} ({opts.dtype}, {opts.threads} threads), rows: {', '.join(rows)}"
    )
    peak_job = ("measure", ["--device", opts.device, "--dtype", opts.dtype, "--threads", str(opts.threads)])
    if opts.from_json:  # the earlier run's measurements, matmul peaks included
        earlier = json.loads(opts.from_json.read_text())
        logps, measured, peaks = earlier["logps_memory"], earlier["raw"], earlier["matmul_peaks"]
        opts.shapes = [shape for shape in SHAPES if "groups" in measured.get(shape, {})]  # timed shapes
    else:
        peaks = [run_workers([peak_job])[0]["tflops"]]
        logps = None if opts.skip_logps else run_logps(opts)
        measured = {}

        def save() -> None:  # the raw data so far, for --from-json
            opts.out.parent.mkdir(parents=True, exist_ok=True)
            opts.out.write_text(json.dumps({"raw": measured, "logps_memory": logps, "matmul_peaks": peaks}))

        for shape in opts.shapes:  # memory first: what is left of the budget then goes to the timing rounds
            measured[shape] = {"memory": measure_memory(shape, shape_rows(shape, rows), opts)}
            save()
        for index, shape in enumerate(opts.shapes):  # world first: cheap
            rows_after = sum(
                SHAPE_COST.get(later, 1.0) * len(group)
                for later in opts.shapes[index + 1 :]
                for group in timing_groups(shape_rows(later, rows), later)
            )
            groups = measure_time(shape, shape_rows(shape, rows), opts, budget_end, rows_after)
            measured[shape]["groups"] = groups
            save()
        peaks.append(run_workers([peak_job])[0]["tflops"])
        save()  # kept if a check below fails
    peak = max(peaks)  # the better of two measurements, before and after: a conservative utilisation
    summaries = [
        summary
        for shape in opts.shapes
        for summary in summarise_shape(shape, shape_rows(shape, rows), measured[shape], peak)
    ]
    nominal = NOMINAL_PEAK_TFLOPS.get(device.type)
    for summary in summaries:
        if nominal:
            summary["utilisation_vs_nominal"] = summary["achieved_tflops"] / nominal
    report = {
        "command": " ".join(["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(opts),
        "matmul_peak_tflops": {"measured": peaks, "used": peak, "nominal": nominal},
        "sizes": {shape: asdict(size) for shape, size in opts.sizes.items()},
        "schedule": {
            shape: dict(
                zip(
                    ("memory_warmup", "memory_steps", "timing_warmup", "timing_rounds_max"),
                    value,
                    strict=True,
                )
            )
            for shape, value in opts.schedule.items()
        },
        "timing_groups": {shape: timing_groups(shape_rows(shape, rows), shape) for shape in opts.shapes},
        "rows": summaries,
        "logps_memory": logps,
        "targets": evaluate_targets(summaries, logps),
        "wall_seconds": time.monotonic() - started,
        "matmul_peaks": peaks,
        "raw": measured,
    }
    opts.out.write_text(json.dumps(report, indent=1))
    print()
    print(format_table(summaries))
    print(f"\nmatmul peak {peak:.3f} TFLOP/s ({opts.dtype}); targets:")
    for name, target in report["targets"].items():
        verdict = {True: "holds", False: "MISSED", None: ""}[target["holds"]]
        print(f"  {name:<40} {target['value']:>7} ({target['target']}) {verdict}")
    print(f"wrote {opts.out} in {report['wall_seconds']:.0f} s")
    return report


if __name__ == "__main__":
    main()
