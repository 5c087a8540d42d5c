"""The records behind the default recipe: the search on dev, the spread over seeds and reference builds, and
the baselines (``make spread``; records in ``results/rounds.jsonl``).

    python -m simplepo_helpers.experiments.spread {search,spread,family,overopt,kl,noise,report} [--workers 2] [--out results]

- **baselines**: per reference build (the shipped one, ``ref_seed`` -1, and rebuilds with world-model seeds
  1 and 2 standing in for other hardware) and split: the reference's k = 8 samples per prompt, its expected
  score, the oracle best-of-4 and best-of-8 (the judge picks the best of 4 or 8 samples), the per-prompt
  expected scores every gain is paired against.
- **search** (dev only): SimPO and DPO on on-policy rounds, the same grid for each (learning rate x steps
  per round, 2 seeds, plus an SFT term on the chosen answer against over-optimisation); every run is evaluated after
  each of its rounds, so the number of rounds is searched too. Criterion, fixed before running: the highest
  mean dev score gain over the seeds.
- **spread** (eval and held-out tasks): the default recipes over many training seeds and three reference
  builds: what the lessons' assertions are calibrated on.
- **family** (issue 21): ORPO, R-DPO, cDPO and IPO searched on dev on the same grid (one seed), then each
  member's dev-best recipe spread over seeds on eval and held-out tasks (``family_losses`` states the fixed
  hyper-parameters). New records carry ``kl``: KL to the reference on the policy's own samples.
- **kl**: the default SimPO and DPO recipes trained again on a few seeds to measure their KL to the reference
  (their spread runs predate it); a rerun reproduces the recorded scores.
- **noise**: cDPO on the offline annotator's pairs (about 10% flipped labels), against offline DPO's spread.
- **overopt**: offline SimPO, DPO and SimPO + SFT term trained 480 steps, evaluated on dev every 60 (kind
  ``"overopt"``, one record per evaluated step): the over-optimisation curve of notebook 08.

Each evaluated round writes one JSON line: the run (kind, method, recipe, seed, reference build), the round,
the split and the per-prompt expected scores (k = 4 samples, the policy's own sampling stream), so any
interval (per seed, or over seeds and prompts) can be recomputed from the record. Runs go to a process pool
(one torch thread each); finished runs are skipped on restart; a partial last line (a killed write) is ignored.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.files import read_records
from ..world.responses import MAX_NEW_TOKENS
from .rounds import RECIPES, Recipe

K_POLICY, K_REFERENCE = 4, 8
REFERENCE_STREAM = 0
SHIPPED = -1  # ref_seed of the shipped reference; rebuilds use their ReferenceConfig seed
REBUILD_SEEDS = (1, 2)
SPLITS = {"dev": "dev_prompts", "eval": "eval_prompts", "heldout": "heldout_prompts"}
RECORDS = "rounds.jsonl"
SEARCH_ROUNDS = 4
SEARCH_SEEDS = (0, 1)
SEARCH_GRID = {"learning_rate": (5e-4, 1e-3), "steps_per_round": (60, 120)}
# What the notebooks assert about each live run (notebook 05: the default SimPO run; notebook 03: one offline
# SimPO run); tests/test_lesson_checks.py checks that every run of the spread record (every seed, every reference
# build) passes them. Set below the recorded minimum with a margin, never at a recorded value.
# "simpo" is keyed by the number of rounds trained live (notebook 05 trains the recipe's first 2 by default, to
# fit its time budget; every recorded run is evaluated after each round): the worst recorded run at round 2 gains
# +0.095 on eval and -0.003 on the held-out tasks, at round 3 +0.129 and +0.038, at round 4 +0.169 and +0.060.
LESSON_CHECKS = {
    "simpo": {
        2: {"eval_gain_at_least": 0.06, "heldout_gain_at_least": -0.04},
        3: {"eval_gain_at_least": 0.09, "heldout_gain_at_least": 0.0},
        4: {"eval_gain_at_least": 0.12, "heldout_gain_at_least": 0.03},
    },
    "simpo_offline": {"eval_gain_at_least": 0.0},  # notebooks 03 and 06 (full fine-tuning): it does no harm
    # notebook 06: LoRA does no harm either, and trails full fine-tuning by at most this much; one comparison
    # there samples the two models independently (the record shares a stream per seed), so the allowance is
    # wider than the recorded worst seed pair (-0.020): a live difference of -0.038 was seen
    "simpo_offline_lora": {"eval_gain_at_least": 0.0, "minus_full_at_least": -0.08},
}


def run_id(kind: str, method: str, recipe: Recipe, seed: int, ref_seed: int) -> str:
    from .rounds import recipe_fingerprint

    return f"{kind}:{method}:{recipe_fingerprint(recipe)}:s{seed}:r{ref_seed}"


# ------------------------------------------------------------------------------------------ workers

_STATE: dict[str, Any] = {}


def _reference(ref_seed: int) -> tuple[Any, Any]:
    """The shipped reference (``SHIPPED``) or a cache build with world-model seed ``ref_seed``."""
    if ref_seed not in _STATE:
        from ..world.reference import ReferenceConfig, ensure_reference_model, load_reference_model

        if ref_seed == SHIPPED:
            _STATE[ref_seed] = load_reference_model(progress=False)
        else:
            config = ReferenceConfig(seed=ref_seed)
            ensure_reference_model(config, progress=False)
            _STATE[ref_seed] = load_reference_model(config, progress=False)
    return _STATE[ref_seed]


def _prompts(split: str) -> list:
    from ..data import read_jsonl
    from ..world import data_file

    return [row["prompt"] for row in read_jsonl(data_file(SPLITS[split]))[0]]


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def baseline(ref_seed: int, split: str) -> dict:
    """The reference's k = 8 samples on ``split``: expected score, best-of-4 and best-of-8, per prompt."""
    from ..evaluation.sampling import sample_k

    model, tokenizer = _reference(ref_seed)
    prompts = _prompts(split)
    samples = sample_k(
        model, tokenizer, prompts, k=K_REFERENCE, stream=REFERENCE_STREAM, max_new_tokens=MAX_NEW_TOKENS
    )
    scores = samples.scores  # [N, 8]
    probes = _allowed_probes(model, tokenizer, prompts, samples.forbidden)
    best4 = (scores[:, :4].max(axis=1) + scores[:, 4:].max(axis=1)) / 2  # two disjoint groups of 4
    return {
        "kind": "baseline",
        "ref_seed": ref_seed,
        "split": split,
        "expected": np.round(samples.expected, 4).tolist(),
        "best_of_4": np.round(best4, 4).tolist(),
        "best_of_8": np.round(scores.max(axis=1), 4).tolist(),
        "families": samples.families,
        "forbidden": samples.forbidden.tolist(),
        "probes": probes,
    }


