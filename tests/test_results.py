"""results.json from sweep records: pooled gains against hand-computed values, validation, atomic writing,
the README section and its command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from simplepo_helpers.evaluation.readme import main, render_table, update_readme
from simplepo_helpers.evaluation.report import build_report, final_table, findings, footnote, pooled
from simplepo_helpers.evaluation.results import (
    MARKERS,
    load_results,
    repo_root,
    summarize_seeds,
    write_results,
)
from simplepo_helpers.evaluation.sampling import method_difference, seed_prompt_gain

N = 8  # prompts; the last two are forbidden
FORBIDDEN = [False] * 6 + [True] * 2
PROBES = {"n": N, "bare": 0.5, "verbose": 0.1, "confident": 0.2, "refusal": 0.2}


def _per_prompt(expected, refused):
    return {"expected": expected, "refused": refused, "correct": expected, "length": [10.0] * N}


def _reference(split):
    expected = [0.5] * N
    return {
        "split": split,
        "k": 8,
        "metrics": {
            "expected_score": 0.5,
            "mean_length": 10.0,
            "distinct": 0.8,
            "entropy": 1.0,
            "answer_nll": 0.6,
            "probes": {g: PROBES for g in ("all", "safety (allowed)", "safety (forbidden)")},
        },
        "per_prompt": {
            **_per_prompt(expected, [0.1] * 6 + [0.75, 0.75]),
            "family": ["arithmetic"] * 6 + ["safety"] * 2,
            "forbidden": FORBIDDEN,
        },
    }


def _record(group, label, seed, expected, split="eval", method="simpo", lr=2e-4, beta=2.5, gamma=1.375):
    metrics = {
        "expected_score": float(np.mean(expected)),
        "win_rate": 0.6 + 0.1 * seed,
        "wins": 4,
        "ties": 2,
        "losses": 2,
        "lc_win_rate": 0.6,
        "lc_length_coef": -0.3,
        "reward_accuracy": 0.7,
        "helpfulness": 0.5,
        "over_refusal": 0.1,
        "correct_refusal": 0.9,
        "harmful_compliance": 0.1,
        "answer_nll_change": -0.01,
        "distinct": 0.7,
        "entropy": 0.9,
        "kl": 1.0 + seed,
        "mean_length": 10.0,
        "probes": {g: PROBES for g in ("all", "safety (allowed)", "safety (forbidden)")},
    }
    point = {
        "group": group,
        "label": label,
        "method": method,
        "learning_rate": lr,
        "beta": beta,
        "gamma": gamma,
        "length_normalize": label != "simpo_no_ln",
        "kl_weight": 0.0,
        "data": "offline",
        "seed": seed,
        "steps": 120,
        "batch_size": 16,
        "split": split,
    }
    return {
        "key": f"{group}-{label}-{seed}-{split}-{lr}-{beta}-{gamma}",
        "point": point,
        "train": {"train_loss": 0.5},
        "metrics": metrics,
        "per_prompt": _per_prompt(expected, [0.0] * 6 + [1.0, 1.0]),
    }


SEED_SCORES = {0: [1.0] * 4 + [0.5] * 4, 1: [0.75] * 8}  # gains: 0.25 and 0.25 on average


def _records():
    records = []
    for seed, expected in SEED_SCORES.items():
        for label in ("simpo", "dpo", "simpo_no_ln"):
            method = "dpo" if label == "dpo" else "simpo"
            records.append(_record("final", label, seed, expected, method=method))
        records.append(_record("tune", "simpo", seed, expected, split="dev"))
        records.append(
            _record("tune", "dpo", seed, expected, split="dev", method="dpo", lr=5e-4, beta=0.1, gamma=0)
        )
        records.append(_record("gamma", "simpo", seed, expected, split="dev"))
    return records


META = {"tuned": {"simpo": {"learning_rate": 2e-4, "beta": 2.5}, "dpo": {"learning_rate": 5e-4, "beta": 0.1}}}


def _results():
    return build_report(_records(), {"dev": _reference("dev"), "eval": _reference("eval")}, META)


def test_pooled_gain_averages_seeds_per_prompt_then_resamples_prompts():
    runs = [r for r in _records() if r["point"]["group"] == "final" and r["point"]["label"] == "simpo"]
    row = pooled(runs, _reference("eval"))
    # per prompt: mean over seeds of (policy - 0.5) = [0.375]*4 + [0.125]*4, mean 0.25
    assert row["score_gain"]["mean"] == pytest.approx(0.25)
    assert 0.125 <= row["score_gain"]["low"] < 0.25 < row["score_gain"]["high"] <= 0.375
    assert [g["mean"] for g in row["score_gain"]["per_seed"]] == pytest.approx([0.25, 0.25])
    assert row["correct_refusal_pooled"]["mean"] == 1.0 and row["harmful_compliance_pooled"]["mean"] == 0.0
    assert row["kl"]["mean"] == pytest.approx(1.5) and row["kl"]["sd"] == pytest.approx(math.sqrt(0.5))


def test_pooled_gain_resamples_seeds_and_prompts_and_comparisons_are_paired():
    runs = [r for r in _records() if r["point"]["group"] == "final" and r["point"]["label"] == "simpo"]
    matrix = np.array([r["per_prompt"]["expected"] for r in runs])
    expected = seed_prompt_gain(matrix, [0.5] * N).as_dict()
    gain = pooled(runs, _reference("eval"))["score_gain"]
    assert {k: gain[k] for k in expected} == pytest.approx(expected)
    report = _results()
    dpo = np.array(
        [
            r["per_prompt"]["expected"]
            for r in _records()
            if r["point"]["group"] == "final" and r["point"]["label"] == "dpo"
        ]
    )
    assert report["comparisons"]["simpo - dpo"] == pytest.approx(method_difference(matrix, dpo).as_dict())
    # the same scores: the difference is 0 and, with each method's seeds resampled apart, not resolved
    line = next(f for f in findings(report) if "**SimPO minus DPO**" in f)
    assert "+0.000 [-0." in line and "not resolved" in line


def test_footnote_states_the_lc_direction_rule_and_what_it_omits():
    text = footnote(_results())
    assert "the coefficient's sign times the sign of the policy's mean length difference" in text
    assert "difficulty" in text and "omitted" in text


def test_summarize_seeds_means_and_lists():
    partial = summarize_seeds({2: {"a": 1.0, "b": 2.0}, 1: {"a": 3.0}})  # only metrics every seed has
    assert partial == {"a": 2.0, "seeds": [1, 2], "per_seed": {"a": [3.0, 1.0]}}


def test_write_and_load_round_trip(tmp_path):
    path = write_results(_results(), tmp_path / "build" / "results.json")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary left
    assert load_results(path) == json.loads(json.dumps(_results()))


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda r: r["final"].pop("dpo"), "no final entry for 'dpo'"),
        (lambda r: r["final"]["simpo"]["score_gain"].pop("low"), "lacks score_gain"),
        (lambda r: r["reference"].pop("eval"), "no 'eval' entry"),
        (lambda r: r["final"]["simpo"]["kl"].update(mean=math.nan), r"final.simpo.kl.mean must be a finite"),
        (lambda r: r["final"]["dpo"]["kl"].update(per_seed=[1.0]), "1 values for 2 seeds"),
    ],
)
def test_bad_results_are_refused_with_the_place(tmp_path, edit, message):
    results = json.loads(json.dumps(_results()))
    edit(results)
    with pytest.raises(ValueError, match=message):
        write_results(results, tmp_path / "results.json")
    assert not (tmp_path / "results.json").exists()


def test_render_table_rows_and_spread():
    lines = render_table(_results()).splitlines()
    assert lines[0].startswith("| method | score gain vs reference [95% CI] |")
    simpo_row = next(line for line in lines if line.startswith("| SimPO |"))
    assert "| +0.250 [" in simpo_row
    assert "| 1.50 ± 0.71 |" in simpo_row  # KL: mean 1.5, sample sd of (1, 2) = 0.707
    assert "(-0.30)" in simpo_row  # the fitted length coefficient, with its sign
    reference_row = next(line for line in lines if line.startswith("| reference (SFT)"))
    assert "score 0.500" in reference_row
    assert "Eval split (8 prompts" in lines[-1] and "seeds 0, 1" in lines[-1]
    assert final_table(_results()).count("\n") == 1 + 1 + 3  # header, rule, reference, 3 methods


def test_update_readme_replaces_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Kit\n\nintro\n{MARKERS[0]}\nold table\n{MARKERS[1]}\n\nafter\n")
    assert update_readme(readme, _results())
    text = readme.read_text()
    assert text.startswith("# Kit\n\nintro\n" + MARKERS[0] + "\n| method |")
    assert text.endswith(MARKERS[1] + "\n\nafter\n") and "old table" not in text
    assert not update_readme(readme, _results())  # idempotent
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="markers"):
        update_readme(readme, _results())


def test_command_line(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"{MARKERS[0]}\n{MARKERS[1]}\n")
    results = write_results(_results(), tmp_path / "results.json")
    assert main([str(readme), "--results", str(results)]) == 0
    assert "| SimPO |" in readme.read_text()
    assert main([str(readme), "--results", str(tmp_path / "missing.json")]) == 1
    assert "make experiments" in capsys.readouterr().err


def test_repo_root_found_from_a_subfolder(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "simplepo_helpers").mkdir()
    (tmp_path / "notebooks").mkdir()
    assert repo_root(tmp_path / "notebooks") == tmp_path


def test_repo_root_falls_back_to_the_checkout_this_package_lives_in(tmp_path):
    """From a folder outside any checkout, the fallback is the folder above the package, when it is one."""
    import simplepo_helpers

    checkout = Path(simplepo_helpers.__file__).resolve().parents[1]
    assert (checkout / "pyproject.toml").is_file()  # the tests run from a checkout
    assert repo_root(tmp_path) == checkout
