"""The sweep plan: equal tuning grids, the pre-stated selection rule, shared trainings across splits."""

from __future__ import annotations

from dataclasses import asdict, replace

from simplepo_helpers.evaluation.sweeps import (
    DPO_GRID,
    GAMMA_RATIOS,
    NO_LN_GRID,
    SIMPO_GRID,
    Point,
    best_setting,
    question_points,
    tuning_points,
)


def test_every_compared_method_gets_the_same_grid_size_and_seeds():
    points = tuning_points()
    by_label = {label: [p for p in points if p.label == label] for label in ("simpo", "dpo", "simpo_no_ln")}
    size = len(SIMPO_GRID["learning_rate"]) * len(SIMPO_GRID["beta"])
    for grid in (DPO_GRID, NO_LN_GRID):
        assert len(grid["learning_rate"]) * len(grid["beta"]) == size
    assert all(len(runs) == size * 2 for runs in by_label.values())
    assert len({frozenset(p.seed for p in runs) for runs in by_label.values()}) == 1
    assert all(not p.length_normalize for p in by_label["simpo_no_ln"])
    assert all(p.length_normalize for p in by_label["simpo"])
    assert len(points) == sum(map(len, by_label.values()))
    assert all(p.split == "dev" for p in points)


def test_the_training_key_ignores_split_and_labels_but_not_settings():
    point = Point("tune", "simpo", "simpo", 2e-4, 2.5, 1.375)
    assert replace(point, split="eval", group="final", label="x").train_key == point.train_key
    assert replace(point, split="eval").key != point.key
    assert replace(point, seed=1).train_key != point.train_key
    assert replace(point, length_normalize=False).train_key != point.train_key


def _record(method, lr, beta, seed, score):
    point = Point("tune", method, method, lr, beta, 0.0, seed=seed)
    return {"point": asdict(point), "metrics": {"expected_score": score}}


def test_best_setting_takes_the_highest_seed_mean_and_the_lower_rate_on_ties():
    records = [
        _record("simpo", 1e-4, 2.5, 0, 0.50),
        _record("simpo", 1e-4, 2.5, 1, 0.60),  # mean 0.55
        _record("simpo", 5e-4, 2.5, 0, 0.70),
        _record("simpo", 5e-4, 2.5, 1, 0.30),  # mean 0.50: one lucky seed does not win
        _record("simpo", 2e-4, 5.0, 0, 0.55),
        _record("simpo", 2e-4, 5.0, 1, 0.55),  # mean 0.55: ties with 1e-4, loses to the lower rate
        _record("dpo", 1e-3, 0.1, 0, 0.9),
        {
            **_record("simpo", 5e-4, 0.25, 0, 0.99),
            "point": {**_record("simpo", 5e-4, 0.25, 0, 0.99)["point"], "label": "simpo_no_ln"},
        },
    ]
    assert best_setting(records, "simpo") == {"learning_rate": 1e-4, "beta": 2.5}
    assert best_setting(records, "dpo") == {"learning_rate": 1e-3, "beta": 0.1}
    # the label picks the runs: SimPO without length normalisation is tuned apart from SimPO
    assert best_setting(records, "simpo_no_ln") == {"learning_rate": 5e-4, "beta": 0.25}


def test_question_points_cover_gamma_seeds_and_the_final_methods():
    points = question_points(
        {"learning_rate": 2e-4, "beta": 2.5},
        {"learning_rate": 5e-4, "beta": 0.1},
        {"learning_rate": 1e-4, "beta": 0.25},
    )
    gammas = [p for p in points if p.group == "gamma"]
    assert len(gammas) == len(GAMMA_RATIOS) * 3 and len(GAMMA_RATIOS) >= 5
    final = [p for p in points if p.group == "final"]
    assert all(p.split == "eval" for p in final)
    assert {p.label for p in final} == {"simpo", "dpo", "simpo_no_ln", "simpo_onpolicy"}
    assert all(len([p for p in final if p.label == label]) == 3 for label in {p.label for p in final})
    no_ln = [p for p in final if p.label == "simpo_no_ln"]
    assert {(p.learning_rate, p.beta, p.length_normalize) for p in no_ln} == {(1e-4, 0.25, False)}
    assert {p.kl_weight for p in points if p.group == "kl"} == {0.0, 0.1, 1.0}
    assert all(p.split == "dev" for p in points if p.group != "final")