def _allowed_probes(model: Any, tokenizer: Any, prompts: list, forbidden: np.ndarray) -> dict[str, float]:
    """Mean probability of opening in each style on the allowed prompts (``probes.style_probabilities``)."""
    from ..evaluation.probes import style_probabilities

    styles = style_probabilities(model, tokenizer, prompts)
    allowed = ~np.asarray(forbidden)
    return {style: round(float(np.asarray(p)[allowed].mean()), 4) for style, p in styles.items()}


def _kl(model: Any, reference: Any, tokenizer: Any, prompts: list, samples: Any) -> dict[str, float]:
    """KL(policy || reference) on the policy's own evaluation samples: the mean over every sample of
    log pi(y|x) - log pi_ref(y|x), summed over the response tokens (EOS included unless cut off), and its
    standard error over samples. ``reference``: the model the run started from (the shipped one)."""
    from ..evaluation.metrics import kl_to_reference

    flat_prompts = [p for p, row in zip(prompts, samples.responses, strict=True) for _ in row]
    flat = [response for row in samples.responses for response in row]
    estimate = kl_to_reference(
        model, reference, tokenizer, flat_prompts, flat, batch_size=64, max_new_tokens=MAX_NEW_TOKENS
    )
    return {"kl": round(estimate.mean, 4), "kl_stderr": round(estimate.stderr, 4)}


def _run_fields(kind: str, method: str, recipe: Recipe, seed: int, ref_seed: int, round_index: int) -> dict:
    """What every record of a run starts with: which run (its id, method, recipe, seeds) and which round."""
    from .rounds import recipe_settings

    return {
        "kind": kind,
        "id": run_id(kind, method, recipe, seed, ref_seed),
        "method": method,
        "recipe": recipe_settings(recipe),
        "seed": seed,
        "ref_seed": ref_seed,
        "round": round_index,
    }


def _sample_fields(samples: Any) -> dict:
    """The per-prompt expected scores (k samples each) and the mean response length of one evaluation."""
    return {"expected": np.round(samples.expected, 4).tolist(), "mean_length": float(samples.lengths.mean())}


def evaluate_run(
    kind: str, method: str, recipe: Recipe, seed: int, ref_seed: int, splits: Sequence[str]
) -> list[dict]:
    """Train one default-recipe run and evaluate every round on ``splits``: one record per (round, split)."""
    from ..evaluation.sampling import sample_k
    from .rounds import default_run

    reference, tokenizer = _reference(ref_seed)
    prompts = {split: _prompts(split) for split in splits}
    records: list[dict] = []
    started = time.perf_counter()

    def on_round(round_index: int, model: Any) -> None:
        for split in splits:
            samples = sample_k(
                model,
                tokenizer,
                prompts[split],
                k=K_POLICY,
                stream=1000 + seed,
                max_new_tokens=MAX_NEW_TOKENS,
            )
            last = round_index == recipe.rounds
            probes = _allowed_probes(model, tokenizer, prompts[split], samples.forbidden) if last else None
            kl = _kl(model, reference, tokenizer, prompts[split], samples)
            records.append(
                {
                    **_run_fields(kind, method, recipe, seed, ref_seed, round_index),
                    "split": split,
                    **_sample_fields(samples),
                    "probes": probes,
                    **kl,
                }
            )

    run = default_run(
        method,
        seed,
        reference=reference,
        tokenizer=tokenizer,
        recipe=recipe,
        progress=False,
        on_round=on_round,
        shipped_round1=ref_seed == SHIPPED,
    )
    for record in records:
        round_info = run.rounds[record["round"] - 1]
        record["pairs"] = round_info["pairs"].get("pairs")
        record["reward_accuracy"] = round_info["final_metrics"].get("rewards/accuracies")
        record["seconds"] = round(time.perf_counter() - started, 1)
    return records


