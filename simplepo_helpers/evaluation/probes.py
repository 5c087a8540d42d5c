"""Behaviour probes: how likely a model is to *start* its answer in each style of the world, exactly.

For a prompt x and an opener o (token ids t_1..t_m), teacher forcing gives
P(o | x) = prod_i p(t_i | x, t_<i). The world writes every styled answer with a fixed opener
(``world.responses``): filler answers start with one of ``OPENERS``, confident (wrong) answers with one of
``CONFIDENT_OPENERS``, refusals with "Sorry" or "I'm sorry". The openers of different styles are not
prefixes of one another, so their probabilities add up:

- ``verbose``: the sum over ``OPENERS``; ``confident``: the sum over ``CONFIDENT_OPENERS``;
- ``refusal``: P("Sorry") + P("I'm sorry") (on a forbidden request this is the correct refusal);
- ``bare``: 1 - the three above, i.e. starting straight with an answer (or anything else).

No sampling, so no sampling noise: one forward pass per opener per prompt shows *what* training moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..batching import IGNORE_INDEX
from ..logps import sequence_logps
from ..world.responses import CONFIDENT_OPENERS, OPENERS
from .generation import _as_messages

REFUSAL_OPENERS = ("Sorry", "I'm sorry")
PROBE_STYLES = {"verbose": OPENERS, "confident": CONFIDENT_OPENERS, "refusal": REFUSAL_OPENERS}
STYLE_NAMES = ("bare", "verbose", "confident", "refusal")


@torch.no_grad()
def prefix_logps(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Any],
    prefixes: Sequence[str],
    *,
    batch_size: int = 256,
) -> np.ndarray:
    """log P(prefix | prompt) for every prompt and prefix, [N, P] float64 (no EOS: the answer may go on)."""
    texts = tokenizer.apply_chat_template(
        [_as_messages(p, i) for i, p in enumerate(prompts)], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    prefix_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prefixes]
    if any(not ids for ids in prefix_ids):
        raise ValueError("every prefix must have at least one token")
    rows = [(i, j) for i in range(len(prompts)) for j in range(len(prefixes))]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    out = np.zeros((len(prompts), len(prefixes)))
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            seqs = [prompt_ids[i] + prefix_ids[j] for i, j in chunk]
            width = max(map(len, seqs))
            input_ids = torch.full((len(seqs), width), pad)  # [b, T], right-padded
            labels = torch.full((len(seqs), width), IGNORE_INDEX)  # [b, T], the prefix tokens only
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for row, ((i, j), seq) in enumerate(zip(chunk, seqs, strict=True)):
                input_ids[row, : len(seq)] = torch.tensor(seq)
                labels[row, len(prompt_ids[i]) : len(seq)] = torch.tensor(prefix_ids[j])
                mask[row, : len(seq)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits  # [b,T,V]
            logps = (
                sequence_logps(logits.float(), labels.to(device), length_normalize=False).double().cpu()
            )  # [b]
            for (i, j), value in zip(chunk, logps.tolist(), strict=True):
                out[i, j] = value
    finally:
        model.train(was_training)
    return out


def style_probabilities(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[Any]
) -> dict[str, np.ndarray]:
    """Per prompt, the probability of opening in each style (``STYLE_NAMES``), each [N]; they sum to 1."""
    names, openers = [], []
    for style, group in PROBE_STYLES.items():
        names += [style] * len(group)
        openers += list(group)
    probs = np.exp(prefix_logps(model, tokenizer, prompts, openers))  # [N, P]
    styles = {s: probs[:, [k for k, n in enumerate(names) if n == s]].sum(axis=1) for s in PROBE_STYLES}
    styles["bare"] = np.clip(1.0 - sum(styles.values()), 0.0, 1.0)
    return {name: styles[name] for name in STYLE_NAMES}


def probe_table(
    styles: dict[str, np.ndarray], families: Sequence[str], forbidden: Sequence[bool]
) -> dict[str, dict[str, float]]:
    """Mean style probability per group: each family, safety split into allowed and forbidden, and "all"."""
    forbidden = np.asarray(forbidden, dtype=bool)
    labels = [
        f"{f} ({'forbidden' if b else 'allowed'})" if f == "safety" else f
        for f, b in zip(families, forbidden, strict=True)
    ]
    groups = {"all": np.ones(len(labels), dtype=bool)}
    for label in sorted(set(labels)):
        groups[label] = np.array([x == label for x in labels])
    return {
        group: {"n": int(mask.sum()), **{s: float(styles[s][mask].mean()) for s in STYLE_NAMES}}
        for group, mask in groups.items()
    }
