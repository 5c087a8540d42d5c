"""The default run: iterative on-policy rounds from the shipped reference (``evaluation.rounds``)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from simplepo_helpers import PROFILE_DEFAULTS, RECIPES, Recipe, default_run, judge
from simplepo_helpers.data import read_jsonl
from simplepo_helpers.evaluation.onpolicy import training_prompts
from simplepo_helpers.evaluation.rounds import load_round1_pairs, round_pairs
from simplepo_helpers.world import data_file, load_reference_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shipped_round1_pairs_are_best_vs_worst_samples_on_training_prompts():
    pairs = load_round1_pairs()
    train_prompts = {str(p) for p in training_prompts(read_jsonl(data_file("pairs_train"))[0])}
    assert 0.8 * len(train_prompts) <= len(pairs) <= len(train_prompts)  # all-tied prompts are dropped
    for index, row in enumerate(pairs[:300]):
        assert str(row["prompt"]) in train_prompts, index
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert judge(row["prompt"], chosen).score == row["chosen_score"] > row["rejected_score"], index
        assert judge(row["prompt"], rejected).score == row["rejected_score"], index


def test_offline_recipes_use_the_tuned_profile_defaults():
    cpu = PROFILE_DEFAULTS["cpu"]
    simpo, dpo = RECIPES["simpo_offline"], RECIPES["dpo_offline"]
    assert (simpo.learning_rate, simpo.loss.beta, simpo.loss.gamma) == (
        cpu["learning_rate"],
        cpu["beta"],
        cpu["gamma"],
    )
    assert (dpo.learning_rate, dpo.loss.beta) == (cpu["dpo_learning_rate"], cpu["dpo_beta"])
    assert simpo.rounds == 1 and simpo.data == "offline" and simpo.steps_per_round == cpu["steps"]
    with pytest.raises(ValueError, match="offline recipe has one round"):
        Recipe(RECIPES["simpo"].loss, 1e-3, data="offline", rounds=2)


def test_rounds_recipes_are_the_best_of_the_search_on_dev():
    """The default recipes are the settings with the highest mean dev gain in the committed search."""
    from simplepo_helpers.evaluation.results import repo_root
    from simplepo_helpers.evaluation.spread import read_records, search_table

    rows = search_table(read_records(repo_root() / "results" / "rounds.jsonl"))
    for method, names in (("simpo", ("simpo", "simpo_sft")), ("dpo", ("dpo", "dpo_sft")), ("sft", ("sft",))):
        candidates = [r for r in rows if r["method"] in names]
        best = max(candidates, key=lambda r: max(r["gain_by_round"]))
        recipe = RECIPES[method]
        assert (recipe.learning_rate, recipe.steps_per_round, recipe.loss.sft_weight) == (
            best["learning_rate"],
            best["steps_per_round"],
            best["sft_weight"],
        ), best
        assert recipe.rounds == best["best_round"]


def test_round_sampling_seeds_are_fixed_for_round_one_and_distinct_later():
    recipe = RECIPES["simpo"]
    assert recipe.sampling(0, 1) == recipe.sampling(7, 1)  # round 1: the shipped pairs, whatever the seed
    assert len({recipe.sampling(s, r).seed for s in range(3) for r in (2, 3)}) == 6
    assert recipe.train_config(1, 2).seed != recipe.train_config(2, 1).seed


@pytest.fixture(scope="module")
def world_reference():
    return load_reference_model(progress=False)


def test_two_tiny_rounds_train_and_dpo_starts_each_round_from_its_own_reference(world_reference):
    reference, tokenizer = world_reference
    dpo = RECIPES["dpo"]
    plain = replace(dpo.loss, sft_weight=0.0)  # the preference term alone: ln 2 where policy = reference
    tiny = replace(dpo, loss=plain, rounds=2, steps_per_round=2, samples_per_prompt=2)
    run = default_run(
        "dpo", 0, reference=reference, tokenizer=tokenizer, recipe=tiny, progress=False, shipped_round1=True
    )
    assert len(run.models) == 2 and run.model is run.models[-1]
    assert run.rounds[0]["pairs"]["source"].endswith("(shipped)")
    assert run.rounds[1]["pairs"]["source"] == "sampled from the policy"
    # DPO's reference in each round is the policy at the round's start: its first loss is ln 2 (= -log sigma(0))
    for info in run.rounds:
        assert info["first_loss"] == pytest.approx(math.log(2), abs=1e-5)
    before = torch.cat([p.flatten() for p in reference.parameters()])
    after = [torch.cat([p.flatten() for p in m.parameters()]) for m in run.models]
    assert not torch.equal(before, after[0]) and not torch.equal(after[0], after[1])


def test_offline_round_reads_the_annotator_pairs(world_reference):
    reference, tokenizer = world_reference
    rows, report = round_pairs(RECIPES["simpo_offline"], reference, tokenizer, 0, 1)
    assert len(rows) == report["pairs"] == len(read_jsonl(data_file("pairs_train"))[0])


def test_default_runs_trains_in_a_process_pool_caches_and_matches_one_run(
    world_reference, tmp_path, monkeypatch
):
    from simplepo_helpers import default_runs
    from simplepo_helpers.evaluation.rounds import run_dir

    monkeypatch.setenv("SIMPLEPO_CACHE", str(tmp_path))
    reference, tokenizer = world_reference
    tiny = replace(RECIPES["simpo"], rounds=2, steps_per_round=2, samples_per_prompt=2)
    (run,) = default_runs("simpo", [3], recipe=tiny, workers=1, progress=False)  # a spawned process trains it
    folder = run_dir("simpo", 3, tiny)
    assert folder.parent == tmp_path / "runs" and sorted(p.name for p in folder.iterdir()) == [
        "round-1",
        "round-2",
        "run.json",
    ]
    stamp = (folder / "run.json").stat().st_mtime_ns
    (again,) = default_runs("simpo", [3], recipe=tiny, workers=1, progress=False)
    assert (folder / "run.json").stat().st_mtime_ns == stamp  # from the cache, not retrained
    direct = default_run("simpo", 3, recipe=tiny, progress=False)  # the same training in this process
    for mine, theirs in zip(direct.models, again.models, strict=True):
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b), name  # deterministic on one machine: the very same weights