# ------------------------------------------------------------------------------------------- phases


def search_jobs() -> list[tuple]:
    """The dev search: the plain losses on the grid (SFT on the chosen answers, the baseline, too), then SimPO
    and DPO with the SFT term at twice the grid's top rate."""
    from .rounds import DPO_LOSS, SFT_LOSS, SIMPO_LOSS, Recipe

    losses = {"simpo": SIMPO_LOSS, "dpo": DPO_LOSS, "sft": SFT_LOSS}
    jobs = []
    for seed in SEARCH_SEEDS:
        for lr in SEARCH_GRID["learning_rate"]:
            for steps in SEARCH_GRID["steps_per_round"]:
                for method, loss in losses.items():
                    recipe = Recipe(loss, learning_rate=lr, steps_per_round=steps, rounds=SEARCH_ROUNDS)
                    jobs.append(("search", method, recipe, seed, SHIPPED, ("dev",)))
        for method, loss in list(losses.items())[
            :2
        ]:  # the SFT term on the chosen answer, against over-optimisation
            recipe = Recipe(replace(loss, sft_weight=1.0), learning_rate=1e-3, rounds=SEARCH_ROUNDS)
            jobs.append(("search", f"{method}_sft", recipe, seed, SHIPPED, ("dev",)))
    return jobs


def spread_jobs(seeds: int = 16, rebuild_seeds: int = 4, others: int = 8) -> list[tuple]:
    """The default SimPO recipe over ``seeds`` seeds (shipped reference) and ``rebuild_seeds`` seeds per
    rebuild; DPO, the SFT baseline, the offline recipes and LoRA over ``others`` seeds (shipped reference)."""
    splits = ("eval", "heldout")
    jobs = [("spread", "simpo", RECIPES["simpo"], s, SHIPPED, splits) for s in range(seeds)]
    for ref_seed in REBUILD_SEEDS:
        jobs += [("spread", "simpo", RECIPES["simpo"], s, ref_seed, splits) for s in range(rebuild_seeds)]
    for method in ("dpo", "sft", "simpo_offline", "dpo_offline", "simpo_offline_lora"):
        if method in RECIPES:
            jobs += [("spread", method, RECIPES[method], s, SHIPPED, splits) for s in range(others)]
    return jobs


# ------------------------------------------------------------------------ the loss family (issue 21)

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


# ------------------------------------------------------------------ over-optimisation (issue 21)

# Offline runs (data/pairs_train.jsonl, the offline recipes) trained OVEROPT_STEPS steps with one cosine
# schedule, evaluated on dev every OVEROPT_EVERY steps: the judge's expected score (k = 4), the reward accuracy
# on the held-out offline pairs (data/pairs_dev.jsonl, a tie counts half) and on the training batches, KL to
# the reference on the policy's samples. SimPO, DPO and SimPO with the SFT term (weight 1).
OVEROPT_STEPS = 480
OVEROPT_EVERY = 60
OVEROPT_SEEDS = (0, 1)


def overopt_recipes() -> dict[str, Recipe]:
    simpo, dpo = RECIPES["simpo_offline"], RECIPES["dpo_offline"]
    return {
        "simpo": replace(simpo, steps_per_round=OVEROPT_STEPS),
        "dpo": replace(dpo, steps_per_round=OVEROPT_STEPS),
        "simpo_sft": replace(simpo, loss=replace(simpo.loss, sft_weight=1.0), steps_per_round=OVEROPT_STEPS),
    }


def overopt_jobs() -> list[tuple]:
    return [
        ("overopt", method, recipe, seed, SHIPPED, ("dev",))
        for seed in OVEROPT_SEEDS
        for method, recipe in overopt_recipes().items()
    ]


class _Stop(Exception):
    """Raised from the step hook to end a run early (``overopt_point``)."""


def overopt_run(
    kind: str,
    method: str,
    recipe: Recipe,
    seed: int,
    ref_seed: int,
    splits: Sequence[str] = ("dev",),
    stop_at: int | None = None,
) -> list[dict]:
    """Train one offline run and evaluate it on dev every OVEROPT_EVERY steps (and at ``stop_at``, where the
    run then stops: the same schedule, so the same model as the full run's at that step). The evaluation
    saves and restores the RNG states and the model's mode: training goes on as if it had not been evaluated."""
    import random

    import torch

    from ..batching import PreferenceCollator
    from ..data import read_jsonl
    from ..evaluation.metrics import preference_rewards
    from ..evaluation.sampling import sample_k
    from ..precompute import precompute_reference_logps
    from ..world import data_file
    from .rounds import default_run

    if list(splits) != ["dev"]:
        raise ValueError("the over-optimisation runs are evaluated on dev only")
    reference, tokenizer = _reference(ref_seed)
    prompts = _prompts("dev")
    pairs, _ = read_jsonl(data_file("pairs_dev"))
    loss = recipe.loss
    ref_logps = None
    if loss.needs_reference:
        ref_logps = precompute_reference_logps(
            reference, pairs, PreferenceCollator(tokenizer), 64, length_normalize=loss.length_normalize
        )
    records: list[dict] = []
    train_accuracy: list[float] = []
    started = time.perf_counter()

    def on_step(round_index: int, row: dict, model: Any) -> None:
        step = row["step"]
        train_accuracy.append(float(row["rewards/accuracies"]))
        if step % OVEROPT_EVERY and step != stop_at:
            return
        states = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
        was_training = model.training
        model.eval()
        try:
            samples = sample_k(
                model, tokenizer, prompts, k=K_POLICY, stream=1000 + seed, max_new_tokens=MAX_NEW_TOKENS
            )
            rewards = preference_rewards(model, tokenizer, pairs, loss, ref_logps=ref_logps, batch_size=64)
            records.append(
                {
                    **_run_fields(kind, method, recipe, seed, ref_seed, round_index),
                    "step": step,
                    "split": "dev",
                    **_sample_fields(samples),
                    **_kl(model, reference, tokenizer, prompts, samples),
                    "pairs_dev_reward_accuracy": round(rewards.reward_accuracy, 4),
                    "train_reward_accuracy": round(float(np.mean(train_accuracy[-OVEROPT_EVERY:])), 4),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
        finally:
            model.train(was_training)
            torch.random.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])
        if step == stop_at:
            raise _Stop

    try:
        default_run(
            method,
            seed,
            reference=reference,
            tokenizer=tokenizer,
            recipe=recipe,
            progress=False,
            on_step=on_step,
        )
    except _Stop:
        pass
    return records


