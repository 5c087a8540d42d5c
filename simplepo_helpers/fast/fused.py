"""The chunked log-softmax and the LM head fused with it: the speed tricks behind ``fast``'s door.

The core's :func:`simplepo_helpers.logps.token_logps` is a plain ``gather - logsumexp``; these compute the
same numbers with less memory, and are proven equal to it by ``tests/test_fast.py``:

- :func:`chunked_token_logps`: ``logit[label] - logsumexp(logits)`` over chunks of ``chunk_tokens`` positions
  (default: about ``CHUNK_ELEMENTS`` float32 values, e.g. 85 positions at vocabulary 49152), forward *and*
  backward. A custom autograd function writes the gradient ``onehot(label) - softmax(logits)`` chunk by
  chunk straight into the logits' gradient, so the only vocabulary-sized tensor it adds is that gradient.
  bf16/fp16 logits are upcast to float32 one chunk at a time.
- :func:`head_token_logps`: log-probs straight from the final hidden states at the scored positions, the LM
  head and the log-softmax fused, so not even those positions' logits are kept.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..batching import IGNORE_INDEX
from ..logps import compute_dtype_for, resolve_chunk_tokens, shifted_targets


class _LabelLogps(torch.autograd.Function):
    """log p(target) for N positions, chunk by chunk: logits [N, V], targets [N] -> [N] in ``dtype``.

    Backward: d log p(y) / d logits = onehot(y) - softmax(logits), written one chunk at a time into the
    gradient buffer, so no [N, V] temporary besides the gradient itself is allocated.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, chunk_tokens: int, dtype: torch.dtype):
        out = logits.new_empty(logits.shape[0], dtype=dtype)  # [N]
        lse = logits.new_empty(logits.shape[0], dtype=dtype)  # [N]: logsumexp per position, kept for backward
        for start in range(0, logits.shape[0], chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            chunk = logits[rows].to(dtype)  # [n, V]; a copy only when upcasting bf16/fp16
            lse[rows] = torch.logsumexp(chunk, dim=-1)
            out[rows] = chunk.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1) - lse[rows]
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk_tokens, ctx.dtype = chunk_tokens, dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        grad_out = grad_out.to(ctx.dtype)  # [N]
        grad_logits = torch.empty_like(logits)  # [N, V], the logits' dtype
        in_place = logits.dtype == ctx.dtype  # float32/64: compute straight into the gradient buffer
        for start in range(0, logits.shape[0], ctx.chunk_tokens):
            rows = slice(start, start + ctx.chunk_tokens)
            scale = grad_out[rows].unsqueeze(-1)  # [n, 1]
            # -g * softmax(x) = -g * exp(x - lse), then + g at the label
            chunk = grad_logits[rows] if in_place else None
            chunk = torch.sub(logits[rows].to(ctx.dtype), lse[rows].unsqueeze(-1), out=chunk)  # [n, V]
            chunk.exp_().mul_(-scale).scatter_add_(-1, targets[rows].unsqueeze(-1), scale)
            if not in_place:
                grad_logits[rows] = chunk  # downcast to the logits' dtype
        return grad_logits, None, None, None


