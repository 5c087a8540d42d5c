"""report_to: train()'s per-step rows reach TensorBoard (read back from the event file, offline)."""

from __future__ import annotations

import pytest
import torch
from conftest import build_test_model

from simplepo_helpers import LossConfig, TrainConfig, train
from simplepo_helpers.runtime.device import DevicePolicy
from simplepo_helpers.runtime.trackers import rewrite_metrics, tracker_names

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CPU = DevicePolicy(torch.device("cpu"), torch.float32, None, False, "tests")
EXAMPLES = [
    {"prompt": "What is two plus three?", "chosen": " Two plus three is five.", "rejected": " Six."},
    {"prompt": "Name a colour.", "chosen": " Blue is a colour.", "rejected": " The lazy dog."},
    {"prompt": "Say hello.", "chosen": " hello world", "rejected": " dog"},
    {"prompt": "Please answer.", "chosen": " Happy to help!", "rejected": " no"},
]


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = list(logdir.rglob("events.out.tfevents.*"))[:1] or [None]
    assert events is not None, f"no event file under {logdir}"
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def test_train_reports_each_step_to_tensorboard(tokenizer, tmp_path):
    config = TrainConfig(
        loss=LossConfig("simpo", beta=2.0, gamma=1.0), max_steps=3, batch_size=2, output_dir=tmp_path
    )
    result = train(
        build_test_model(len(tokenizer)), tokenizer, EXAMPLES, config, device_policy=CPU, progress=False,
        report_to="tensorboard",
    )  # fmt: skip
    scalars = read_scalars(tmp_path / "runs")
    assert {"train/loss", "train/rewards/margins", "train/grad_norm", "train/lr"} <= scalars.keys()
    for name in ("loss", "rewards/margins", "grad_norm"):
        logged = scalars[f"train/{name}"]
        assert [step for step, _ in logged] == [1, 2, 3]
        expected = [row[name] for row in result.history]
        assert [value for _, value in logged] == pytest.approx(expected, rel=1e-6)  # stored as float32
    assert "train/step" not in scalars


def test_no_report_to_writes_nothing(tokenizer, tmp_path):
    config = TrainConfig(max_steps=1, batch_size=2, output_dir=tmp_path)
    train(build_test_model(len(tokenizer)), tokenizer, EXAMPLES, config, device_policy=CPU, progress=False)
    assert not (tmp_path / "runs").exists()


def test_metric_names_follow_hf_trainer():
    row = {
        "step": 4,
        "loss": 0.5,
        "rewards/margins": 1.0,
        "eval_loss": 0.7,
        "eval_rewards/accuracies": 1,
        "x": "a",
    }
    assert rewrite_metrics(row) == {
        "train/loss": 0.5,
        "train/rewards/margins": 1.0,
        "eval/loss": 0.7,
        "eval/rewards/accuracies": 1.0,
    }


def test_report_to_names_are_checked():
    assert tracker_names(None) == [] and tracker_names("none") == [] and tracker_names([]) == []
    assert tracker_names("tensorboard") == ["tensorboard"]
    assert tracker_names(["tensorboard", "tensorboard"]) == ["tensorboard"]
    assert "tensorboard" in tracker_names("all")
    with pytest.raises(ValueError, match="unknown tracker 'tensorbored'"):
        tracker_names("tensorbored")


def test_a_tracker_whose_package_is_missing_is_refused(monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: ["tensorboard"])
    with pytest.raises(ValueError, match=r"report_to='wandb' needs the wandb package: pip install wandb"):
        tracker_names("wandb")
