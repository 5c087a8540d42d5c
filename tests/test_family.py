"""The loss family (issue 21) and the over-optimisation curve: the jobs, the dev-best choice, the family table
and the curve's summary on small records written here (hand-derived values), then on the committed record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simplepo_helpers.experiments import spread
from simplepo_helpers.experiments.rounds import RECIPES, Recipe, recipe_settings
from simplepo_helpers.experiments.spread import (
    SEARCH_GRID,
    SEARCH_ROUNDS,
    SHIPPED,
    dev_best,
    family_losses,
    family_search_jobs,
    family_table,
    overopt_band,
    overopt_jobs,
    overopt_summary,
)


def _baseline(split, expected):
    return {
        "kind": "baseline",
        "ref_seed": SHIPPED,
        "split": split,
        "expected": expected,
        "best_of_4": expected,
    }


def _search(method, lr, steps, round_index, expected, seed=0):
    recipe = Recipe(family_losses()[method], learning_rate=lr, steps_per_round=steps, rounds=SEARCH_ROUNDS)
    return {
        "kind": "search",
        "id": f"{method}-{lr}-{steps}-{seed}",
        "method": method,
        "recipe": recipe_settings(recipe),
        "seed": seed,
        "ref_seed": SHIPPED,
        "round": round_index,
        "split": "dev",
        "expected": expected,
    }


def _spread(method, seed, expected, split="eval", kl=None, length=10.0):
    record = {
        "kind": "spread",
        "id": f"{method}-{seed}",
        "method": method,
        "recipe": {"rounds": 2, "learning_rate": 1e-3, "steps_per_round": 60},
        "seed": seed,
        "ref_seed": SHIPPED,
        "round": 2,
        "split": split,
        "expected": expected,
        "mean_length": length,
    }
    if kl is not None:
        record["kl"] = kl
    return record


def test_family_losses_hold_the_stated_fixed_settings():
    losses = family_losses()
    assert set(losses) == {"orpo", "rdpo", "cdpo", "ipo"}
    assert losses["orpo"].name == "orpo" and losses["orpo"].beta == 0.1 and losses["orpo"].sft_weight == 1
    assert losses["rdpo"].name == "rdpo" and losses["rdpo"].alpha == pytest.approx(1 / 12)
    assert losses["cdpo"].name == "dpo" and losses["cdpo"].label_smoothing == 0.1
    assert losses["ipo"].loss_type == "ipo" and losses["ipo"].beta == 0.1
    dpo = RECIPES["dpo"].loss
    for name in (
        "rdpo",
        "cdpo",
        "ipo",
    ):  # DPO's variants: the default DPO recipe's beta (IPO: tau) and SFT term
        assert losses[name].sft_weight == dpo.sft_weight == 1.0
        assert losses[name].length_normalize is False
    assert losses["rdpo"].beta == losses["cdpo"].beta == dpo.beta


def test_family_search_is_the_default_grid_with_one_seed():
    jobs = family_search_jobs()
    assert len(jobs) == 4 * len(SEARCH_GRID["learning_rate"]) * len(SEARCH_GRID["steps_per_round"])
    assert {j[3] for j in jobs} == {0} and {j[5] for j in jobs} == {("dev", "eval", "heldout")}
    for method in family_losses():
        grid = {(j[2].learning_rate, j[2].steps_per_round) for j in jobs if j[1] == method}
        assert grid == {
            (lr, s) for lr in SEARCH_GRID["learning_rate"] for s in SEARCH_GRID["steps_per_round"]
        }
    assert all(j[2].rounds == SEARCH_ROUNDS and j[2].data == "onpolicy" for j in jobs)


def test_dev_best_takes_the_highest_mean_gain_at_any_round():
    records = [_baseline("dev", [0.5, 0.5])]
    # ORPO: lr 5e-4 / 60 steps peaks at round 2 (+0.2) above every other cell (1e-3 / 120 reaches +0.15)
    for r, g in enumerate([0.1, 0.2, 0.15, 0.12], 1):
        records.append(_search("orpo", 5e-4, 60, r, [0.5 + g, 0.5 + g]))
    for r, g in enumerate([0.05, 0.1, 0.12, 0.15], 1):
        records.append(_search("orpo", 1e-3, 120, r, [0.5 + g, 0.5 + g]))
    assert dev_best(records, "orpo") is None  # two settings of the grid are missing: no choice yet
    for lr, steps in ((5e-4, 120), (1e-3, 60)):
        for r in range(1, 5):
            records.append(_search("orpo", lr, steps, r, [0.5, 0.5]))
    recipe, gain = dev_best(records, "orpo")
    assert (recipe.learning_rate, recipe.steps_per_round, recipe.rounds) == (5e-4, 60, 2)
    assert gain == pytest.approx(0.2)
    assert recipe.loss == family_losses()["orpo"]
    assert dev_best(records, "ipo") is None
    with pytest.raises(ValueError, match="no search records of rdpo"):
        spread.family_spread_jobs(records)


def test_dev_best_ignores_records_of_other_settings_under_the_same_name():
    records = [_baseline("dev", [0.5]), _search("cdpo", 5e-4, 60, 1, [0.6])]
    records += [_search("cdpo", lr, st, 1, [0.5]) for lr, st in ((5e-4, 120), (1e-3, 60), (1e-3, 120))]
    stale = _search("cdpo", 1e-3, 60, 1, [0.9])
    stale["recipe"]["loss"]["label_smoothing"] = 0.2  # not the fixed setting
    recipe, gain = dev_best([*records, stale], "cdpo")
    assert recipe.learning_rate == 5e-4 and gain == pytest.approx(0.1)


def test_family_table_by_hand():
    """ORPO's seed 0 is its dev-best search run (round 2 of 4), seed 1 a spread run of the dev-best recipe."""
    reference = [0.2, 0.4, 0.6]
    records = [_baseline("dev", [0.5, 0.5, 0.5]), _baseline("eval", reference)]
    for r, g in enumerate([0.1, 0.3, 0.2, 0.2], 1):  # dev-best: lr 5e-4, 60 steps, round 2
        records.append(_search("orpo", 5e-4, 60, r, [0.5 + g] * 3))
    for lr, steps in ((5e-4, 120), (1e-3, 60), (1e-3, 120)):  # the rest of the grid, no gain
        records += [_search("orpo", lr, steps, r, [0.5] * 3) for r in range(1, 5)]
    simpo = [[0.3, 0.5, 0.7], [0.4, 0.5, 0.6]]  # gains 0.1, 0.1, 0.1 and 0.2, 0.1, 0.0: mean 0.1
    orpo = [[0.2, 0.4, 0.9], [0.2, 0.6, 0.6]]  # gains 0, 0, 0.3 and 0, 0.2, 0: mean 0.0833
    for seed, e in enumerate(simpo):
        records.append(_spread("simpo", seed, e, length=8.0))
    search_eval = _search("orpo", 5e-4, 60, 2, orpo[0])
    records.append({**search_eval, "split": "eval", "kl": 1.0, "mean_length": 12.0})
    records.append(
        {**_search("orpo", 5e-4, 60, 4, [0.0] * 3), "split": "eval", "kl": 9.0, "mean_length": 1.0}
    )
    best = Recipe(family_losses()["orpo"], learning_rate=5e-4, steps_per_round=60, rounds=2)
    spread_run = _spread("orpo", 1, orpo[1], kl=2.0, length=12.0)
    records.append({**spread_run, "recipe": recipe_settings(best)})
    assert [r["seed"] for r in spread.family_final_records(records, "orpo", "eval")] == [0, 1]
    assert [j[3] for j in spread.family_spread_jobs(records, 3, ["orpo"])] == [0, 1, 2]  # no held-out yet
    held = [{**r, "split": "heldout"} for r in records if r.get("method") == "orpo" and r["split"] == "eval"]
    assert [j[3] for j in spread.family_spread_jobs(records + held, 3, ["orpo"])] == [2]
    rows = {r["method"]: r for r in family_table(records)}
    assert set(rows) == {"simpo", "orpo"}
    assert rows["simpo"]["gain"]["mean"] == pytest.approx(0.1)
    assert rows["orpo"]["gain"]["mean"] == pytest.approx(0.25 / 3)
    assert rows["orpo"]["minus_simpo"]["mean"] == pytest.approx(0.25 / 3 - 0.1)
    low, high = rows["orpo"]["minus_simpo"]["low"], rows["orpo"]["minus_simpo"]["high"]
    assert low <= rows["orpo"]["minus_simpo"]["mean"] <= high
    assert (
        rows["orpo"]["kl"] == pytest.approx(1.5) and rows["simpo"]["kl"] is None
    )  # old records: not measured
    assert rows["orpo"]["mean_length"] == 12.0 and rows["orpo"]["minus_dpo"] is None  # no DPO recorded here
    assert rows["orpo"]["rounds"] == 2
    # SimPO's KL comes from its KL reruns (kind "kl"), at their last round, once they are recorded
    reruns = [{**_spread("simpo", s, simpo[s], kl=k), "kind": "kl"} for s, k in ((0, 3.0), (1, 5.0))]
    reruns.append({**_spread("simpo", 0, [0.0] * 3, kl=99.0), "kind": "kl", "round": 1})  # not the last round
    rows = {r["method"]: r for r in family_table(records + reruns)}
    assert rows["simpo"]["kl"] == pytest.approx(4.0) and rows["simpo"]["gain"]["mean"] == pytest.approx(0.1)
    # the search table and the choice read dev only
    (row,) = [
        r for r in spread.search_table(records) if r["learning_rate"] == 5e-4 and r["steps_per_round"] == 60
    ]
    assert row["gain_by_round"] == pytest.approx([0.1, 0.3, 0.2, 0.2])  # the eval records left out


