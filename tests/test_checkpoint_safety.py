"""Nothing lost, nothing half-loaded: incomplete checkpoints are skipped with a message, a checkpoint that does
not fit the model changes no tensor, and a changed config is refused before any state is loaded."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_test_model

from simplepo_helpers import LossConfig, TrainConfig, train
from simplepo_helpers.runtime.checkpoint import (
    COMPLETE_NAME,
    CheckpointError,
    ResumeConfigError,
    find_latest_checkpoint,
    load_checkpoint,
    resume_state,
    save_checkpoint,
)
from simplepo_helpers.runtime.device import DevicePolicy

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = DevicePolicy(torch.device("cpu"), torch.float32, None, False, "tests")
EXAMPLES = [
    {"prompt": "What is two plus three?", "chosen": " Two plus three is five.", "rejected": " Six."},
    {"prompt": "Name a colour.", "chosen": " Blue is a colour.", "rejected": " The lazy dog."},
    {"prompt": "Say hello.", "chosen": " hello world", "rejected": " dog"},
    {"prompt": "Please answer.", "chosen": " Happy to help!", "rejected": " no"},
]
SIMPO = LossConfig("simpo", beta=2.0, gamma=1.0)


def _two_checkpoints(tokenizer, folder):
    config = TrainConfig(loss=SIMPO, max_steps=2, batch_size=2, save_every=1, output_dir=folder)
    train(build_test_model(len(tokenizer)), tokenizer, EXAMPLES, config, device_policy=CPU, progress=False)
    return config


def _truncate(path):
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 2)
    return size


@pytest.mark.parametrize("damaged", ["model.safetensors", "simplepo_state.json", "optimizer.pt"])
def test_a_truncated_file_makes_the_latest_checkpoint_fall_back_with_one_line(
    tokenizer, tmp_path, capsys, damaged
):
    _two_checkpoints(tokenizer, tmp_path)
    capsys.readouterr()  # transformers' saving bars
    size = _truncate(tmp_path / "checkpoint-2" / damaged)
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoint-1"
    message = capsys.readouterr().err
    assert message == (
        f"[simplepo] skipping checkpoint-2: {damaged} has {size // 2} bytes, {size} were written "
        "(truncated?); using checkpoint-1\n"
    )
    with pytest.raises(CheckpointError, match=rf"checkpoint-2 is incomplete or damaged: {damaged} has"):
        load_checkpoint(tmp_path / "checkpoint-2", model=build_test_model(len(tokenizer)))


def test_a_checkpoint_without_its_completion_marker_is_accepted_only_when_every_file_loads(
    tokenizer, tmp_path, capsys
):
    _two_checkpoints(tokenizer, tmp_path)
    for step in (1, 2):
        (tmp_path / f"checkpoint-{step}" / COMPLETE_NAME).unlink()  # as an older kit wrote them
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    _truncate(tmp_path / "checkpoint-2" / "model.safetensors")
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoint-1"
    assert "skipping checkpoint-2: model.safetensors does not load" in capsys.readouterr().err


def test_no_complete_checkpoint_is_refused_by_name(tokenizer, tmp_path, capsys):
    config = _two_checkpoints(tokenizer, tmp_path)
    for step in (1, 2):
        (tmp_path / f"checkpoint-{step}" / "rng_state.pt").unlink()
    assert find_latest_checkpoint(tmp_path) is None
    assert "no earlier complete checkpoint" in capsys.readouterr().err
    model = build_test_model(len(tokenizer))
    with pytest.raises(CheckpointError, match="holds no complete checkpoint-<step> folder"):
        resume_state(tmp_path, {"num_examples": 4}, config, model=model)


def _snapshot(model):
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def _changed(model, before) -> int:
    return sum(not torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"num_hidden_layers": 3}, "lacks weights the model needs"),
        ({"intermediate_size": 48}, "has weights of other shapes"),
        ({"num_hidden_layers": 1}, "holds weights the model does not have"),
    ],
)
def test_a_checkpoint_that_does_not_fit_changes_no_tensor(tokenizer, tmp_path, target, message):
    save_checkpoint(tmp_path / "two", model=build_test_model(len(tokenizer), seed=1), step=1)
    other = build_test_model(len(tokenizer), seed=2, **target)
    before = _snapshot(other)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "two", model=other, restore_rng=False)
    assert _changed(other, before) == 0


def _resume(tokenizer, folder, config, **kwargs):
    model = build_test_model(len(tokenizer), seed=5)
    optimizer = torch.optim.AdamW(model.parameters())
    before, rng = _snapshot(model), torch.get_rng_state()
    try:
        return resume_state(folder, {"num_examples": 4}, config, model=model, optimizer=optimizer, **kwargs)
    finally:
        state = (
            _changed(model, before),
            optimizer.state_dict()["state"],
            torch.equal(rng, torch.get_rng_state()),
        )
        _resume.last = state  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"batch_size": 4}, "batch_size (saved 2, now 4)"),
        ({"learning_rate": 1e-3}, "learning_rate (saved 1e-05, now 0.001)"),
        (
            {"loss": LossConfig("dpo", beta=2.0, gamma=0.0)},
            "loss.name (saved 'simpo', now 'dpo'); loss.gamma",
        ),
    ],
)
def test_a_changed_config_is_refused_before_any_state_is_loaded(tokenizer, tmp_path, changes, fields):
    config = _two_checkpoints(tokenizer, tmp_path)
    changed = TrainConfig(**{**vars(config), "max_steps": 3, **changes})
    with pytest.raises(
        ResumeConfigError, match="the config differs in " + fields.replace("(", r"\(").replace(")", r"\)")
    ):
        _resume(tokenizer, tmp_path, changed)
    weights_changed, optimizer_state, rng_kept = _resume.last
    assert weights_changed == 0 and optimizer_state == {} and rng_kept


def test_allow_config_change_resumes_with_a_warning(tokenizer, tmp_path, capsys):
    config = _two_checkpoints(tokenizer, tmp_path)
    changed = TrainConfig(**{**vars(config), "batch_size": 4, "max_steps": 3})
    model = build_test_model(len(tokenizer), seed=5)
    before = _snapshot(model)
    step, history = resume_state(
        tmp_path, {"num_examples": 4}, changed, model=model, allow_config_change=True
    )
    assert step == 2 and len(history) == 2 and _changed(model, before) > 0  # the weights were loaded
    assert "with a changed config: batch_size (saved 2, now 4)" in capsys.readouterr().err


def test_the_whole_entry_point_config_is_compared(tokenizer, tmp_path):
    config = _two_checkpoints(tokenizer, tmp_path)
    state = json.loads((tmp_path / "checkpoint-2" / "simplepo_state.json").read_text())
    state["extra"]["run_config"] = {"data": {"train": "world:pairs_train"}, "train": {"max_steps": 2}}
    marker = tmp_path / "checkpoint-2" / COMPLETE_NAME
    (tmp_path / "checkpoint-2" / "simplepo_state.json").write_text(json.dumps(state))
    sizes = json.loads(marker.read_text())
    sizes["files"]["simplepo_state.json"] = (tmp_path / "checkpoint-2" / "simplepo_state.json").stat().st_size
    marker.write_text(json.dumps(sizes))
    info = {"num_examples": 4, "run_config": {"data": {"train": "mine.jsonl"}, "train": {"max_steps": 9}}}
    model = build_test_model(len(tokenizer))
    with pytest.raises(
        ResumeConfigError, match=r"data\.train \(saved 'world:pairs_train', now 'mine\.jsonl'\)\. "
    ):
        resume_state(tmp_path, info, config, model=model)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' deprecation notice inside peft
def test_an_adapter_of_another_rank_changes_no_tensor(tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    small = get_peft_model(build_test_model(len(tokenizer)), LoraConfig(r=2, target_modules=["q_proj"]))
    save_checkpoint(tmp_path / "lora", model=small, step=1)
    lora = LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)
    other = get_peft_model(build_test_model(len(tokenizer)), lora)
    before = _snapshot(other)
    with pytest.raises(CheckpointError, match="has weights of other shapes"):
        load_checkpoint(tmp_path / "lora", model=other, restore_rng=False)
    assert _changed(other, before) == 0
