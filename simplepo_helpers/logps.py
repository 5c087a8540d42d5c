"""Log-probabilities of the response tokens under a causal LM: log-softmax, then pick each label's entry.

``labels`` are *not* shifted: ``input_ids`` on response tokens, ``IGNORE_INDEX`` on prompt and padding; the
logits at t predict the label at t+1. ``log_softmax(logits)[label]`` is computed as ``logits[label] -
logsumexp(logits)``: the same number without a second ``[B, T, V]`` tensor. The chunked version with a
hand-written backward lives behind the ``fast`` door (``fast/packing.py``), tested equal to this one.
"""

from __future__ import annotations

import torch

from .batching import IGNORE_INDEX

# float32 values per chunk of positions x vocabulary (4M values = 16 MB), for code that scores in chunks
CHUNK_ELEMENTS = 1 << 22


def default_chunk_tokens(vocab_size: int) -> int:
    """Positions per chunk so that a chunk holds about ``CHUNK_ELEMENTS`` values (at least one position)."""
    return max(1, CHUNK_ELEMENTS // max(vocab_size, 1))


def resolve_chunk_tokens(chunk_tokens: int | None, vocab_size: int) -> int:
    """``chunk_tokens``, or :func:`default_chunk_tokens` when None; raise when it is below 1."""
    if chunk_tokens is None:
        return default_chunk_tokens(vocab_size)
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    return chunk_tokens


def compute_dtype_for(logits: torch.Tensor) -> torch.dtype:
    """The float dtype log-probs are computed in: the logits' dtype, at least float32."""
    return torch.promote_types(logits.dtype, torch.float32)


def shifted_targets(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and label ids; return (labels of positions 1..T-1 [B, T-1], response mask [B, T-1])."""
    if logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float tensor [B, T, V], got {logits.dtype} {tuple(logits.shape)}")
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match the logits' [B, T] = "
            f"{tuple(logits.shape[:2])}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer token ids, got dtype {labels.dtype}")
    targets = labels[:, 1:]  # [B, T-1]: the token each position 0..T-2 predicts
    mask = targets != ignore_index  # [B, T-1]
    vocab_size = logits.shape[-1]
    bad = mask & ((targets < 0) | (targets >= vocab_size))  # [B, T-1]
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"row {row}: label {int(targets[row, col])} at position {col + 1} is neither ignore_index "
            f"({ignore_index}) nor a token id in [0, {vocab_size})"
        )
    return targets, mask


def require_response_tokens(mask: torch.Tensor, *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Return the per-row response token counts [B]; raise naming every row that has none."""
    counts = mask.sum(dim=-1)  # [B]
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"row(s) {empty} of the batch have no response tokens: every label after the first position is "
            f"{ignore_index} (was the response truncated away?). Their average log-prob would be 0/0."
        )
    return counts


def token_logps(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the labels after the causal shift: logits ``[B, T, V]`` (position t predicts
    ``labels[:, t + 1]``), labels ``[B, T]`` -> ``(logps [B, T-1], 0 where masked, at least float32;
    mask [B, T-1] bool)``."""
    targets, mask = shifted_targets(logits, labels, ignore_index=ignore_index)  # [B, T-1] x2
    scores = logits[:, :-1].to(compute_dtype_for(logits))  # [B, T-1, V]; a copy only when upcasting
    picked = scores.gather(-1, targets.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)  # [B, T-1]
    per_token = picked - torch.logsumexp(scores, dim=-1)  # [B, T-1] = log_softmax(scores)[label]
    return per_token.masked_fill(~mask, 0.0), mask


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, *, length_normalize: bool, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Log-probability of each row's response tokens [B]: the sum (DPO) or, ``length_normalize``, the
    per-token mean (SimPO); logits ``[B, T, V]``, labels ``[B, T]`` unshifted. Float32 at least; raises
    naming a row without response tokens, or on bad shapes and label ids."""
    per_token, mask = token_logps(logits, labels, ignore_index=ignore_index)  # [B, T-1] x2
    counts = require_response_tokens(mask, ignore_index=ignore_index)  # [B]
    summed = per_token.sum(dim=-1)  # [B]
    return summed / counts if length_normalize else summed
