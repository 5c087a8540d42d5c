"""Monte-Carlo KL(policy || reference) on the policy's own samples.

- **KL(policy || reference)** is the Monte-Carlo mean of ``log p(y|x) - log p_ref(y|x)`` (whole responses)
  over responses sampled from the policy at temperature 1 with top_p 1. Generation returns text, so responses
  are re-tokenised; both models score the same tokens, so identical models give exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..batching import PreferenceCollator
from ..logps import sequence_logps
from .generation import _as_messages


def _response_tokens(
    tokenizer: Any, prompt: Any, response: str, index: int, max_new_tokens: int | None
) -> dict[str, list[int]]:
    """Prompt ids exactly as generation builds them; response ids, plus EOS unless generation was cut off."""
    if not isinstance(response, str):
        raise ValueError(f"response {index} must be a string, got {type(response).__name__}")
    text = tokenizer.apply_chat_template(
        [_as_messages(prompt, index)], tokenize=False, add_generation_prompt=True
    )[0]
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if max_new_tokens is None or len(response_ids) < max_new_tokens:
        response_ids = response_ids + [tokenizer.eos_token_id]  # the sampled stop token
    return {"prompt_ids": prompt_ids, "chosen_ids": response_ids, "rejected_ids": response_ids}


@torch.no_grad()
def response_logps(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Any],
    responses: Sequence[str],
    *,
    batch_size: int = 32,
    max_new_tokens: int | None = None,
) -> torch.Tensor:
    """Summed log-prob [N] (float64) of each response (with its EOS) given its prompt under ``model``.

    ``max_new_tokens``: the generation limit; a response that reached it was cut off and gets no EOS.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    rows = [
        _response_tokens(tokenizer, p, r, i, max_new_tokens)
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True))
    ]
    collator = PreferenceCollator(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    try:
        for start in range(0, len(rows), batch_size):
            batch = collator(
                rows[start : start + batch_size]
            )  # [2b, T]: the response twice; the second half is unused
            half = batch["input_ids"].shape[0] // 2
            logits = model(
                input_ids=batch["input_ids"][:half].to(device),
                attention_mask=batch["attention_mask"][:half].to(device),
            ).logits  # [b, T, V]
            scores.append(
                sequence_logps(logits.float(), batch["labels"][:half].to(device), length_normalize=False)
                .double()
                .cpu()
            )
    finally:
        model.train(was_training)
    return torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)


@dataclass(frozen=True)
class KLEstimate:
    """Monte-Carlo KL(policy || reference) in nats per response: mean and standard error over samples."""

    mean: float
    stderr: float
    log_ratios: torch.Tensor  # [N] log p(y|x) - log p_ref(y|x), y sampled from the policy


def kl_to_reference(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Any],
    responses: Sequence[str],
    *,
    batch_size: int = 32,
    max_new_tokens: int | None = None,
) -> KLEstimate:
    """KL(policy || reference) from ``responses`` sampled from ``policy`` at temperature 1, top_p 1."""
    if len(responses) == 0:
        raise ValueError("kl_to_reference needs at least one sampled response")
    kwargs = {"batch_size": batch_size, "max_new_tokens": max_new_tokens}
    log_ratios = response_logps(policy, tokenizer, prompts, responses, **kwargs) - response_logps(
        reference, tokenizer, prompts, responses, **kwargs
    )  # [N]
    stderr = float(log_ratios.std() / math.sqrt(log_ratios.numel())) if log_ratios.numel() > 1 else 0.0
    return KLEstimate(float(log_ratios.mean()), stderr, log_ratios)