def chunked_token_logps(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`simplepo_helpers.logps.token_logps`, chunked over positions with a hand-written backward.

    Args:
        logits: ``[B, T, V]``; position t predicts ``labels[:, t + 1]``.
        labels: ``[B, T]`` token ids, ``ignore_index`` on prompt and padding.
        chunk_tokens: positions scored at once; default ``logps.default_chunk_tokens`` of the vocabulary.

    Returns:
        ``(logps [B, T-1] with 0 where masked, mask [B, T-1] bool)``, logps in at least float32.
    """
    targets, mask = shifted_targets(logits, labels, ignore_index=ignore_index)
    batch, length, vocab = logits.shape
    dtype = compute_dtype_for(logits)
    chunk_tokens = resolve_chunk_tokens(chunk_tokens, vocab)
    if batch * length == 0:  # empty batch or T == 0
        return logits.new_zeros((batch, max(length - 1, 0)), dtype=dtype), mask
    # Score all B*T positions of the flat (view, no copy) logits; the last position of each row gets a dummy
    # target 0 and is dropped below. This keeps the chunks plain views of the logits.
    flat_logits = logits.reshape(batch * length, vocab)  # [B*T, V]
    flat_targets = F.pad(targets.masked_fill(~mask, 0), (0, 1)).reshape(-1)  # [B*T]
    per_token = _LabelLogps.apply(flat_logits, flat_targets, chunk_tokens, dtype).view(batch, length)[:, :-1]
    return per_token.masked_fill(~mask, 0.0), mask  # [B, T-1] x2


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype active for ``device``'s type, or None."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


class _HeadLabelLogps(torch.autograd.Function):
    """log p(target) straight from hidden states: hidden [N, d], head weight [V, d], targets [N] -> [N].

    The LM head and the log-softmax are fused, chunk by chunk: no logits tensor beyond a ``[n, V]`` chunk is
    built. For backward, the gradient direction ``onehot - softmax`` at the N positions is kept ([N, V], the
    size of those positions' logits) when ``keep``, or else the chunk's logits are recomputed (no [N, V]
    tensor at all, a third more head FLOPs). Backward: with ``D = onehot - softmax`` and the upstream ``g``,
    ``grad_hidden = g * (D @ W)`` and ``grad_W = D^T @ (g * hidden)`` (two whole matmuls), or the same chunk by
    chunk from recomputed logits. Under autocast the head's matmuls run in
    the autocast dtype, as the model's own head would.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_tokens: int, dtype: torch.dtype, keep: bool):
        matmul_dtype = _autocast_dtype(hidden.device) or torch.promote_types(hidden.dtype, weight.dtype)
        out = hidden.new_empty(hidden.shape[0], dtype=dtype)  # [N]
        lse = hidden.new_empty(hidden.shape[0], dtype=dtype)  # [N]
        direction: Any = hidden.new_empty((hidden.shape[0], weight.shape[0]), dtype=dtype) if keep else None
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(matmul_dtype)  # [V, d]
            whole = keep and matmul_dtype == dtype  # all logits in one matmul, written into the kept buffer
            if whole:
                torch.mm(hidden.to(matmul_dtype), w.T, out=direction)  # [N, V]
            for start in range(0, hidden.shape[0], chunk_tokens):
                rows = slice(start, start + chunk_tokens)
                logits = (
                    direction[rows] if whole else (hidden[rows].to(matmul_dtype) @ w.T).to(dtype)
                )  # [n, V]
                lse[rows] = torch.logsumexp(logits, dim=-1)
                out[rows] = logits.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1) - lse[rows]
                if keep:  # onehot - softmax, in place in the kept buffer
                    chunk = torch.sub(logits, lse[rows].unsqueeze(-1), out=direction[rows]).exp_().neg_()
                    chunk.scatter_add_(-1, targets[rows].unsqueeze(-1), torch.ones_like(chunk[:, :1]))
        ctx.save_for_backward(hidden, weight, targets, lse, direction)
        ctx.chunk_tokens, ctx.dtype, ctx.matmul_dtype = chunk_tokens, dtype, matmul_dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        hidden, weight, targets, lse, direction = ctx.saved_tensors
        grad_out = grad_out.to(ctx.dtype)  # [N]
        grad_hidden = grad_weight = None
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(ctx.matmul_dtype)  # [V, d]
            if direction is not None:  # g * (onehot - softmax) = diag(g) D: two whole matmuls, no [N, V] copy
                d = direction.to(ctx.matmul_dtype)  # [N, V]
                if ctx.needs_input_grad[0]:
                    grad_hidden = ((d @ w).to(ctx.dtype) * grad_out.unsqueeze(-1)).to(hidden.dtype)  # [N, d]
                if ctx.needs_input_grad[1]:
                    scaled_hidden = (hidden.to(ctx.dtype) * grad_out.unsqueeze(-1)).to(
                        ctx.matmul_dtype
                    )  # [N, d]
                    grad_weight = (d.T @ scaled_hidden).to(weight.dtype)  # [V, d]
                return grad_hidden, grad_weight, None, None, None, None
            grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None  # [N, d]
            grad_weight = (
                torch.zeros_like(weight, dtype=ctx.dtype) if ctx.needs_input_grad[1] else None
            )  # [V, d]
            for start in range(
                0, hidden.shape[0], ctx.chunk_tokens
            ):  # recompute: -g * softmax, + g at the label
                rows = slice(start, start + ctx.chunk_tokens)
                h = hidden[rows].to(ctx.matmul_dtype)  # [n, d]
                scale = grad_out[rows].unsqueeze(-1)  # [n, 1]
                grad_logits = (h @ w.T).to(ctx.dtype).sub_(lse[rows].unsqueeze(-1)).exp_()  # [n, V]
                grad_logits.mul_(-scale).scatter_add_(-1, targets[rows].unsqueeze(-1), scale)
                grad_logits = grad_logits.to(ctx.matmul_dtype)
                if grad_hidden is not None:
                    grad_hidden[rows] = grad_logits @ w  # [n, d]
                if grad_weight is not None:
                    grad_weight.addmm_(grad_logits.T.to(ctx.dtype), h.to(ctx.dtype))  # [V, d]
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None


def can_fuse_head(head: torch.nn.Module) -> bool:
    """A plain ``nn.Linear`` without bias or forward hooks (hooks must see the head's output)."""
    hooked = bool(head._forward_hooks or head._forward_pre_hooks)
    return type(head) is torch.nn.Linear and head.bias is None and not hooked


def head_token_logps(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    targets: torch.Tensor,
    *,
    chunk_tokens: int | None = None,
    recompute: bool = False,
) -> torch.Tensor:
    """log p(target) at the positions whose final hidden states are ``hidden`` [N, d]: [N], at least float32.

    Logits only where scored: the LM head ``head`` runs on these N positions alone. A head that
    :func:`can_fuse_head` (Llama's and Qwen2's, tied or not) is fused with the log-softmax
    (:class:`_HeadLabelLogps`), so not even the N positions' logits are kept; any other head (a LoRA-wrapped
    one, one with hooks) is applied to the N positions and scored by ``_LabelLogps``.
    ``recompute``: recompute the logits in backward instead of keeping an [N, V] gradient direction.
    """
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(
            f"hidden must be [N, d] and targets [N], got {tuple(hidden.shape)}, {tuple(targets.shape)}"
        )
    weight: Any = head.weight  # [V, d]
    vocab = weight.shape[0]
    bad = (targets < 0) | (targets >= vocab)
    if bad.any():
        index = int(bad.nonzero()[0])
        raise ValueError(
            f"target {int(targets[index])} at scored position {index} is not a token id in [0, {vocab})"
        )
    dtype = torch.promote_types(_autocast_dtype(hidden.device) or hidden.dtype, torch.float32)
    chunk_tokens = resolve_chunk_tokens(chunk_tokens, vocab)
    if can_fuse_head(head):
        keep = (
            torch.is_grad_enabled() and (hidden.requires_grad or head.weight.requires_grad) and not recompute
        )
        return _HeadLabelLogps.apply(hidden, head.weight, targets, chunk_tokens, dtype, keep)
    logits = head(hidden)  # [N, V]
    return _LabelLogps.apply(logits, targets, chunk_tokens, compute_dtype_for(logits))
