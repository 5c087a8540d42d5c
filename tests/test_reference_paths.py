"""Runs that need a reference model work through every path: ``train()``, the cached comparison runs
(``train_or_load``) and the entry point, with the decision taken in one place (``LossConfig``).

A KL run starts with the policy equal to its reference, so its first step's KL is 0 and its loss is the plain
SimPO loss; the three paths must then agree with each other step for step.
"""

from __future__ import annotations

import copy

import pytest
from conftest import build_test_model
from test_cli import base_config, read_metrics, run_cli
from test_cli import tiny_world as tiny_world  # noqa: F401  (the session fixture)

from simplepo_helpers import LossConfig, TrainConfig, train
from simplepo_helpers.data import read_jsonl
from simplepo_helpers.evaluation.experiments import RunSpec, train_or_load
from simplepo_helpers.runtime.device import select_device
from simplepo_helpers.scale.hub import load_hub_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS = [
    {"prompt": "What is two plus three?", "chosen": " Two plus three is five.", "rejected": " It is six."},
    {"prompt": "Name a colour.", "chosen": " Blue is a colour.", "rejected": " The quick brown fox."},
    {"prompt": "Say hello.", "chosen": " hello world", "rejected": " dog"},
    {"prompt": "Count the letters in banana.", "chosen": " It has six letters.", "rejected": " Sorry, no."},
]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPLEPO_CACHE", str(tmp_path))


def _config(**loss) -> TrainConfig:
    return TrainConfig(
        loss=LossConfig(**loss), learning_rate=5e-3, max_steps=3, batch_size=2, warmup_ratio=0.0, seed=0
    )


@pytest.mark.parametrize(
    ("loss", "needs_reference", "needs_model"),
    [
        ({"name": "simpo"}, False, False),
        ({"name": "simpo", "kl_weight": 0.1}, True, True),
        ({"name": "dpo"}, True, False),
        ({"name": "dpo", "kl_weight": 0.1}, True, True),
    ],
)
def test_one_place_decides_what_a_run_needs_from_its_reference(loss, needs_reference, needs_model):
    config = LossConfig(**loss)
    assert (config.needs_reference, config.needs_reference_model) == (needs_reference, needs_model)
    if needs_reference:
        with pytest.raises(ValueError, match="needs"):
            config.check_reference(None, has_ref_logps=False)
    if needs_model:  # precomputed log-probs cannot stand in for the KL term's distributions
        with pytest.raises(ValueError, match="KL term"):
            config.check_reference(None, has_ref_logps=True)


def test_kl_run_through_train_starts_at_zero_kl(tokenizer):
    reference = build_test_model(len(tokenizer))
    plain = train(copy.deepcopy(reference), tokenizer, ROWS, _config(), progress=False)
    with_kl = train(
        copy.deepcopy(reference), tokenizer, ROWS, _config(kl_weight=0.5), ref_model=reference, progress=False
    )
    first = with_kl.history[0]
    assert first["kl"] == pytest.approx(0.0, abs=1e-7)  # policy == reference at the first step
    assert first["loss"] == pytest.approx(plain.history[0]["loss"], rel=1e-6)
    assert with_kl.history[-1]["kl"] > 1e-6  # training moved the policy away, the term now pulls back


def test_kl_run_through_the_cached_comparison_runs(tokenizer):
    """Was broken: ``train_or_load`` ignored the KL term when deciding whether to pass a reference."""
    reference = build_test_model(len(tokenizer))
    for loss in ({"name": "simpo", "kl_weight": 0.5}, {"name": "dpo", "kl_weight": 0.5}):
        run = train_or_load(RunSpec("kl", _config(**loss)), reference, tokenizer, ROWS, progress=False)
        direct = train(
            copy.deepcopy(reference), tokenizer, ROWS, _config(**loss), ref_model=reference, progress=False
        )
        for cached_row, direct_row in zip(run.history, direct.history, strict=True):
            for name in ("loss", "kl", "rewards/margins"):
                assert cached_row[name] == pytest.approx(direct_row[name], rel=1e-6, abs=1e-8), name


def test_kl_run_through_the_entry_point(tiny_world, tmp_path):  # noqa: F811
    config = base_config(tiny_world, tmp_path / "cli", max_steps=3)
    config["loss"]["kl_weight"] = 0.5
    assert run_cli(config, tmp_path) == 0
    logged = read_metrics(tmp_path / "cli")
    assert logged[0]["kl"] == pytest.approx(0.0, abs=1e-7) and logged[-1]["kl"] > 0

    policy = select_device("cpu", verbose=False)
    model, tokenizer = load_hub_model(str(tiny_world["model"]), policy)
    rows, _ = read_jsonl(tiny_world["train"])
    settings = {key: value for key, value in config["train"].items() if key != "output_dir"}
    loss = LossConfig(name="simpo", beta=2.5, gamma=1.375, kl_weight=0.5)
    result = train(
        model,
        tokenizer,
        rows,
        TrainConfig(loss=loss, **settings),
        ref_model=copy.deepcopy(model),
        device_policy=policy,
        progress=False,
    )
    for cli_row, train_row in zip(logged, result.history, strict=True):
        for name in ("loss", "kl", "rewards/accuracies", "grad_norm"):
            assert cli_row[name] == pytest.approx(train_row[name], rel=1e-6, abs=1e-7), name
