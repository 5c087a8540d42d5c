"""TRL's implicit-prompt rows (no ``prompt``; ``chosen`` and ``rejected`` each hold the whole text or
conversation) made explicit: the shared prefix becomes the prompt, as TRL's ``extract_prompt`` does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIELDS = ("prompt", "chosen", "rejected")


def is_implicit_prompt(row: Mapping[str, Any]) -> bool:
    """TRL's ``maybe_extract_prompt`` rule: no ``prompt``, or a string prompt beside whole conversations.

    (TRL also splits a string prompt beside one-message assistant responses, leaving an empty prompt; here
    such a row keeps its prompt and is reported as ``mixed_formats``.)
    """
    if "chosen" not in row or "rejected" not in row:
        return False
    if "prompt" not in row:
        return True
    chosen = row["chosen"]
    return (
        isinstance(row["prompt"], str)
        and all(isinstance(row[n], list) and row[n] for n in ("chosen", "rejected"))
        and not (isinstance(chosen[0], Mapping) and chosen[0].get("role") == "assistant")
    )


def split_implicit_prompt(row: Mapping[str, Any]) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
    """``(row with prompt, chosen, rejected made explicit, None)`` or ``(None, (reason, message))``.

    The prompt is the longest shared prefix of ``chosen`` and ``rejected`` (characters, or whole messages),
    as in TRL's ``extract_prompt``: a space just before the first difference stays with the responses, and
    two conversations that never differ keep their last message as the responses. Two strings where one is
    a prefix of the other have no telling split (TRL cuts them one character early): reported, not guessed.
    Other columns are kept.
    """
    chosen, rejected = row["chosen"], row["rejected"]
    if not (isinstance(chosen, (str, list)) and type(chosen) is type(rejected)):
        return None, (
            "wrong_type",
            "implicit prompt: chosen and rejected must both be strings or message lists",
        )
    shared = min(len(chosen), len(rejected))
    cut = next((i for i in range(shared) if chosen[i] != rejected[i]), None)
    if cut is None:
        if isinstance(chosen, str) or shared == 0:
            if chosen == rejected:
                return None, ("identical_responses", "implicit prompt: chosen and rejected are the same")
            return None, ("wrong_type", "implicit prompt: one response is a prefix of the other, so no shared "
                          "prompt can be told apart")  # fmt: skip
        cut = shared - 1
    elif cut > 0 and chosen[cut - 1] == " ":  # the space before the first difference starts the responses
        cut -= 1
    if cut == 0:
        return None, ("empty_prompt", "implicit prompt: chosen and rejected share no prefix")
    extra = {k: v for k, v in row.items() if k not in FIELDS}
    return {"prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:], **extra}, None
