"""The generated data: byte-identical rebuild, splits, label noise, length bias, formats and the card."""

from __future__ import annotations

import json
import math
import random
from statistics import mean

import datasets
import pytest

from simplepo_helpers import load_preference_dataset
from simplepo_helpers.world import WorldConfig, data_dir, judge, split_of
from simplepo_helpers.world.build import main, world_files
from simplepo_helpers.world.dataset import annotate
from simplepo_helpers.world.tokenizer import MAX_LENGTH, world_tokenizer

FILES = (
    "sft_train.jsonl",
    "pairs_train.jsonl",
    "pairs_test.jsonl",
    "eval_prompts.jsonl",
    "pairs_dev.jsonl",
    "dev_prompts.jsonl",
    "heldout_prompts.jsonl",
)


@pytest.fixture(scope="module")
def rebuilt() -> dict[str, bytes]:
    return world_files()


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    return {
        name: [json.loads(line) for line in (data_dir() / name).read_text().splitlines()] for name in FILES
    }


def _prompt(row: dict) -> str:
    return (row["messages"] if "messages" in row else row["prompt"])[0]["content"]


def test_rebuild_matches_committed_files_byte_for_byte(rebuilt):
    assert set(rebuilt) == {*FILES, "README.md"}
    for name, content in rebuilt.items():
        assert (data_dir() / name).read_bytes() == content, (
            f"data/{name} differs from a rebuild: run `make data`"
        )


def test_an_installed_package_without_a_checkout_generates_the_same_files(rebuilt, tmp_path, monkeypatch):
    """A wheel has no data/: data_dir() then generates the files into the cache, once, with the same bytes."""
    from simplepo_helpers.world import dataset

    monkeypatch.setattr(dataset, "checkout_data_dir", lambda: tmp_path / "no-checkout" / "data")
    monkeypatch.setenv("SIMPLEPO_CACHE", str(tmp_path / "cache"))
    folder = dataset.data_dir()
    assert folder.parent == tmp_path / "cache" and (folder / "complete").is_file()
    for name in FILES:
        assert (folder / name).read_bytes() == rebuilt[name], name
    assert dataset.data_file("pairs_train") == folder / "pairs_train.jsonl"
    stamp = (folder / "pairs_train.jsonl").stat().st_mtime_ns
    assert dataset.data_dir() == folder and (folder / "pairs_train.jsonl").stat().st_mtime_ns == stamp  # once


def test_another_seed_gives_other_data(rebuilt):
    other = world_files(WorldConfig(seed=1, n_sft=50, n_train_pairs=50, n_test_pairs=10, n_eval_prompts=30))
    assert other["pairs_train.jsonl"][:2000] != rebuilt["pairs_train.jsonl"][:2000]


def test_files_are_small():
    sizes = {name: (data_dir() / name).stat().st_size for name in FILES}
    assert max(sizes.values()) < 1_000_000 and sum(sizes.values()) < 3_000_000, sizes


def test_no_prompt_shared_between_training_and_held_out(rows):
    training = {_prompt(r) for name in ("sft_train.jsonl", "pairs_train.jsonl") for r in rows[name]}
    test, evaluation = (
        {_prompt(r) for r in rows["pairs_test.jsonl"]},
        {_prompt(r) for r in rows["eval_prompts.jsonl"]},
    )
    assert not training & test and not training & evaluation and not test & evaluation
    assert {split_of(p) for p in training} == {"train"}
    eval_prompts = [_prompt(r) for r in rows["eval_prompts.jsonl"]]
    assert len(eval_prompts) == len(set(eval_prompts)) >= 200


def test_dev_split_is_disjoint_from_every_other_split(rows):
    dev = {_prompt(r) for name in ("pairs_dev.jsonl", "dev_prompts.jsonl") for r in rows[name]}
    others = {
        name: {_prompt(r) for r in rows[name]}
        for name in ("sft_train.jsonl", "pairs_train.jsonl", "pairs_test.jsonl", "eval_prompts.jsonl")
    }
    for name, prompts in others.items():
        assert not dev & prompts, f"dev shares {len(dev & prompts)} prompts with {name}"
    assert {split_of(p) for p in dev} == {"dev"}
    assert {split_of(p) for p in others["pairs_test.jsonl"]} == {"test"}
    assert {split_of(p) for p in others["eval_prompts.jsonl"]} == {"eval"}
    dev_prompts = [_prompt(r) for r in rows["dev_prompts.jsonl"]]
    assert len(dev_prompts) == len(set(dev_prompts)) >= 150
    assert {r["family"] for r in rows["dev_prompts.jsonl"]} == {
        r["family"] for r in rows["eval_prompts.jsonl"]
    }


def test_held_out_tasks_are_asked_nowhere_else(rows):
    from simplepo_helpers.world.dataset import HELDOUT_TASK_SHARE, is_heldout_task, task_identity
    from simplepo_helpers.world.families import parse_prompt

    def tasks(name: str) -> set[str]:
        return {task_identity(parse_prompt(_prompt(r))) for r in rows[name]}

    heldout = tasks("heldout_prompts.jsonl")
    assert len(heldout) >= 60
    for name in FILES[:-1]:
        assert not heldout & tasks(name), f"{name} asks {len(heldout & tasks(name))} held-out tasks"
    prompts = [_prompt(r) for r in rows["heldout_prompts.jsonl"]]
    assert len(prompts) == len(set(prompts)) >= 200 and {split_of(p) for p in prompts} == {"heldout"}
    assert {r["family"] for r in rows["heldout_prompts.jsonl"]} == {
        r["family"] for r in rows["eval_prompts.jsonl"]
    }
    # the wording is not the task: "a" and "the" ask the same task, another operand another task
    a, b = parse_prompt("How do I feed a yurn?"), parse_prompt("How do I feed the yurn?")
    assert task_identity(a) == task_identity(b) != task_identity(parse_prompt("What is 2 + 3?"))
    from simplepo_helpers.world.families import sample_task

    rng = random.Random(2)
    identities = {task_identity(t): is_heldout_task(t) for t in (sample_task(rng) for _ in range(20000))}
    share = mean(identities.values())
    assert abs(share - HELDOUT_TASK_SHARE / 100) < 0.05, share  # about the documented share of tasks


