"""The two row formats of preference data and the structural checks of one row (no tokenizer needed).

TRL's formats: *standard* (``prompt``, ``chosen`` and ``rejected`` strings) or *conversational* (``prompt``
a list of ``{"role", "content"}`` messages: any system messages first, then user and assistant turns
alternating from a user turn to a user turn; ``chosen`` and ``rejected`` one-element lists holding the
assistant message). Responses equal or differing only in whitespace hold no preference. ``data`` runs these
checks over a dataset, ``batching`` on each row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .inputs.jsonl import BrokenLine, encodable

FIELDS = ("prompt", "chosen", "rejected")
ROLES = ("system", "user", "assistant")


def check_limits(**limits: int | None) -> None:
    """Refuse a length limit (``max_length=...``) that is set but not a positive integer."""
    for name, value in limits.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def row_format(row: Mapping[str, Any]) -> str:
    """``"standard"`` (string prompt) or ``"conversational"`` (message list) for a row that passed the checks."""
    return "standard" if isinstance(row["prompt"], str) else "conversational"


def row_problem(row: Any) -> tuple[str, str] | None:
    """The first structural problem of one row as ``(reason, message)``, or None. No tokenizer needed."""
    if isinstance(row, BrokenLine):
        return row.reason, row.error
    if not isinstance(row, Mapping):
        return "wrong_type", f"a row must be a dict, got {type(row).__name__}"
    missing = [name for name in FIELDS if row.get(name) is None]
    if missing:
        return "missing_field", f"missing or null field(s): {', '.join(missing)}"
    for name in FIELDS:
        if not isinstance(row[name], (str, list, tuple)):
            return (
                "wrong_type",
                f"{name!r} must be a string or a list of messages, got {type(row[name]).__name__}",
            )
    for name in FIELDS:
        if not encodable(row[name]):
            return (
                "invalid_encoding",
                f"{name!r} holds a lone surrogate (\\ud800-\\udfff), not valid Unicode text",
            )
    kinds = {name: isinstance(row[name], str) for name in FIELDS}
    if len(set(kinds.values())) > 1:
        strings = [name for name, is_str in kinds.items() if is_str]
        lists = [name for name, is_str in kinds.items() if not is_str]
        return "mixed_formats", f"{', '.join(strings)} are strings but {', '.join(lists)} are message lists"
    if kinds["prompt"]:
        return _standard_problem(row)
    return _conversational_problem(row)


def _standard_problem(row: Mapping[str, Any]) -> tuple[str, str] | None:
    if not row["prompt"].strip():
        return "empty_prompt", "the prompt is empty"
    for name in ("chosen", "rejected"):
        if not row[name].strip():
            return "empty_response", f"{name!r} is empty"
    return _same_responses(row["chosen"], row["rejected"])


def _conversational_problem(row: Mapping[str, Any]) -> tuple[str, str] | None:
    for name in FIELDS:
        for i, message in enumerate(row[name]):
            if not (
                isinstance(message, Mapping)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                return "wrong_type", f"{name}[{i}] must be a dict with string 'role' and 'content'"
            if message["role"] not in ROLES:
                return "wrong_roles", f"{name}[{i}] has role {message['role']!r}, expected one of {ROLES}"
    prompt = row["prompt"]
    if not prompt or prompt[-1]["role"] != "user":
        last = prompt[-1]["role"] if prompt else "nothing"
        return "wrong_roles", f"the prompt must end with a user turn, it ends with {last}"
    roles = [message["role"] for message in prompt]
    start = next(i for i, role in enumerate(roles) if role != "system")  # system messages only lead
    for i in range(start, len(roles)):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if roles[i] != expected:
            after = f"after prompt[{i - 1}] ({roles[i - 1]})" if i > start else "as the first turn"
            return "wrong_roles", (
                f"prompt[{i}] is {roles[i]} {after}: after any system messages the prompt must alternate "
                f"user/assistant, starting with user"
            )
    for name in ("chosen", "rejected"):
        roles = [message["role"] for message in row[name]]
        if roles != ["assistant"]:
            return "wrong_roles", f"{name!r} must be exactly one assistant message, got roles {roles}"
    if not any(message["content"].strip() for message in prompt):
        return "empty_prompt", "every prompt message is empty"
    for name in ("chosen", "rejected"):
        if not row[name][0]["content"].strip():
            return "empty_response", f"{name!r} is empty"
    return _same_responses(row["chosen"][0]["content"], row["rejected"][0]["content"])


def _same_responses(chosen: str, rejected: str) -> tuple[str, str] | None:
    """``identical_responses`` when the two texts are equal or differ only in whitespace: nothing to prefer."""
    if chosen == rejected:
        return "identical_responses", "chosen and rejected are the same text"
    if chosen.split() == rejected.split():
        return "identical_responses", "chosen and rejected differ only in whitespace"
    return None
