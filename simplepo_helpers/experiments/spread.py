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

This module holds the jobs of ``search`` and ``spread``, ``run_jobs``, ``LESSON_CHECKS`` and the command
line; the rest lives beside it, lowest first: ``records`` (the record's shared settings, ``run_id``,
``baselines``), ``spread_runs`` (one run trained and evaluated in a worker: ``baseline``, ``evaluate_run``),
``overopt`` (the over-optimisation curve), ``family`` (the loss family, the KL reruns, cDPO on noisy labels)
and ``spread_report`` (the summaries, the findings and the README block). Their public names are re-exported
here (``__all__``), so ``spread.family_table`` and the like keep working; new code imports them from their
own module.

Each evaluated round writes one JSON line: the run (kind, method, recipe, seed, reference build), the round,
the split and the per-prompt expected scores (k = 4 samples, the policy's own sampling stream), so any
interval (per seed, or over seeds and prompts) can be recomputed from the record. Runs go to a process pool
(one torch thread each); finished runs are skipped on restart; a partial last line (a killed write) is ignored.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

# The modules split from this one by their full name: ``python -m simplepo_helpers.evaluation.spread`` (the
# old path, ``_MOVED`` in simplepo_helpers/__init__.py) runs this file in ``evaluation``: no ``.family``.
from simplepo_helpers.experiments.family import (
    FAMILY_NAMES,
    FAMILY_SEARCH_SEEDS,
    FAMILY_SEARCH_SPLITS,
    FAMILY_SPREAD_SEEDS,
    KL_SEEDS,
    NOISE_SEEDS,
    dev_best,
    family_final_records,
    family_losses,
    family_next_job,
    family_search_jobs,
    family_spread_jobs,
    family_table,
    kl_jobs,
    kl_reruns_reproduce,
    label_noise_jobs,
    label_noise_summary,
    run_family,
)
from simplepo_helpers.experiments.overopt import (
    OVEROPT_EVERY,
    OVEROPT_SEEDS,
    OVEROPT_STEPS,
    dev_gain,
    overopt_band,
    overopt_jobs,
    overopt_point,
    overopt_recipes,
    overopt_run,
    overopt_summary,
    seed_band,
)
from simplepo_helpers.experiments.records import (
    K_POLICY,
    K_REFERENCE,
    REBUILD_SEEDS,
    RECORDS,
    REFERENCE_STREAM,
    SEARCH_GRID,
    SEARCH_ROUNDS,
    SEARCH_SEEDS,
    SHIPPED,
    SPLITS,
    baselines,
    run_id,
)
from simplepo_helpers.experiments.records import (
    _final_expected as _final_expected,  # notebook 08 reads spread._final_expected
)
from simplepo_helpers.experiments.spread_report import (
    family_markdown,
    findings,
    headroom_share,
    lora_minus_full,
    report_markdown,
    run_gains,
    search_table,
    spread_summary,
)
from simplepo_helpers.experiments.spread_runs import _append, _worker_init, baseline, evaluate_run
from simplepo_helpers.experiments.spread_runs import (
    _run_fields as _run_fields,  # tests/test_spread.py imports it
)

from ..runtime.files import read_records
from .rounds import RECIPES, Recipe

__all__ = [
    # this module
    "LESSON_CHECKS",
    "main",
    "run_jobs",
    "search_jobs",
    "spread_jobs",
    # re-exported from their own modules (import them from there in new code)
    "FAMILY_NAMES",
    "FAMILY_SEARCH_SEEDS",
    "FAMILY_SEARCH_SPLITS",
    "FAMILY_SPREAD_SEEDS",
    "KL_SEEDS",
    "K_POLICY",
    "K_REFERENCE",
    "NOISE_SEEDS",
    "OVEROPT_EVERY",
    "OVEROPT_SEEDS",
    "OVEROPT_STEPS",
    "REBUILD_SEEDS",
    "RECIPES",
    "RECORDS",
    "REFERENCE_STREAM",
    "SEARCH_GRID",
    "SEARCH_ROUNDS",
    "SEARCH_SEEDS",
    "SHIPPED",
    "SPLITS",
    "Recipe",
    "baseline",
    "baselines",
    "dev_best",
    "dev_gain",
    "evaluate_run",
    "family_final_records",
    "family_losses",
    "family_markdown",
    "family_next_job",
    "family_search_jobs",
    "family_spread_jobs",
    "family_table",
    "findings",
    "headroom_share",
    "kl_jobs",
    "kl_reruns_reproduce",
    "label_noise_jobs",
    "label_noise_summary",
    "lora_minus_full",
    "overopt_band",
    "overopt_jobs",
    "overopt_point",
    "overopt_recipes",
    "overopt_run",
    "overopt_summary",
    "read_records",
    "report_markdown",
    "run_family",
    "run_gains",
    "run_id",
    "search_table",
    "seed_band",
    "spread_summary",
]

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


if __name__ == "__main__":
    main()
