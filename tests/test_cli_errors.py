"""The entry point's run-time errors: one ``error:`` line and exit code 1 (the traceback under ``--debug``);
overrides around flags; ``--quiet`` prints nothing at all."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_cli import base_config, build_tiny_world, run_cli

from simplepo_helpers.runtime.checkpoint import ResumeConfigError
from simplepo_helpers.scale.cli import main


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_world(tmp_path_factory.mktemp("tiny_world"))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def finished_run(tiny_world, tmp_path_factory) -> tuple[dict, Path]:
    """A 4-step SimPO run with checkpoints at steps 2 and 4 (copied by each test that changes it)."""
    root = tmp_path_factory.mktemp("finished")
    config = base_config(tiny_world, root / "out", save_every=2)
    assert run_cli(config, root) == 0
    return config, root / "out"


def _copy(finished_run, tmp_path) -> tuple[dict, Path]:
    config, out = finished_run
    shutil.copytree(out, tmp_path / "out")
    return {**config, "train": {**config["train"], "output_dir": str(tmp_path / "out")}}, tmp_path / "out"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_overrides_split_by_a_flag_are_all_applied(capsys):
    code = main(["model.name_or_path=world", "--print-config", "data.train=x.jsonl", "train.output_dir=o"])
    assert code == 0
    out = capsys.readouterr().out
    assert '"train": "x.jsonl"' in out and '"output_dir": "o"' in out


def test_overrides_split_by_quiet_are_all_applied(capsys):
    argv = [
        "model.name_or_path=world",
        "--quiet",
        "data.train=x.jsonl",
        "train.output_dir=o",
        "--print-config",
    ]
    assert main(argv) == 0
    assert '"train": "x.jsonl"' in capsys.readouterr().out


def test_error_line_keeps_one_line_and_names_foreign_exceptions():
    from simplepo_helpers.scale.cli import error_line

    assert error_line(ValueError("data.train: bad\nmore detail")) == "data.train: bad (more with --debug)"
    assert error_line(KeyError("step")) == "KeyError: 'step'"
    assert error_line(RuntimeError()) == "RuntimeError"


def test_a_changed_batch_size_on_resume_is_one_error_line(finished_run, tmp_path, capsys):
    config, _ = _copy(finished_run, tmp_path)
    capsys.readouterr()
    assert run_cli(config, tmp_path, "resume=latest", "train.max_steps=6", "train.batch_size=4") == 1
    line = _one_error_line(capsys)
    assert (
        "error: cannot resume from" in line and "checkpoint-4: the config differs in train.batch_size" in line
    )
    assert "(saved 8, now 4)" in line and "--allow-config-change" in line


def test_a_changed_loss_on_resume_is_refused_naming_its_fields(finished_run, tmp_path, capsys):
    config, _ = _copy(finished_run, tmp_path)
    capsys.readouterr()
    code = run_cli(config, tmp_path, "resume=latest", "loss.name=dpo", "loss.gamma=0", "train.max_steps=6")
    assert code == 1
    line = _one_error_line(capsys)
    assert "loss.name (saved 'simpo', now 'dpo')" in line and "loss.gamma (saved 1.375, now 0.0)" in line


def test_allow_config_change_resumes_with_a_warning(finished_run, tmp_path, capsys):
    config, out = _copy(finished_run, tmp_path)
    capsys.readouterr()
    code = run_cli(config, tmp_path, "resume=latest", "train.max_steps=5", "train.learning_rate=0.001")
    assert code == 1 and "train.learning_rate (saved 0.01, now 0.001)" in _one_error_line(capsys)
    code = run_cli(
        config,
        tmp_path,
        "resume=latest",
        "train.max_steps=5",
        "train.learning_rate=0.001",
        "--allow-config-change",
    )
    assert code == 0
    assert "with a changed config: train.learning_rate (saved 0.01, now 0.001)" in capsys.readouterr().err
    assert (out / "checkpoint-5").is_dir()


def test_debug_shows_the_traceback(finished_run, tmp_path):
    config, _ = _copy(finished_run, tmp_path)
    with pytest.raises(ResumeConfigError, match="train.batch_size"):
        run_cli(config, tmp_path, "resume=latest", "train.batch_size=4", "--debug")


def test_a_truncated_checkpoint_falls_back_or_is_one_error_line(finished_run, tmp_path, capsys):
    config, out = _copy(finished_run, tmp_path)
    weights = out / "checkpoint-4" / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.truncate(100)
    capsys.readouterr()
    assert run_cli(config, tmp_path, f"resume={out / 'checkpoint-4'}") == 1
    line = _one_error_line(capsys)
    assert line.startswith(
        f"error: checkpoint {out / 'checkpoint-4'} is incomplete or damaged: model.safetensors"
    )
    assert run_cli(config, tmp_path, "resume=latest") == 0  # back to step 2, then steps 3 and 4 again
    assert "[simplepo] skipping checkpoint-4: model.safetensors has 100 bytes" in capsys.readouterr().err


def test_empty_data_is_one_error_line(tiny_world, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    config = base_config(tiny_world, tmp_path / "out")
    config["data"]["train"] = str(empty)
    assert run_cli(config, tmp_path) == 1
    line = _one_error_line(capsys)
    assert "data.train" in line and str(empty) in line


def test_quiet_prints_nothing(tiny_world, tmp_path, capfd):
    config = base_config(tiny_world, tmp_path / "out", max_steps=2, save_every=1)
    config["data"]["eval"] = str(tiny_world["eval"])
    config["loss"] = {"name": "dpo", "beta": 0.1}  # with the reference precompute
    capfd.readouterr()
    assert run_cli(config, tmp_path) == 0
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()


def test_the_final_model_gets_a_card_without_local_paths(finished_run):
    import yaml

    config, out = finished_run
    card = (out / "final" / "README.md").read_text()
    head = yaml.safe_load(card.removeprefix("---\n").partition("\n---\n")[0])
    assert (
        head["pipeline_tag"] == "text-generation" and head["license"] == "other" and "base_model" not in head
    )
    assert "checkpoint, step 4" in card and "Trained from a local llama model" in card
    assert str(out.parent) not in card and config["model"]["name_or_path"] not in card
