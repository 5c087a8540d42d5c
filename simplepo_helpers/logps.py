"""Log-probabilities of the response tokens under a causal LM.

Convention (see docs/architecture.md): ``labels`` are *not* shifted; they equal ``input_ids`` on response
tokens and hold ``ignore_index`` on prompt and padding. The logits at position t predict the label at t+1, so
``labels[:, 0]`` is never scored.

Memory: a label's log-probability is ``logit[label] - logsumexp(logits)``, so no ``log_softmax`` copy of the
``[B, T, V]`` logits is built. float32/float64 logits are scored in one pass; bf16/fp16 logits are upcast to
float32 in chunks of ``chunk_tokens`` positions, so the float32 copy stays ``[chunk_tokens, V]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# positions per chunk when half-precision logits are upcast to float32 (1024 x 150k vocab = 600 MB)
HALF_PRECISION_CHUNK_TOKENS = 1024


def compute_dtype_for(logits: torch.Tensor) -> torch.dtype:
    """The float dtype log-probs are computed in: the logits' dtype, at least float32."""
    return torch.promote_types(logits.dtype, torch.float32)


def shifted_targets(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100
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


def require_response_tokens(mask: torch.Tensor, *, ignore_index: int = -100) -> torch.Tensor:
    """Return the per-row response token counts [B]; raise naming every row that has none."""
    counts = mask.sum(dim=-1)  # [B]
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"row(s) {empty} of the batch have no response tokens: every label after the first position is "
            f"{ignore_index} (was the response truncated away?). Their average log-prob would be 0/0."
        )
    return counts


def _label_logps(logits_chunk: torch.Tensor, targets_chunk: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """log p(target) for N positions: logits [N, V], targets [N] -> [N] in ``dtype``."""
    logits_chunk = logits_chunk.to(dtype)  # no copy when already ``dtype``; a [N, V] upcast for bf16/fp16
    label_logits = logits_chunk.gather(-1, targets_chunk.unsqueeze(-1)).squeeze(-1)  # [N]
    return label_logits - torch.logsumexp(logits_chunk, dim=-1)  # [N]


def token_logps(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100, chunk_tokens: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the labels after the causal shift.

    Args:
        logits: ``[B, T, V]``; position t predicts ``labels[:, t + 1]``.
        labels: ``[B, T]`` token ids, ``ignore_index`` on prompt and padding.
        chunk_tokens: positions upcast at once; default: all for float32/64, 1024 for bf16/fp16.

    Returns:
        ``(logps [B, T-1] with 0 where masked, mask [B, T-1] bool)``, logps in at least float32.
    """
    targets, mask = shifted_targets(logits, labels, ignore_index=ignore_index)
    batch, length, vocab = logits.shape
    dtype = compute_dtype_for(logits)
    if chunk_tokens is None:
        chunk_tokens = max(batch * length, 1) if logits.dtype == dtype else HALF_PRECISION_CHUNK_TOKENS
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    # Score all B*T positions of the flat (view, no copy) logits; the last position of each row gets a dummy
    # target 0 and is dropped below. This keeps the chunks plain views of the logits.
    flat_logits = logits.reshape(batch * length, vocab)  # [B*T, V]
    flat_targets = F.pad(targets.masked_fill(~mask, 0), (0, 1)).reshape(-1)  # [B*T]
    pieces = [
        _label_logps(logits_chunk, targets_chunk, dtype)
        for logits_chunk, targets_chunk in zip(
            flat_logits.split(chunk_tokens), flat_targets.split(chunk_tokens), strict=True
        )
    ]
    if not pieces:  # empty batch or T == 0
        return logits.new_zeros((batch, max(length - 1, 0)), dtype=dtype), mask
    per_token = torch.cat(pieces).view(batch, length)[:, :-1]  # [B, T-1]
    return per_token.masked_fill(~mask, 0.0), mask


def sequence_logps(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    average: bool,
    ignore_index: int = -100,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """Log-probability of each row's response tokens: sum (DPO) or per-token mean (SimPO).

    Args:
        logits: ``[B, T, V]`` causal-LM logits (position t predicts ``labels[:, t + 1]``).
        labels: ``[B, T]``, ``ignore_index`` on prompt and padding, unshifted.
        average: True -> mean over the response tokens, False -> sum.
        chunk_tokens: see :func:`token_logps`.

    Returns:
        ``[B]`` in the logits' float dtype, at least float32.

    Raises:
        ValueError: a row has no response token (names the row), or shapes / label ids are invalid.
    """
    per_token, mask = token_logps(logits, labels, ignore_index=ignore_index, chunk_tokens=chunk_tokens)
    counts = require_response_tokens(mask, ignore_index=ignore_index)  # [B]
    summed = per_token.sum(dim=-1)  # [B]
    return summed / counts if average else summed