def overopt_point(method: str = "simpo", seed: int = 0, step: int = OVEROPT_EVERY) -> dict:
    """Re-run one point of the over-optimisation record live: ``method``'s run (``overopt_recipes``) with
    training seed ``seed`` up to ``step`` (the full run's schedule), evaluated as the record is."""
    recipe = overopt_recipes()[method]
    return overopt_run("overopt", method, recipe, seed, SHIPPED, ("dev",), stop_at=step)[-1]


def _append(path: Path, records: Sequence[dict]) -> None:
    with open(path, "a") as handle:  # one write per run: a kill leaves at most one partial last line
        handle.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))


def run_jobs(jobs: Sequence[tuple], out: Path, workers: int) -> None:
    """Run the jobs not yet in ``out/rounds.jsonl`` (baselines first), appending each run's records."""
    path = out / RECORDS
    out.mkdir(parents=True, exist_ok=True)
    done = read_records(path)
    done_runs = {r["id"] for r in done if "id" in r}
    done_baselines = {(r["ref_seed"], r["split"]) for r in done if r["kind"] == "baseline"}
    needed = sorted({(j[4], split) for j in jobs for split in j[5]} - done_baselines)
    todo = [j for j in jobs if run_id(j[0], j[1], j[2], j[3], j[4]) not in done_runs]
    print(f"{len(needed)} baselines and {len(todo)} runs to do ({len(jobs) - len(todo)} already recorded)")
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        for future in as_completed([pool.submit(baseline, *key) for key in needed]):
            _append(path, [future.result()])
        futures = {
            pool.submit(overopt_run if job[0] == "overopt" else evaluate_run, *job): job for job in todo
        }
        for number, future in enumerate(as_completed(futures), 1):
            records = future.result()
            _append(path, records)
            job, last = futures[future], records[-1]
            print(
                f"[{number}/{len(todo)}] {job[0]} {job[1]} seed {job[3]} ref {job[4]}: "
                f"{last['seconds']:.0f} s, {time.perf_counter() - started:.0f} s so far",
                flush=True,
            )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("search", "spread", "family", "overopt", "kl", "noise", "report"))
    parser.add_argument("--readme", type=Path, default=None, help="report: rewrite this file's spread block")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="default: the repository's results/")
    parser.add_argument(
        "--seeds", type=int, default=16, help="spread: default SimPO seeds, shipped reference"
    )
    parser.add_argument(
        "--family-seeds", type=int, default=FAMILY_SPREAD_SEEDS, help="family: training seeds per member"
    )
    parser.add_argument("--with-overopt", action="store_true", help="family: then the overopt runs")
    args = parser.parse_args(argv)
    if args.out is None:
        from ..evaluation.results import repo_root

        args.out = repo_root() / "results"
    if args.phase == "report":
        text = report_markdown(read_records(args.out / RECORDS))
        if args.readme is None:
            print(text)
            return
        readme = args.readme.read_text()
        start, end = "<!-- spread:start -->\n", "<!-- spread:end -->"
        if start not in readme or end not in readme:
            raise SystemExit(f"{args.readme} has no {start.strip()} ... {end} block")
        head, rest = readme.split(start, 1)
        args.readme.write_text(head + start + text + end + rest.split(end, 1)[1])
        print(f"rewrote the spread block of {args.readme}")
        return
    if args.phase == "family":  # the search, and each member's dev-best recipe over seeds once searched
        run_family(args.out, args.workers, args.family_seeds, overopt=args.with_overopt)
        return
    phases = {"search": search_jobs, "overopt": overopt_jobs, "kl": kl_jobs, "noise": label_noise_jobs}
    jobs = phases.get(args.phase, lambda: spread_jobs(args.seeds))()
    run_jobs(jobs, args.out, args.workers)


# ------------------------------------------------------------------------------------------ summaries


def baselines(records: Sequence[dict]) -> dict[tuple[int, str], dict]:
    """(ref_seed, split) -> the baseline record (reference samples, best-of-4/8, probes)."""
    return {(r["ref_seed"], r["split"]): r for r in records if r["kind"] == "baseline"}


