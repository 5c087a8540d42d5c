"""PROFILE_DEFAULTS is the one source of the cpu defaults: the tuning records, the config and the lessons agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from simplepo_helpers.evaluation.sweeps import DEFAULT_RATIO
from simplepo_helpers.lessons.profiles import PROFILE_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
CPU = PROFILE_DEFAULTS["cpu"]


def test_cpu_defaults_are_the_settings_tuned_on_dev():
    report = json.loads((ROOT / "results" / "experiments.json").read_text())
    tuned = report["meta"]["tuned"]
    assert CPU["learning_rate"] == tuned["simpo"]["learning_rate"]
    assert CPU["beta"] == tuned["simpo"]["beta"]
    assert CPU["gamma"] == pytest.approx(DEFAULT_RATIO * tuned["simpo"]["beta"])
    assert CPU["dpo_learning_rate"] == tuned["dpo"]["learning_rate"]
    assert CPU["dpo_beta"] == tuned["dpo"]["beta"]
    assert CPU["no_ln_learning_rate"] == tuned["simpo_no_ln"]["learning_rate"]
    assert CPU["no_ln_beta"] == tuned["simpo_no_ln"]["beta"]
    # and the tuning table holds that setting with the best mean dev score of its method
    for method, key in (("simpo", "learning_rate"), ("dpo", "dpo_learning_rate")):
        rows = [r for r in report["tuning"] if r["method"] == method]
        best = max(rows, key=lambda r: (r["expected_score"]["mean"], -r["learning_rate"]))
        assert best["learning_rate"] == CPU[key]


def test_the_cpu_config_matches_the_profile_defaults():
    config = yaml.safe_load((ROOT / "configs" / "tiny_world_cpu.yaml").read_text())
    assert config["loss"]["beta"] == CPU["beta"] and config["loss"]["gamma"] == CPU["gamma"]
    assert config["train"]["learning_rate"] == CPU["learning_rate"]
    assert config["train"]["max_steps"] == CPU["steps"]
    assert config["train"]["batch_size"] == CPU["batch_size"]
    assert config["train"]["grad_accum_steps"] == CPU["grad_accum_steps"]
    assert config["train"]["warmup_ratio"] == CPU["warmup_ratio"]


_LITERAL_RATE = re.compile(r"\b(?:learning_rate|lr)\s*=\s*[0-9.]+e?-?\d*")
_PROSE_RATE = re.compile(r"learning rate (?:of |is |= )?([0-9][0-9.]*e-?\d+|0\.0\d+)", re.I)


@pytest.mark.parametrize("name", ["04_dpo_comparison.ipynb", "05_evaluation.ipynb"])
def test_lessons_read_the_learning_rate_from_the_profile(name):
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not _LITERAL_RATE.search(cell.source), f"{name} cell {index} hard-codes a learning rate"
        assert not _PROSE_RATE.search(cell.source), f"{name} cell {index} quotes a learning rate in prose"


def test_readme_quotes_only_the_default_learning_rates():
    text = (ROOT / "README.md").read_text()
    allowed = {CPU["learning_rate"], CPU["dpo_learning_rate"], PROFILE_DEFAULTS["gpu"]["learning_rate"]}
    for match in re.finditer(r"(?:SimPO|DPO) lr ([0-9.e-]+)", text):
        assert float(match.group(1).rstrip(".,;")) in allowed, match.group(0)
