"""The kit's results file, ``build/results.json``, and the README section rendered from it.

``make experiments`` (``experiments.sweeps`` then ``experiments.report``) writes the file from the committed sweep
records; ``python -m simplepo_helpers.experiments.readme README.md`` renders the table between the README's
``<!-- results:start -->`` and ``<!-- results:end -->`` markers (``update_readme_text``). Layout (see ``experiments.report``):

    {"meta": {...},                                   # command, tuned settings, ...
     "reference": {"dev": {...}, "eval": {...}},      # the reference's own numbers per split
     "tuning": [...], "gamma": [...], "kl": [...], "onpolicy": {...},   # dev tables
     "final": {"simpo": {"seeds": [0, 1, 2], "score_gain": {"mean", "low", "high", "per_seed"}, ...},
               "dpo": {...}, "simpo_no_ln": {...}, "simpo_onpolicy": {...}}}   # eval split
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.files import write_text_atomic

MARKERS = ("<!-- results:start -->", "<!-- results:end -->")
REQUIRED_METHODS = ("simpo", "dpo", "simpo_no_ln")


def repo_root(start: str | Path | None = None) -> Path:
    """The kit's checkout: the first folder at or above ``start`` (default: the cwd) holding pyproject.toml and
    simplepo_helpers/, else the folder above this package when that is a checkout, else ``start``."""
    start = Path(start or Path.cwd()).resolve()
    candidates = [start, *start.parents, Path(__file__).resolve().parents[2]]
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


def _check_tree(value: Any, where: str) -> None:
    """Every number in ``value`` (nested dicts and lists; None allowed) is finite."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_tree(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_tree(item, f"{where}[{index}]")
    elif value is not None and not isinstance(value, (str, bool)):
        _check_number(value, where)


def validate_results(results: Mapping[str, Any]) -> None:
    """Raise ValueError naming the entry that is missing or not finite."""
    for part in ("meta", "reference", "final"):
        if not isinstance(results.get(part), Mapping):
            raise ValueError(f"results: no {part!r} section")
    if "eval" not in results["reference"]:
        raise ValueError("results: the reference has no 'eval' entry")
    for method in REQUIRED_METHODS:
        entry = results["final"].get(method)
        if not isinstance(entry, Mapping):
            raise ValueError(f"results: no final entry for {method!r}")
        if not entry.get("seeds"):
            raise ValueError(f"results: {method!r} lists no seeds")
        gain = entry.get("score_gain")
        if not isinstance(gain, Mapping) or not {"mean", "low", "high"} <= set(gain):
            raise ValueError(f"results: {method!r} lacks score_gain with mean, low and high")
        for key, value in entry.items():
            if isinstance(value, Mapping) and isinstance(value.get("per_seed"), list):
                if len(value["per_seed"]) != len(entry["seeds"]):
                    raise ValueError(
                        f"results: {method}.{key}.per_seed has {len(value['per_seed'])} values for "
                        f"{len(entry['seeds'])} seeds"
                    )
    _check_tree(dict(results), "results")


def write_results(results: Mapping[str, Any], path: str | Path | None = None) -> Path:
    """Validate ``results`` and write them as JSON (atomically: a temporary file, then a rename)."""
    validate_results(results)
    path = Path(path) if path is not None else results_path()
    write_text_atomic(path, json.dumps(results, indent=1, allow_nan=False) + "\n")
    return path


def load_results(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path) if path is not None else results_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `make experiments` (or `make report`) first")
    results = json.loads(path.read_text())
    validate_results(results)
    return results


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; the first column left-aligned, the others right-aligned; cells as given (str())."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for index, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"table row {index} has {len(row)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines)


def update_readme_text(readme: str | Path, section: str) -> bool:
    """Replace the text between the README's markers with ``section``; True when the file changed."""
    readme = Path(readme)
    text = readme.read_text()
    start, end = (text.find(marker) for marker in MARKERS)
    if start < 0 or end < start:
        raise ValueError(f"{readme} needs the markers {MARKERS[0]!r} and {MARKERS[1]!r}, in that order")
    updated = text[: start + len(MARKERS[0])] + "\n" + section + "\n" + text[end:]
    if updated != text:
        readme.write_text(updated)
    return updated != text