def _overopt(method, seed, step, expected, kl=0.0):
    return {
        "kind": "overopt",
        "id": f"overopt-{method}-{seed}",
        "method": method,
        "seed": seed,
        "ref_seed": SHIPPED,
        "round": 1,
        "step": step,
        "split": "dev",
        "expected": expected,
        "mean_length": 10.0,
        "kl": kl,
        "pairs_dev_reward_accuracy": 0.6,
        "train_reward_accuracy": 0.7,
    }


def test_overopt_summary_finds_the_peak_and_the_drop_after_it():
    records = [_baseline("dev", [0.5, 0.5])]
    curve = {60: 0.1, 120: 0.3, 180: 0.2}
    for seed in (0, 1):
        for step, gain in curve.items():
            g = gain + 0.02 * seed
            records.append(_overopt("simpo", seed, step, [0.5 + g, 0.5 + g], kl=step / 60))
    summary = overopt_summary(records)["simpo"]
    assert summary["steps"] == [60, 120, 180] and summary["best_step"] == 120
    assert summary["gain"] == pytest.approx([0.11, 0.31, 0.21])
    assert summary["last_minus_best"]["mean"] == pytest.approx(-0.1)
    assert summary["kl"] == pytest.approx([1.0, 2.0, 3.0])
    low, high = overopt_band(records, "simpo", 60)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.12)  # no prompt noise in these records


