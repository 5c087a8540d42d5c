"""results.json: seed summaries, validation, atomic writing, the README table and its command line."""

from __future__ import annotations

import json
import math

import pytest

from simplepo_helpers.evaluation.results import (
    MARKERS,
    load_results,
    main,
    render_table,
    repo_root,
    summarize_seeds,
    update_readme,
    write_results,
)

PER_SEED = {
    "simpo": {
        0: {
            "win_rate_vs_ref": 0.6,
            "lc_win_rate_vs_ref": 0.58,
            "mean_length": 10.0,
            "reward_accuracy": 0.7,
            "kl_to_ref": 2.0,
            "judge_score": 0.6,
        },
        1: {
            "win_rate_vs_ref": 0.7,
            "lc_win_rate_vs_ref": 0.66,
            "mean_length": 12.0,
            "reward_accuracy": 0.8,
            "kl_to_ref": 4.0,
            "judge_score": 0.7,
        },
    },
}


def _results():
    simpo = summarize_seeds(PER_SEED["simpo"])
    return {
        "meta": {"profile": "cpu", "steps": 120, "learning rate": 0.0003, "nested": {"ignored": True}},
        "reference": {"mean_length": 11.0, "judge_score": 0.45},
        "simpo": simpo,
        "dpo": {**simpo, "win_rate_vs_ref": 0.55},
        "simpo_no_ln": {**simpo, "mean_length": 30.5},
    }


def test_summarize_seeds_means_and_lists():
    summary = summarize_seeds(PER_SEED["simpo"])
    assert summary["seeds"] == [0, 1]
    assert summary["win_rate_vs_ref"] == pytest.approx(0.65)
    assert summary["kl_to_ref"] == pytest.approx(3.0)
    assert summary["per_seed"]["mean_length"] == [10.0, 12.0]
    partial = summarize_seeds({2: {"a": 1.0, "b": 2.0}, 1: {"a": 3.0}})  # only metrics every seed has
    assert partial == {"a": 2.0, "seeds": [1, 2], "per_seed": {"a": [3.0, 1.0]}}


def test_write_and_load_round_trip(tmp_path):
    path = write_results(_results(), tmp_path / "build" / "results.json")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary left
    assert load_results(path) == json.loads(json.dumps(_results()))


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda r: r.pop("dpo"), "no entry for 'dpo'"),
        (lambda r: r["simpo_no_ln"].pop("kl_to_ref"), "'simpo_no_ln' lacks 'kl_to_ref'"),
        (lambda r: r["reference"].pop("judge_score"), "'reference' lacks 'judge_score'"),
        (
            lambda r: r["simpo"].update(win_rate_vs_ref=math.nan),
            "simpo.win_rate_vs_ref must be a finite number",
        ),
        (lambda r: r["dpo"]["per_seed"].update(kl_to_ref=[1.0, math.inf]), r"dpo.per_seed.kl_to_ref\[1\]"),
        (lambda r: r["dpo"]["per_seed"].update(kl_to_ref=[1.0]), "1 values for 2 seeds"),
    ],
)
def test_bad_results_are_refused_with_the_place(tmp_path, edit, message):
    results = json.loads(json.dumps(_results()))
    edit(results)
    with pytest.raises(ValueError, match=message):
        write_results(results, tmp_path / "results.json")
    assert not (tmp_path / "results.json").exists()


def test_render_table_rows_and_spread():
    table = render_table(_results())
    lines = table.splitlines()
    assert lines[0].startswith("| method | win rate vs reference |")
    simpo_row = next(line for line in lines if line.startswith("| SimPO |"))
    # win rate: mean 0.65, sample standard deviation of (0.6, 0.7) = 0.0707
    assert "| 0.650 ± 0.071 |" in simpo_row and "| 3.00 ± 1.41 |" in simpo_row
    reference_row = next(line for line in lines if line.startswith("| reference (SFT) |"))
    assert reference_row.count("–") == 4 and "| 0.450 |" in reference_row and "| 11.0 |" in reference_row
    assert "| 30.5 ± 1.4 |" in next(line for line in lines if line.startswith("| SimPO without"))
    assert "2 seeds (0, 1); profile: cpu; steps: 120; learning rate: 0.0003." in lines[-1]


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
    assert "run notebook 05" in capsys.readouterr().err


def test_repo_root_found_from_a_subfolder(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "simplepo_helpers").mkdir()
    (tmp_path / "notebooks").mkdir()
    assert repo_root(tmp_path / "notebooks") == tmp_path
