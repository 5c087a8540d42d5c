"""Cached runs (keys, reuse, atomic writes, length tracking) and the step-cost measurement, on the tiny test model."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch
from conftest import build_test_model
from datasets import Dataset

from simplepo_helpers import LossConfig, TrainConfig, train
from simplepo_helpers.evaluation.experiments import (
    PeakMemory,
    RunSpec,
    comparison_specs,
    fingerprint_model,
    fingerprint_rows,
    measure_step_cost,
    runs_dir,
    seed_band,
    train_or_load,
    variant,
)
from simplepo_helpers.evaluation.generation import generate_responses

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _row(prompt, chosen, rejected):
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


ROWS = [
    _row("What is two plus three?", "Two plus three is five.", "It is six."),
    _row("Name a colour.", "Blue is a colour.", "The quick brown fox jumps over the lazy dog."),
    _row("Count the letters in banana.", "It has six letters.", "Sorry, I cannot help."),
    _row("Say hello.", "hello world", "dog"),
]
PROMPTS = [row["prompt"] for row in ROWS]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPLEPO_CACHE", str(tmp_path))
    return tmp_path


def _spec(name="simpo", seed=0, steps=3, **loss):
    config = TrainConfig(
        loss=LossConfig(name=name, **loss),
        learning_rate=1e-3,
        max_steps=steps,
        batch_size=2,
        seed=seed,
        warmup_ratio=0.0,
    )
    return RunSpec(label=name, train=config)


def _same_weights(a, b):
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_run_is_trained_once_then_reused(tokenizer):
    reference = build_test_model(len(tokenizer))
    first = train_or_load(_spec(), reference, tokenizer, ROWS, progress=False)
    assert not first.reused and (first.path / "model.safetensors").is_file()
    assert not _same_weights(first.model, reference)  # trained on a copy; the reference is untouched
    assert _same_weights(reference, build_test_model(len(tokenizer)))
    second = train_or_load(_spec(), reference, tokenizer, ROWS, progress=False)
    assert second.reused and second.path == first.path and second.key == first.key
    assert _same_weights(second.model, first.model)
    assert second.history == first.history and len(first.history) == 3
    assert second.seconds_per_step > 0


def test_key_changes_with_config_data_and_reference(tokenizer):
    reference = build_test_model(len(tokenizer))
    base = train_or_load(_spec(steps=1), reference, tokenizer, ROWS, progress=False)
    others = [
        train_or_load(_spec(steps=1, seed=1), reference, tokenizer, ROWS, progress=False),
        train_or_load(_spec(steps=1, gamma=0.5), reference, tokenizer, ROWS, progress=False),
        train_or_load(_spec(steps=1), reference, tokenizer, ROWS[::-1], progress=False),
        train_or_load(
            _spec(steps=1), build_test_model(len(tokenizer), seed=3), tokenizer, ROWS, progress=False
        ),
    ]
    assert len({base.key, *(run.key for run in others)}) == 5
    assert not any(run.reused for run in others)
    assert (
        sorted(p.name.startswith(".") for p in runs_dir().iterdir()) == [False] * 5
    )  # no staging folder left


def test_dpo_run_with_precomputed_reference_matches_a_live_reference(tokenizer):
    reference = build_test_model(len(tokenizer))
    spec = _spec("dpo", steps=3, beta=0.5)
    cached = train_or_load(spec, reference, tokenizer, ROWS, progress=False)
    live_model = build_test_model(len(tokenizer))
    live = train(
        live_model, tokenizer, ROWS, spec.train, ref_model=build_test_model(len(tokenizer)), progress=False
    )
    for ours, theirs in zip(cached.history, live.history, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-5)


def test_length_curve_is_measured_at_checkpoints(tokenizer):
    reference = build_test_model(len(tokenizer))
    spec = RunSpec("simpo", _spec(steps=4).train, length_checkpoints=2)
    run = train_or_load(
        spec, reference, tokenizer, ROWS, length_prompts=PROMPTS, max_new_tokens=6, progress=False
    )
    steps = [step for step, _ in run.info["length_curve"]]
    assert steps == [0, 2, 4]
    responses = generate_responses(reference, tokenizer, PROMPTS, max_new_tokens=6, seed=0)
    expected = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses) / len(
        responses
    )
    assert run.info["length_curve"][0][1] == pytest.approx(expected)
    assert not (run.path / "checkpoints").exists()
    without = train_or_load(
        RunSpec("simpo", _spec(steps=4).train), reference, tokenizer, ROWS, progress=False
    )
    assert without.key != run.key and "length_curve" not in without.info
    reloaded = train_or_load(
        spec, reference, tokenizer, ROWS, length_prompts=PROMPTS, max_new_tokens=6, progress=False
    )
    assert reloaded.reused and reloaded.info["length_curve"] == run.info["length_curve"]
    longer = train_or_load(
        spec, reference, tokenizer, ROWS, length_prompts=PROMPTS, max_new_tokens=7, progress=False
    )
    assert not longer.reused and longer.key != run.key  # the length probe is part of the key


def test_a_failing_run_leaves_nothing_in_the_cache(tokenizer):
    bad_rows = ROWS[:1] + [_row("Say hello.", "", "dog")]
    with pytest.raises(ValueError, match="empty"):
        train_or_load(_spec(steps=2), build_test_model(len(tokenizer)), tokenizer, bad_rows, progress=False)
    assert list(runs_dir().iterdir()) == []


def test_fingerprints():
    model = build_test_model(50)
    before = fingerprint_model(model)
    assert fingerprint_model(build_test_model(50)) == before
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1e-3
    assert fingerprint_model(model) != before
    assert fingerprint_rows(ROWS) != fingerprint_rows(ROWS[::-1])
    assert fingerprint_rows([{"a": 1, "b": 2}]) == fingerprint_rows([{"b": 2, "a": 1}])


def test_peak_memory_sees_a_large_allocation():
    with PeakMemory("cpu") as peak:
        block = torch.ones(64, 2**20)  # 256 MiB, touched
        time.sleep(0.05)
        del block
    assert peak.method.startswith(("VmHWM", "ru_maxrss"))
    assert peak.peak_bytes >= 200 * 2**20
    with PeakMemory("cpu") as small:  # a new region: the 256 MiB block above is not counted again
        torch.ones(2**10)
    assert small.peak_bytes < 100 * 2**20


def test_measure_step_cost(tokenizer):
    reference = build_test_model(len(tokenizer))
    config = _spec("dpo", beta=0.5).train
    live = measure_step_cost(reference, tokenizer, ROWS, config, live_reference=True, steps=2)
    precomputed = measure_step_cost(
        reference, tokenizer, Dataset.from_list(ROWS), config, steps=2
    )  # a Dataset too
    params_mb = sum(p.numel() * 4 for p in reference.parameters()) / 2**20
    assert live["weights_held_mb"] == pytest.approx(2 * params_mb)
    assert precomputed["weights_held_mb"] == pytest.approx(params_mb)
    assert precomputed["precompute_pairs"] == 4 and live["precompute_pairs"] == 0
    for cost in (live, precomputed):
        assert cost["seconds_per_step"] > 0 and cost["peak_extra_mb"] >= 0


def test_comparison_specs_share_everything_but_the_loss():
    setup = SimpleNamespace(
        defaults={
            "learning_rate": 1e-3,
            "beta": 2.5,
            "gamma": 1.375,
            "steps": 7,
            "batch_size": 4,
            "grad_accum_steps": 2,
            "warmup_ratio": 0.1,
        },
        max_length=128,
        max_prompt_length=64,
    )
    specs = comparison_specs(setup, seeds=[0, 1], gamma=0.5, dpo_beta=0.2)
    assert list(specs) == ["simpo", "dpo", "simpo_no_ln"]
    trainings = [spec.train for group in specs.values() for spec in group]
    assert {(t.max_steps, t.examples_per_step, t.learning_rate, t.max_length) for t in trainings} == {
        (7, 8, 1e-3, 128)
    }
    assert [spec.train.seed for spec in specs["dpo"]] == [0, 1]
    simpo, dpo, no_ln = (specs[k][0].train.loss for k in specs)
    assert (simpo.beta, simpo.gamma, simpo.length_normalize) == (2.5, 0.5, True)
    assert (dpo.name, dpo.beta, dpo.length_normalize) == ("dpo", 0.2, False)
    assert (no_ln.name, no_ln.beta, no_ln.gamma, no_ln.length_normalize) == ("simpo", 2.5, 0.5, False)
    own = comparison_specs(
        SimpleNamespace(
            **{**vars(setup), "defaults": {**setup.defaults, "no_ln_learning_rate": 3e-4, "no_ln_beta": 0.25}}
        ),
        seeds=[0],
        beta=2.5,
        gamma=1.0,
    )["simpo_no_ln"][0].train  # its own tuned rate and beta, SimPO's gamma/beta ratio
    assert (own.learning_rate, own.loss.beta, own.loss.gamma) == (3e-4, 0.25, pytest.approx(0.1))
    tuned = comparison_specs(
        SimpleNamespace(
            **{**vars(setup), "defaults": {**setup.defaults, "dpo_learning_rate": 5e-4, "dpo_beta": 0.5}}
        ),
        seeds=[0],
    )
    assert (tuned["dpo"][0].train.learning_rate, tuned["dpo"][0].train.loss.beta) == (5e-4, 0.5)
    assert tuned["simpo"][0].train.learning_rate == tuned["simpo_no_ln"][0].train.learning_rate == 1e-3
    swept = variant(specs["simpo"][1], "simpo_gamma3", gamma=3.0)
    assert swept.train.loss.gamma == 3.0 and swept.train.seed == 1 and swept.length_checkpoints == 0
    assert specs["simpo"][1].train.loss.gamma == 0.5  # the original is untouched


def test_seed_band_hand_case():
    def fake_run(values):
        history = [{"step": step, "loss": value} for step, value in enumerate(values, start=1)]
        return SimpleNamespace(history=history)

    steps, mean, low, high = seed_band([fake_run([1, 2, 3, 4]), fake_run([3, 4, 5, 6])], "loss", window=2)
    assert steps == [1, 2, 3, 4]
    # trailing means over 2 steps: [1, 1.5, 2.5, 3.5] and [3, 3.5, 4.5, 5.5]
    assert mean.tolist() == [2.0, 2.5, 3.5, 4.5] and low.tolist() == [1.0, 1.5, 2.5, 3.5]
    assert high.tolist() == [3.0, 3.5, 4.5, 5.5]
    assert seed_band([fake_run([1, 5])], "loss")[1].tolist() == [1.0, 5.0]  # window 1: unchanged


def test_train_all_in_a_process_pool_gives_the_same_runs_as_in_process(tokenizer, tmp_path, monkeypatch):
    from simplepo_helpers import train_all
    from simplepo_helpers.runtime.device import select_device

    setup = SimpleNamespace(
        model=build_test_model(len(tokenizer)),
        tokenizer=tokenizer,
        train_rows=ROWS,
        eval_prompts=PROMPTS,
        device_policy=select_device("cpu"),
    )
    specs = [_spec("simpo", seed=0), _spec("dpo", seed=1)]
    monkeypatch.setenv("SIMPLEPO_CACHE", str(tmp_path / "pool"))
    pooled = train_all(setup, specs, max_new_tokens=8, progress=False, workers=2)  # trained in 2 processes
    assert all(run.reused for run in pooled)  # the parent only loads what the workers cached
    monkeypatch.setenv("SIMPLEPO_CACHE", str(tmp_path / "here"))
    here = train_all(setup, specs, max_new_tokens=8, progress=False)
    assert not any(run.reused for run in here)
    for a, b in zip(pooled, here, strict=True):
        untimed = [
            [{k: v for k, v in row.items() if k != "seconds"} for row in run.history] for run in (a, b)
        ]
        assert a.key == b.key and _same_weights(a.model, b.model) and untimed[0] == untimed[1]