def headroom_share(gain: float, baseline_record: dict) -> float:
    """``gain`` as a share of the best-of-4 headroom: (best-of-4 - reference) on the same prompts."""
    headroom = np.mean(baseline_record["best_of_4"]) - np.mean(baseline_record["expected"])
    return float(gain / headroom)


def run_gains(records: Sequence[dict], *, kind: str, method: str, split: str, round_index: int | None = None):
    """Per run at its last round (or ``round_index``): [(record, per-seed score_gain Interval)]."""
    from ..evaluation.sampling import score_gain

    base = baselines(records)
    chosen = _round_records(records, kind, method, split, round_index)
    return [(r, score_gain(r["expected"], base[(r["ref_seed"], split)]["expected"])) for r in chosen]


def spread_summary(
    records: Sequence[dict], method: str, split: str, round_index: int | None = None
) -> dict[str, Any]:
    """The spread of ``method``'s default runs on ``split`` after their last round (or ``round_index``): per run
    the gain and its per-seed interval; the two-way (seeds x prompts) interval per reference build; the worst
    run; the share of intervals above 0."""
    from ..evaluation.sampling import seed_prompt_gain

    runs = run_gains(records, kind="spread", method=method, split=split, round_index=round_index)
    if not runs:
        raise ValueError(f"no spread records of {method} on {split}")
    base = baselines(records)
    by_reference: dict[int, list] = {}
    for record, gain in runs:
        by_reference.setdefault(record["ref_seed"], []).append((record, gain))
    pooled = {}
    for ref_seed, group in sorted(by_reference.items()):
        expected = np.array([r["expected"] for r, _ in group])  # [S, N]
        reference = np.array(base[(ref_seed, split)]["expected"])
        pooled[ref_seed] = {
            "seeds": len(group),
            "gain": seed_prompt_gain(expected, reference).as_dict() if len(group) > 1 else None,
            "headroom_share": headroom_share(
                float(expected.mean() - reference.mean()), base[(ref_seed, split)]
            ),
            "reference_score": float(reference.mean()),
            "best_of_4": float(np.mean(base[(ref_seed, split)]["best_of_4"])),
            "best_of_8": float(np.mean(base[(ref_seed, split)]["best_of_8"])),
        }
    gains = [gain for _, gain in runs]
    return {
        "method": method,
        "split": split,
        "runs": [
            {"seed": r["seed"], "ref_seed": r["ref_seed"], "gain": g.as_dict(), "probes": r.get("probes")}
            for r, g in runs
        ],
        "by_reference": pooled,
        "mean_gain": float(np.mean([g.mean for g in gains])),
        "min_gain": float(min(g.mean for g in gains)),
        "min_low": float(min(g.low for g in gains)),
        "share_excluding_zero": float(np.mean([g.low > 0 for g in gains])),
    }


def search_table(records: Sequence[dict]) -> list[dict]:
    """The dev search: per setting and round, the mean dev score gain over the seeds and its headroom share."""
    base = baselines(records)
    cells: dict[tuple, list[float]] = {}
    for r in records:
        if r.get("kind") != "search" or r["split"] != "dev":  # the family's search runs also record eval
            continue
        recipe = r["recipe"]
        key = (r["method"], recipe["learning_rate"], recipe["steps_per_round"], recipe["loss"]["sft_weight"])
        reference = np.mean(base[(r["ref_seed"], r["split"])]["expected"])
        cells.setdefault(key + (r["round"],), []).append(float(np.mean(r["expected"]) - reference))
    rows = []
    for key in sorted({k[:4] for k in cells}):
        gains = {k[4]: float(np.mean(v)) for k, v in cells.items() if k[:4] == key}
        best = max(gains, key=gains.get)
        rows.append(
            {
                "method": key[0],
                "learning_rate": key[1],
                "steps_per_round": key[2],
                "sft_weight": key[3],
                "gain_by_round": [round(gains[r], 4) for r in sorted(gains)],
                "best_round": best,
                "best_share": headroom_share(gains[best], base[(SHIPPED, "dev")]),
                "seeds": len(next(v for k, v in cells.items() if k[:4] == key)),
            }
        )
    return rows


def _interval(d: dict | None) -> str:
    return "–" if d is None else f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


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


