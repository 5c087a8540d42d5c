"""The kit's results file, ``build/results.json``, and the README table rendered from it.

Notebook 05 writes the file; ``python -m simplepo_helpers.evaluation.results README.md`` renders the table between the
README's ``<!-- results:start -->`` and ``<!-- results:end -->`` markers. Layout of the file:

    {"meta": {...},                                  # profile, seeds, steps, judge, ...
     "reference": {"mean_length": ..., "judge_score": ...},
     "simpo": {"win_rate_vs_ref": mean, ..., "seeds": [0, 1, 2],
               "per_seed": {"win_rate_vs_ref": [one value per seed], ...}},
     "dpo": {...}, "simpo_no_ln": {...}}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MARKERS = ("<!-- results:start -->", "<!-- results:end -->")
TRAINED_METHODS = ("simpo", "dpo", "simpo_no_ln")
TRAINED_METRICS = ("win_rate_vs_ref", "lc_win_rate_vs_ref", "mean_length", "reward_accuracy", "kl_to_ref")
REFERENCE_METRICS = ("mean_length", "judge_score")
METHOD_LABELS = {
    "reference": "reference (SFT)",
    "simpo": "SimPO",
    "dpo": "DPO",
    "simpo_no_ln": "SimPO without length normalisation",
}
COLUMNS = (  # (metric, header, decimals)
    ("win_rate_vs_ref", "win rate vs reference", 3),
    ("lc_win_rate_vs_ref", "LC win rate vs reference", 3),
    ("judge_score", "judge score", 3),
    ("reward_accuracy", "reward accuracy", 3),
    ("kl_to_ref", "KL to reference (nats)", 2),
    ("mean_length", "mean length (tokens)", 1),
)


def repo_root(start: str | Path | None = None) -> Path:
    """The kit's checkout: the first folder at or above ``start`` (default: the cwd) holding pyproject.toml and
    simplepo_helpers/, else the folder above this package when that is a checkout, else ``start``."""
    start = Path(start or Path.cwd()).resolve()
    candidates = [start, *start.parents, Path(__file__).resolve().parents[1]]
    for folder in candidates:
        if (folder / "pyproject.toml").is_file() and (folder / "simplepo_helpers").is_dir():
            return folder
    return start


def results_path(root: str | Path | None = None) -> Path:
    return (Path(root) if root is not None else repo_root()) / "build" / "results.json"


def summarize_seeds(per_seed: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    """``{seed: {metric: value}}`` -> ``{metric: mean, ..., "seeds": [...], "per_seed": {metric: [...]}}``."""
    if not per_seed:
        raise ValueError("summarize_seeds needs at least one seed")
    seeds = sorted(per_seed)
    metrics = sorted(set.intersection(*(set(values) for values in per_seed.values())))
    values = {metric: [float(per_seed[seed][metric]) for seed in seeds] for metric in metrics}
    return {**{metric: float(np.mean(v)) for metric, v in values.items()}, "seeds": seeds, "per_seed": values}


def _check_number(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"results: {where} must be a finite number, got {value!r}")


def validate_results(results: Mapping[str, Any]) -> None:
    """Raise ValueError naming the entry and metric that is missing or not finite."""
    for name, required in [
        ("reference", REFERENCE_METRICS),
        *[(m, TRAINED_METRICS) for m in TRAINED_METHODS],
    ]:
        entry = results.get(name)
        if not isinstance(entry, Mapping):
            raise ValueError(f"results: no entry for {name!r}")
        for metric in required:
            if metric not in entry:
                raise ValueError(f"results: {name!r} lacks {metric!r}")
        for metric, value in entry.items():
            if metric == "per_seed":
                for key, values in value.items():
                    if len(values) != len(entry.get("seeds", [])):
                        raise ValueError(
                            f"results: {name}.per_seed.{key} has {len(values)} values for "
                            f"{len(entry.get('seeds', []))} seeds"
                        )
                    for index, item in enumerate(values):
                        _check_number(item, f"{name}.per_seed.{key}[{index}]")
            elif metric != "seeds" and isinstance(value, (int, float)):
                _check_number(value, f"{name}.{metric}")
        if name != "reference" and not entry.get("seeds"):
            raise ValueError(f"results: {name!r} lists no seeds")


def write_results(results: Mapping[str, Any], path: str | Path | None = None) -> Path:
    """Validate ``results`` and write them as JSON (atomically: a temporary file, then a rename)."""
    validate_results(results)
    path = Path(path) if path is not None else results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".results-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(results, file, indent=1, allow_nan=False)
            file.write("\n")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def load_results(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path) if path is not None else results_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run notebook 05 (or `make run`) first")
    results = json.loads(path.read_text())
    validate_results(results)
    return results


def _cell(entry: Mapping[str, Any], metric: str, decimals: int) -> str:
    if metric not in entry:
        return "–"
    spread = entry.get("per_seed", {}).get(metric)
    text = f"{entry[metric]:.{decimals}f}"
    if spread and len(spread) > 1:
        text += f" ± {np.std(spread, ddof=1):.{decimals}f}"
    return text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; the first column left-aligned, the others right-aligned; cells as given (str())."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for index, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"table row {index} has {len(row)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines)


def render_table(results: Mapping[str, Any]) -> str:
    """A markdown table: one row per method, mean ± standard deviation over seeds, and a line on the setup."""
    validate_results(results)
    rows = [
        [METHOD_LABELS[name], *(_cell(results[name], m, d) for m, _, d in COLUMNS)]
        for name in ("reference", *TRAINED_METHODS)
    ]
    lines = [markdown_table(["method", *(header for _, header, _ in COLUMNS)], rows)]
    meta = results.get("meta", {})
    seeds = results["simpo"]["seeds"]
    setup = "; ".join(
        f"{key}: {value:g}" if isinstance(value, float) else f"{key}: {value}"
        for key, value in meta.items()
        if isinstance(value, (str, int, float))
    )
    lines += [
        "",
        f"Mean ± standard deviation over {len(seeds)} seeds ({', '.join(map(str, seeds))})"
        + (f"; {setup}" if setup else "")
        + ". Written by `notebooks/05_evaluation.ipynb`.",
    ]
    return "\n".join(lines)


def update_readme(readme: str | Path, results: Mapping[str, Any]) -> bool:
    """Replace the text between the README's markers with the table; True when the file changed."""
    readme = Path(readme)
    text = readme.read_text()
    start, end = (text.find(marker) for marker in MARKERS)
    if start < 0 or end < start:
        raise ValueError(f"{readme} needs the markers {MARKERS[0]!r} and {MARKERS[1]!r}, in that order")
    updated = text[: start + len(MARKERS[0])] + "\n" + render_table(results) + "\n" + text[end:]
    if updated != text:
        readme.write_text(updated)
    return updated != text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render build/results.json into the README's results table.")
    parser.add_argument("readme", type=Path, help="the markdown file with the results markers (README.md)")
    parser.add_argument(
        "--results", type=Path, default=None, help="results file (default: build/results.json)"
    )
    args = parser.parse_args(argv)
    try:
        changed = update_readme(args.readme, load_results(args.results))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{args.readme}: results table {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