def test_dev_takes_half_of_the_test_hash_range():
    from simplepo_helpers.world.families import sample_task

    rng = random.Random(1)
    splits = [split_of(sample_task(rng).prompt) for _ in range(4000)]
    held_out = [s for s in splits if s in ("test", "dev")]
    assert 0.4 < held_out.count("dev") / len(held_out) < 0.6
    assert 0.1 < len(held_out) / len(splits) < 0.2


def test_trl_conversational_format_and_scores_match_the_judge(rows):
    for name in ("pairs_train.jsonl", "pairs_test.jsonl", "pairs_dev.jsonl"):
        for i, row in enumerate(rows[name]):
            assert [m["role"] for m in row["prompt"]] == ["user"], (name, i)
            assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
            assert row["chosen"][0]["content"] != row["rejected"][0]["content"], (name, i)
            for side in ("chosen", "rejected"):
                assert judge(row["prompt"], row[side][0]["content"]).score == row[f"{side}_score"], (name, i)
    for row in rows["sft_train.jsonl"]:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]


def test_label_noise_rate_matches_the_documented_rate(rows):
    decided = [r for r in rows["pairs_train.jsonl"] if r["chosen_score"] != r["rejected_score"]]
    flipped = mean(r["chosen_score"] < r["rejected_score"] for r in decided)
    noise = WorldConfig().label_noise
    assert abs(flipped - noise) < 3 * math.sqrt(noise * (1 - noise) / len(decided)) + 1e-9, flipped


def test_annotator_noise_and_tie_break_on_many_draws():
    config, rng, n = WorldConfig(), random.Random(0), 20000
    picks_worse = mean(annotate(("long answer", 0.0), ("short", 1.0), rng, config)[0] == 0 for _ in range(n))
    picks_longer = mean(annotate(("short", 1.0), ("long answer", 1.0), rng, config)[0] == 1 for _ in range(n))
    assert abs(picks_worse - config.label_noise) < 0.01
    assert abs(picks_longer - config.tie_longer_prob) < 0.01


def test_chosen_is_longer_on_average_although_the_judge_ignores_length(rows):
    pairs = rows["pairs_train.jsonl"]
    chosen = [len(r["chosen"][0]["content"]) for r in pairs]
    rejected = [len(r["rejected"][0]["content"]) for r in pairs]
    assert mean(chosen) > 1.15 * mean(rejected)
    ties = [r for r in pairs if r["chosen_score"] == r["rejected_score"]]
    assert mean(len(r["chosen"][0]["content"]) > len(r["rejected"][0]["content"]) for r in ties) > 0.7
    # while the judge gives a right answer the same score with or without filler
    assert (
        judge("What is 2 + 3?", "Sure, happy to help with that. 2 + 3 = 5. I hope this helps!").score == 1.0
    )
    assert judge("What is 2 + 3?", "2 + 3 = 5.").score == 1.0


def test_every_family_and_the_safety_split_are_present(rows):
    families = {r["family"] for r in rows["eval_prompts.jsonl"]}
    assert families == {"arithmetic", "comparison", "opposites", "counting", "facts", "safety"}
    safety = [r for r in rows["eval_prompts.jsonl"] if r["family"] == "safety"]
    assert 0.3 < mean(r["forbidden"] for r in safety) < 0.7


def test_card_reports_the_measured_statistics(rows):
    card = (data_dir() / "README.md").read_text()
    pairs = rows["pairs_train.jsonl"]
    decided = [r for r in pairs if r["chosen_score"] != r["rejected_score"]]
    expected = [
        f"{mean(len(r['chosen'][0]['content']) for r in pairs):.1f}",
        f"{mean(len(r['rejected'][0]['content']) for r in pairs):.1f}",
        f"{mean(r['chosen_score'] < r['rejected_score'] for r in decided):.3f}",
        f"| pairs_train.jsonl | {len(pairs)} | {(data_dir() / 'pairs_train.jsonl').stat().st_size} |",
    ]
    for text in expected:
        assert text in card, text


def test_loadable_with_datasets_json():
    pairs = datasets.load_dataset("json", data_files=str(data_dir() / "pairs_train.jsonl"), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(pairs.column_names)
    assert pairs[0]["prompt"][0]["role"] == "user"
    sft = datasets.load_dataset("json", data_files=str(data_dir() / "sft_train.jsonl"), split="train")
    assert sft[0]["messages"][1]["role"] == "assistant"


def test_loadable_with_the_kit_loader(rows):
    tokenizer = world_tokenizer()
    for stem in ("pairs_train", "pairs_test", "pairs_dev"):
        dataset, report = load_preference_dataset(
            data_dir() / f"{stem}.jsonl", tokenizer=tokenizer, max_length=MAX_LENGTH, strict=True
        )
        assert (report.n_bad, report.format, report.n_prompt_truncated) == (0, "conversational", 0)
        assert len(dataset) == len(rows[f"{stem}.jsonl"])


def test_make_data_entry_point_writes_the_same_files(tmp_path, rebuilt, capsys):
    main(["--out", str(tmp_path)])  # data only: the reference model is shipped, not rebuilt here
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == rebuilt
    assert "pairs_train.jsonl" in capsys.readouterr().out
