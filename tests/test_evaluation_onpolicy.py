"""On-policy pairs: best vs worst by the judge, ties, empty samples, and a reproducible build."""

from __future__ import annotations

import random

import pytest

from simplepo_helpers.evaluation.onpolicy import (
    OnPolicyConfig,
    build_onpolicy_pairs,
    opening_style,
    pair_best_worst,
    training_prompts,
)
from simplepo_helpers.world import judge

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


def test_best_against_worst_and_ties_drawn_at_random():
    samples = [
        "2 + 3 = 5.",
        "Great question! 2 + 3 = 5. I hope this helps!",
        "Easy! 6. Trust me on this.",
        "4.",
    ]
    scores = [judge(PROMPT, s).score for s in samples]
    assert scores == [1.0, 1.0, 0.0, 0.0]
    picks = [pair_best_worst(PROMPT, samples, scores, random.Random(seed))[0] for seed in range(200)]
    chosen = {p["chosen"][0]["content"] for p in picks}
    rejected = {p["rejected"][0]["content"] for p in picks}
    assert chosen == set(samples[:2]) and rejected == set(samples[2:])  # both tied candidates get drawn
    assert all(p["chosen_score"] > p["rejected_score"] for p in picks)
    assert picks[0]["chosen_style"] in ("bare", "verbose")


def test_all_tied_and_empty_samples_are_dropped():
    rng = random.Random(0)
    assert pair_best_worst(PROMPT, ["5.", "2 + 3 = 5."], [1.0, 1.0], rng) == (None, "all tied")
    assert pair_best_worst(PROMPT, ["", "  ", "5."], [0.0, 0.0, 1.0], rng) == (None, "too few")
    row, outcome = pair_best_worst(PROMPT, ["", "4.", "5."], [0.0, 0.0, 1.0], rng)
    assert outcome == "paired" and row["rejected"][0]["content"] == "4."


def test_opening_style():
    assert opening_style("Oh, I know this! 7.") == "confident"
    assert opening_style("I'm sorry, but I can't help with that request.") == "refusal"
    assert opening_style("Of course! 5.") == "verbose"
    assert opening_style("I count 3.") == "bare"


def test_build_is_reproducible_and_labels_follow_the_judge():
    from simplepo_helpers.world import load_reference_model

    model, tokenizer = load_reference_model(progress=False)
    rows = [{"prompt": [{"role": "user", "content": f"What is {a} + 1?"}]} for a in range(5)] * 2
    prompts = training_prompts(rows)
    assert len(prompts) == 5
    config = OnPolicyConfig(samples_per_prompt=4)
    pairs, report = build_onpolicy_pairs(model, tokenizer, prompts, config)
    again, _ = build_onpolicy_pairs(model, tokenizer, prompts, config)
    assert pairs == again
    assert report["pairs"] + report["dropped_all_tied"] + report["dropped_too_few"] == 5
    for pair in pairs:
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert judge(pair["prompt"], chosen).score == pair["chosen_score"] > pair["rejected_score"]
        assert judge(pair["prompt"], rejected).score == pair["rejected_score"]
