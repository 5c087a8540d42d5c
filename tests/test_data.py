"""Loading and validation: every bad-row reason with its index, good rows kept in order, JSONL, Dataset."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

from simplepo_helpers import (
    PreferenceCollator,
    PreferenceDataError,
    ValidationReport,
    load_preference_dataset,
    read_jsonl,
    tokenize_preference,
    validate_preferences,
)


def standard(prompt="What is two plus three?", chosen=" Five.", rejected=" Six.", **extra):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def chat(prompt="Name a colour.", chosen="Blue.", rejected="Dog.", system=None, **extra):
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    return {
        "prompt": messages,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        **extra,
    }


GOOD_STANDARD = [standard(family="maths"), standard("Name a colour.", " Blue.", " Red.", family="colours")]
GOOD_CHAT = [chat(family="colours"), chat("What is two plus three?", "Five.", "Six.", system="Be brief.")]


def with_role(message_list, role):
    return [{**message_list[0], "role": role}]


BAD_ROWS = {
    # name: (neighbours, bad row, reason, text the message must contain)
    "missing rejected": (GOOD_STANDARD, {"prompt": "Hi", "chosen": " hello"}, "missing_field", "rejected"),
    "null chosen": (GOOD_STANDARD, standard(chosen=None), "missing_field", "chosen"),
    "number as response": (GOOD_STANDARD, standard(rejected=5), "wrong_type", "'rejected'"),
    "row not a dict": (GOOD_STANDARD, ["Hi", " hello", " world"], "wrong_type", "list"),
    "message without content": (
        GOOD_CHAT,
        {**chat(), "chosen": [{"role": "assistant"}]},
        "wrong_type",
        "chosen[0]",
    ),
    "strings and lists in one row": (
        GOOD_CHAT,
        {**chat(), "prompt": "Name a colour."},
        "mixed_formats",
        "prompt",
    ),
    "prompt ends with assistant": (
        GOOD_CHAT,
        {**chat(), "prompt": chat()["prompt"] + chat()["chosen"]},
        "wrong_roles",
        "user turn",
    ),
    "chosen from the user": (
        GOOD_CHAT,
        {**chat(), "chosen": with_role(chat()["chosen"], "user")},
        "wrong_roles",
        "'chosen'",
    ),
    "unknown role": (
        GOOD_CHAT,
        {**chat(), "prompt": [{"role": "tool", "content": "x"}] + chat()["prompt"]},
        "wrong_roles",
        "'tool'",
    ),
    "two assistant messages": (
        GOOD_CHAT,
        {**chat(), "rejected": chat()["rejected"] * 2},
        "wrong_roles",
        "'rejected'",
    ),
    "blank prompt": (GOOD_STANDARD, standard(prompt="  \n"), "empty_prompt", "prompt"),
    "empty chosen": (GOOD_STANDARD, standard(chosen=""), "empty_response", "'chosen'"),
    "blank chat response": (GOOD_CHAT, chat(rejected=" \n"), "empty_response", "'rejected'"),
    "identical texts": (
        GOOD_STANDARD,
        standard(chosen=" Five.", rejected=" Five."),
        "identical_responses",
        "same",
    ),
    "identical chat": (GOOD_CHAT, chat(chosen="Red.", rejected="Red."), "identical_responses", "same"),
}


def assert_only_row_1_bad(report: ValidationReport, reason: str, fragment: str):
    assert report.n_total == 3 and report.n_kept == 2 and report.n_bad == 1
    assert report.kept_indices == [0, 2]
    (bad,) = report.bad_rows
    assert (bad.index, bad.reason, bad.line) == (1, reason, None)
    assert fragment in bad.message
    assert report.reason_counts == {reason: 1}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_each_bad_row_reason_is_reported_and_good_rows_kept(case):
    neighbours, bad_row, reason, fragment = BAD_ROWS[case]
    rows = [neighbours[0], bad_row, neighbours[1]]
    assert_only_row_1_bad(validate_preferences(rows), reason, fragment)
    dataset, report = load_preference_dataset(rows)
    assert_only_row_1_bad(report, reason, fragment)
    assert len(dataset) == 2
    assert dataset[0]["prompt"] == neighbours[0]["prompt"]  # order kept
    assert dataset[1]["chosen"] == neighbours[1]["chosen"]
    assert dataset[0]["family"] == neighbours[0]["family"]  # extra column kept


def test_rows_of_different_formats_are_mixed(tokenizer):
    rows = [GOOD_STANDARD[0], GOOD_CHAT[0], GOOD_STANDARD[1]]
    report = validate_preferences(rows)
    assert_only_row_1_bad(report, "mixed_formats", "row 0")
    assert report.format == "standard"


def test_eos_inside_a_response_is_untokenisable(tokenizer):
    rows = [GOOD_STANDARD[0], standard(chosen=" Five<|im_end|> then more"), GOOD_STANDARD[1]]
    assert validate_preferences(rows).n_bad == 0  # structurally fine: only the tokenizer sees it
    report = validate_preferences(rows, tokenizer=tokenizer)
    assert_only_row_1_bad(report, "untokenisable", "eos token")
    assert "&lt;|im_end|&gt;" in report._repr_html_()  # the message is escaped in HTML


def test_response_that_cannot_fit_max_length_is_too_long(tokenizer):
    long_response = " Please count the letters in the word banana." * 4
    rows = [GOOD_CHAT[0], chat(chosen=long_response), GOOD_CHAT[1]]
    longest_good = max(
        len(tokens["prompt_ids"]) + max(len(tokens["chosen_ids"]), len(tokens["rejected_ids"]))
        for tokens in (tokenize_preference(row, tokenizer) for row in GOOD_CHAT)
    )
    n_long = len(tokenize_preference(rows[1], tokenizer)["chosen_ids"])
    assert n_long > longest_good
    report = validate_preferences(rows, tokenizer=tokenizer, max_length=longest_good)
    assert_only_row_1_bad(report, "too_long", f"chosen needs {n_long} tokens")
    assert report.n_prompt_truncated == 0
    # the collator alone would cut that response (and its EOS) rather than fail
    batch = PreferenceCollator(tokenizer, max_length=longest_good)(rows)
    assert batch["input_ids"].shape[1] == longest_good


def test_prompt_cut_to_fit_is_kept_and_counted(tokenizer):
    long_prompt = standard(prompt="Please count the letters in the word banana. " * 4 + "Well?")
    full = tokenize_preference(long_prompt, tokenizer)
    max_length = len(full["chosen_ids"]) + 3  # BOS + the prompt's last two tokens
    report = validate_preferences([long_prompt], tokenizer=tokenizer, max_length=max_length)
    assert report.n_bad == 0 and report.n_prompt_truncated == 1
    assert "1 kept rows have their prompt cut" in str(report)


def test_length_limits_need_a_tokenizer_and_a_positive_value(tokenizer):
    with pytest.raises(ValueError, match="pass a tokenizer"):
        validate_preferences(GOOD_STANDARD, max_length=64)
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        validate_preferences(GOOD_STANDARD, tokenizer=tokenizer, max_length=0)
    with pytest.raises(ValueError, match="pad_to_multiple_of must be a positive integer"):
        PreferenceCollator(tokenizer, pad_to_multiple_of=0)


def test_strict_raises_with_the_bad_rows():
    rows = [GOOD_STANDARD[0], standard(chosen=""), GOOD_STANDARD[1], standard(rejected=" Five.")]
    with pytest.raises(PreferenceDataError) as caught:
        load_preference_dataset(rows, strict=True)
    report = caught.value.report
    assert [(bad.index, bad.reason) for bad in report.bad_rows] == [
        (1, "empty_response"),
        (3, "identical_responses"),
    ]
    assert "row 1: empty_response" in str(caught.value) and "row 3: identical_responses" in str(caught.value)
    assert validate_preferences(GOOD_STANDARD, strict=True).n_bad == 0  # nothing bad, nothing raised


def test_summary_is_readable():
    rows = [GOOD_STANDARD[0], standard(chosen=""), standard(chosen="")]
    text = str(validate_preferences(rows))
    assert text.splitlines()[0] == "3 rows: 1 kept, 2 bad (standard format)"
    assert "empty_response 2" in text and "row 2: empty_response" in text


def test_jsonl_with_broken_lines(tmp_path, tokenizer):
    path = tmp_path / "pairs.jsonl"
    lines = [
        json.dumps(GOOD_STANDARD[0]),
        '{"prompt": "Hi", "chosen": " hello", ',  # cut short
        "",  # blank lines hold no row
        json.dumps({**GOOD_STANDARD[1], "judge scores": [7.5, 3.0]}),
        "[1, 2]",
        json.dumps(standard(chosen=" Five.", rejected=" Five.")),
        json.dumps(standard("Name a colour.", " Red.", " Dog.")),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dataset, report = load_preference_dataset(path, tokenizer=tokenizer)
    assert [(bad.index, bad.line, bad.reason) for bad in report.bad_rows] == [
        (1, 2, "invalid_json"),
        (3, 5, "invalid_json"),
        (4, 6, "identical_responses"),
    ]
    assert "line 2 is not valid JSON" in report.bad_rows[0].message
    assert "row 1 (line 2)" in str(report)
    assert report.n_total == 6 and report.kept_indices == [0, 2, 5]
    assert dataset["chosen"] == [" Five.", " Blue.", " Red."]
    assert dataset["judge scores"] == [None, [7.5, 3.0], None]  # a column only one row has is kept
    assert dataset["family"] == ["maths", "colours", None]


def test_dataset_input_returns_a_selection():
    rows = [
        GOOD_CHAT[0],
        chat(chosen="Red.", rejected="Red."),
        chat("Say hi.", "Hello!", "No.", family="greetings"),
    ]
    source = Dataset.from_list(rows)
    dataset, report = load_preference_dataset(source)
    assert isinstance(dataset, Dataset)
    assert_only_row_1_bad(report, "identical_responses", "same")
    assert report.format == "conversational"
    assert dataset["family"] == ["colours", "greetings"]
    assert dataset[1]["prompt"] == [{"role": "user", "content": "Say hi."}]
    assert validate_preferences(source).kept_indices == [0, 2]


def test_loaded_chat_rows_collate(tokenizer):
    # Arrow fills keys a message lacks with None (here "name"); tokenisation must not see them
    rows = [
        chat(),
        {**chat("Say hi.", "Hello!", "No."), "prompt": [{"role": "user", "content": "Hi", "name": "ann"}]},
    ]
    dataset, report = load_preference_dataset(rows, tokenizer=tokenizer)
    assert report.n_bad == 0 and dataset[0]["prompt"][0]["name"] is None
    from_dataset = PreferenceCollator(tokenizer)(list(dataset))
    from_list = PreferenceCollator(tokenizer)([chat(), rows[1]])
    assert torch.equal(from_dataset["input_ids"], from_list["input_ids"])


# TRL's implicit-prompt format: chosen and rejected carry the whole text or conversation


def implicit(row):
    """The implicit-prompt twin of an explicit row, built the way TRL's docs describe the format."""
    if isinstance(row["prompt"], str):
        return {"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]}
    return {"chosen": row["prompt"] + row["chosen"], "rejected": row["prompt"] + row["rejected"]}


IMPLICIT_ROWS = [
    implicit(standard()),  # " Five." / " Six.": the space before the difference goes to the responses
    implicit(standard("Name a colour:", "Blue", "Red")),
    {"chosen": "Is it 12? Yes, 12.", "rejected": "Is it 12? No, 13."},
    implicit(chat(system="Be brief.")),
    {  # multi-turn: every shared turn is prompt
        "chosen": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
        ],
        "rejected": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Dog."},
        ],
    },
    # UltraFeedback-binarized style: a string prompt beside whole conversations (TRL extracts here too)
    {"prompt": "Name a colour.", **implicit(chat())},
]


