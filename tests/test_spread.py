"""The spread record's reading and summaries, on small records written here (hand-derived values)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simplepo_helpers.evaluation.rounds import RECIPES
from simplepo_helpers.evaluation.spread import (
    SHIPPED,
    headroom_share,
    read_records,
    run_id,
    search_table,
    spread_jobs,
    spread_summary,
)
from simplepo_helpers.runtime.fingerprint import code_fingerprint, file_fingerprint


def _baseline(split, expected, best4, ref_seed=SHIPPED):
    return {
        "kind": "baseline",
        "ref_seed": ref_seed,
        "split": split,
        "expected": expected,
        "best_of_4": best4,
        "best_of_8": best4,
        "probes": {"refusal": 0.2, "confident": 0.2},
    }


def _run(kind, split, expected, seed, rounds=2, round_index=2, ref_seed=SHIPPED, lr=5e-4):
    recipe = {"rounds": rounds, "learning_rate": lr, "steps_per_round": 120, "loss": {"sft_weight": 0.0}}
    return {
        "kind": kind,
        "id": f"{kind}-{seed}-{ref_seed}",
        "method": "simpo",
        "recipe": recipe,
        "seed": seed,
        "ref_seed": ref_seed,
        "round": round_index,
        "split": split,
        "expected": expected,
        "probes": None,
    }


def test_a_partial_last_line_is_skipped_and_a_broken_middle_line_is_an_error(tmp_path):
    path = tmp_path / "rounds.jsonl"
    path.write_text(json.dumps({"kind": "baseline"}) + "\n" + '{"kind": "spr')
    assert read_records(path) == [{"kind": "baseline"}]
    path.write_text('{"kind": "spr\n' + json.dumps({"kind": "baseline"}) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        read_records(path)
    assert read_records(tmp_path / "missing.jsonl") == []


def test_headroom_share_by_hand():
    base = _baseline("eval", [0.0, 0.5], [0.5, 1.0])  # headroom: 0.75 - 0.25 = 0.5
    assert headroom_share(0.25, base) == pytest.approx(0.5)


def test_spread_summary_pairs_each_run_with_its_reference_build():
    records = [
        _baseline("eval", [0.0, 0.5, 0.5, 1.0], [1.0] * 4),
        _baseline("eval", [0.5, 0.5, 0.5, 0.5], [1.0] * 4, ref_seed=1),
        _run("spread", "eval", [0.5, 0.5, 1.0, 1.0], 0),  # gain 0.25 against the shipped reference
        _run("spread", "eval", [0.25, 0.5, 0.5, 1.0], 1),  # gain 0.0625
        _run("spread", "eval", [0.5, 0.5, 0.5, 0.75], 0, ref_seed=1),  # gain 0.0625 against rebuild 1's 0.5
        _run("spread", "eval", [0.0, 0.0, 0.0, 0.0], 0, round_index=1),  # not the last round: ignored
    ]
    summary = spread_summary(records, "simpo", "eval")
    assert len(summary["runs"]) == 3
    assert summary["mean_gain"] == pytest.approx(np.mean([0.25, 0.0625, 0.0625]))
    assert summary["min_gain"] == pytest.approx(0.0625)
    assert summary["by_reference"][SHIPPED]["seeds"] == 2 and summary["by_reference"][1]["gain"] is None
    assert summary["by_reference"][SHIPPED]["headroom_share"] == pytest.approx(0.15625 / 0.5)
    with pytest.raises(ValueError, match="no spread records"):
        spread_summary(records, "dpo", "eval")


def test_search_table_averages_seeds_per_round():
    records = [_baseline("dev", [0.5, 0.5], [1.0, 1.0])]
    for seed, gains in ((0, (0.1, 0.3)), (1, (0.3, 0.1))):
        for round_index, gain in enumerate(gains, 1):
            records.append(_run("search", "dev", [0.5 + gain] * 2, seed, round_index=round_index))
    (row,) = search_table(records)
    assert row["gain_by_round"] == pytest.approx([0.2, 0.2]) and row["seeds"] == 2
    assert row["best_share"] == pytest.approx(0.4)


def test_spread_jobs_cover_sixteen_seeds_and_three_reference_builds():
    jobs = spread_jobs()
    simpo = [j for j in jobs if j[1] == "simpo"]
    assert len({j[3] for j in simpo if j[4] == SHIPPED}) == 16 and len({j[4] for j in simpo}) == 3
    assert len({run_id(*j[:5]) for j in jobs}) == len(jobs)
    assert all(j[2] == RECIPES[j[1]] for j in jobs)


def test_code_fingerprint_follows_the_source(tmp_path, monkeypatch):
    from simplepo_helpers.runtime import fingerprint

    (tmp_path / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(fingerprint, "PACKAGE_ROOT", tmp_path)
    fingerprint.code_fingerprint.cache_clear()
    try:
        first = code_fingerprint()
        (tmp_path / "a.py").write_text("x = 2\n")
        fingerprint.code_fingerprint.cache_clear()
        assert code_fingerprint() != first
    finally:
        fingerprint.code_fingerprint.cache_clear()
    assert file_fingerprint(tmp_path / "a.py") == __import__("hashlib").sha256(b"x = 2\n").hexdigest()[:16]


@pytest.mark.parametrize("method", ["simpo", "orpo"])
def test_run_fields_rebuild_a_committed_records_identity(method):
    """The fields every run record starts with, rebuilt from today's recipe, equal a committed record's: the
    default SimPO run's (recorded before R-DPO's ``alpha`` existed) and ORPO's (recorded after)."""
    from simplepo_helpers.evaluation.results import repo_root
    from simplepo_helpers.experiments.rounds import RECIPES
    from simplepo_helpers.experiments.spread import SHIPPED, _run_fields, read_records

    records = read_records(repo_root() / "results" / "rounds.jsonl")
    record = next(
        r for r in records if r["kind"] == "spread" and r["method"] == method and r["ref_seed"] == SHIPPED
    )
    fields = _run_fields("spread", method, RECIPES[method], record["seed"], SHIPPED, record["round"])
    assert fields == {key: record[key] for key in fields}


def test_every_records_id_carries_the_fingerprint_of_its_recipe():
    """A run is found done by its id: the id's fingerprint is that of the recipe the record states."""
    from simplepo_helpers.evaluation.results import repo_root
    from simplepo_helpers.experiments.rounds import settings_fingerprint
    from simplepo_helpers.experiments.spread import read_records

    runs = [r for r in read_records(repo_root() / "results" / "rounds.jsonl") if "id" in r]
    assert len(runs) > 500
    for record in runs:
        assert record["id"].split(":")[2] == settings_fingerprint(record["recipe"]), record["id"]
