"""Preference examples -> token ids, labels and one stacked ``[2B, T]`` batch.

Standard rows are tokenised as plain text, conversational rows through the chat template (the assistant
header belongs to the prompt, as in TRL). The prompt tokens are the prompt text's own; the response tokens
are the rest of prompt+response, or the response text alone where BPE merges across the boundary. Every
response ends with exactly one labelled EOS (a template's tail after it is dropped). Truncation cuts the
prompt from the left (its BOS kept), then the responses from the right. Rows ``0..B-1`` are chosen,
``B..2B-1`` rejected; labels equal ``input_ids`` on response tokens, -100 elsewhere, not shifted. The
rules in full: docs/architecture.md ("Tokenisation").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .rows import check_limits, row_format, row_problem

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
TOKEN_KEYS = ("prompt_ids", "chosen_ids", "rejected_ids")


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _added_bos(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """``[bos_token_id]`` if the tokenizer puts a BOS in front of plain text by itself, else ``[]``."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    with_special = tokenizer("a")["input_ids"]
    return [bos] if with_special[:1] == [bos] and _encode(tokenizer, "a")[:1] != [bos] else []


def _response_ids(
    tokenizer: PreTrainedTokenizerBase, prompt_text: str, full_text: str, prompt_ids: list[int]
) -> list[int]:
    """Tokens of ``full_text[len(prompt_text):]``, split exactly at the prompt/response boundary."""
    if not full_text.startswith(prompt_text):
        raise ValueError(
            "the chat template renders the prompt differently when a response follows; "
            "cannot split prompt and response exactly"
        )
    full_ids = _encode(tokenizer, full_text)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        return full_ids[len(prompt_ids) :]
    return _encode(tokenizer, full_text[len(prompt_text) :])  # tokens merged across the boundary


def _end_with_one_eos(tokenizer: PreTrainedTokenizerBase, ids: list[int], name: str) -> list[int]:
    """Make ``ids`` end with exactly one EOS; drop a whitespace-only template tail after the end-of-turn EOS."""
    eos = tokenizer.eos_token_id
    if eos not in ids:
        return ids + [eos]
    end = ids.index(eos) + 1
    if str(tokenizer.decode(ids[end:])).strip():
        raise ValueError(f"{name} contains the eos token {tokenizer.eos_token!r} before its end")
    return ids[:end]


def _one_bos(ids: list[int], bos: int | None) -> list[int]:
    return ids[1:] if bos is not None and ids[:2] == [bos, bos] else ids


def tokenize_preference(
    example: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
) -> dict[str, list[int]]:
    """One preference row -> ``{"prompt_ids", "chosen_ids", "rejected_ids"}`` (responses end with EOS), cut
    to the limits by :func:`truncate_preference`. Raises ValueError with the reason for a bad row."""
    problem = row_problem(example)
    if problem is not None:
        raise ValueError(f"{problem[0]}: {problem[1]}")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set one so responses can end")
    if row_format(example) == "standard":
        prefix = _added_bos(tokenizer)
        prompt_text = example["prompt"]
        full_texts = [prompt_text + example[name] for name in ("chosen", "rejected")]
    else:
        prefix = []
        prompt = list(example["prompt"])
        prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full_texts = [
            tokenizer.apply_chat_template(prompt + list(example[name]), tokenize=False)
            for name in ("chosen", "rejected")
        ]
    prompt_ids = _encode(tokenizer, prompt_text)
    chosen_ids, rejected_ids = (
        _end_with_one_eos(tokenizer, _response_ids(tokenizer, prompt_text, full, prompt_ids), name)
        for full, name in zip(full_texts, ("chosen", "rejected"), strict=True)
    )
    tokens = {
        "prompt_ids": _one_bos(prefix + prompt_ids, tokenizer.bos_token_id),
        "chosen_ids": chosen_ids,
        "rejected_ids": rejected_ids,
    }
    limits = {"max_length": max_length, "max_prompt_length": max_prompt_length}
    return truncate_preference(tokens, bos_token_id=tokenizer.bos_token_id, **limits)


def _keep_prompt_end(prompt_ids: list[int], n: int, bos: int | None) -> list[int]:
    """The last ``n`` tokens of the prompt, a leading BOS kept in front (it counts in ``n``)."""
    if len(prompt_ids) <= n:
        return prompt_ids
    if bos is not None and prompt_ids[0] == bos:
        return [bos] + prompt_ids[len(prompt_ids) - (n - 1) :]
    return prompt_ids[len(prompt_ids) - n :]