def test_implicit_prompt_rows_match_trls_maybe_extract_prompt():
    from trl.data_utils import maybe_extract_prompt

    loaded = []
    for rows in (IMPLICIT_ROWS[:3], IMPLICIT_ROWS[3:]):  # one format per dataset
        dataset, report = load_preference_dataset(rows)
        assert report.n_bad == 0 and report.n_prompt_extracted == 3
        assert "3 kept rows had an implicit prompt" in str(report)
        loaded += list(dataset)
    expected = [maybe_extract_prompt(dict(row)) for row in IMPLICIT_ROWS]
    for ours, trl in zip(loaded, expected, strict=True):
        assert {k: ours[k] for k in ("prompt", "chosen", "rejected")} == trl
    assert loaded[0]["prompt"] == "What is two plus three?" and loaded[0]["chosen"] == " Five."


def test_implicit_prompt_on_the_kits_own_pairs_gives_back_the_explicit_rows(tmp_path):
    from trl.data_utils import maybe_extract_prompt

    from simplepo_helpers.world import data_file

    rows, _ = read_jsonl(data_file("pairs_train"))
    rows = rows[:300]
    path = tmp_path / "implicit.jsonl"
    path.write_text("".join(json.dumps({**implicit(row), "family": row["family"]}) + "\n" for row in rows))
    dataset, report = load_preference_dataset(path)
    kept = [rows[i] for i in report.kept_indices]
    for ours, original in zip(list(dataset), kept, strict=True):
        trl = maybe_extract_prompt(implicit(original))
        assert {k: ours[k] for k in ("prompt", "chosen", "rejected")} == trl
        assert ours["family"] == original["family"]
        # whole messages are compared, so the extracted prompt is the original one
        assert {k: ours[k] for k in ("prompt", "chosen", "rejected")} == {k: original[k] for k in trl}
    assert report.n_bad == 0 and report.n_prompt_extracted == len(rows) == len(kept)


