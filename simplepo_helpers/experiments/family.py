"""The loss family (issue 21; notebook 08): ORPO, R-DPO, cDPO and IPO searched on dev on the default search's
grid (``family_search_jobs``), each member's dev-best recipe (``dev_best``) spread over seeds on eval and
held-out tasks, the job order on a CPU budget (``run_family``), and the family table. The extra phases beside
it: the KL reruns of the default SimPO and DPO recipes (``kl_jobs``, ``kl_reruns_reproduce``) and cDPO on the
offline annotator's noisy pairs (``label_noise_jobs``, ``label_noise_summary``).

    python -m simplepo_helpers.experiments.spread {family,kl,noise}
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.files import read_records
from .overopt import OVEROPT_SEEDS, overopt_jobs, overopt_run
from .records import (
    RECORDS,
    SEARCH_GRID,
    SEARCH_ROUNDS,
    SHIPPED,
    _final_expected,
    _round_records,
    baselines,
    run_id,
)
from .rounds import RECIPES, Recipe
from .spread_runs import _append, _worker_init, evaluate_run

# The spread runs of the default SimPO and DPO recipes were recorded before the KL was measured. KL_SEEDS of
# them are trained again (kind "kl", eval only) to measure it: the family table's KL column for SimPO and DPO.
# Training and sampling are seeded, so a rerun reproduces the recorded scores (``kl_reruns_reproduce``).
KL_SEEDS = (0, 1, 2, 3)


def kl_jobs() -> list[tuple]:
    """The default SimPO and DPO recipes trained again on ``KL_SEEDS`` (shipped reference), eval split."""
    return [("kl", m, RECIPES[m], s, SHIPPED, ("eval",)) for m in ("simpo", "dpo") for s in KL_SEEDS]


NOISE_SEEDS = 8  # as many as the offline DPO spread runs it is compared with


def label_noise_jobs() -> list[tuple]:
    """cDPO on the offline annotator's noisy pairs (``RECIPES["cdpo_offline"]``) over the offline DPO spread's
    seeds, eval and held-out: what label smoothing does where there are flipped labels to absorb."""
    return [
        ("spread", "cdpo_offline", RECIPES["cdpo_offline"], s, SHIPPED, ("eval", "heldout"))
        for s in range(NOISE_SEEDS)
    ]


def label_noise_summary(records: Sequence[dict], split: str = "eval") -> dict[str, Any] | None:
    """cDPO minus DPO on the offline (noisy) pairs: each method's gain and their difference (each method's seeds
    and the prompts resampled, paired by prompt), and the mean lengths; None until both are recorded."""
    from ..evaluation.sampling import method_difference, seed_prompt_gain

    finals = {m: _final_expected(records, m, split) for m in ("cdpo_offline", "dpo_offline")}
    if any(len(f) < 2 for f in finals.values()):
        return None
    reference = np.array(baselines(records)[(SHIPPED, split)]["expected"])
    lengths = {
        m: float(
            np.mean(
                [
                    r["mean_length"]
                    for r in _round_records(records, "spread", m, split)
                    if r["ref_seed"] == SHIPPED
                ]
            )
        )
        for m in finals
    }
    return {
        "seeds": {m: len(f) for m, f in finals.items()},
        "gain": {m: seed_prompt_gain(f, reference).as_dict() for m, f in finals.items()},
        "cdpo_minus_dpo": method_difference(finals["cdpo_offline"], finals["dpo_offline"]).as_dict(),
        "mean_length": lengths,
    }


def kl_reruns_reproduce(records: Sequence[dict]) -> dict[str, Any]:
    """How closely the KL reruns reproduce the spread record: the largest absolute difference between a rerun's
    per-prompt expected score and the recorded run's (same method, seed, round and split), over all pairs."""
    recorded = {
        (r["method"], r["seed"], r["round"], r["split"]): r["expected"]
        for r in records
        if r.get("kind") == "spread" and r["ref_seed"] == SHIPPED
    }
    pairs = [
        (np.array(r["expected"]), np.array(recorded[key]))
        for r in records
        if r.get("kind") == "kl" and (key := (r["method"], r["seed"], r["round"], r["split"])) in recorded
    ]
    worst = max((float(np.abs(a - b).max()) for a, b in pairs), default=None)
    return {"compared": len(pairs), "max_abs_difference": worst}


# The family's fixed settings and the reasons for them: rounds.FAMILY_LOSSES. The search uses ONE seed (seed 0;
# SimPO's and DPO's used two) to fit the CPU budget; the spread then trains each member's dev-best recipe with
# FAMILY_SPREAD_SEEDS seeds from the shipped reference.
FAMILY_SEARCH_SEEDS = (0,)
FAMILY_SPREAD_SEEDS = 4


def family_losses() -> dict[str, Any]:
    """The loss family's settings, fixed before the search (``rounds.FAMILY_LOSSES``)."""
    from .rounds import FAMILY_LOSSES

    return dict(FAMILY_LOSSES)


