"""Names joined into paths (a run's label, a tracker's run name) are refused unless they are safe file names;
JSON-lines records tolerate a partial last line (a write killed half-way)."""

from __future__ import annotations

import pytest

from simplepo_helpers import LossConfig, TrainConfig
from simplepo_helpers.experiments.comparisons import RunSpec
from simplepo_helpers.runtime.files import check_safe_name, read_records
from simplepo_helpers.runtime.trackers import MetricsReporter
from simplepo_helpers.scale.config import ConfigError, load_config

UNSAFE = ["../../escaped", "a/b", "", ".hidden", "..", "with space", "x" * 101, "tab\t", "back\\slash"]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused_with_what_to_use(name):
    with pytest.raises(ValueError, match=r"RunSpec\.label .* is not a safe file name: use only letters"):
        check_safe_name(name, "RunSpec.label")


@pytest.mark.parametrize("name", ["simpo", "simpo_gamma0.5", "dpo-seed1", "simpo_gamma1e-05", "A1"])
def test_the_kits_own_names_are_accepted(name):
    assert check_safe_name(name, "label") == name


def test_run_spec_refuses_a_label_that_would_write_outside_the_cache():
    config = TrainConfig(loss=LossConfig("simpo"), max_steps=1)
    with pytest.raises(ValueError, match=r"RunSpec\.label '\.\./\.\./escaped' is not a safe file name"):
        RunSpec("../../escaped", config)
    assert RunSpec("simpo", config).label == "simpo"


def test_tracker_run_name_is_refused_before_any_tracker_starts(tmp_path):
    with pytest.raises(ValueError, match=r"run_name '\.\./\.\./escaped' is not a safe file name"):
        MetricsReporter("none", tmp_path / "runs", run_name="../../escaped")
    assert not (tmp_path / "runs").exists() and list(tmp_path.iterdir()) == []


def test_entry_point_config_refuses_an_unsafe_run_name():
    base = ["model.name_or_path=world", "data.train=world:pairs_train", "train.output_dir=out"]
    with pytest.raises(ConfigError, match=r"log\.run_name: run_name '\.\./x' is not a safe file name"):
        load_config(None, [*base, "log.run_name=../x"])


def test_read_records_skips_only_a_partial_last_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"run": 1}\n{"run": 2}\n{"run": 3, "sco')  # killed mid-write
    assert read_records(path) == [{"run": 1}, {"run": 2}]
    path.write_text('{"run": 1}\n{"run": 2, "sco\n{"run": 3}\n')  # damage before the end is an error
    with pytest.raises(ValueError, match=r"records\.jsonl, line 2: not valid JSON"):
        read_records(path)
