"""The two row formats and the structural checks of one row (``rows.py``): each reason, and the rows that pass."""

from __future__ import annotations

import pytest

from simplepo_helpers.inputs.implicit import is_implicit_prompt, split_implicit_prompt
from simplepo_helpers.inputs.jsonl import BrokenLine
from simplepo_helpers.rows import check_limits, row_format, row_problem

STANDARD = {"prompt": "What is 2+3?", "chosen": " 5.", "rejected": " 6."}
CONVERSATIONAL = {
    "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}],
    "chosen": [{"role": "assistant", "content": "5."}],
    "rejected": [{"role": "assistant", "content": "6."}],
}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize(("row", "expected"), [(STANDARD, "standard"), (CONVERSATIONAL, "conversational")])
def test_good_rows_pass_and_name_their_format(row, expected):
    assert row_problem(row) is None
    assert row_format(row) == expected


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (BrokenLine("line 3 is not JSON"), "invalid_json"),
        (["a", "list"], "wrong_type"),
        ({"prompt": "p", "chosen": "c"}, "missing_field"),
        ({**STANDARD, "rejected": None}, "missing_field"),
        ({**STANDARD, "chosen": 3}, "wrong_type"),
        ({**STANDARD, "chosen": "bad \ud800 text"}, "invalid_encoding"),
        ({**STANDARD, "chosen": [assistant("5.")]}, "mixed_formats"),
        ({**STANDARD, "prompt": "  "}, "empty_prompt"),
        ({**STANDARD, "rejected": ""}, "empty_response"),
        ({**STANDARD, "rejected": STANDARD["chosen"]}, "identical_responses"),
        ({**CONVERSATIONAL, "chosen": ["5."]}, "wrong_type"),
        ({**CONVERSATIONAL, "chosen": [{"role": "bot", "content": "5."}]}, "wrong_roles"),
        ({**CONVERSATIONAL, "prompt": [assistant("Hi.")]}, "wrong_roles"),
        ({**CONVERSATIONAL, "prompt": []}, "wrong_roles"),
        ({**CONVERSATIONAL, "rejected": [assistant("6."), assistant("7.")]}, "wrong_roles"),
        ({**CONVERSATIONAL, "prompt": [user(" ")]}, "empty_prompt"),
        ({**CONVERSATIONAL, "chosen": [assistant("")]}, "empty_response"),
        ({**CONVERSATIONAL, "rejected": CONVERSATIONAL["chosen"]}, "identical_responses"),
    ],
)
def test_each_problem_is_named_by_its_reason(row, reason):
    problem = row_problem(row)
    assert problem is not None and problem[0] == reason
    assert problem[1]  # and explained in words


@pytest.mark.parametrize("value", [0, -1, 2.5, "8"])
def test_limits_must_be_positive_integers(value):
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        check_limits(max_length=value)
    check_limits(max_length=None, max_prompt_length=4)  # None: no limit


def test_implicit_prompt_rows_are_recognised():
    assert is_implicit_prompt({"chosen": "Q? Yes.", "rejected": "Q? No."})
    assert is_implicit_prompt(
        {"prompt": "sys", "chosen": [user("Q?"), assistant("Yes.")], "rejected": [user("Q?")]}
    )
    assert not is_implicit_prompt(STANDARD)
    assert not is_implicit_prompt(CONVERSATIONAL)
    assert not is_implicit_prompt({"prompt": "p"})


def test_split_implicit_prompt_cuts_the_shared_prefix():
    row, problem = split_implicit_prompt({"chosen": "Q? Yes.", "rejected": "Q? No.", "id": 7})
    assert problem is None
    assert row == {"prompt": "Q?", "chosen": " Yes.", "rejected": " No.", "id": 7}
    row, problem = split_implicit_prompt(
        {"chosen": [user("Q?"), assistant("Yes.")], "rejected": [user("Q?"), assistant("No.")]}
    )
    assert problem is None and row == {
        "prompt": [user("Q?")],
        "chosen": [assistant("Yes.")],
        "rejected": [assistant("No.")],
    }


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"chosen": "same", "rejected": "same"}, "identical_responses"),
        ({"chosen": "Yes", "rejected": "Yes, indeed"}, "wrong_type"),
        ({"chosen": "Yes.", "rejected": "No."}, "empty_prompt"),
        ({"chosen": "text", "rejected": [assistant("text")]}, "wrong_type"),
    ],
)
def test_split_implicit_prompt_reports_what_it_cannot_split(row, reason):
    split, problem = split_implicit_prompt(row)
    assert split is None and problem[0] == reason


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({**STANDARD, "rejected": " 5. "}, "differ only in whitespace"),
        ({**STANDARD, "chosen": "\n5.", "rejected": " 5.\t"}, "differ only in whitespace"),
        ({**CONVERSATIONAL, "rejected": [assistant("5.\n")]}, "differ only in whitespace"),
    ],
)
def test_responses_differing_only_in_whitespace_have_nothing_to_prefer(row, fragment):
    assert row_problem(row) == ("identical_responses", "chosen and rejected " + fragment)


def test_a_difference_in_words_or_case_is_a_preference():
    assert row_problem({**STANDARD, "rejected": " 5 ."}) is None  # "5." and "5 ." are different words
    assert row_problem({**STANDARD, "rejected": " 5!"}) is None


@pytest.mark.parametrize(
    ("prompt", "fragment"),
    [
        ([assistant("Hello."), user("Q?")], "prompt[0] is assistant as the first turn"),
        ([user("Hi."), user("Q?")], "prompt[1] is user after prompt[0] (user)"),
        ([{"role": "system", "content": "Be brief."}, user("Hi."), user("Q?")], "prompt[2] is user after"),
        ([user("Hi."), assistant("Hello."), assistant("Again."), user("Q?")], "prompt[2] is assistant after"),
        (
            [user("Hi."), assistant("Yo."), {"role": "system", "content": "Late."}, user("Q?")],
            "prompt[2] is system",
        ),
    ],
)
def test_role_order_is_checked_over_the_whole_prompt(prompt, fragment):
    reason, message = row_problem({**CONVERSATIONAL, "prompt": prompt})
    assert reason == "wrong_roles" and fragment in message
    assert "alternate user/assistant" in message


def test_leading_system_messages_and_alternating_turns_pass():
    system = {"role": "system", "content": "Be brief."}
    prompt = [system, system, user("Hi."), assistant("Hello."), user("Q?")]
    assert row_problem({**CONVERSATIONAL, "prompt": prompt}) is None