def test_overopt_jobs_train_the_offline_recipes_longer():
    jobs = overopt_jobs()
    assert {j[1] for j in jobs} == {"simpo", "dpo", "simpo_sft"} and {j[3] for j in jobs} == {0, 1}
    for job in jobs:
        recipe = job[2]
        assert recipe.data == "offline" and recipe.steps_per_round == spread.OVEROPT_STEPS
        offline = RECIPES["dpo_offline" if job[1] == "dpo" else "simpo_offline"]
        assert recipe.learning_rate == offline.learning_rate
        assert recipe.loss.sft_weight == (1.0 if job[1] == "simpo_sft" else 0.0)


# ------------------------------------------------------------------------------ the committed record


@pytest.fixture(scope="module")
def records():
    from simplepo_helpers.evaluation.results import repo_root

    return spread.read_records(repo_root() / "results" / "rounds.jsonl")


def _family_recorded(records):
    return any(r.get("kind") == "spread" and r["method"] in family_losses() for r in records)


def test_recipes_hold_each_members_dev_best_and_the_spread_ran_it(records):
    if not _family_recorded(records):
        pytest.skip("the family spread is not recorded yet")
    searched = [m for m in family_losses() if dev_best(records, m) is not None]
    assert "orpo" in searched
    for method in searched:
        best, _ = dev_best(records, method)
        assert recipe_settings(RECIPES[method]) == recipe_settings(best), method
        runs = [r for r in records if r.get("kind") == "spread" and r["method"] == method]
        assert all(r["recipe"] == recipe_settings(best) for r in runs), method
        seeds = {r["seed"] for r in spread.family_final_records(records, method, "eval")}
        assert len(seeds) >= (2 if runs else 1), method  # the search run is seed 0; a spread adds seeds


