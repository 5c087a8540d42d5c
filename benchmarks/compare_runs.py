"""Several ``make bench`` outputs side by side: each row's figures per run, and each target's median over runs.

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


def compare_rows(reports: list[dict]) -> list[dict]:
    """One entry per (shape, row) measured in every report, with its figures per run."""
    keyed = [{(row["shape"], row["row"]): row for row in report["rows"]} for report in reports]
    entries = []
    for key in keyed[0]:
        if not all(key in rows for rows in keyed):
            continue
        rows = [rows[key] for rows in keyed]
        entry = {
            "shape": key[0],
            "row": key[1],
            "layout": rows[0]["layout"].split(" (")[0],
            "timed_steps": [row["timed_steps"] for row in rows],
            "pairs_per_s": [row["pairs_per_s"] for row in rows],
            "peak_mem_mb": [row["peak_mem_mb"] for row in rows],
        }
        if all("vs_trl" in row for row in rows):
            entry["speed_vs_trl"] = [row["vs_trl"]["speed_ratio"]["median"] for row in rows]
            entry["mem_vs_trl"] = [row["vs_trl"]["peak_mem_ratio"] for row in rows]
        entries.append(entry)
    return entries


def compare_targets(reports: list[dict]) -> dict[str, dict]:
    """Each target measured in every report: its value per run, the median over runs, and whether it holds."""
    results = {}
    for name in reports[0]["targets"]:
        if not all(name in report["targets"] for report in reports):
            continue
        values = [report["targets"][name]["value"] for report in reports]
        median = statistics.median(values)
        target = reports[0]["targets"][name]["target"]
        holds = target_holds(name, median)
        results[name] = {"values": values, "median": median, "target": target, "holds": holds}
    return results


def format_comparison(reports: list[dict]) -> str:
    header = "| shape | row | layout | rounds | pairs/s | peak MB | speed vs TRL (median) | memory vs TRL (median) |"
    lines = [header, "|" + " --- |" * 8]
    for entry in compare_rows(reports):
        speed = memory = ""
        if "speed_vs_trl" in entry:
            speed = f"{_runs(entry['speed_vs_trl'], '.2f')} ({statistics.median(entry['speed_vs_trl']):.2f})"
            memory = f"{_runs(entry['mem_vs_trl'], '.2f')} ({statistics.median(entry['mem_vs_trl']):.2f})"
        lines.append(
            f"| {entry['shape']} | {entry['row']} | {entry['layout']} | {_runs(entry['timed_steps'], 'd')} "
            f"| {_runs(entry['pairs_per_s'], '.3f')} | {_runs(entry['peak_mem_mb'], '.0f')} | {speed} | {memory} |"
        )
    lines.append("")
    for name, target in compare_targets(reports).items():
        verdict = {True: "holds", False: "MISSED", None: ""}[target["holds"]]
        lines.append(
            f"- {name}: {_runs(target['values'], '.3f')}, median {target['median']:.3f} "
            f"({target['target']}) {verdict}".rstrip()
        )
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