def truncate_preference(
    tokens: Mapping[str, list[int]],
    *,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    bos_token_id: int | None = None,
) -> dict[str, list[int]]:
    """Cut the prompt (keep its end and BOS), then the responses' ends, so prompt+response <= max_length (the
    limits are checked where they enter: ``PreferenceCollator``)."""
    prompt, chosen, rejected = (list(tokens[key]) for key in TOKEN_KEYS)
    has_bos = bos_token_id is not None and prompt[:1] == [bos_token_id]
    min_prompt = min(len(prompt), 1 + has_bos)  # the BOS and the prompt's last token
    if max_prompt_length is not None:
        if max_prompt_length < min_prompt:
            raise ValueError(
                f"max_prompt_length={max_prompt_length} cannot keep the BOS and one prompt token"
            )
        prompt = _keep_prompt_end(prompt, max_prompt_length, bos_token_id)
    if max_length is not None:
        longest = max(len(chosen), len(rejected))
        if len(prompt) + longest > max_length:
            prompt = _keep_prompt_end(prompt, max(max_length - longest, min_prompt), bos_token_id)
            room = max_length - len(prompt)
            if room < 1:
                raise ValueError(
                    f"max_length={max_length} leaves no room for a response token after a "
                    f"{len(prompt)}-token prompt (its minimum)"
                )
            chosen, rejected = chosen[:room], rejected[:room]
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}


class PreferenceBatch(dict):
    """A collated batch: ``input_ids``, ``attention_mask``, ``labels`` ``[2B, T]``, and ``rows``, the token id
    lists it was padded from (the fast path packs from them). A copy (``{**batch}``) is a plain dict."""

    rows: list[dict[str, list[int]]]


class PreferenceCollator:
    """Rows, raw or carrying their token ids (kept by ``load_preference_dataset``) -> a :class:`PreferenceBatch`."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_length: int | None = None,
        max_prompt_length: int | None = None,
        pad_to_multiple_of: int | None = None,
    ):
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad_token nor an eos_token to pad with")
        check_limits(
            max_length=max_length, max_prompt_length=max_prompt_length, pad_to_multiple_of=pad_to_multiple_of
        )
        self.tokenizer = tokenizer
        self.pad_token_id = pad
        self.limits = {"max_length": max_length, "max_prompt_length": max_prompt_length}
        self.pad_to_multiple_of = pad_to_multiple_of

    def tokenize(self, example: Mapping[str, Any]) -> dict[str, list[int]]:
        """The row's token ids, uncut: those it carries (checked), else tokenised from its text."""
        if "prompt_ids" not in example:
            return tokenize_preference(example, self.tokenizer)
        for key in TOKEN_KEYS:
            ids = example.get(key)
            if not isinstance(ids, Sequence) or not all(isinstance(i, int) for i in ids):
                raise ValueError(f"{key!r} must be a list of token ids")
            if not ids:
                raise ValueError(f"{key!r} is empty")
        return {key: list(example[key]) for key in TOKEN_KEYS}

    def truncate(self, tokens: Mapping[str, list[int]]) -> dict[str, list[int]]:
        """``tokens`` cut to this collator's limits."""
        return truncate_preference(tokens, bos_token_id=self.tokenizer.bos_token_id, **self.limits)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> PreferenceBatch:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        rows = []
        for index, example in enumerate(examples):
            try:
                rows.append(self.truncate(self.tokenize(example)))
            except ValueError as error:
                raise ValueError(f"batch example {index}: {error}") from error
        sequences = [(row["prompt_ids"], row[key]) for key in ("chosen_ids", "rejected_ids") for row in rows]
        length = max(len(prompt) + len(response) for prompt, response in sequences)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)  # [2B, T]
        labels = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)  # [2B, T]
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)  # [2B, T]
        for row, (prompt, response) in enumerate(sequences):
            n_prompt, n_total = len(prompt), len(prompt) + len(response)
            input_ids[row, :n_total] = torch.tensor(prompt + response)
            labels[row, n_prompt:n_total] = torch.tensor(response)
            attention_mask[row, :n_total] = 1
        batch = PreferenceBatch(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        batch.rows = rows
        return batch


def check_preference_batch(batch: Mapping[str, torch.Tensor]) -> int:
    """Check the ``[2B, T]`` layout of a collated batch (chosen rows first, then rejected); return B."""
    for key in ("input_ids", "attention_mask", "labels"):
        if key not in batch:
            raise KeyError(f"batch has no {key!r} (keys: {sorted(batch)}); build it with PreferenceCollator")
    rows, length = batch["input_ids"].shape
    if rows == 0 or rows % 2:
        raise ValueError(
            f"a preference batch needs an even, positive number of rows (chosen + rejected), got {rows}"
        )
    for key in ("attention_mask", "labels"):
        if tuple(batch[key].shape) != (rows, length):
            raise ValueError(f"batch[{key!r}] has shape {tuple(batch[key].shape)}, expected {(rows, length)}")
    return rows // 2


def response_token_count(labels: torch.Tensor) -> int:
    """Tokens scored after the causal shift (the label at t+1 is predicted by the logits at t)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
