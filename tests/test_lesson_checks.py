"""Every notebook assertion about a trained default run holds for the worst run of the spread record.

The record (``results/rounds.jsonl``, ``make spread``) trains the default recipes over many training seeds from
the shipped reference, and over rebuilt references standing in for other CPUs; notebook 05 asserts
``LESSON_CHECKS`` on its live seeds. A threshold that some recorded run misses would fail some learner's run.
"""

from __future__ import annotations

import numpy as np
import pytest

from simplepo_helpers.evaluation.results import repo_root
from simplepo_helpers.evaluation.spread import (
    LESSON_CHECKS,
    SHIPPED,
    baselines,
    lora_minus_full,
    read_records,
    spread_summary,
)


@pytest.fixture(scope="module")
def records():
    return read_records(repo_root() / "results" / "rounds.jsonl")


def test_the_spread_record_covers_enough_seeds_and_reference_builds(records):
    summary = spread_summary(records, "simpo", "eval")
    shipped = [r for r in summary["runs"] if r["ref_seed"] == SHIPPED]
    assert len({r["seed"] for r in shipped}) >= 16
    assert len(summary["by_reference"]) >= 3  # the shipped reference and two rebuilds
    for method in ("dpo", "sft", "simpo_offline", "dpo_offline", "simpo_offline_lora"):
        assert len(spread_summary(records, method, "eval")["runs"]) >= 8, method


@pytest.mark.parametrize("rounds", sorted(LESSON_CHECKS["simpo"]))
def test_every_recorded_default_run_passes_notebook_05s_checks(records, rounds):
    """Notebook 05 trains the recipe's first ``rounds`` rounds live; every recorded run, evaluated after that
    round, passes the checks for it."""
    checks = LESSON_CHECKS["simpo"][rounds]
    for split, floor in (
        ("eval", checks["eval_gain_at_least"]),
        ("heldout", checks["heldout_gain_at_least"]),
    ):
        summary = spread_summary(records, "simpo", split, round_index=rounds)
        assert len(summary["runs"]) >= 24, (rounds, split)
        for run in summary["runs"]:
            where = f"{split}, round {rounds}, seed {run['seed']}, reference build {run['ref_seed']}: {run['gain']}"
            assert run["gain"]["mean"] >= floor, where
            if split == "eval":
                assert run["gain"]["low"] > 0, where  # the notebook asserts each seed's interval excludes 0


def test_every_recorded_default_run_lowers_over_refusal_and_confident_openings(records):
    base = baselines(records)
    for run in spread_summary(records, "simpo", "eval")["runs"]:
        reference = base[(run["ref_seed"], "eval")]["probes"]
        assert run["probes"]["refusal"] < reference["refusal"], run
        assert run["probes"]["confident"] < reference["confident"], run


def test_the_claim_about_the_method_carries_seed_noise(records):
    """The seed-and-prompt interval of the shipped reference's runs is wider than the prompt-only interval of
    the same runs averaged per prompt (which treats the trained models as fixed)."""
    from simplepo_helpers.evaluation.sampling import score_gain

    summary = spread_summary(records, "simpo", "eval")
    two_way = summary["by_reference"][SHIPPED]["gain"]
    runs = [
        r
        for r in records
        if r.get("kind") == "spread"
        and r["method"] == "simpo"
        and r["split"] == "eval"
        and r["ref_seed"] == SHIPPED
        and r["round"] == r["recipe"]["rounds"]
    ]
    prompt_only = score_gain(
        np.array([r["expected"] for r in runs]), baselines(records)[(SHIPPED, "eval")]["expected"]
    )
    assert two_way["mean"] == pytest.approx(prompt_only.mean)
    assert two_way["high"] - two_way["low"] > prompt_only.high - prompt_only.low


def test_every_recorded_offline_simpo_run_passes_notebook_03s_checks(records):
    floor = LESSON_CHECKS["simpo_offline"]["eval_gain_at_least"]
    base = baselines(records)
    runs = spread_summary(records, "simpo_offline", "eval")["runs"]
    assert floor > -0.05  # a floor far below every run would check nothing
    for run in runs:
        assert run["gain"]["mean"] >= floor, run
        assert run["probes"]["refusal"] < base[(run["ref_seed"], "eval")]["probes"]["refusal"], run


def test_every_recorded_lora_run_passes_notebook_06s_checks(records):
    """Notebook 06 trains offline SimPO with full fine-tuning and with LoRA from one seed and asserts both gain at
    least their floors and that LoRA trails full fine-tuning by no more than LESSON_CHECKS allows."""
    checks = LESSON_CHECKS["simpo_offline_lora"]
    for method in ("simpo_offline", "simpo_offline_lora"):
        for run in spread_summary(records, method, "eval")["runs"]:
            assert run["gain"]["mean"] >= LESSON_CHECKS[method]["eval_gain_at_least"], (method, run)
    per_seed = lora_minus_full(records)
    assert len(per_seed) >= 8
    assert all(g.mean >= checks["minus_full_at_least"] for g in per_seed), per_seed
