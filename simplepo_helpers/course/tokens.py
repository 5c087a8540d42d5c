"""What the tokens of one collated row are: the response mask decoded, and each token's role.

Teaching helpers for notebook 01 (the kit's top level exports them): they read a ``[T]`` row of the
``batching`` layout and never change it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..batching import IGNORE_INDEX, _encode

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def _as_rows(**named: Any) -> list[list[int]]:
    """Each argument as one 1-D row of ints, all of the same length."""
    rows = []
    for name, values in named.items():
        values = values.tolist() if isinstance(values, torch.Tensor) else list(values)
        if values and isinstance(values[0], list):
            raise ValueError(f"{name} must be one row (1-D), not a batch")
        rows.append(values)
    lengths = {name: len(row) for name, row in zip(named, rows, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"rows of different lengths: {lengths}")
    return rows


def decode_masked(tokenizer: PreTrainedTokenizerBase, input_ids: Any, labels: Any) -> str:
    """Decode exactly the tokens whose label is not -100 (one row); special tokens are shown."""
    ids, labs = _as_rows(input_ids=input_ids, labels=labels)
    selected = []
    for position, (token, label) in enumerate(zip(ids, labs, strict=True)):
        if label == IGNORE_INDEX:
            continue
        if label != token:
            raise ValueError(
                f"label {label} differs from input id {token} at position {position}: shifted labels?"
            )
        selected.append(token)
    return str(tokenizer.decode(selected, skip_special_tokens=False, clean_up_tokenization_spaces=False))


def _assistant_header_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Tokens the chat template adds for ``add_generation_prompt=True`` (e.g. ``<|im_start|>assistant\\n``)."""
    if getattr(tokenizer, "chat_template", None) is None:
        return []
    probe = [{"role": "user", "content": "?"}]
    try:
        closed = str(tokenizer.apply_chat_template(probe, tokenize=False))
        opened = str(tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True))
    except Exception:  # display only: a template that refuses this probe just gets no header marking
        return []
    return _encode(tokenizer, opened[len(closed) :]) if opened.startswith(closed) else []


def explain_tokens(
    tokenizer: PreTrainedTokenizerBase, input_ids: Any, labels: Any, attention_mask: Any = None
) -> list[tuple[str, str]]:
    """Each token of one row as ``(text, role)``, role in bos / template / prompt / response / eos / padding.

    "template" marks special tokens in the prompt (e.g. ``<|im_start|>``) and the assistant header that
    ends a chat prompt; other text written by the template (``user\\n``) cannot be told apart from ids
    alone and shows as "prompt".
    """
    if attention_mask is None:
        attention_mask = [1] * len(labels)
    ids, labs, mask = _as_rows(input_ids=input_ids, labels=labels, attention_mask=attention_mask)
    prompt_end = next((i for i, label in enumerate(labs) if label != IGNORE_INDEX), sum(mask))
    header = _assistant_header_ids(tokenizer)
    header_start = prompt_end - len(header)
    has_header = bool(header) and header_start >= 0 and ids[header_start:prompt_end] == header
    special = set(tokenizer.all_special_ids)
    explained = []
    for position, (token, label, attended) in enumerate(zip(ids, labs, mask, strict=True)):
        if not attended:
            role = "padding"
        elif label != IGNORE_INDEX:
            role = "eos" if token == tokenizer.eos_token_id else "response"
        elif position == 0 and token == tokenizer.bos_token_id:
            role = "bos"
        elif token in special or (has_header and header_start <= position < prompt_end):
            role = "template"
        else:
            role = "prompt"
        explained.append((str(tokenizer.decode([token], skip_special_tokens=False)), role))
    return explained
