"""Notebook 01's exercise graders (the data)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import IGNORE_INDEX, _array, _call, _diagnose, _exercise, _toy_labels


@_exercise("ex1.1", "01", "warm-up", "tokens the loss averages over")
def _grade_loss_token_counts(answer: Any) -> str | None:
    labels = _toy_labels()
    value = _array(_call(answer, labels.clone()), "the counts")
    return _diagnose(
        value,
        [7, 3, 2, 4],  # counted by hand from _toy_labels, position 0 excluded
        [
            (
                (labels != IGNORE_INDEX).sum(-1),
                "row 3 is off by one: the label at position 0 is never scored "
                "(the logits at position t predict the label at t + 1).",
            ),
            ((labels[:, 1:] != IGNORE_INDEX).sum(), "return one count per row, not the batch total."),
        ],
        "count, per row, the labels that are not -100 among the positions a logit predicts.",
    )


@_exercise("ex1.2", "01", "core", "one padded row with its labels")
def _grade_build_row(answer: Any) -> str | None:
    cases = [  # (prompt_ids, response_ids incl. EOS, length, pad_id) -> hand-written expectations
        (
            ([1, 5, 6], [7, 8, 3], 8, 0),
            {
                "input_ids": [1, 5, 6, 7, 8, 3, 0, 0],
                "attention_mask": [1, 1, 1, 1, 1, 1, 0, 0],
                "labels": [-100, -100, -100, 7, 8, 3, -100, -100],
            },
        ),
        (
            ([1, 9], [4, 3], 4, 2),
            {"input_ids": [1, 9, 4, 3], "attention_mask": [1, 1, 1, 1], "labels": [-100, -100, 4, 3]},
        ),
    ]
    for args, expected in cases:
        row = _call(answer, list(args[0]), list(args[1]), args[2], args[3])
        if not isinstance(row, Mapping) or set(expected) - set(row):
            return f"return a dict with the keys {sorted(expected)}"
        got = {key: _array(row[key], key).tolist() for key in expected}
        if got["input_ids"] != expected["input_ids"]:
            return "input_ids: the prompt, then the response, then pad_id up to `length` (right padding)."
        if got["attention_mask"] != expected["attention_mask"]:
            return "attention_mask is 1 on real tokens (prompt and response) and 0 on padding."
        labels, want = got["labels"], expected["labels"]
        if labels != want:
            n_prompt = len(args[0])
            if labels[n_prompt:] != want[n_prompt:] and args[3] in labels[n_prompt + len(args[1]) :]:
                return "padding positions must hold -100 in labels, or the loss scores the padding."
            if labels[:n_prompt] != want[:n_prompt]:
                return "prompt positions must hold -100 in labels: SimPO averages over the response only."
            return "labels are not shifted in this kit: they equal input_ids on the response tokens."
    try:
        answer([1, 2, 3], [4, 5, 3], 5, 0)
    except ValueError:
        return None
    except Exception as error:  # noqa: BLE001  (feedback on the learner's own exception type)
        return f"a row that does not fit should raise ValueError, yours raised {type(error).__name__}"
    return (
        "a prompt + response longer than `length` must raise ValueError: cutting the response silently can "
        "leave it empty (0 tokens, a 0/0 average)."
    )


def _problem_rows() -> list[dict[str, Any]]:
    def row(prompt: list[tuple[str, str]], chosen: str, rejected: str) -> dict[str, Any]:
        return {
            "prompt": [{"role": r, "content": c} for r, c in prompt],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }

    user = [("user", "What is 2 + 3?")]
    return [
        row(user, "2 + 3 = 5.", "2 + 3 = 6."),
        row(user, "2 + 3 = 5.", "2 + 3 = 5."),
        row(user, "   ", "2 + 3 = 6."),
        row(user, "2 + 3 = 5.", ""),
        row([("user", "What is 2 + 3?"), ("assistant", "Let me think.")], "5.", "6."),
        row([("system", "Be brief."), ("user", "What is 2 + 3?")], "5.", "6."),
        row(user, "Five.", "five."),
    ]


@_exercise("ex1.3", "01", "stretch", "first problem of a preference row")
def _grade_first_problem(answer: Any) -> str | None:
    from ...data import validate_preferences

    rows = _problem_rows()
    report = validate_preferences(rows)  # the kit's validator is the reference
    expected = {bad.index: bad.reason for bad in report.bad_rows}
    descriptions = [
        "a clean pair",
        "chosen == rejected",
        "a chosen response of only spaces",
        "an empty rejected response",
        "a prompt that ends with an assistant turn",
        "a pair with a system message",
        "answers differing in case",
    ]
    import copy

    for index, row in enumerate(rows):
        got = _call(answer, copy.deepcopy(row))
        want = expected.get(index)
        if got != want:
            return f"for {descriptions[index]} you returned {got!r}; expected {'None' if want is None else 'a reason code'}."
    return None
