"""The spread record's layout (``results/rounds.jsonl``, written by ``experiments.spread``): the settings
every run of it shares (samples per prompt, reference builds, splits, the dev search's grid), the id of a run,
and picking records out of it (the baselines, a method's runs at their last round).

The lowest of the record's modules: ``spread_runs``, ``overopt``, ``family``, ``spread_report`` and ``spread``
build on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .rounds import Recipe

K_POLICY, K_REFERENCE = 4, 8
REFERENCE_STREAM = 0
SHIPPED = -1  # ref_seed of the shipped reference; rebuilds use their ReferenceConfig seed
REBUILD_SEEDS = (1, 2)
SPLITS = {"dev": "dev_prompts", "eval": "eval_prompts", "heldout": "heldout_prompts"}
RECORDS = "rounds.jsonl"
SEARCH_ROUNDS = 4
SEARCH_SEEDS = (0, 1)
SEARCH_GRID = {"learning_rate": (5e-4, 1e-3), "steps_per_round": (60, 120)}


def run_id(kind: str, method: str, recipe: Recipe, seed: int, ref_seed: int) -> str:
    from .rounds import recipe_fingerprint

    return f"{kind}:{method}:{recipe_fingerprint(recipe)}:s{seed}:r{ref_seed}"


# ------------------------------------------------------------------------------------ reading records


def baselines(records: Sequence[dict]) -> dict[tuple[int, str], dict]:
    """(ref_seed, split) -> the baseline record (reference samples, best-of-4/8, probes)."""
    return {(r["ref_seed"], r["split"]): r for r in records if r["kind"] == "baseline"}


def _round_records(
    records: Sequence[dict], kind: str, method: str, split: str, round_index: int | None = None
) -> list[dict]:
    """The records of ``method``'s runs of ``kind`` on ``split`` at their last round (or ``round_index``)."""
    return [
        r
        for r in records
        if r.get("kind") == kind
        and r["method"] == method
        and r["split"] == split
        and r["round"] == (r["recipe"]["rounds"] if round_index is None else round_index)
    ]


def _final_expected(records: Sequence[dict], method: str, split: str, ref_seed: int = SHIPPED) -> np.ndarray:
    """[S, N] per-prompt expected scores of ``method``'s spread runs at their last round."""
    return np.array(
        [r["expected"] for r in _round_records(records, "spread", method, split) if r["ref_seed"] == ref_seed]
    )