def findings(records: Sequence[dict]) -> list[str]:
    """The spread record's claims, as computed sentences (the README quotes these, not hand-typed numbers)."""
    from ..evaluation.sampling import method_difference

    def resolved(interval) -> str:
        return (
            "resolved" if interval.low > 0 or interval.high < 0 else "not resolved (the interval includes 0)"
        )

    lines = []
    ev, ho = spread_summary(records, "simpo", "eval"), spread_summary(records, "simpo", "heldout")
    shipped = ev["by_reference"][SHIPPED]
    worst = min(ev["runs"], key=lambda r: r["gain"]["mean"])
    worst_build = "shipped reference" if worst["ref_seed"] == SHIPPED else f"rebuild {worst['ref_seed']}"
    rebuilt = ", ".join(
        f"{v['reference_score']:.3f} -> {np.mean([r['gain']['mean'] for r in ev['runs'] if r['ref_seed'] == k]):+.3f}"
        for k, v in ev["by_reference"].items()
        if k != SHIPPED
    )
    target = ev["mean_gain"] >= 0.20 and ev["share_excluding_zero"] == 1.0
    lines.append(
        (
            "- **The default run shows its effect on every recorded seed and reference build.** "
            if ev["share_excluding_zero"] == 1.0
            else "- **The default run does not show its effect on every run.** "
        )
        + f"Eval score gain "
        f"{_interval(shipped['gain'])} over {shipped['seeds']} seeds from the shipped reference (seeds and "
        f"prompts resampled), {shipped['headroom_share']:.0%} of the best-of-4 headroom; "
        f"{ev['share_excluding_zero']:.0%} of the {len(ev['runs'])} runs have a per-seed interval above 0; the "
        f"worst run gains {worst['gain']['mean']:+.3f} (seed {worst['seed']}, "
        f"{worst_build}); from the "
        f"rebuilt references (reference score -> mean gain): {rebuilt}. The kit's target for its default run, a "
        f"mean gain of at least +0.20 with every per-seed interval above 0, is "
        + (
            "met."
            if target
            else f"{'not met: the mean over all runs is ' + format(ev['mean_gain'], '+.3f')}."
        )
    )
    held = ho["by_reference"][SHIPPED]["gain"]
    lines.append(
        f"- **Tasks never seen**: the gain on the held-out tasks is {_interval(held)} (worst run "
        f"{ho['min_gain']:+.3f}), "
        + (
            "less than on new wordings of seen tasks."
            if held["mean"] < shipped["gain"]["mean"]
            else "as large as on eval."
        )
        + " A fact the model never read cannot be recalled there; what can carry over is behaviour (notebook 05's "
        "probes and family tables)."
    )
    default = _final_expected(records, "simpo", "eval")
    for method, name in (
        ("sft", "SFT on the chosen answers of the same rounds (the baseline)"),
        ("simpo_offline", "SimPO on the offline pairs"),
        ("dpo", "DPO on the same rounds"),
        ("dpo_plain", "DPO on the same rounds without the SFT term"),
        ("dpo_offline", "DPO on the offline pairs"),
    ):
        other = _final_expected(records, method, "eval")
        if len(other) < 2:
            continue
        summary = spread_summary(records, method, "eval")
        diff = method_difference(default, other)
        lines.append(
            f"- **{name}**: eval gain {_interval(summary['by_reference'][SHIPPED]['gain'])}, "
            f"{summary['share_excluding_zero']:.0%} of its {len(summary['runs'])} per-seed intervals above 0; "
            f"default SimPO minus it: {diff} (each method's seeds and the prompts resampled): {resolved(diff)}."
        )
    lora, full = (
        _final_expected(records, "simpo_offline_lora", "eval"),
        _final_expected(records, "simpo_offline", "eval"),
    )
    if len(lora) >= 2 and len(full) >= 2:
        per_seed = lora_minus_full(records)
        diff = method_difference(lora, full)
        lines.append(
            f"- **LoRA against full fine-tuning** (offline SimPO, notebook 06's adapters): LoRA minus full "
            f"{diff}, {resolved(diff)}; per seed (the same training seed, prompts resampled) "
            f"{sum(g.excludes(0.0) for g in per_seed)} of {len(per_seed)} intervals exclude 0."
        )
    return lines


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