FAMILY_SEARCH_SPLITS = ("dev", "eval", "heldout")


def family_search_jobs() -> list[tuple]:
    """The family's dev search: each member on SEARCH_GRID, SEARCH_ROUNDS rounds, FAMILY_SEARCH_SEEDS. The runs
    also record eval and held-out (never read by the choice, ``dev_best``): the dev-best setting's search run is
    then its seed-0 run on eval (the same training and sampling seeds as a spread run of that recipe, which
    stops at the chosen round), which saves one run per member on this CPU budget."""
    jobs = []
    for seed in FAMILY_SEARCH_SEEDS:
        for method, loss in family_losses().items():
            for lr in SEARCH_GRID["learning_rate"]:
                for steps in SEARCH_GRID["steps_per_round"]:
                    recipe = Recipe(loss, learning_rate=lr, steps_per_round=steps, rounds=SEARCH_ROUNDS)
                    jobs.append(("search", method, recipe, seed, SHIPPED, FAMILY_SEARCH_SPLITS))
    return jobs


def dev_best(records: Sequence[dict], method: str) -> tuple[Recipe, float] | None:
    """``method``'s dev-best recipe by the pre-stated criterion (as for the default search): the highest mean
    dev score gain over the search seeds at any round; the recipe then runs that many rounds. None until every
    setting of the grid is recorded."""
    from .rounds import recipe_settings

    base = baselines(records)
    loss = family_losses()[method]
    cells: dict[tuple, list[float]] = {}
    for r in records:
        if r.get("kind") != "search" or r.get("method") != method or r["split"] != "dev":
            continue
        settings = r["recipe"]
        recipe = Recipe(
            loss,
            learning_rate=settings["learning_rate"],
            steps_per_round=settings["steps_per_round"],
            rounds=SEARCH_ROUNDS,
        )
        if recipe_settings(recipe) != settings:  # a record of other settings under the same name
            continue
        reference = np.mean(base[(r["ref_seed"], r["split"])]["expected"])
        key = (settings["learning_rate"], settings["steps_per_round"], r["round"])
        cells.setdefault(key, []).append(float(np.mean(r["expected"]) - reference))
    grid = {(lr, steps) for lr in SEARCH_GRID["learning_rate"] for steps in SEARCH_GRID["steps_per_round"]}
    if {key[:2] for key in cells} != grid:  # the grid is not searched completely (yet): no choice
        return None
    means = {key: float(np.mean(v)) for key, v in sorted(cells.items())}
    lr, steps, rounds = max(means, key=means.get)
    recipe = Recipe(loss, learning_rate=lr, steps_per_round=steps, rounds=rounds)
    return recipe, means[(lr, steps, rounds)]


def family_final_records(records: Sequence[dict], method: str, split: str) -> list[dict]:
    """A family member's runs of its dev-best recipe on ``split`` at their last round, shipped reference: its
    spread runs, and the search run of the dev-best setting at the chosen round for a seed no spread run has."""
    from .rounds import recipe_settings

    best = dev_best(records, method)
    if best is None:
        return []
    recipe = best[0]
    settings = recipe_settings(recipe)
    chosen = [
        r
        for r in records
        if r.get("kind") == "spread"
        and r["method"] == method
        and r["split"] == split
        and r["ref_seed"] == SHIPPED
        and r["recipe"] == settings
        and r["round"] == recipe.rounds
    ]
    seeds = {r["seed"] for r in chosen}
    search = replace(recipe, rounds=SEARCH_ROUNDS)
    chosen += [
        r
        for r in records
        if r.get("kind") == "search"
        and r["method"] == method
        and r["split"] == split
        and r["ref_seed"] == SHIPPED
        and r["recipe"] == recipe_settings(search)
        and r["round"] == recipe.rounds
        and r["seed"] not in seeds
    ]
    return sorted(chosen, key=lambda r: r["seed"])


def family_spread_jobs(
    records: Sequence[dict], seeds: int = FAMILY_SPREAD_SEEDS, methods: Sequence[str] | None = None
) -> list[tuple]:
    """Each member's dev-best recipe over training seeds 0 .. ``seeds`` - 1 (shipped reference), eval and
    held-out, less the seeds its search run already recorded there."""
    jobs = []
    for method in methods or family_losses():
        best = dev_best(records, method)
        if best is None:
            raise ValueError(f"no search records of {method}: run the family search first")
        have = {r["seed"] for r in family_final_records(records, method, "eval")}
        have &= {r["seed"] for r in family_final_records(records, method, "heldout")}
        jobs += [
            ("spread", method, best[0], s, SHIPPED, ("eval", "heldout"))
            for s in range(seeds)
            if s not in have
        ]
    return jobs