def test_the_family_table_recomputes_from_the_raw_lines(records):
    """One number of the README's family table, recomputed from the JSON lines without the kit's helpers."""
    if not _family_recorded(records):
        pytest.skip("the family spread is not recorded yet")
    from simplepo_helpers.evaluation.results import repo_root

    lines = [json.loads(line) for line in (repo_root() / "results" / "rounds.jsonl").read_text().splitlines()]
    last = {}
    for r in lines:
        if (
            r.get("kind") == "spread"
            and r["split"] == "eval"
            and r["ref_seed"] == -1
            and r["round"] == r["recipe"]["rounds"]
        ):
            last.setdefault(r["method"], []).append(r)
    chosen = RECIPES["orpo"]  # its seed 0 is the dev-best setting's search run, at the chosen round
    spread_seeds = {r["seed"] for r in last["orpo"]}
    last["orpo"] += [
        r
        for r in lines
        if r.get("kind") == "search"
        and r.get("method") == "orpo"
        and r["split"] == "eval"
        and r["recipe"]["learning_rate"] == chosen.learning_rate
        and r["recipe"]["steps_per_round"] == chosen.steps_per_round
        and r["round"] == chosen.rounds
        and r["seed"] not in spread_seeds
    ]
    orpo = np.mean([np.mean(r["expected"]) for r in last["orpo"]])
    simpo = np.mean([np.mean(r["expected"]) for r in last["simpo"]])
    rows = {r["method"]: r for r in family_table(records)}
    assert rows["orpo"]["minus_simpo"]["mean"] == pytest.approx(orpo - simpo, abs=1e-9)
    kl = np.mean([r["kl"] for r in last["orpo"]])
    assert rows["orpo"]["kl"] == pytest.approx(kl) and rows["orpo"]["seeds"] == len(last["orpo"])
    readme = (repo_root() / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| ORPO"))
    assert f"{orpo - simpo:+.3f} [" in row


def test_the_readme_block_is_the_report_of_the_record(records):
    from simplepo_helpers.evaluation.results import repo_root

    readme = (repo_root() / "README.md").read_text()
    block = readme.split("<!-- spread:start -->\n", 1)[1].split("<!-- spread:end -->", 1)[0]
    assert block == spread.report_markdown(records)


def test_a_band_built_without_one_seed_holds_that_seed(records):
    """The notebook's live check: calibrated on the recorded seeds, it must hold a seed it was not built on."""
    chosen = [r for r in records if r.get("kind") == "overopt" and r["step"] == spread.OVEROPT_EVERY]
    if not chosen:
        pytest.skip("the over-optimisation runs are not recorded yet")
    for method in {r["method"] for r in chosen}:
        seeds = sorted({r["seed"] for r in chosen if r["method"] == method})
        for left_out in seeds if len(seeds) > 1 else []:
            low, high = overopt_band(records, method, seeds=[s for s in seeds if s != left_out])
            (record,) = [r for r in chosen if r["method"] == method and r["seed"] == left_out]
            assert low <= spread.dev_gain(record, records) <= high, (method, left_out)


def test_new_records_keep_the_old_format_valid(records):
    """Old spread records have no ``kl`` (not measured); every record of the family and the curve has it."""
    for r in records:
        if r.get("kind") == "overopt" or (
            r.get("kind") in ("search", "spread") and r["method"] in family_losses()
        ):
            assert isinstance(r["kl"], float) and isinstance(r["mean_length"], float)


def test_the_family_schedule_puts_a_second_seed_and_the_curve_before_the_other_members():
    records = [_baseline("dev", [0.5]), _baseline("eval", [0.5]), _baseline("heldout", [0.5])]
    search = spread.family_search_jobs()
    job = spread.family_next_job(records, set(), overopt=True)
    assert job[:2] == ("search", "orpo")
    running = {spread.run_id(*j[:5]) for j in search if j[1] == "orpo"}
    job = spread.family_next_job(records, running, overopt=True)  # ORPO's search in flight: the curve next
    assert job[0] == "overopt" and job[3] == 0
    for j in search:
        if j[1] == "orpo":
            for split in j[5]:
                records.append(
                    {
                        **_search("orpo", j[2].learning_rate, j[2].steps_per_round, 4, [0.6]),
                        "split": split,
                        "id": spread.run_id(*j[:5]),
                    }
                )
    job = spread.family_next_job(records, set(), overopt=True)  # ORPO searched: its second seed first
    assert job[:2] == ("spread", "orpo") and job[3] == 1
    assert spread.family_next_job(records, {spread.run_id(*job[:5])}, overopt=True)[0] == "overopt"


def test_the_live_band_built_from_one_seed_holds_every_other_recorded_seed(records):
    """The band's width, checked where the record has many seeds: offline SimPO (notebook 03's recipe, 120
    steps, eval). Built from any one seed, it holds every other seed's gain: one recorded seed is enough to
    check a live run against, which is all the over-optimisation record has for some methods."""
    base = np.array(spread.baselines(records)[(SHIPPED, "eval")]["expected"])
    runs = [
        r
        for r in records
        if r.get("kind") == "spread"
        and r["method"] == "simpo_offline"
        and r["split"] == "eval"
        and r["ref_seed"] == SHIPPED
    ]
    assert len(runs) >= 8
    diffs = [np.asarray(r["expected"]) - base for r in runs]
    for i, d in enumerate(diffs):
        low, high = spread.seed_band([d])
        assert all(low <= other.mean() <= high for other in diffs), i


def test_kl_reruns_are_the_default_recipes_on_eval_and_are_compared_with_the_record():
    jobs = spread.kl_jobs()
    assert {(j[0], j[1], j[3], j[4], j[5]) for j in jobs} == {
        ("kl", m, s, SHIPPED, ("eval",)) for m in ("simpo", "dpo") for s in spread.KL_SEEDS
    }
    assert all(j[2] == RECIPES[j[1]] for j in jobs)
    recorded = [_spread("simpo", 0, [0.5, 0.25]), _spread("simpo", 1, [0.5, 0.5])]
    reruns = [{**_spread("simpo", 0, [0.5, 0.375]), "kind": "kl"}, {**_spread("dpo", 7, [1.0]), "kind": "kl"}]
    assert spread.kl_reruns_reproduce(recorded + reruns) == {"compared": 1, "max_abs_difference": 0.125}
    assert spread.kl_reruns_reproduce(recorded) == {"compared": 0, "max_abs_difference": None}


def test_label_noise_runs_are_offline_dpo_with_one_edit_and_their_summary_by_hand():
    jobs = spread.label_noise_jobs()
    assert [j[3] for j in jobs] == list(range(spread.NOISE_SEEDS)) and {j[1] for j in jobs} == {
        "cdpo_offline"
    }
    dpo, cdpo = RECIPES["dpo_offline"], RECIPES["cdpo_offline"]
    assert cdpo.loss.label_smoothing == family_losses()["cdpo"].label_smoothing == 0.1
    assert recipe_settings(cdpo) != recipe_settings(dpo)
    from dataclasses import replace

    assert replace(cdpo, loss=replace(cdpo.loss, label_smoothing=0.0)) == dpo  # the only difference
    records = [_baseline("eval", [0.2, 0.4, 0.6])]
    assert spread.label_noise_summary(records) is None
    for seed, e in enumerate([[0.3, 0.5, 0.7], [0.3, 0.4, 0.8]]):  # gains 0.1 each, and 0.1, 0, 0.2: mean 0.1
        records.append({**_spread("dpo_offline", seed, e, length=9.0), "recipe": {"rounds": 2}})
    assert spread.label_noise_summary(records) is None  # no cDPO yet
    for seed, e in enumerate([[0.4, 0.5, 0.7], [0.3, 0.6, 0.8]]):  # gains 0.2, 0.1, 0.1 and 0.1, 0.2, 0.2
        records.append({**_spread("cdpo_offline", seed, e, length=8.0), "recipe": {"rounds": 2}})
    summary = spread.label_noise_summary(records)
    assert summary["seeds"] == {"cdpo_offline": 2, "dpo_offline": 2}
    assert summary["gain"]["dpo_offline"]["mean"] == pytest.approx(0.1)
    assert summary["gain"]["cdpo_offline"]["mean"] == pytest.approx(0.15)
    assert summary["cdpo_minus_dpo"]["mean"] == pytest.approx(0.05)
    assert summary["mean_length"] == {"cdpo_offline": 8.0, "dpo_offline": 9.0}
