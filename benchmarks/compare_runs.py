"""Several ``make bench`` outputs side by side: each row's figures per run (per thread count), and each target's
median over runs.

    python -m benchmarks.compare_runs build/bench-1.json build/bench-2.json build/bench-3.json

Prints a markdown table (the README's benchmark table) and the targets. A run's ratio is already the median
of its own rounds; the verdict here is on the median over runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from .run import target_holds


def _runs(values: list[float], spec: str) -> str:
    return " / ".join(format(value, spec) for value in values)


def _threads(row: dict) -> int:
    return int(row.get("threads", 1))


def compare_rows(reports: list[dict]) -> list[dict]:
    """One entry per (shape, row, threads) measured in every report, with its figures per run."""
    keyed = [{(row["shape"], row["row"], _threads(row)): row for row in report["rows"]} for report in reports]
    entries = []
    for key in keyed[0]:
        if not all(key in rows for rows in keyed):
            continue
        rows = [rows[key] for rows in keyed]
        entry = {
            "shape": key[0],
            "row": key[1],
            "threads": key[2],
            "layout": rows[0]["layout"].split(" (")[0],
            # rounds over the shape's timing batches (older outputs: steps, one batch each)
            "timed_rounds": [row.get("timed_rounds", row.get("timed_steps")) for row in rows],
            "pairs_per_s": [row["pairs_per_s"] for row in rows],
            "peak_mem_mb": [row.get("peak_mem_mb") for row in rows],
            "utilisation": [row.get("utilisation") for row in rows],
        }
        if all("vs_trl" in row for row in rows):
            entry["speed_vs_trl"] = [row["vs_trl"]["speed_ratio"]["median"] for row in rows]
            entry["flops_vs_trl"] = [row["vs_trl"].get("flop_ratio_executed") for row in rows]
            entry["mem_vs_trl"] = [row["vs_trl"].get("peak_mem_ratio") for row in rows]
        entries.append(entry)
    return entries


def target_names(report: dict) -> dict[str, dict]:
    """A report's targets by name; older outputs named the speed targets without their thread count
    ("uf2/simpo_vs_trl_speed"): those get the run's one thread count ("uf2/simpo_vs_trl_speed/1t")."""
    threads = report.get("machine", {}).get("threads", 1)
    named = {}
    for name, target in report["targets"].items():
        old_speed = name.count("/") == 1 and (name.endswith("_speed") or name.endswith("_time"))
        named[f"{name}/{threads}t" if old_speed and isinstance(threads, int) else name] = target
    return named


def compare_targets(reports: list[dict]) -> dict[str, dict]:
    """Each target measured in every report: its value per run, the median over runs, and whether it holds."""
    named = [target_names(report) for report in reports]
    results = {}
    for name in named[0]:
        if not all(name in targets for targets in named):
            continue
        values = [targets[name]["value"] for targets in named]
        median = statistics.median(values)
        target = named[0][name]["target"]
        holds = target_holds(name, median)
        results[name] = {"values": values, "median": median, "target": target, "holds": holds}
    return results


def _figures(values: list, spec: str) -> str:
    """Each run's figure ("" for a run without it), then the median over the runs that have it in brackets."""
    present = [value for value in values if value is not None]
    if not present:
        return ""
    text = " / ".join("-" if value is None else format(value, spec) for value in values)
    return f"{text} ({format(statistics.median(present), spec)})"


def format_comparison(reports: list[dict]) -> str:
    header = (
        "| shape | threads | row | layout | rounds | pairs/s | peak MB | speed vs TRL (median) "
        "| FLOPs TRL/kit | memory vs TRL (median) | util |"
    )
    lines = [header, "|" + " --- |" * 11]
    for entry in compare_rows(reports):
        speed = flops = memory = ""
        if "speed_vs_trl" in entry:
            speed = _figures(entry["speed_vs_trl"], ".2f")
            flops = _runs(
                [v for v in entry["flops_vs_trl"] if v is not None][:1], ".2f"
            )  # the same in every run
            memory = _figures(entry["mem_vs_trl"], ".2f")
        peaks = "" if None in entry["peak_mem_mb"] else _runs(entry["peak_mem_mb"], ".0f")
        utilisation = " / ".join("-" if u is None else f"{u:.0%}" for u in entry["utilisation"])
        lines.append(
            f"| {entry['shape']} | {entry['threads']} | {entry['row']} | {entry['layout']} "
            f"| {_runs(entry['timed_rounds'], 'd')} | {_runs(entry['pairs_per_s'], '.3f')} | {peaks} | {speed} "
            f"| {flops} | {memory} | {utilisation} |"
        )
    lines.append("")
    for name, target in compare_targets(reports).items():
        verdict = {True: "holds", False: "MISSED", None: ""}[target["holds"]]
        lines.append(
            f"- {name}: {_runs(target['values'], '.3f')}, median {target['median']:.3f} "
            f"({target['target']}) {verdict}".rstrip()
        )
    matmul = []
    for report in reports:
        by_threads = report.get("matmul_peak_tflops", {}).get("by_threads")
        if by_threads:
            matmul.append(", ".join(f"{t} thread(s) {p['used']:.3f}" for t, p in by_threads.items()))
    if matmul:
        lines.append(f"- matmul peak of each run (TFLOP/s): {' / '.join(matmul)}")
    walls = [report["wall_seconds"] for report in reports]
    lines.append(f"- wall time of each run: {_runs(walls, '.0f')} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="bench.json files of runs with the same shapes")
    args = parser.parse_args(argv)
    text = format_comparison([json.loads(path.read_text()) for path in args.reports])
    print(text)
    return text


if __name__ == "__main__":
    main()