def family_next_job(
    records: Sequence[dict], running: set[str], seeds: int = FAMILY_SPREAD_SEEDS, overopt: bool = False
) -> tuple | None:
    """The job ``run_family`` starts next, given the records and the ids of the runs in flight."""
    search = family_search_jobs()
    done = {r["id"] for r in records if "id" in r} | running
    finished = done - running
    complete = [m for m in family_losses() if all(run_id(*j[:5]) in finished for j in search if j[1] == m)]
    first = next(iter(family_losses()))
    curve = overopt_jobs() if overopt else []
    queue = family_spread_jobs(records, 2, complete) if complete else []
    queue += [j for j in search if j[1] == first]  # one member completely first (ORPO)
    queue += [j for j in curve if j[3] == OVEROPT_SEEDS[0]]  # then the curve with one seed
    queue += [j for j in search if j[1] != first]
    queue += family_spread_jobs(records, seeds, complete) if complete else []
    queue += [j for j in curve if j[3] != OVEROPT_SEEDS[0]]
    return next((j for j in queue if run_id(*j[:5]) not in done), None)


def run_family(out: Path, workers: int, seeds: int = FAMILY_SPREAD_SEEDS, overopt: bool = False) -> None:
    """The family phase on a CPU budget, one job at a time per worker, chosen when a worker frees up: first a
    second seed for each member whose search is complete, then the first member's search, then (``overopt``)
    the over-optimisation runs of the first seed, then the rest of the search, more seeds up to ``seeds`` and
    the curve's other seeds. Every finished run is appended at once, so a stopped run loses only what was in
    flight."""
    from concurrent.futures import FIRST_COMPLETED, wait

    path = out / RECORDS

    def next_job(running: set[str]) -> tuple | None:
        return family_next_job(read_records(path), running, seeds, overopt)

    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        in_flight: dict[Any, tuple] = {}
        number = 0
        while True:
            while len(in_flight) < workers:
                job = next_job({run_id(*j[:5]) for j in in_flight.values()})
                if job is None:
                    break
                in_flight[pool.submit(overopt_run if job[0] == "overopt" else evaluate_run, *job)] = job
                print(f"started {job[0]} {job[1]} seed {job[3]} {run_id(*job[:5])}", flush=True)
            if not in_flight:
                break
            finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in finished:
                job = in_flight.pop(future)
                records = future.result()
                _append(path, records)
                number += 1
                print(
                    f"[{number}] {job[0]} {job[1]} seed {job[3]}: {records[-1]['seconds']:.0f} s, "
                    f"{time.perf_counter() - started:.0f} s so far",
                    flush=True,
                )


# ---------------------------------------------------------------------------------------- the table

FAMILY_NAMES = {
    "simpo": "SimPO + SFT term (the default)",
    "dpo": "DPO + SFT term",
    "sft": "SFT on the chosen answers (the baseline)",
    "orpo": "ORPO (lambda 0.1, its NLL term)",
    "rdpo": "R-DPO (alpha 1/12 per token) + SFT term",
    "cdpo": "cDPO (label smoothing 0.1) + SFT term",
    "ipo": "IPO (tau 0.1) + SFT term",
}


def family_table(records: Sequence[dict], split: str = "eval") -> list[dict]:
    """The loss family on ``split`` at each run's last round (shipped reference): the gain pooled over seeds
    and prompts, each member minus the default SimPO (and minus the default DPO) as a difference that
    resamples each method's seeds and the prompts (paired by prompt), the mean length and the KL to the
    reference on the policy's samples (None where the records did not measure it)."""
    from ..evaluation.sampling import method_difference, seed_prompt_gain
    from .rounds import recipe_settings

    base = baselines(records)
    reference = np.array(base[(SHIPPED, split)]["expected"])
    family = family_losses()
    runs_of = {
        m: family_final_records(records, m, split)
        if m in family
        else [r for r in _round_records(records, "spread", m, split) if r["ref_seed"] == SHIPPED]
        for m in FAMILY_NAMES
    }
    finals = {m: np.array([r["expected"] for r in runs]) for m, runs in runs_of.items()}
    rows = []
    for method, name in FAMILY_NAMES.items():
        runs = runs_of[method]
        if len(runs) < 2:
            continue
        expected = finals[method]
        kls = [r.get("kl") for r in runs]
        if method not in family:  # the default recipes: their KL reruns (KL_SEEDS), where recorded
            kls = [r["kl"] for r in _round_records(records, "kl", method, split)] or [None]
        recipe = recipe_settings(dev_best(records, method)[0]) if method in family else runs[0]["recipe"]
        rows.append(
            {
                "method": method,
                "name": name,
                "seeds": len(runs),
                "learning_rate": recipe["learning_rate"],
                "steps_per_round": recipe["steps_per_round"],
                "rounds": recipe["rounds"],
                "gain": seed_prompt_gain(expected, reference).as_dict(),
                "minus_simpo": None
                if method == "simpo"
                else method_difference(expected, finals["simpo"]).as_dict(),
                "minus_dpo": method_difference(expected, finals["dpo"]).as_dict()
                if method in family and len(finals["dpo"]) >= 2
                else None,
                "mean_length": float(np.mean([r["mean_length"] for r in runs])),
                "kl": None if any(k is None for k in kls) else float(np.mean(kls)),
            }
        )
    return rows