def test_implicit_prompt_rows_that_cannot_be_split_are_reported():
    rows = [
        {"chosen": "Same text.", "rejected": "Same text."},
        {"chosen": "Yes", "rejected": "Yes, and more"},  # one a prefix of the other: no telling split
        {"chosen": "Apples.", "rejected": "Pears."},  # nothing shared: no prompt
        {"chosen": "Hi there.", "rejected": [{"role": "assistant", "content": "Hi"}]},
        implicit(standard()),
    ]
    _, report = load_preference_dataset(rows)
    assert [(bad.index, bad.reason) for bad in report.bad_rows] == [
        (0, "identical_responses"),
        (1, "wrong_type"),
        (2, "empty_prompt"),
        (3, "wrong_type"),
    ]
    assert "prefix" in report.bad_rows[1].message and report.kept_indices == [4]


@pytest.mark.parametrize("rows", [GOOD_STANDARD, GOOD_CHAT], ids=["standard", "chat"])
def test_loaded_rows_keep_their_tokens_and_are_not_tokenised_again(tokenizer, rows, monkeypatch):
    """The validator's token ids travel with each kept row; the collator reads them instead of tokenising,
    and the batch is the one it would build from the text (cut to its own limits)."""
    import simplepo_helpers.batching as batching

    dataset, report = load_preference_dataset(rows, tokenizer=tokenizer)
    assert report.n_kept == len(rows)
    for row, kept in zip(rows, dataset, strict=True):
        assert {
            key: kept[key] for key in ("prompt_ids", "chosen_ids", "rejected_ids")
        } == tokenize_preference(row, tokenizer)
    limits = {"max_length": 12, "max_prompt_length": 6}
    from_text = PreferenceCollator(tokenizer, **limits)(rows)
    monkeypatch.setattr(
        batching, "tokenize_preference", lambda *a, **k: pytest.fail("tokenised a loaded row")
    )
    from_tokens = PreferenceCollator(tokenizer, **limits)(list(dataset))
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(from_tokens[key], from_text[key]), key
    without_tokenizer, _ = load_preference_dataset(rows)
    assert "prompt_ids" not in without_tokenizer.column_names  # nothing to keep without a tokenizer
