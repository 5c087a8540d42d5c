"""Progress bars over generation, sampling and the entry point's reference precompute: on for long work,
off for short work and under pytest, and the bars never change a result."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset

from simplepo_helpers import LossConfig
from simplepo_helpers.batching import PreferenceCollator
from simplepo_helpers.evaluation import sampling
from simplepo_helpers.evaluation.generation import generate_responses
from simplepo_helpers.precompute import precompute_reference_logps
from simplepo_helpers.runtime.progress import LONG_WORK, show_progress
from simplepo_helpers.scale import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPTS = ["What is two plus three?", "Name a colour.", "Say hello."]


def test_the_default_shows_a_bar_only_for_long_work_outside_tests(monkeypatch):
    assert show_progress(None, LONG_WORK) is False  # under pytest
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert show_progress(None, LONG_WORK) is True and show_progress(None, LONG_WORK - 1) is False
    assert show_progress(True, 1) is True and show_progress(False, 10**6) is False


def test_generation_shows_a_bar_when_asked_and_gives_the_same_text(tokenizer, tiny_model, capfd):
    kwargs = dict(max_new_tokens=3, seed=1, batch_size=2)
    capfd.readouterr()
    quiet = generate_responses(tiny_model, tokenizer, PROMPTS, **kwargs)
    assert capfd.readouterr().err == ""
    shown = generate_responses(tiny_model, tokenizer, PROMPTS, **kwargs, progress=True)
    err = capfd.readouterr().err
    assert shown == quiet and "generating" in err and "0/3" in err  # the total: one step per prompt


def test_sampling_shows_one_bar_over_all_samples(tokenizer, tiny_model, capfd, monkeypatch):
    monkeypatch.setattr(sampling, "judge_samples", lambda tokenizer, prompts, responses, judge: responses)
    capfd.readouterr()
    responses = sampling.sample_k(
        tiny_model, tokenizer, PROMPTS, k=2, stream=0, max_new_tokens=2, progress=True
    )
    err = capfd.readouterr().err
    assert len(responses) == 3 and all(len(row) == 2 for row in responses)
    assert "sampling 2 per prompt" in err and "0/6" in err and "generating" not in err


def test_the_reference_precompute_in_chunks_gives_the_same_log_probs(
    tokenizer, tiny_model, capfd, monkeypatch
):
    rows = Dataset.from_list(
        [{"prompt": p, "chosen": " yes, gladly", "rejected": " no"} for p in PROMPTS * 3]
    )
    args = (tiny_model, rows, PreferenceCollator(tokenizer), LossConfig("dpo", beta=0.1), None, 2)
    accelerator = SimpleNamespace(process_index=0, num_processes=1)
    whole = cli.shared_reference_logps(*args, accelerator)
    monkeypatch.setattr(cli, "REF_CHUNK_BATCHES", 1)
    capfd.readouterr()
    chunked = cli.shared_reference_logps(*args, accelerator, progress=True)
    assert "reference log-probs" in capfd.readouterr().err
    for key in cli.REF_KEYS:
        assert torch.equal(whole[key], chunked[key]) and whole[key].shape == (9,)


def test_the_cores_reference_precompute_shows_a_bar_over_the_pairs_and_the_same_log_probs(
    tokenizer, tiny_model, capfd
):
    """The precompute the notebooks' DPO runs call (not only the entry point's chunked one)."""
    rows = Dataset.from_list([{"prompt": p, "chosen": " yes, gladly", "rejected": " no"} for p in PROMPTS])
    args = (tiny_model, rows, PreferenceCollator(tokenizer), 2)
    capfd.readouterr()
    quiet = precompute_reference_logps(*args)
    assert capfd.readouterr().err == ""  # under pytest: no bar by default
    shown = precompute_reference_logps(*args, progress=True)
    err = capfd.readouterr().err
    assert "log-probs of the pairs" in err and "0/3" in err
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        assert torch.equal(quiet[key], shown[key]) and quiet[key].shape == (3,)


def test_the_entry_points_evaluation_shows_a_bar_and_the_same_metrics(tokenizer, tiny_model, capfd):
    from simplepo_helpers.runtime.device import DevicePolicy

    rows = Dataset.from_list([{"prompt": p, "chosen": " yes, gladly", "rejected": " no"} for p in PROMPTS])
    kwargs = dict(
        ref_model=None,
        device_policy=DevicePolicy(torch.device("cpu"), torch.float32, None, False, "tests"),
        batch_size=2,
        accelerator=SimpleNamespace(process_index=0, num_processes=1),
    )
    args = (tiny_model, rows, PreferenceCollator(tokenizer), LossConfig("simpo", beta=2.0, gamma=0.5))
    capfd.readouterr()
    quiet = cli.evaluate(*args, **kwargs)
    assert capfd.readouterr().err == ""
    shown = cli.evaluate(*args, **kwargs, progress=True)
    err = capfd.readouterr().err
    assert shown == quiet and "eval_loss" in shown and "evaluating" in err and "0/3" in err