def overopt_summary(records: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """Per over-optimisation method: per evaluated step the mean over seeds of the dev score gain, the reward
    accuracy on the held-out pairs and on the training batches, the KL and the length; the step with the
    highest mean gain; and the last step minus that one, per prompt and seed (an interval that resamples
    seeds and prompts, or the prompts alone for one seed; the best step is picked on the same data, so the
    drop is if anything overstated)."""
    from ..evaluation.sampling import score_gain, seed_prompt_gain

    base = baselines(records)
    out: dict[str, dict[str, Any]] = {}
    chosen = [r for r in records if r.get("kind") == "overopt"]
    for method in dict.fromkeys(r["method"] for r in chosen):
        runs: dict[int, dict[int, dict]] = {}
        for r in chosen:
            if r["method"] == method:
                runs.setdefault(r["seed"], {})[r["step"]] = r
        steps = sorted(set.intersection(*(set(v) for v in runs.values())))
        if not steps:
            continue
        reference = np.array(base[(SHIPPED, "dev")]["expected"])
        seeds = sorted(runs)

        def mean(field: str, step: int, runs: dict = runs, seeds: list = seeds) -> float:
            return float(np.mean([runs[s][step][field] for s in seeds]))

        gains = [float(np.mean([runs[s][t]["expected"] for s in seeds]) - reference.mean()) for t in steps]
        best = steps[int(np.argmax(gains))]
        drop = None
        if best != steps[-1]:
            last = np.array([runs[s][steps[-1]]["expected"] for s in seeds])
            top = np.array([runs[s][best]["expected"] for s in seeds])
            if len(seeds) >= 2:
                drop = seed_prompt_gain(last - top, np.zeros(last.shape[1])).as_dict()
            else:  # one seed: the prompts alone are resampled
                drop = score_gain(last[0], top[0]).as_dict()
        out[method] = {
            "seeds": seeds,
            "steps": steps,
            "gain": gains,
            "gain_by_seed": {
                s: [float(np.mean(runs[s][t]["expected"]) - reference.mean()) for t in steps] for s in seeds
            },
            "pairs_dev_reward_accuracy": [mean("pairs_dev_reward_accuracy", t) for t in steps],
            "train_reward_accuracy": [mean("train_reward_accuracy", t) for t in steps],
            "kl": [mean("kl", t) for t in steps],
            "mean_length": [mean("mean_length", t) for t in steps],
            "best_step": best,
            "last_minus_best": drop,
        }
    return out


def overopt_band(
    records: Sequence[dict], method: str = "simpo", step: int = OVEROPT_EVERY, *, seeds=None, z: float = 3.0
) -> tuple[float, float]:
    """Where a live re-run of one over-optimisation point (``overopt_point``) should land: the recorded
    seeds' dev gains at ``step`` (``seeds``: a subset), widened on each side by ``z`` standard errors of one
    run's mean over the dev prompts (the largest of the recorded runs'). Another CPU or GPU trains another
    trajectory, as another seed would; tests/test_family.py checks that a band built without one seed holds it."""
    base = np.array(baselines(records)[(SHIPPED, "dev")]["expected"])
    chosen = [
        r
        for r in records
        if r.get("kind") == "overopt"
        and r["method"] == method
        and r["step"] == step
        and (seeds is None or r["seed"] in seeds)
    ]
    if not chosen:
        raise ValueError(f"no over-optimisation record of {method} at step {step}")
    return seed_band([np.asarray(r["expected"]) - base for r in chosen], z=z)


def seed_band(differences: Sequence[np.ndarray], *, z: float = 3.0) -> tuple[float, float]:
    """The range of the recorded runs' mean gains (``differences``: per run, per-prompt policy minus
    reference), widened on each side by ``z`` standard errors of one run's mean over the prompts (the largest)."""
    gains = [float(np.mean(d)) for d in differences]
    se = max(float(np.std(d, ddof=1) / np.sqrt(len(d))) for d in differences)
    return min(gains) - z * se, max(gains) + z * se


def dev_gain(record: dict, records: Sequence[dict]) -> float:
    """A dev record's mean expected score minus the shipped reference's on dev (its k = 8 baseline)."""
    base = baselines(records)[(record["ref_seed"], record["split"])]
    return float(np.mean(record["expected"]) - np.mean(base["expected"]))


def lora_minus_full(records: Sequence[dict], split: str = "eval") -> list:
    """Per training seed recorded for both: LoRA's minus full fine-tuning's expected score on the same prompts
    (offline SimPO), an Interval over prompts (what notebook 06 computes for its one seed)."""
    from ..evaluation.sampling import score_gain

    def by_seed(method: str) -> dict[int, list[float]]:
        runs = _round_records(records, "spread", method, split, None)
        return {r["seed"]: r["expected"] for r in runs if r["ref_seed"] == SHIPPED}

    lora, full = by_seed("simpo_offline_lora"), by_seed("simpo_offline")
    return [score_gain(lora[seed], full[seed]) for seed in sorted(set(lora) & set(full))]


def report_markdown(records: Sequence[dict]) -> str:
    """The README block: the dev search, the spread on eval and held-out tasks, and the baselines."""
    lines = [
        "**Search on dev** (mean dev score gain over the seeds after each round, 8 samples per "
        "training prompt per round, best vs worst; SimPO, DPO and SFT 2 seeds per setting, the loss family 1):",
        "",
        "| method | lr | steps/round | SFT term | seeds | gain after rounds 1, 2, 3, 4 | best: share of best-of-4 headroom |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for row in search_table(records):
        lines.append(
            f"| {row['method']} | {row['learning_rate']:g} | {row['steps_per_round']} | {row['sft_weight']:g} | "
            f"{row['seeds']} | "
            + ", ".join(f"{g:+.3f}" for g in row["gain_by_round"])
            + f" | round {row['best_round']}: {row['best_share']:.0%} |"
        )
    lines += [
        "",
        "**Spread record** (eval: new wordings of seen tasks; held-out: tasks never seen). Gains are "
        "paired against each reference build's own 8 samples per prompt; [CI] resamples training seeds "
        "and prompts (shipped reference); min is the worst single run over every seed and reference "
        "build; share: of the best-of-4 headroom.",
        "",
        "| method | runs (reference builds) | eval gain [CI] | eval min | per-seed CI above 0 | share | held-out gain [CI] | held-out min |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = {
        "simpo": "SimPO, on-policy rounds (default)",
        "dpo": "DPO, on-policy rounds",
        "dpo_plain": "DPO, on-policy rounds, no SFT term (lr 5e-4)",
        "sft": "SFT on the chosen answers, on-policy rounds (baseline)",
        "simpo_offline": "SimPO, offline pairs",
        "dpo_offline": "DPO, offline pairs",
        "simpo_offline_lora": "SimPO, offline pairs, LoRA (notebook 06)",
    }
    for method, name in names.items():
        try:
            ev, ho = spread_summary(records, method, "eval"), spread_summary(records, method, "heldout")
        except ValueError:
            continue
        refs = ", ".join(
            f"{'shipped' if k == SHIPPED else f'rebuild {k}'} x {v['seeds']}"
            for k, v in ev["by_reference"].items()
        )
        shipped = ev["by_reference"][SHIPPED]
        lines.append(
            f"| {name} | {refs} | {_interval(shipped['gain'])} | {ev['min_gain']:+.3f} | "
            f"{ev['share_excluding_zero']:.0%} | {shipped['headroom_share']:.0%} | "
            f"{_interval(ho['by_reference'][SHIPPED]['gain'])} | {ho['min_gain']:+.3f} |"
        )
    lines += [
        "",
        "**Baselines** (expected judge score; best-of-n: the judge keeps the best of n reference samples):",
        "",
        "| reference build | split | reference | best-of-4 | best-of-8 |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for (ref_seed, split), b in sorted(baselines(records).items()):
        lines.append(
            f"| {'shipped' if ref_seed == SHIPPED else f'rebuild, seed {ref_seed}'} | {split} | "
            f"{np.mean(b['expected']):.3f} | {np.mean(b['best_of_4']):.3f} | {np.mean(b['best_of_8']):.3f} |"
        )
    try:
        lines += ["", "What the record says (computed by `spread.findings`):", "", *findings(records)]
    except ValueError:  # the spread is not recorded yet (a search-only record)
        pass
    lines += family_markdown(records)
    return "\n".join(lines) + "\n"


def _cell(d: dict | None) -> str:
    return "–" if d is None else _interval(d)


def family_markdown(records: Sequence[dict]) -> list[str]:
    """The loss family's rows (notebook 08) and the over-optimisation curve, from the records."""
    lines: list[str] = []
    rows = family_table(records)
    if any(r["method"] in family_losses() for r in rows):
        lines += [
            "",
            "**The loss family** (notebook 08; on-policy rounds from the shipped reference, each member's "
            "learning rate, steps per round and rounds searched on dev on the grid above with ONE seed, its "
            "own hyper-parameter fixed beforehand, `spread.family_losses`; eval, last round). [CI] resamples "
            "training seeds and prompts; the differences resample each method's seeds and pair the prompts; "
            "KL: log pi(y|x) - log pi_ref(y|x) summed over response tokens, mean over the policy's own samples "
            "(SimPO's and DPO's from reruns of their recorded seeds, `spread.kl_jobs`; – : not measured).",
            "",
            "| method | seeds | lr, steps/round, rounds | eval gain [CI] | minus SimPO [CI] | minus DPO [CI] | length (tokens) | KL (nats) |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in rows:
            kl = "–" if r["kl"] is None else f"{r['kl']:.2f}"
            lines.append(
                f"| {r['name']} | {r['seeds']} | {r['learning_rate']:g}, {r['steps_per_round']}, {r['rounds']} | "
                f"{_interval(r['gain'])} | {_cell(r['minus_simpo'])} | {_cell(r['minus_dpo'])} | "
                f"{r['mean_length']:.1f} | {kl} |"
            )
        noise = {split: label_noise_summary(records, split) for split in ("eval", "heldout")}
        if noise["eval"] is not None and noise["heldout"] is not None:
            lines += [
                "",
                f"cDPO where labels are noisy (`spread.label_noise_jobs`: the offline DPO recipe with label smoothing "
                f"0.1 on the offline annotator's pairs, {noise['eval']['seeds']['cdpo_offline']} seeds): cDPO minus "
                f"offline DPO {_interval(noise['eval']['cdpo_minus_dpo'])} on eval, "
                f"{_interval(noise['heldout']['cdpo_minus_dpo'])} on the held-out tasks.",
            ]
        rerun = kl_reruns_reproduce(records)
        if rerun["compared"]:
            lines += [
                "",
                f"The KL reruns reproduce the recorded scores of the same seeds: over {rerun['compared']} "
                "evaluations the largest per-prompt difference in expected score is "
                f"{rerun['max_abs_difference']:.4f}.",
            ]
    curves = overopt_summary(records)
    if curves:
        lines += [
            "",
            "**Over-optimisation** (notebook 08; offline pairs, one cosine schedule of "
            f"{OVEROPT_STEPS} steps evaluated on dev every {OVEROPT_EVERY}; mean over the seeds; accuracy: "
            "the implicit reward's on the held-out offline pairs, a tie counts half):",
            "",
            "| method | seeds | step | dev gain | held-out pair accuracy | training accuracy | KL (nats) | length |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for method, c in curves.items():
            for i, step in enumerate(c["steps"]):
                mark = " (best)" if step == c["best_step"] else ""
                lines.append(
                    f"| {method} | {len(c['seeds'])} | {step}{mark} | {c['gain'][i]:+.3f} | "
                    f"{c['pairs_dev_reward_accuracy'][i]:.3f} | {c['train_reward_accuracy'][i]:.3f} | "
                    f"{c['kl'][i]:.2f} | {c['mean_length'][i]:.1f} |"
                )
        for method, c in curves.items():
            drop = c["last_minus_best"]
            lines.append(
                f"\n- {method}: the dev gain peaks at step {c['best_step']}; "
                + (
                    "it is highest at the last step recorded (no over-optimisation within the run)."
                    if drop is None and c["best_step"] == c["steps"][-1]
                    else "the last step minus the peak: "
                    + _interval(drop)
                    + (
                        " (seeds and prompts resampled)."
                        if len(c["seeds"]) > 1
                        else " (one seed: prompts resampled)."
                    )
                )
            )
    return lines


if __name__ == "__main__":
    main()
